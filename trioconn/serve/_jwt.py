"""JWT verification for ``trioconn serve``: ``authenticate`` and ``authorize`` from a token's claims.

pyjwt checks the signature, the one configured algorithm, ``exp`` / ``nbf`` (with ``leeway``),
``aud`` and ``iss``. The claims then map to what the hub asks:

- ``sub`` → the connection's identity (``TokenIdentity.subject``), required;
- ``topics`` (``JwtSettings.topics_claim``) → the topics the holder may subscribe to;
- ``publish`` (``JwtSettings.publish_claim``) → the topics the holder may publish to, from a
  WebSocket client or through the HTTP API. Without it the holder publishes nothing.

A topic pattern is an exact name, or a prefix followed by ``*`` (``jobs/42/*``, or ``*`` for all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import jwt
from jwt.types import Options

from .._core.exceptions import HandshakeRejected, TrioconnError
from .._server.config import HandshakeRequest
from .._server.patterns import TopicPattern
from ._settings import JwtSettings

__all__ = ["InvalidToken", "JwtVerifier", "TokenIdentity", "topic_matches"]


class InvalidToken(TrioconnError):
    """A token was refused: expired, badly signed, or with claims that do not fit; says which."""


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` is ``pattern``, or starts with it when ``pattern`` ends in ``*``: the
    hub's one pattern rule (``hub.publications``, ``hub.on_request``)."""
    return TopicPattern.parse(pattern).matches(topic)


@attrs.frozen
class TokenIdentity:
    """Who a verified token says its holder is, and what it may do.

    Attributes:
        subject: the ``sub`` claim.
        topics: patterns of the topics the holder may subscribe to.
        publish: patterns of the topics the holder may publish to.
        claims: every claim of the token.
    """

    subject: str
    topics: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    claims: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    def may(self, action: str, topic: str) -> bool:
        """Whether the holder may ``"subscribe"`` to or ``"publish"`` to ``topic``."""
        patterns = self.publish if action == "publish" else self.topics if action == "subscribe" else ()
        return any(topic_matches(pattern, topic) for pattern in patterns)


class JwtVerifier:
    """Verifies tokens with ``settings`` and serves as the hub's ``authenticate`` / ``authorize``.

    Args:
        settings: the key, algorithm, expected audience and issuer, and claim names.
    """

    def __init__(self, settings: JwtSettings) -> None:
        self.settings = settings
        key = settings.secret if settings.secret is not None else settings.public_key
        if key is None:
            raise ValueError("JwtSettings needs a secret or a public key")
        self._key = key
        required = ["sub", "exp"] if settings.require_exp else ["sub"]
        self._options: Options = {"require": required}

    def verify(self, token: str) -> TokenIdentity:
        """The identity a valid token carries.

        Raises:
            InvalidToken: the token is expired, not yet valid, badly signed, for another
                audience or issuer, or its claims are not what ``trioconn serve`` needs.
        """
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[settings.algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("invalid token: claim 'sub' must be a non-empty string")
        return TokenIdentity(
            subject=subject,
            topics=_patterns(claims, settings.topics_claim),
            publish=_patterns(claims, settings.publish_claim),
            claims=claims,
        )

    def authenticate(self, request: HandshakeRequest) -> TokenIdentity:
        """The hub's ``authenticate``: the token of ``?token=`` or ``Authorization: Bearer``.

        Raises:
            HandshakeRejected: 401 with the reason (no token, expired, invalid), which a client
                answers by asking for a fresh token once (``refuse_with="close"``: 4401).
        """
        if not request.token:
            raise HandshakeRejected(401, b"token required (?token= or Authorization: Bearer)")
        try:
            return self.verify(request.token)
        except InvalidToken as exc:
            raise HandshakeRejected(401, str(exc).encode()) from None

    def authorize(self, identity: Any, topic: str, action: str) -> bool:
        """The hub's ``authorize``: the token's topic claims decide."""
        return isinstance(identity, TokenIdentity) and identity.may(action, topic)


def _patterns(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidToken(f"invalid token: claim {name!r} must be a list of topic patterns (strings)")
    for item in value:
        try:
            TopicPattern.parse(item, f"claim {name!r}: pattern")
        except (TypeError, ValueError) as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
    return tuple(value)

"""What ``trioconn serve`` runs with: ``ServeSettings``, built from a TOML file, the environment
and command-line flags (``load_settings``).

Theory of operation
-------------------
Every setting has a dotted name (``port``, ``hub.heartbeat_interval``, ``jwt.audience``) and
comes from one of three layers, later ones winning: the config file, the environment (secrets
only: ``TRIOCONN_API_KEY``, ``TRIOCONN_JWT_SECRET``), the flags. Each value remembers where it came
from, so an invalid one is reported as ``--heartbeat-interval`` or ``serve.toml: [hub]
heartbeat_interval``, not as a field name the user never typed. A secret and the file holding it
(``api.key`` / ``api.key_file``) count as one setting: a later layer replaces both.

Defaults live in one place each: the hub's in ``HubConfig`` (a ``[hub]`` table or a flag that is
not given leaves the field to ``HubConfig``, which also validates it), the server's own on the
attrs classes below. ``docs/operate.md`` lists them with their reasons.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import attrs

from .._core.exceptions import TrioconnError
from .._server.config import HubConfig

__all__ = [
    "HUB_SETTINGS",
    "ApiSettings",
    "InvalidSettings",
    "JwtSettings",
    "LogFormat",
    "RedisSettings",
    "ServeSettings",
    "load_settings",
]

LogFormat = Literal["text", "json"]
LOG_LEVELS = ("debug", "info", "warning", "error")

#: JWT algorithms ``trioconn serve`` verifies: HMAC with a shared secret, or a public key.
SECRET_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")

#: ``HubConfig`` fields that a config file or a flag may not set: the hooks (``serve`` fills in
#: ``authenticate``/``authorize`` itself from its JWT settings; no file holds a function), and the
#: limits on sockets that only ``Hub.serve``'s own server applies (under ``trioconn serve``
#: hypercorn owns the sockets).
NOT_SETTINGS = (
    "authenticate",
    "authorize",
    "json_dumps",
    "json_loads",
    "handshake_timeout",
    "max_handshakes",
    "max_sockets",
)

#: The types of ``HubConfig`` field a file or flag can give (numbers), besides the two below.
_SETTABLE_TYPES = ("float", "int", "int | None")


def _settable(field: attrs.Attribute[Any]) -> bool:
    if field.name in NOT_SETTINGS:
        return False
    return field.name in ("allowed_origins", "refuse_with") or str(field.type) in _SETTABLE_TYPES


#: ``HubConfig`` fields a config file or a flag may set. A field added to ``HubConfig`` later is
#: settable if it is a number; anything else stays out until this module learns to read it.
HUB_SETTINGS: tuple[str, ...] = tuple(field.name for field in attrs.fields(HubConfig) if _settable(field))


class InvalidSettings(TrioconnError, ValueError):
    """A setting of ``trioconn serve`` is invalid; the message names it and where it came from."""


@attrs.frozen(kw_only=True)
class RedisSettings:
    """The shared broker (``trioconn.redis.RedisBroker``): several ``serve`` processes, one Redis.

    Args:
        url: ``redis://[[user]:password@]host:port/db`` or ``rediss://``; a Redis Cluster:
            ``redis+cluster://[[user]:password@]host:port`` (any node) or ``rediss+cluster://``.
        prefix: key namespace; every process serving the same topics uses the same one.
        timeout: seconds a Redis call may take before the link counts as down.
    """

    url: str
    prefix: str = "trioconn"
    timeout: float = 5.0


@attrs.frozen(kw_only=True)
class ApiSettings:
    """The HTTP publish API (``POST /api/...``).

    Args:
        key: the API key publishers send as ``Authorization: Bearer KEY``. None: only JWTs with a
            publish claim can publish (and with no JWT settings either, the API refuses every
            write with 403).
        max_body_bytes: largest request body; larger ones get 413. 1 MiB: an event that size
            already takes half of a subscriber's default memory budget (``outbox_bytes``).
    """

    key: str | None = attrs.field(default=None, repr=False)
    max_body_bytes: int = 1 << 20


@attrs.frozen(kw_only=True)
class JwtSettings:
    """How WebSocket clients and HTTP publishers prove who they are with a JWT (pyjwt verifies it).

    Args:
        secret: the shared secret, for the HS algorithms.
        public_key: a PEM public key, for the RS/PS/ES/EdDSA algorithms.
        algorithm: the one algorithm accepted (a token naming another is refused).
        audience: if set, the ``aud`` claim must contain it.
        issuer: if set, the ``iss`` claim must equal it.
        leeway: seconds of clock skew allowed on ``exp`` / ``nbf``.
        require_exp: refuse tokens without an ``exp`` claim (a token that never expires
            cannot be withdrawn).
        topics_claim: the claim listing the topics the holder may subscribe to (patterns: an
            exact name, or a prefix ending in ``*``).
        publish_claim: the claim listing the topics the holder may publish to (WebSocket clients
            and the HTTP API). Absent: the holder may not publish.
    """

    secret: str | None = attrs.field(default=None, repr=False)
    public_key: str | None = attrs.field(default=None, repr=False)
    algorithm: str = "HS256"
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 0.0
    require_exp: bool = True
    topics_claim: str = "topics"
    publish_claim: str = "publish"


@attrs.frozen(kw_only=True)
class ServeSettings:
    """Everything ``trioconn serve`` runs with. ``load_settings`` builds one from a file and flags.

    Args:
        host: address to listen on. 127.0.0.1: reachable from this machine only until you say
            otherwise (``0.0.0.0`` in a container).
        port: TCP port for WebSocket and HTTP alike; 0 picks a free one (logged).
        websocket_path: where WebSocket clients connect (``ws://host:port/``).
        static: a directory served at ``/`` (``index.html`` for directories), for pages that use
            ``/trioconn.js``, which is always served.
        log_format: ``text`` lines for people, ``json`` lines for log collectors.
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        shutdown_timeout: seconds a graceful shutdown (SIGTERM) may take in all before what is
            left is cancelled. 10: the hub's own drain (``drain_timeout``, 5 s) plus the close
            handshake fit, and it stays well below systemd's and Kubernetes' kill deadlines
            (90 s, 30 s).
        hub: the hub's settings (heartbeat, limits, history, origins, ``refuse_with``).
        redis: the shared broker, or None for topics in this process only.
        api: the HTTP publish API.
        jwt: token verification, or None (then every WebSocket client may subscribe to any topic
            and none may publish).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    websocket_path: str = "/"
    static: Path | None = None
    log_format: LogFormat = "text"
    log_level: str = "info"
    shutdown_timeout: float = 10.0
    hub: HubConfig = attrs.field(factory=HubConfig)
    redis: RedisSettings | None = None
    api: ApiSettings = attrs.field(factory=ApiSettings)
    jwt: JwtSettings | None = None


# -- loading ---------------------------------------------------------------------------------------


@attrs.frozen
class Value:
    """A setting's value and where it came from (``--port``, ``serve.toml: [hub] history_size``)."""

    value: Any
    source: str


#: Settings that are one choice given in several ways: a later layer replaces all of a group.
_GROUPS = (("api.key", "api.key_file"), ("jwt.secret", "jwt.secret_file", "jwt.public_key_file"))

_SECTIONS: dict[str, tuple[str, ...]] = {
    "": ("host", "port", "websocket_path", "static", "log_format", "log_level", "shutdown_timeout"),
    "hub": HUB_SETTINGS,
    "redis": ("url", "prefix", "timeout"),
    "api": ("key", "key_file", "max_body_bytes"),
    "jwt": (
        "secret",
        "secret_file",
        "public_key_file",
        "algorithm",
        "audience",
        "issuer",
        "leeway",
        "require_exp",
        "topics_claim",
        "publish_claim",
    ),
}

#: Environment variables read (secrets, so they need not be on a command line or in a file).
ENVIRONMENT = {"TRIOCONN_API_KEY": "api.key", "TRIOCONN_JWT_SECRET": "jwt.secret"}


def settings_names() -> list[str]:
    """Every dotted setting name a file, the environment or a flag may give."""
    return [f"{section}.{key}" if section else key for section, keys in _SECTIONS.items() for key in keys]


def _unknown_hub_key(key: str) -> str:
    if key in ("handshake_timeout", "max_handshakes", "max_sockets"):
        return f" ({key} applies to Hub.serve's own server only; trioconn serve runs under hypercorn)"
    return ""


def read_file(path: Path) -> dict[str, Value]:
    """The settings of a TOML file, as dotted names; unknown keys and sections are errors."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise InvalidSettings(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSettings(f"{path} is not valid TOML: {exc}") from None
    found: dict[str, Value] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in _SECTIONS and key != "":
            for inner, item in value.items():
                if inner not in _SECTIONS[key]:
                    hint = _unknown_hub_key(inner) if key == "hub" else ""
                    raise InvalidSettings(
                        f"{path}: unknown key {inner!r} in [{key}]{hint} (known: {', '.join(_SECTIONS[key])})"
                    )
                found[f"{key}.{inner}"] = Value(item, f"{path}: [{key}] {inner}")
        elif key in _SECTIONS[""]:
            found[key] = Value(value, f"{path}: {key}")
        else:
            sections = ", ".join(f"[{name}]" for name in _SECTIONS if name)
            raise InvalidSettings(
                f"{path}: unknown key {key!r} "
                f"(top-level keys: {', '.join(_SECTIONS[''])}; tables: {sections})"
            )
    # Relative paths in a file are relative to the file, wherever the server is started from.
    for name in ("static", "api.key_file", "jwt.secret_file", "jwt.public_key_file"):
        if name in found and isinstance(found[name].value, str):
            found[name] = Value(str(path.parent / found[name].value), found[name].source)
    return found


def load_settings(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Value] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ServeSettings:
    """Build ``ServeSettings`` from a TOML file, the environment and overrides (the flags).

    Args:
        path: the config file, or None.
        overrides: dotted name → ``Value`` (what the command line gave), winning over the rest.
        environ: where ``TRIOCONN_API_KEY`` / ``TRIOCONN_JWT_SECRET`` are read (``os.environ``).

    Raises:
        InvalidSettings: a value is invalid or a key unknown; the message says which and where.
    """
    layers: list[dict[str, Value]] = []
    if path is not None:
        layers.append(read_file(Path(path)))
    env = os.environ if environ is None else environ
    layers.append({name: Value(env[var], f"${var}") for var, name in ENVIRONMENT.items() if env.get(var)})
    layers.append(dict(overrides or {}))
    known = set(settings_names())
    merged: dict[str, Value] = {}
    for layer in layers:
        unknown = set(layer) - known
        if unknown:
            raise InvalidSettings(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for group in _GROUPS:
            given = [name for name in group if name in layer]
            if len(given) > 1:
                sources = " and ".join(layer[name].source for name in given)
                raise InvalidSettings(f"give only one of {sources}")
            if given:
                for name in group:
                    merged.pop(name, None)
        merged.update(layer)
    return _build(merged)


def _build(values: Mapping[str, Value]) -> ServeSettings:
    top: dict[str, Any] = {}
    for name in _SECTIONS[""]:
        if name in values:
            top[name] = _CHECKS[name](values[name])
    hub = _hub(values)
    redis = None
    if "redis.url" in values:
        redis = RedisSettings(
            url=_redis_url(values["redis.url"]),
            **{
                k: _CHECKS[f"redis.{k}"](values[f"redis.{k}"])
                for k in ("prefix", "timeout")
                if f"redis.{k}" in values
            },
        )
    elif "redis.prefix" in values or "redis.timeout" in values:
        given = values.get("redis.prefix") or values["redis.timeout"]
        raise InvalidSettings(f"{given.source} is set but redis.url (--redis) is not")
    api: dict[str, Any] = {}
    if "api.key" in values:
        api["key"] = _secret(values["api.key"])
    elif "api.key_file" in values:
        api["key"] = _secret_file(values["api.key_file"])
    if "api.max_body_bytes" in values:
        api["max_body_bytes"] = _positive_int(values["api.max_body_bytes"])
    return ServeSettings(hub=hub, redis=redis, api=ApiSettings(**api), jwt=_jwt(values), **top)


def _hub(values: Mapping[str, Value]) -> HubConfig:
    given = {name: values[f"hub.{name}"] for name in HUB_SETTINGS if f"hub.{name}" in values}
    try:
        return HubConfig(**{name: value.value for name, value in given.items()})
    except (TypeError, ValueError) as exc:
        message = str(exc)
        # HubConfig names its fields; say where each named one was set.
        named = [name for name in given if re.search(rf"\b{name}\b", message)]
        where = "; ".join(f"{name} from {given[name].source}" for name in named)
        raise InvalidSettings(f"invalid hub setting: {message}" + (f" ({where})" if where else "")) from None


def _jwt(values: Mapping[str, Value]) -> JwtSettings | None:
    names = [name for name in values if name.startswith("jwt.")]
    if not names:
        return None
    key_names = [name for name in ("jwt.secret", "jwt.secret_file", "jwt.public_key_file") if name in values]
    if not key_names:
        sources = ", ".join(values[name].source for name in names)
        raise InvalidSettings(
            f"JWT settings are given ({sources}) but no key: set jwt.secret, jwt.secret_file "
            "(--jwt-secret, --jwt-secret-file, $TRIOCONN_JWT_SECRET) "
            "or jwt.public_key_file (--jwt-public-key)"
        )
    fields: dict[str, Any] = {}
    key = values[key_names[0]]
    if key_names[0] == "jwt.secret":
        fields["secret"] = _secret(key)
    elif key_names[0] == "jwt.secret_file":
        fields["secret"] = _secret_file(key)
    else:
        fields["public_key"] = _read_text(key)
    public = "public_key" in fields
    if "jwt.algorithm" in values:
        algorithm = values["jwt.algorithm"]
        allowed = KEY_ALGORITHMS if public else SECRET_ALGORITHMS
        if algorithm.value not in allowed:
            kind = "a public key" if public else "a shared secret"
            raise InvalidSettings(
                f"{algorithm.source}: {algorithm.value!r} is not an algorithm for {kind} "
                f"({key.source}); use one of {', '.join(allowed)}"
            )
        fields["algorithm"] = algorithm.value
    elif public:
        fields["algorithm"] = "RS256"
    for name in ("audience", "issuer", "topics_claim", "publish_claim"):
        if f"jwt.{name}" in values:
            fields[name] = _nonempty_str(values[f"jwt.{name}"])
    if "jwt.leeway" in values:
        fields["leeway"] = _seconds(values["jwt.leeway"], zero=True)
    if "jwt.require_exp" in values:
        fields["require_exp"] = _bool(values["jwt.require_exp"])
    settings = JwtSettings(**fields)
    if public:
        _check_public_key(settings, key)
    return settings


def _check_public_key(settings: JwtSettings, source: Value) -> None:
    """Parse the key once at startup, so a wrong file fails now rather than at the first client."""
    try:
        import jwt
    except ImportError:  # pragma: no cover - depends on the environment
        raise InvalidSettings("JWT verification needs pyjwt: pip install 'trioconn[serve]'") from None
    try:
        jwt.get_algorithm_by_name(settings.algorithm).prepare_key(settings.public_key or "")
    except (ValueError, TypeError, jwt.InvalidKeyError, NotImplementedError) as exc:
        raise InvalidSettings(
            f"{source.source}: not a usable {settings.algorithm} public key in PEM form ({exc})"
        ) from None


# -- checks for single values ------------------------------------------------------------------------


def _fail(value: Value, why: str) -> InvalidSettings:
    return InvalidSettings(f"{value.source}: {why}, got {value.value!r}")


def _str(value: Value) -> str:
    if not isinstance(value.value, str):
        raise _fail(value, "must be a string")
    return value.value


def _nonempty_str(value: Value) -> str:
    text = _str(value)
    if not text:
        raise _fail(value, "must not be empty")
    return text


def _bool(value: Value) -> bool:
    if not isinstance(value.value, bool):
        raise _fail(value, "must be true or false")
    return value.value


def _positive_int(value: Value) -> int:
    if isinstance(value.value, bool) or not isinstance(value.value, int) or value.value <= 0:
        raise _fail(value, "must be a positive integer")
    return value.value


def _seconds(value: Value, *, zero: bool = False) -> float:
    number = value.value
    if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
        raise _fail(value, "must be a number of seconds")
    if number < 0 or (number == 0 and not zero):
        raise _fail(value, "must be positive" if not zero else "must not be negative")
    return float(number)


def _port(value: Value) -> int:
    port = value.value
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise _fail(value, "must be a TCP port from 0 to 65535 (0: any free port)")
    return port


def _path(value: Value) -> str:
    path = _str(value)
    if not path.startswith("/"):
        raise _fail(value, "must be a path starting with /")
    return path


def _directory(value: Value) -> Path:
    path = Path(_nonempty_str(value))
    if not path.is_dir():
        raise _fail(value, "must be an existing directory")
    return path


def _choice(*choices: str) -> Any:
    def check(value: Value) -> str:
        if value.value not in choices:
            raise _fail(value, f"must be one of {', '.join(choices)}")
        return str(value.value)

    return check


def _redis_url(value: Value) -> str:
    url = _nonempty_str(value)
    schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
    if not url.startswith(schemes):
        raise _fail(value, f"must be a {', '.join(schemes[:-1])} or {schemes[-1]} URL")
    return url


def _read_text(value: Value) -> str:
    path = Path(_nonempty_str(value))
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(value, f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def _secret(value: Value) -> str:
    text = _str(value)
    if not text.strip():
        raise InvalidSettings(f"{value.source}: must not be empty")
    return text


def _secret_file(value: Value) -> str:
    # One trailing newline is what an editor or `echo` leaves; the secret is the rest.
    text = _read_text(value).removesuffix("\n").removesuffix("\r")
    if not text.strip():
        raise InvalidSettings(f"{value.source}: the file {value.value} is empty")
    return text


_CHECKS: dict[str, Any] = {
    "host": _nonempty_str,
    "port": _port,
    "websocket_path": _path,
    "static": _directory,
    "log_format": _choice(*get_args(LogFormat)),
    "log_level": _choice(*LOG_LEVELS),
    "shutdown_timeout": _seconds,
    "redis.prefix": _nonempty_str,
    "redis.timeout": _seconds,
}

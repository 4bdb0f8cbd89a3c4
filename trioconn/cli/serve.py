"""``trioconn serve``: a standalone hub with an HTTP publish API, health and metrics on one port.

Settings come from ``--config FILE`` (TOML), the environment (``TRIOCONN_API_KEY``,
``TRIOCONN_JWT_SECRET``) and the flags, flags winning (``trioconn.serve.load_settings``). Every
``HubConfig`` field is a flag (``--heartbeat-interval``) and a key of the file's ``[hub]`` table;
its default and its validation are ``HubConfig``'s.

Exit codes: 0 after a graceful shutdown (SIGTERM, SIGINT), 1 when the server cannot start (the
address is in use, …) or a second signal cut the shutdown short, 2 for invalid flags or settings
(the message names them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import attrs

from .._server.config import HubConfig, RefuseWith

__all__ = ["add_parser", "run"]

#: flag → dotted setting name, for the flags that are not the hub's.
_FLAGS: dict[str, str] = {
    "--host": "host",
    "--port": "port",
    "--websocket-path": "websocket_path",
    "--static": "static",
    "--log-format": "log_format",
    "--log-level": "log_level",
    "--shutdown-timeout": "shutdown_timeout",
    "--redis": "redis.url",
    "--redis-prefix": "redis.prefix",
    "--redis-timeout": "redis.timeout",
    "--api-key": "api.key",
    "--api-key-file": "api.key_file",
    "--max-body-bytes": "api.max_body_bytes",
    "--jwt-secret": "jwt.secret",
    "--jwt-secret-file": "jwt.secret_file",
    "--jwt-public-key": "jwt.public_key_file",
    "--jwt-algorithm": "jwt.algorithm",
    "--jwt-audience": "jwt.audience",
    "--jwt-issuer": "jwt.issuer",
    "--jwt-leeway": "jwt.leeway",
    "--jwt-require-exp": "jwt.require_exp",
    "--jwt-topics-claim": "jwt.topics_claim",
    "--jwt-publish-claim": "jwt.publish_claim",
}


def _hub_help() -> dict[str, str]:
    """Each ``HubConfig`` field's description, from the ``Args:`` section of its docstring."""
    doc = HubConfig.__doc__ or ""
    found: dict[str, str] = {}
    name = None
    for line in doc.split("Args:", 1)[-1].split("Raises:", 1)[0].splitlines():
        match = re.match(r"^ {8}(\w+): (.*)$", line)
        if match:
            name, text = match.groups()
            found[name] = text
        elif name is not None and line.startswith(" " * 12):
            found[name] += " " + line.strip()
    return {key: value.replace("``", "").replace("%", "%%") for key, value in found.items()}


def _dest(name: str) -> str:
    return "setting:" + name


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``trioconn serve`` and its flags (every flag's default is the setting's own)."""
    parser = subparsers.add_parser(
        "serve",
        help="run a hub with an HTTP publish API, /health and /metrics",
        description=(
            "Run a standalone hub: WebSocket clients, an HTTP publish API (POST /api/publish, "
            "/api/state, /api/end), GET /health and GET /metrics on one port. Settings: --config "
            "FILE (TOML), then $TRIOCONN_API_KEY / $TRIOCONN_JWT_SECRET, then flags. Reference: "
            "docs/operate.md. Exit codes: 0 after a graceful shutdown, 1 when it cannot start, "
            "2 for invalid settings."
        ),
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE", help="a TOML file of settings (flags override it)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the settings, print them as JSON (secrets hidden) and exit",
    )
    where = parser.add_argument_group("server")
    where.add_argument("--host", dest=_dest("host"), help="address to listen on (default 127.0.0.1)")
    where.add_argument(
        "--port", dest=_dest("port"), type=int, help="TCP port, 0 for any free one (default 8765)"
    )
    where.add_argument(
        "--websocket-path", dest=_dest("websocket_path"), help="WebSocket endpoint (default /)"
    )
    where.add_argument(
        "--static", dest=_dest("static"), metavar="DIR", help="serve this directory's files at /"
    )
    where.add_argument(
        "--log-format", dest=_dest("log_format"), choices=("text", "json"), help="default text"
    )
    where.add_argument(
        "--log-level",
        dest=_dest("log_level"),
        choices=("debug", "info", "warning", "error"),
        help="default info",
    )
    where.add_argument(
        "--shutdown-timeout",
        dest=_dest("shutdown_timeout"),
        type=float,
        metavar="SECONDS",
        help="bound on a graceful shutdown (default 10)",
    )

    hub = parser.add_argument_group("hub (HubConfig; defaults and reasons in docs/server.md)")
    descriptions = _hub_help()
    from ..serve._settings import HUB_SETTINGS

    for field in attrs.fields(HubConfig):
        if field.name not in HUB_SETTINGS:
            continue
        text = descriptions.get(field.name, "")
        default = field.default
        if field.name == "allowed_origins":
            hub.add_argument(
                "--allowed-origin",
                dest=_dest("hub.allowed_origins"),
                action="append",
                metavar="ORIGIN",
                help=f"repeat for each; replaces the file's list. {text}",
            )
        elif field.name == "refuse_with":
            from typing import get_args

            hub.add_argument(
                "--refuse-with", dest=_dest("hub.refuse_with"), choices=get_args(RefuseWith), help=text
            )
        else:
            kind = float if str(field.type) == "float" else int
            flag = "--" + field.name.replace("_", "-")
            shown = "none" if default is None else f"{default:g}" if isinstance(default, float) else default
            hub.add_argument(
                flag,
                dest=_dest(f"hub.{field.name}"),
                type=kind,
                metavar="SECONDS" if kind is float else "N",
                help=f"{text} (default {shown})",
            )

    redis = parser.add_argument_group("broker")
    redis.add_argument("--redis", dest=_dest("redis.url"), metavar="URL", help="share topics through Redis")
    redis.add_argument("--redis-prefix", dest=_dest("redis.prefix"), help="key namespace (default trioconn)")
    redis.add_argument(
        "--redis-timeout", dest=_dest("redis.timeout"), type=float, metavar="SECONDS", help="default 5"
    )

    api = parser.add_argument_group("HTTP API")
    api.add_argument(
        "--api-key", dest=_dest("api.key"), metavar="KEY", help="publishers' key (prefer --api-key-file)"
    )
    api.add_argument(
        "--api-key-file", dest=_dest("api.key_file"), metavar="FILE", help="a file holding the key"
    )
    api.add_argument(
        "--max-body-bytes", dest=_dest("api.max_body_bytes"), type=int, metavar="N", help="default 1048576"
    )

    jwt = parser.add_argument_group("JWT (WebSocket clients' ?token= and HTTP publishers)")
    jwt.add_argument("--jwt-secret", dest=_dest("jwt.secret"), metavar="SECRET", help="HS256 shared secret")
    jwt.add_argument(
        "--jwt-secret-file", dest=_dest("jwt.secret_file"), metavar="FILE", help="a file holding it"
    )
    jwt.add_argument(
        "--jwt-public-key", dest=_dest("jwt.public_key_file"), metavar="PEM", help="RS256 public key"
    )
    jwt.add_argument("--jwt-algorithm", dest=_dest("jwt.algorithm"), help="default HS256 / RS256")
    jwt.add_argument("--jwt-audience", dest=_dest("jwt.audience"), help="required 'aud'")
    jwt.add_argument("--jwt-issuer", dest=_dest("jwt.issuer"), help="required 'iss'")
    jwt.add_argument(
        "--jwt-leeway", dest=_dest("jwt.leeway"), type=float, metavar="SECONDS", help="default 0"
    )
    jwt.add_argument(
        "--jwt-require-exp",
        dest=_dest("jwt.require_exp"),
        action=argparse.BooleanOptionalAction,
        help="refuse tokens without 'exp' (default yes)",
    )
    jwt.add_argument("--jwt-topics-claim", dest=_dest("jwt.topics_claim"), help="default topics")
    jwt.add_argument("--jwt-publish-claim", dest=_dest("jwt.publish_claim"), help="default publish")
    for action in parser._actions:
        unnamed = action.metavar is None and action.choices is None and action.nargs != 0
        if action.dest.startswith("setting:") and unnamed:
            action.metavar = action.dest.rsplit(".", 1)[-1].removeprefix("setting:").upper()


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from ..serve import Value

    flags = {dotted: flag for flag, dotted in _FLAGS.items()}
    overrides = {}
    for dest, value in vars(args).items():
        if not dest.startswith("setting:"):
            continue
        name = dest.removeprefix("setting:")
        if name == "hub.allowed_origins":
            flag = "--allowed-origin"
        else:
            flag = flags.get(name) or "--" + name.removeprefix("hub.").replace("_", "-")
        overrides[name] = Value(value, flag)
    return overrides


def _shown(settings: Any) -> dict[str, Any]:
    """The effective settings as JSON-ready data, secrets replaced by ``"***"``."""

    def convert(value: Any) -> Any:
        if attrs.has(type(value)):
            out = {}
            for field in attrs.fields(type(value)):
                if field.name in ("authenticate", "authorize"):
                    continue
                item = getattr(value, field.name)
                secret = field.name in ("key", "secret", "public_key") and item is not None
                out[field.name] = "***" if secret else convert(item)
            return out
        if isinstance(value, frozenset):
            return sorted(value)
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return str(value)

    return dict(convert(settings))


def run(args: argparse.Namespace) -> int:
    """Validate the settings and serve until a signal; see the module docstring for exit codes."""
    try:
        from ..serve import InvalidSettings, ServerApp, configure_logging, load_settings
        from ..serve import run as serve
    except ImportError as exc:
        print(f"trioconn serve: needs {exc.name}: pip install 'trioconn[serve]'", file=sys.stderr)
        return 1
    try:
        settings = load_settings(getattr(args, "config", None), _overrides(args))
        if getattr(args, "check", False):
            print(json.dumps(_shown(settings), indent=2))
            return 0
        app = ServerApp(settings)
    except InvalidSettings as exc:
        print(f"trioconn serve: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)

    import logging

    import trio

    logger = logging.getLogger("trioconn.serve")
    try:
        graceful = trio.run(serve, app)
    except OSError as exc:
        logger.error("cannot serve on %s:%d: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    logger.info("stopped")
    return 0 if graceful else 1

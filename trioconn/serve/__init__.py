"""``trioconn serve`` as a library (``pip install trioconn[serve]``): a standalone hub with an
HTTP publish API, a health check and Prometheus metrics on one port.

``load_settings`` reads a TOML file (and overrides); ``ServerApp`` is the ASGI app (a Starlette
app holding the hub); ``run`` serves it under hypercorn's trio worker with graceful shutdown on
SIGTERM. The command line is ``trioconn serve``; ``docs/operate.md`` is the reference::

    settings = trioconn.serve.load_settings("trioconn.toml")
    app = trioconn.serve.ServerApp(settings)
    trio.run(trioconn.serve.run, app)
"""

from __future__ import annotations

from ._app import ERROR_CODES as ERROR_CODES
from ._app import MAX_BATCH_EVENTS as MAX_BATCH_EVENTS
from ._app import ServerApp as ServerApp
from ._jwt import InvalidToken as InvalidToken
from ._jwt import JwtVerifier as JwtVerifier
from ._jwt import TokenIdentity as TokenIdentity
from ._jwt import topic_matches as topic_matches
from ._logging import JsonFormatter as JsonFormatter
from ._logging import configure_logging as configure_logging
from ._run import run as run
from ._settings import HUB_SETTINGS as HUB_SETTINGS
from ._settings import ApiSettings as ApiSettings
from ._settings import InvalidSettings as InvalidSettings
from ._settings import JwtSettings as JwtSettings
from ._settings import RedisSettings as RedisSettings
from ._settings import ServeSettings as ServeSettings
from ._settings import Value as Value
from ._settings import load_settings as load_settings

__all__ = [
    "ERROR_CODES",
    "HUB_SETTINGS",
    "MAX_BATCH_EVENTS",
    "ApiSettings",
    "InvalidSettings",
    "InvalidToken",
    "JsonFormatter",
    "JwtSettings",
    "JwtVerifier",
    "RedisSettings",
    "ServeSettings",
    "ServerApp",
    "TokenIdentity",
    "Value",
    "configure_logging",
    "load_settings",
    "run",
    "topic_matches",
]

"""``ServerApp``: the ASGI app of ``trioconn serve`` — a hub, an HTTP publish API, health, metrics.

Theory of operation
-------------------
One Starlette app answers on one port (``docs/operate.md`` has the reference):

- WebSocket requests to ``websocket_path``: the hub, through ``trioconn.asgi.HubApp``;
- ``POST /api/publish``, ``/api/state``, ``/api/end``: writes through the same hub, so they get
  the same offsets, history and broker as everything else; authorised by the API key or a JWT
  whose publish claim covers the topic;
- ``GET /health``: 200 while the hub runs and its broker reaches its store, else 503 with the
  reason (starting, shutting down, broker unreachable);
- ``GET /metrics``: ``trioconn.metrics.HubCollector`` and the API's request counter, in
  Prometheus text format;
- ``GET /trioconn.js`` and, with ``static``, the files of a directory, for browser pages.

The app runs on anyio, so it can be mounted in another app under asyncio too; ``trioconn
serve`` runs it under hypercorn's trio worker (``_run.py``). The hub runs inside the app's
lifespan. ``shutdown()`` is the graceful stop: health turns 503, every client is closed with
1001 after its queued frames (bounded), and then the server may stop (``wait_shutdown``).

Errors of the API are JSON, ``{"error": code, "message": text, "status": n}``; the codes are a
closed set (``ERROR_CODES``) so clients can branch on them.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import anyio
import attrs
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from .._core.exceptions import BrokerUnavailable, HubStopped, TooManyTopics, TopicEnded
from .._core.protocol import validate_topic
from .._frontends.asgi import HubApp, lifespan
from .._frontends.trio_wsproto import Hub
from .._server.broker import Broker
from ..browser import SCRIPT_PATH
from ..metrics import HubCollector
from ._jwt import InvalidToken, JwtVerifier
from ._settings import InvalidSettings, ServeSettings

__all__ = ["ERROR_CODES", "MAX_BATCH_EVENTS", "ApiError", "ServerApp"]

logger = logging.getLogger("trioconn.serve")

#: Most events one ``POST /api/publish`` may carry: each is one write to the broker, in order.
MAX_BATCH_EVENTS = 1000

#: Every ``error`` code the HTTP API answers with, and its status.
ERROR_CODES: Mapping[str, int] = {
    "invalid-json": 400,
    "invalid-body": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "api-disabled": 403,
    "not-found": 404,
    "method-not-allowed": 405,
    "topic-ended": 409,
    "wrong-kind": 409,
    "too-large": 413,
    "internal": 500,
    "broker-unavailable": 503,
    "too-many-topics": 503,
    "shutting-down": 503,
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ApiError(Exception):
    """An HTTP API request that fails with ``ERROR_CODES[code]``; ``extra`` goes into the body."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.status = ERROR_CODES[code]
        self.message = message
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {"error": self.code, "message": self.message, "status": self.status, **self.extra}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


class ServerApp:
    """The app ``trioconn serve`` runs: build it from ``ServeSettings`` and serve it with any ASGI
    server (``trioconn.serve.run`` uses hypercorn's trio worker), or mount it in your own app.

    Args:
        settings: what to run (``load_settings`` reads them from a file and flags).

    Attributes:
        hub: the hub; publish to it from your own code as well.
        registry: the Prometheus registry ``/metrics`` serves (the hub's collector and the API's
            request counter); register your own metrics in it too.
        broker: the hub's broker.

    Raises:
        InvalidSettings: ``settings.redis`` is given but coredis is not installed.
    """

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.jwt = JwtVerifier(settings.jwt) if settings.jwt is not None else None
        hub_config = settings.hub
        if self.jwt is not None:
            hub_config = attrs.evolve(
                hub_config, authenticate=self.jwt.authenticate, authorize=self.jwt.authorize
            )
        self.broker: Broker | None = None
        if settings.redis is not None:
            try:
                from ..redis import RedisBroker
            except ImportError:
                raise InvalidSettings("--redis needs coredis: pip install 'trioconn[redis]'") from None
            redis = settings.redis
            self.broker = RedisBroker(redis.url, prefix=redis.prefix, timeout=redis.timeout)
        self.hub = Hub(hub_config, broker=self.broker)
        self.registry = CollectorRegistry()
        self.registry.register(HubCollector(self.hub))
        self._requests = PromCounter(
            "trioconn_http_requests",
            "HTTP API requests (publish, state, end) by endpoint and response status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self._running = False
        self._stopping = False
        self._stopped: anyio.Event | None = None
        self.asgi = Starlette(
            routes=self.routes(),
            lifespan=self._lifespan,
            exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    def routes(self) -> list[BaseRoute]:
        """The app's routes, to put in your own Starlette app (then open ``lifespan()`` in its
        lifespan)."""
        routes: list[BaseRoute] = [
            WebSocketRoute(self.settings.websocket_path, HubApp(self.hub)),
            Route("/health", self._health, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/api/publish", self._publish, methods=["POST"]),
            Route("/api/state", self._state, methods=["POST"]),
            Route("/api/end", self._end, methods=["POST"]),
            Route("/trioconn.js", _script, methods=["GET", "HEAD"]),
        ]
        if self.settings.static is not None:
            routes.append(Mount("/", _HttpOnly(StaticFiles(directory=self.settings.static, html=True))))
        return routes

    # -- lifetime ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run the hub (and its broker) for the duration of the block; health is 200 inside."""
        self._stop_event()
        async with lifespan(self.hub):
            self._running = True
            try:
                yield
            finally:
                self._running = False

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async with self.lifespan():
            yield

    @property
    def stopping(self) -> bool:
        """True once ``shutdown()`` was called: health is 503 and writes are refused."""
        return self._stopping

    async def shutdown(self) -> None:
        """Stop gracefully: health turns 503 at once, every client is closed with 1001 after its
        queued frames (bounded by the hub's ``drain_timeout``, and in all by
        ``shutdown_timeout``), writes get 503; then ``wait_shutdown`` returns. Safe to call twice."""
        if self._stopping:
            await self.wait_shutdown()
            return
        self._stopping = True
        logger.info("shutting down: closing %d connection(s) with 1001", len(self.hub.sessions()))
        with anyio.move_on_after(self.settings.shutdown_timeout) as scope:
            await self.hub.aclose()
        if scope.cancelled_caught:
            logger.warning(
                "connections still closing after %gs; stopping anyway", self.settings.shutdown_timeout
            )
        self._stop_event().set()

    async def wait_shutdown(self) -> None:
        """Return once ``shutdown()`` has closed the connections: the ASGI server may stop now."""
        await self._stop_event().wait()

    def _stop_event(self) -> anyio.Event:
        if self._stopped is None:  # made in the event loop: anyio events belong to one
            self._stopped = anyio.Event()
        return self._stopped

    # -- health and metrics ------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the server should get traffic, and why (the body of ``GET /health``)."""
        kind = "memory" if self.broker is None else "redis"
        if self._stopping:
            return False, {"status": "stopping", "reason": "shutting down", "broker": kind}
        if not self._running:
            return False, {"status": "starting", "reason": "the hub is not running yet", "broker": kind}
        # Not hub.statistics(): a probe every second must not cost a snapshot of every connection.
        if self.broker is not None and not self.broker.connected:
            reason = f"broker unreachable: {self.broker!r}"
            return False, {"status": "unavailable", "reason": reason, "broker": kind}
        return True, {"status": "ok", "broker": kind, "connections": len(self.hub.sessions())}

    async def _health(self, request: Request) -> Response:
        ok, body = self.health()
        return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    # -- the HTTP API ------------------------------------------------------------------------------

    async def _publish(self, request: Request) -> Response:
        return await self._api(request, "publish")

    async def _state(self, request: Request) -> Response:
        return await self._api(request, "state")

    async def _end(self, request: Request) -> Response:
        return await self._api(request, "end")

    async def _api(self, request: Request, endpoint: str) -> Response:
        try:
            response: Response = await self._write(request, endpoint)
        except ApiError as exc:
            if exc.status >= 500:
                logger.warning("POST /api/%s answered %d: %s", endpoint, exc.status, exc.message)
            response = exc.response()
        self._requests.labels(endpoint, str(response.status_code)).inc()
        return response

    async def _write(self, request: Request, endpoint: str) -> Response:
        credentials = self._credentials(request)
        body = await self._read_body(request)
        hub = self.hub
        if endpoint == "publish":
            batch = "events" in body
            events = _events(body)
            self._authorize(credentials, [topic for topic, _ in events])
            if batch:
                offsets: list[int] = []
                for index, (topic, data) in enumerate(events):
                    offsets.append(await _call(hub.publish(topic, data), index=index, offsets=offsets))
                return JSONResponse({"offsets": offsets})
            topic, data = events[0]
            return JSONResponse({"topic": topic, "offset": await _call(hub.publish(topic, data))})
        if endpoint == "state":
            _fields(body, required=("topic", "value"))
            topic = _topic(body["topic"], "topic")
            self._authorize(credentials, [topic])
            return JSONResponse({"topic": topic, "offset": await _call(hub.set_state(topic, body["value"]))})
        _fields(body, required=("topic",))
        topic = _topic(body["topic"], "topic")
        self._authorize(credentials, [topic])
        return JSONResponse({"topic": topic, "offset": await _call(hub.end(topic))})

    def _credentials(self, request: Request) -> Any:
        """Check the bearer credential: the API key (None returned) or a verified JWT's identity."""
        key = self.settings.api.key
        if key is None and self.jwt is None:
            raise ApiError(
                "api-disabled",
                "publishing over HTTP is off: start the server with an API key (--api-key-file, "
                "$TRIOCONN_API_KEY) or JWT settings",
            )
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token:
            raise ApiError("unauthorized", "send Authorization: Bearer <API key or JWT>")
        if key is not None and hmac.compare_digest(token.encode(), key.encode()):
            return None
        if self.jwt is None:
            raise ApiError("unauthorized", "invalid API key")
        try:
            return self.jwt.verify(token)
        except InvalidToken as exc:
            prefix = "not the API key, and " if key is not None else ""
            raise ApiError("unauthorized", f"{prefix}{exc}") from None

    def _authorize(self, identity: Any, topics: list[str]) -> None:
        if identity is None:  # the API key may write everywhere
            return
        for topic in topics:
            if not identity.may("publish", topic):
                raise ApiError(
                    "forbidden",
                    f"the token of {identity.subject!r} may not publish to {topic!r} (claim "
                    f"{self.settings.jwt.publish_claim if self.settings.jwt else 'publish'!r})",
                    topic=topic,
                )

    async def _read_body(self, request: Request) -> dict[str, Any]:
        limit = self.settings.api.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError("too-large", f"the body is {declared} bytes; at most {limit} are taken")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError("too-large", f"the body is over {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ApiError("invalid-json", f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError("invalid-body", f"the body must be a JSON object, not {_json_type(body)}")
        outbox = self.hub.config.outbox_bytes
        if size > outbox:
            _check_sizes(body, outbox)
        return body


async def _call(write: Awaitable[int], **context: Any) -> int:
    """Await one hub write, turning its exceptions into API errors (``context`` goes in the body)."""
    try:
        return await write
    except TopicEnded as exc:
        raise ApiError("topic-ended", str(exc), **context) from None
    except TooManyTopics as exc:
        raise ApiError("too-many-topics", str(exc), **context) from None
    except BrokerUnavailable as exc:
        raise ApiError("broker-unavailable", str(exc), **context) from None
    except HubStopped:
        raise ApiError("shutting-down", "the server is shutting down", **context) from None
    except TypeError as exc:  # data nested too deep to be stored
        raise ApiError("invalid-body", f"field 'data' {exc}", **context) from None
    except ValueError as exc:  # the topic name was checked: a write of the other kind
        hint = "POST /api/publish writes stream topics, POST /api/state state topics"
        raise ApiError("wrong-kind", f"{exc} ({hint})", **context) from None


def _events(body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    if "events" not in body:
        _fields(body, required=("topic", "data"))
        return [(_topic(body["topic"], "topic"), body["data"])]
    _fields(body, required=("events",))
    events = body["events"]
    if not isinstance(events, list) or not events:
        raise ApiError("invalid-body", "field 'events' must be a non-empty list of {topic, data} objects")
    if len(events) > MAX_BATCH_EVENTS:
        raise ApiError("too-large", f"field 'events' has {len(events)} events; at most {MAX_BATCH_EVENTS}")
    result = []
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            raise ApiError(
                "invalid-body", f"{where} must be an object {{topic, data}}, not {_json_type(event)}"
            )
        _fields(event, required=("topic", "data"), where=where)
        result.append((_topic(event["topic"], f"{where}.topic"), event["data"]))
    return result


def _fields(body: Mapping[str, Any], *, required: tuple[str, ...], where: str = "the body") -> None:
    missing = [name for name in required if name not in body]
    if missing:
        hint = " (null is a valid value)" if set(missing) & {"data", "value"} else ""
        raise ApiError("invalid-body", f"{where} lacks field(s) {', '.join(map(repr, missing))}{hint}")
    unknown = sorted(set(body) - set(required))
    if unknown:
        raise ApiError(
            "invalid-body",
            f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(required)}",
        )


def _topic(value: Any, field: str) -> str:
    try:
        return validate_topic(value)
    except ValueError as exc:
        raise ApiError("invalid-body", f"field {field!r}: {exc}") from None


def _check_sizes(body: Mapping[str, Any], limit: int) -> None:
    """Refuse an event larger than a subscriber's whole memory budget: it would close every
    subscriber as a slow consumer."""
    items = body.get("events") if isinstance(body.get("events"), list) else [body]
    for index, item in enumerate(items or ()):
        if not isinstance(item, dict):
            continue
        for field in ("data", "value"):
            if field in item and len(json.dumps(item[field])) > limit:
                raise ApiError(
                    "too-large",
                    f"an event is larger than a subscriber's memory budget (outbox_bytes = {limit})",
                    index=index,
                )


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


async def _script(request: Request) -> Response:
    return FileResponse(SCRIPT_PATH, media_type="text/javascript")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code)
    if code is None:
        return JSONResponse(
            {"error": "http-error", "message": str(exc.detail), "status": exc.status_code},
            status_code=exc.status_code,
        )
    message = (
        f"no route {request.url.path}" if code == "not-found" else f"{request.method} is not allowed here"
    )
    response = ApiError(code, message).response()
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return ApiError("internal", "internal error").response()


class _HttpOnly:
    """An ASGI app for HTTP only: WebSocket requests to it are refused (403)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "no WebSocket endpoint here"})
            return
        await self.app(scope, receive, send)

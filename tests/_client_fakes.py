"""A small protocol-v1 server for client tests, reached through in-memory streams.

``MiniHub.transport`` is a ``trioconn`` client transport: each connection attempt makes a
``trio.testing.memory_stream_pair()``, serves the server half here and wraps the client half with
``trioconn.wrap_client_stream``. Each connection is handled by the next handler in
``hub.script`` (default: ``Session.serve``, a well-behaved server), so a test can script
rejections, immediate closes, frozen servers and so on, attempt by attempt.
"""

from __future__ import annotations

import functools
import itertools
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
import trio_websocket

from trioconn import RequestRefused, wrap_client_stream
from trioconn._core.protocol import (
    End,
    Error,
    Event,
    Join,
    Leave,
    Ping,
    Pong,
    PresenceMember,
    Publish,
    Published,
    Reply,
    Request,
    Reset,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    encode_batch,
    encode_event,
    parse_client_frame,
)

# The protocol frames are re-exported for the tests that script a server with them.
__all__ = [
    "End",
    "Error",
    "Event",
    "MiniHub",
    "Ping",
    "Publish",
    "Reply",
    "Request",
    "Session",
    "Subscribe",
    "Unsubscribe",
    "Welcome",
    "bounded",
]

Handler = Callable[["Session"], Awaitable[None]]

#: What a request handler of ``MiniHub.handlers`` returns to leave the request unanswered.
SWALLOW = object()


def bounded(test: Any) -> Any:
    """Fail a test that waits forever (in virtual time) instead of hanging the run."""

    @functools.wraps(test)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        with trio.fail_after(3600):
            await test(*args, **kwargs)

    return wrapper


class Topic:
    def __init__(self, name: str, epoch: str) -> None:
        self.name = name
        self.epoch = epoch
        self.offset = 0
        self.kind: str | None = None
        self.state: Any = None
        self.history: list[tuple[int, str]] = []
        self.ended = False


class Session:
    """The server side of one connection."""

    def __init__(self, hub: MiniHub, index: int, url: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.hub = hub
        self.index = index
        self.url = url
        self.headers = dict(headers)
        self.query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        self.request: trio_websocket.WebSocketRequest | None = None
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.subs: set[str] = set()
        self.received: list[Any] = []
        self.client_gone = trio.Event()
        self.subscribed = trio.Event()
        self.done = trio.Event()
        self.opened_at: float | None = None
        self._out_send, self._out_receive = trio.open_memory_channel[str | tuple[int, str]](1000)
        self.client_stream: Any = None
        self.server_stream: trio.abc.Stream | None = None

    # -- helpers for handlers and tests

    def send_nowait(self, frame: Any) -> None:
        self._out_send.send_nowait(frame if isinstance(frame, str) else frame.to_json())

    def close_nowait(self, code: int, reason: str = "") -> None:
        """Close after every queued frame has gone out."""
        self._out_send.send_nowait((code, reason))

    async def accept(self, *, welcome: bool = True) -> None:
        assert self.request is not None
        self.ws = await self.request.accept()
        self.opened_at = trio.current_time()
        if welcome:
            hub = self.hub
            await self.ws.send_message(
                Welcome(f"s{self.index}", hub.interval, hub.timeout, 1 << 20).to_json()
            )

    async def reject(self, status: int, body: bytes = b"") -> None:
        assert self.request is not None
        await self.request.reject(status, body=body)

    async def serve(self) -> None:
        """A well-behaved server: welcome, pings, answers, heartbeat timeout."""
        await self.accept()
        await self.run()

    async def run(self, *, ping: bool | None = None) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender)
            if self.hub.ping if ping is None else ping:
                nursery.start_soon(self._pinger)
            await self._reader()
            nursery.cancel_scope.cancel()

    # -- internals

    async def _sender(self) -> None:
        assert self.ws is not None
        try:
            async for item in self._out_receive:
                if isinstance(item, tuple):
                    await self.ws.aclose(*item)
                    return
                await self.ws.send_message(item)
        except trio_websocket.ConnectionClosed:
            pass

    async def _pinger(self) -> None:
        for ping_id in itertools.count(1):
            await trio.sleep(self.hub.interval)
            self.send_nowait(Ping(ping_id, rtt=0.025))

    async def _reader(self) -> None:
        assert self.ws is not None
        while True:
            with trio.move_on_after(self.hub.timeout) as scope:
                try:
                    message = await self.ws.get_message()
                except trio_websocket.ConnectionClosed:
                    self.client_gone.set()
                    return
            if scope.cancelled_caught:
                self.close_nowait(4000, "heartbeat timeout")
                await self.client_gone.wait()
                return
            frame = parse_client_frame(message)
            self.received.append(frame)
            self.handle(frame)

    def handle(self, frame: Any) -> None:
        hub = self.hub
        if isinstance(frame, Subscribe):
            self.send_nowait(hub.subscribe(self, frame))
            self.subscribed.set()
        elif isinstance(frame, Unsubscribe):
            self.subs.discard(frame.topic)
            self.send_nowait(Unsubscribed(frame.topic, frame.ref))
        elif isinstance(frame, Publish):
            if frame.topic in hub.forbidden:
                self.send_nowait(Error("forbidden", "not allowed", frame.ref, frame.topic))
            elif hub.swallow_publish:
                pass
            else:
                offset = hub.write(frame.topic, frame.data)
                self.send_nowait(Published(frame.topic, offset, frame.ref))
        elif isinstance(frame, Request):
            handler = hub.handlers.get(frame.topic)
            if handler is None:
                self.send_nowait(Error("no-handler", "no handler", frame.ref, frame.topic))
                return
            try:
                answer = handler(frame.data)
            except RequestRefused as exc:
                self.send_nowait(Error(exc.code, exc.message, frame.ref, frame.topic))
            else:
                if answer is not SWALLOW:
                    self.send_nowait(Reply(frame.ref, answer))
        elif isinstance(frame, Pong):
            pass

    async def main(self, server_stream: trio.abc.Stream, handler: Handler) -> None:
        self.server_stream = server_stream
        try:
            async with trio.open_nursery() as nursery:
                self.request = await trio_websocket.wrap_server_stream(nursery, server_stream)
                try:
                    await handler(self)
                except trio_websocket.ConnectionClosed:
                    self.client_gone.set()
                nursery.cancel_scope.cancel()
        finally:
            self.done.set()
            await server_stream.aclose()


class MiniHub:
    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        interval: float = 5.0,
        timeout: float = 10.0,
        history_size: int = 100,
        ping: bool = True,
    ) -> None:
        self.nursery = nursery
        self.interval = interval
        self.timeout = timeout
        self.history_size = history_size
        self.ping = ping
        self.topics: dict[str, Topic] = {}
        self.sessions: list[Session] = []
        self.script: list[Handler] = []
        self.forbidden: set[str] = set()
        self.swallow_publish = False
        #: request handlers by topic: data -> answer (``SWALLOW``: never answer), or raise
        #: ``RequestRefused`` for an ``error`` answer.
        self.handlers: dict[str, Callable[[Any], Any]] = {}
        #: presence, sent to every subscriber when on: topic → session → (info, since); the
        #: members are made by the test (``join``/``leave``), not by the subscriptions.
        self.presence = False
        self.members: dict[str, dict[str, tuple[Any, float]]] = {}
        self._epochs = itertools.count(1)
        self.attempt_times: list[float] = []

    # -- topics

    def topic(self, name: str) -> Topic:
        if name not in self.topics:
            self.topics[name] = Topic(name, f"epoch-{next(self._epochs)}")
        return self.topics[name]

    def _fan_out(self, name: str, text: str) -> None:
        for session in self.sessions:
            if name in session.subs and not session.done.is_set():
                session.send_nowait(text)

    def write(self, name: str, data: Any) -> int:
        topic = self.topic(name)
        topic.kind = topic.kind or "stream"
        topic.offset += 1
        text = encode_event(name, topic.offset, data)
        topic.history.append((topic.offset, text))
        del topic.history[: -self.history_size]
        self._fan_out(name, text)
        return topic.offset

    def set_state(self, name: str, value: Any) -> int:
        topic = self.topic(name)
        topic.kind = "state"
        topic.offset += 1
        topic.state = value
        self._fan_out(name, encode_event(name, topic.offset, value))
        return topic.offset

    def end(self, name: str) -> None:
        topic = self.topic(name)
        topic.ended = True
        self._fan_out(name, End(name, topic.offset).to_json())
        for session in self.sessions:
            session.subs.discard(name)

    def join(self, topic: str, session: str, info: Any, since: float) -> None:
        self.members.setdefault(topic, {})[session] = (info, since)
        if self.presence:
            self._fan_out(topic, Join(topic, info, session, since).to_json())

    def leave(self, topic: str, session: str) -> None:
        info, _ = self.members.get(topic, {}).pop(session)
        if self.presence:
            self._fan_out(topic, Leave(topic, info, session).to_json())

    def restart(self) -> None:
        """Forget everything, as a restarted process would: new epochs, no history."""
        for topic in self.topics.values():
            topic.epoch = f"epoch-{next(self._epochs)}"
            topic.offset = 0
            topic.history.clear()

    def subscribe(self, session: Session, frame: Subscribe) -> str:
        topic = self.topic(frame.topic)
        replay: list[str] | None = None
        if frame.epoch is not None and frame.epoch == topic.epoch:
            if topic.kind == "state":
                replay = []
            else:
                after = frame.offset or 0
                if after == topic.offset:
                    replay = []
                elif topic.history and topic.history[0][0] <= after + 1 and after < topic.offset:
                    replay = [text for offset, text in topic.history if offset > after]
        answer = Subscribed if replay is not None or frame.epoch is None else Reset
        if replay is None:
            last = frame.last or 0
            replay = [text for _, text in topic.history[-last:]] if last and topic.kind == "stream" else []
        frames = [
            answer(
                topic=frame.topic,
                epoch=topic.epoch,
                offset=topic.offset,
                kind=topic.kind,
                snapshot=topic.state if topic.kind == "state" else None,
                has_snapshot=topic.kind == "state",
                replayed=len(replay),
                ended=topic.ended,
                ref=frame.ref,
                presence=tuple(
                    PresenceMember(info, session, since)
                    for session, (info, since) in self.members.get(frame.topic, {}).items()
                )
                if self.presence
                else None,
            ).to_json(),
            *replay,
        ]
        if topic.ended:
            frames.append(End(frame.topic, topic.offset).to_json())
        else:
            session.subs.add(frame.topic)
        return encode_batch(frames)

    # -- connections

    def close_all(self, code: int, reason: str = "") -> None:
        for session in self.sessions:
            if session.ws is not None and not session.done.is_set():
                session.close_nowait(code, reason)

    @property
    def live(self) -> list[Session]:
        return [s for s in self.sessions if not s.done.is_set()]

    async def transport(
        self, nursery: trio.Nursery, url: str, headers: list[tuple[bytes, bytes]]
    ) -> trio_websocket.WebSocketConnection:
        self.attempt_times.append(trio.current_time())
        client_stream, server_stream = trio.testing.memory_stream_pair()
        session = Session(self, len(self.sessions), url, headers)
        session.client_stream = client_stream
        self.sessions.append(session)
        handler = self.script.pop(0) if self.script else Session.serve
        self.nursery.start_soon(session.main, server_stream, handler)
        nursery.start_soon(_close_on_cancel, client_stream)
        return await wrap_client_stream(nursery, client_stream, url, headers)


async def _close_on_cancel(stream: trio.abc.AsyncResource) -> None:
    try:
        await trio.sleep_forever()
    finally:
        await stream.aclose()


# -- scripted handlers


def reject(status: int) -> Handler:
    async def handler(session: Session) -> None:
        await session.reject(status, b"go away")

    return handler


def close_after_welcome(code: int, reason: str = "") -> Handler:
    async def handler(session: Session) -> None:
        await session.accept()
        session.close_nowait(code, reason)
        await session.run(ping=False)

    return handler


async def frozen(session: Session) -> None:
    """Accept, welcome, then never send anything again (and never time the client out)."""
    await session.accept()
    await trio.sleep_forever()


async def hang_handshake(session: Session) -> None:
    await trio.sleep_forever()


async def eof_in_handshake(session: Session) -> None:
    """Read the client's request, then close the socket without answering."""
    assert session.server_stream is not None
    await session.server_stream.aclose()


async def garbage_in_handshake(session: Session) -> None:
    """Answer the opening handshake with bytes that are not HTTP, then wait."""
    assert session.server_stream is not None
    await session.server_stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
    await trio.sleep_forever()


def welcome_text(session: Session, **heartbeat: Any) -> str:
    obj = json.loads(
        Welcome(f"s{session.index}", session.hub.interval, session.hub.timeout, 1 << 20).to_json()
    )
    obj["heartbeat"].update(heartbeat)
    return json.dumps(obj)


def stream_closed(session: Session) -> bool:
    """Whether the client closed its half of the in-memory stream."""
    return bool(session.client_stream.send_stream._outgoing._closed)


def token_sequence(*tokens: str) -> tuple[Callable[[], Awaitable[str]], list[str]]:
    """A token provider returning ``tokens`` in turn (the last one forever), and its calls."""
    handed: list[str] = []

    async def provide() -> str:
        handed.append(tokens[min(len(handed), len(tokens) - 1)])
        return handed[-1]

    return provide, handed

"""Load generator: N WebSocket clients that subscribe to one topic and check what they receive.

One generator for every server, in its own process, so that all servers face the same client
cost. It uses picows on uvloop (a Cython client, so the server rather than the client is the
bottleneck) and falls back to the websockets asyncio client when picows is not installed.

It understands the protocol v1 frames the servers send: ``welcome`` (ignored), ``ping`` (answered
with ``pong``), ``subscribed``, ``event`` and ``batch`` (a list of frames, in order), ``error``.
Every event's ``data`` carries ``ts`` (publish time on the shared monotonic clock) and ``seq``
(the server's per-topic publish counter, from 0), so each client checks that it got every event
exactly once and in order, and measures publish-to-receive latency.

Control: once all clients are subscribed it prints ``{"ready": ...}`` on stdout, then obeys JSON
commands on stdin, one per line, answering one JSON line each:

* ``{"cmd": "wait", "count": M, "timeout": T, "stall": S}``: wait until every subscribed client
  has M events (or T seconds pass, or nothing arrives for S seconds), then report ``stats``.
* ``{"cmd": "stats"}``: report now.
* ``{"cmd": "quit"}``: close every connection and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
from array import array
from typing import Any, ClassVar

from bench.common import cpu_seconds, emit, log, now, raise_nofile, rss_kib

try:
    import picows
except ImportError:  # pragma: no cover - depends on the environment
    picows = None

_loads = json.loads
_MAX_ERRORS_KEPT = 10


class Stats:
    """Counters shared by all clients; the hot path only touches plain attributes."""

    def __init__(self) -> None:
        self.latencies = array("d")
        self.first_recv = 0.0
        self.last_recv = 0.0
        self.messages = 0
        self.batches = 0
        self.events = 0
        self.pings = 0
        #: WebSocket protocol pings answered (websockets' keepalive), apart from trioconn's own
        self.protocol_pings = 0
        self.subscribed = 0
        self.failed = 0
        self.errors: list[Any] = []

    def error(self, what: Any) -> None:
        """Remember a protocol-level problem (only the first few are kept)."""
        if len(self.errors) < _MAX_ERRORS_KEPT:
            self.errors.append(what)


class Client:
    """Protocol logic of one connection, independent of the WebSocket library."""

    def __init__(self, stats: Stats, topic: str) -> None:
        self.stats = stats
        self.topic = topic
        self.is_subscribed = False
        self.sub_offset = 0
        self.prev_offset: int | None = None
        self.next_seq = 0
        self.skipped = 0  # events jumped over (missing, or arriving later out of order)
        self.gaps = 0  # times seq jumped forward
        self.late = 0  # seq lower than expected: duplicate or out of order
        self.offset_breaks = 0  # offset not previous + 1
        self.closed = False
        self.close_code: int | None = None

    def send_text(self, text: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def on_text(self, text: str) -> None:
        """Handle one server message (a frame or a batch of frames)."""
        t = now()
        stats = self.stats
        stats.messages += 1
        obj = _loads(text)
        kind = obj.get("type")
        if kind == "event":
            self.on_event(obj, t)
        elif kind == "batch":
            stats.batches += 1
            for frame in obj["frames"]:
                if frame.get("type") == "event":
                    self.on_event(frame, t)
                else:
                    self.on_control(frame)
        else:
            self.on_control(obj)

    def on_event(self, frame: dict[str, Any], t: float) -> None:
        """Check order and uniqueness of one event and record its latency."""
        stats = self.stats
        if not stats.events:
            stats.first_recv = t
        stats.events += 1
        stats.last_recv = t
        data = frame["data"]
        stats.latencies.append(t - data["ts"])
        seq = data["seq"]
        if seq == self.next_seq:
            self.next_seq = seq + 1
        elif seq > self.next_seq:
            self.gaps += 1
            self.skipped += seq - self.next_seq
            self.next_seq = seq + 1
        else:
            self.late += 1
        offset = frame["offset"]
        prev = self.prev_offset
        if (prev is None and offset <= self.sub_offset) or (prev is not None and offset != prev + 1):
            self.offset_breaks += 1
        self.prev_offset = offset
        if frame["topic"] != self.topic:
            stats.error({"unexpected-topic": frame["topic"]})

    def on_control(self, frame: dict[str, Any]) -> None:
        """Non-event frames: answer pings, note subscriptions, keep errors."""
        kind = frame.get("type")
        if kind == "ping":
            self.stats.pings += 1
            self.send_text(json.dumps({"type": "pong", "id": frame["id"]}))
        elif kind == "subscribed":
            if not self.is_subscribed:
                self.is_subscribed = True
                self.sub_offset = int(frame.get("offset") or 0)
                self.stats.subscribed += 1
        elif kind != "welcome":
            self.stats.error(frame)

    def subscribe_frame(self) -> str:
        """The one request every client sends."""
        return json.dumps({"type": "subscribe", "topic": self.topic})


if picows is not None:

    class PicowsClient(picows.WSListener, Client):  # type: ignore[misc]
        """A ``Client`` on a picows connection (callbacks run straight from the uvloop protocol)."""

        def __init__(self, stats: Stats, topic: str) -> None:
            picows.WSListener.__init__(self)
            Client.__init__(self, stats, topic)
            self.transport: Any = None
            self.parts: list[bytes] = []

        def send_text(self, text: str) -> None:
            self.transport.send(picows.WSMsgType.TEXT, text.encode())

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport
            self.send_text(self.subscribe_frame())

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind == picows.WSMsgType.TEXT and frame.fin:
                self.on_text(frame.get_payload_as_utf8_text())
            elif kind in (picows.WSMsgType.TEXT, picows.WSMsgType.CONTINUATION):
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    text = b"".join(self.parts).decode()
                    self.parts.clear()
                    self.on_text(text)
            elif kind == picows.WSMsgType.PING:  # counted, so idle CPU per round trip is measured
                self.stats.protocol_pings += 1
                transport.send_pong(frame.get_payload_as_bytes())
            elif kind == picows.WSMsgType.CLOSE:
                self.close_code = frame.get_close_code()
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            self.closed = True


class WebsocketsClient(Client):
    """A ``Client`` on a websockets asyncio connection (fallback when picows is missing)."""

    ws: Any = None
    pending: ClassVar[set[asyncio.Future[None]]] = set()  # keeps fire-and-forget sends alive

    def send_text(self, text: str) -> None:
        future = asyncio.ensure_future(self.ws.send(text))
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)

    def send_closing(self) -> None:
        """Start the closing handshake without waiting for it."""
        future = asyncio.ensure_future(self.ws.close())
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)

    async def run(self, url: str, connected: asyncio.Future[None]) -> None:
        """Connect, subscribe, then feed every message to ``on_text`` until the connection ends."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        try:
            async with connect(url, ping_interval=None, max_queue=None, open_timeout=30) as ws:
                self.ws = ws
                await ws.send(self.subscribe_frame())
                connected.set_result(None)
                async for message in ws:
                    self.on_text(str(message))
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None
        except Exception as exc:
            if not connected.done():
                connected.set_exception(exc)
        finally:
            self.closed = True


class LoadGenerator:
    """Opens the connections, then answers the runner's commands."""

    def __init__(self, url: str, conns: int, topic: str, concurrency: int, client: str) -> None:
        self.url, self.n, self.topic, self.concurrency = url, conns, topic, concurrency
        self.kind = client
        self.stats = Stats()
        self.clients: list[Client] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.cpu0 = 0.0

    async def _open_one(self, sem: asyncio.Semaphore) -> None:
        async with sem:
            for attempt in range(3):
                try:
                    client = await self._connect()
                except Exception as exc:
                    if attempt == 2:
                        self.stats.failed += 1
                        self.stats.error({"connect": repr(exc)})
                        return
                    await asyncio.sleep(0.1 * (attempt + 1))
                else:
                    self.clients.append(client)
                    return

    async def _connect(self) -> Client:
        if self.kind == "picows":
            _, listener = await picows.ws_connect(
                lambda: PicowsClient(self.stats, self.topic),
                self.url,
                websocket_handshake_timeout=30,
                enable_auto_pong=False,  # answered (and counted) in on_ws_frame
            )
            return listener  # type: ignore[no-any-return]
        client = WebsocketsClient(self.stats, self.topic)
        connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tasks.append(asyncio.create_task(client.run(self.url, connected)))
        await connected
        return client

    async def open_all(self, limit_s: float) -> dict[str, Any]:
        """Connect and subscribe every client; report how it went."""
        t0 = now()
        sem = asyncio.Semaphore(self.concurrency)
        await asyncio.gather(*(self._open_one(sem) for _ in range(self.n)))
        deadline = t0 + limit_s
        # Polling (here and below) keeps the per-event hot path free of wake-up bookkeeping.
        while self.stats.subscribed < len(self.clients) and now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        self.cpu0 = cpu_seconds()
        return {
            "ready": True,
            "client": self.kind,
            "connected": len(self.clients),
            "subscribed": self.stats.subscribed,
            "failed": self.stats.failed,
            "connect_s": now() - t0,
        }

    async def wait(self, count: int, limit_s: float, stall_s: float) -> None:
        """Wait until every subscribed client has ``count`` events, ``limit_s``, or a stall."""
        target = count * self.stats.subscribed
        deadline = now() + limit_s
        last_events, last_change = -1, now()
        while self.stats.events < target:
            t = now()
            if self.stats.events != last_events:
                last_events, last_change = self.stats.events, t
            elif t - last_change > stall_s or t > deadline:
                break
            await asyncio.sleep(0.005)
        # Give stray duplicates a moment to show up.
        await asyncio.sleep(0.05)

    def report(self, count: int | None) -> dict[str, Any]:
        """Counters, correctness check against ``count`` events per client, latency percentiles."""
        s = self.stats
        clients = self.clients
        late = sum(c.late for c in clients)
        gaps = sum(c.gaps for c in clients)
        offset_breaks = sum(c.offset_breaks for c in clients)
        missing = sum(c.skipped for c in clients)
        if count is not None:
            missing += sum(max(0, count - c.next_seq) for c in clients if c.is_subscribed)
        lat = sorted(s.latencies)

        def pct(p: float) -> float | None:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else None

        return {
            "connected": len(clients),
            "open": sum(not c.closed for c in clients),
            "subscribed": s.subscribed,
            "failed": s.failed,
            "messages": s.messages,
            "batches": s.batches,
            "events": s.events,
            "expected": None if count is None else count * s.subscribed,
            "missing": missing,
            "late_or_duplicate": late,
            "gaps": gaps,
            "offset_breaks": offset_breaks,
            "violations": missing + late + offset_breaks + len(s.errors),
            "errors": s.errors,
            "close_codes": sorted({c.close_code for c in clients if c.close_code is not None}),
            "pings": s.pings,
            "protocol_pings": s.protocol_pings,
            "first_recv": s.first_recv,
            "last_recv": s.last_recv,
            "lat_p50_ms": pct(0.50),
            "lat_p99_ms": pct(0.99),
            "lat_max_ms": lat[-1] * 1e3 if lat else None,
            "client_cpu_s": cpu_seconds() - self.cpu0,
            "client_rss_kib": rss_kib(),
        }

    async def close_all(self) -> None:
        """Close every connection politely, but never wait more than a few seconds."""
        for client in self.clients:
            if client.closed:
                continue
            if isinstance(client, WebsocketsClient):
                client.send_closing()
            else:
                transport = client.transport  # type: ignore[attr-defined]
                transport.send_close()
                transport.disconnect()
        deadline = now() + 5
        while any(not c.closed for c in self.clients) and now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        for task in self.tasks:
            task.cancel()

    async def serve_commands(self) -> None:
        """Obey JSON commands from stdin until ``quit`` or EOF."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if not line.strip():
                continue
            cmd = json.loads(line)
            kind = cmd.get("cmd")
            if kind == "wait":
                count = int(cmd["count"])
                await self.wait(count, float(cmd.get("timeout", 60)), float(cmd.get("stall", 5)))
                emit(self.report(count))
            elif kind == "stats":
                emit(self.report(cmd.get("count")))
            elif kind == "quit":
                break
            else:
                emit({"error": f"unknown command {kind!r}"})
        await self.close_all()
        emit({"bye": True})


async def main(args: argparse.Namespace) -> None:
    """Open the connections, announce readiness, then serve commands."""
    gen = LoadGenerator(args.url, args.conns, args.topic, args.concurrency, args.client)
    emit(await gen.open_all(args.connect_timeout))
    await gen.serve_commands()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the generator (the runner builds it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/")
    parser.add_argument("--conns", type=int, default=10)
    parser.add_argument("--topic", default="bench")
    parser.add_argument("--concurrency", type=int, default=64, help="connection attempts in flight")
    parser.add_argument("--connect-timeout", type=float, default=120)
    parser.add_argument("--client", choices=["auto", "picows", "websockets"], default="auto")
    args = parser.parse_args(argv)
    if not args.url.startswith(("ws://127.", "ws://localhost")):
        parser.error("the load generator only targets loopback addresses")
    if args.client == "auto":
        args.client = "picows" if picows is not None else "websockets"
    if args.client == "websockets" and importlib.util.find_spec("websockets") is None:
        parser.error("neither picows nor websockets is installed: pip install -r bench/requirements.txt")
    elif args.client == "picows" and picows is None:
        parser.error("picows is not installed")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    nofile = raise_nofile(arguments.conns + 1024)
    if nofile < arguments.conns + 64:
        log(f"loadgen: RLIMIT_NOFILE is {nofile}, too low for {arguments.conns} connections")
    if arguments.client == "picows":
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))

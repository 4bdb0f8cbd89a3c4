"""Reconnect-storm generator: N real trioconn clients that must survive a server restart.

Each client is ``trioconn.connect(url, backoff=Backoff(...))`` with one subscription to a stream
topic that the server publishes to at a fixed rate (``data.seq`` from 0). The first subscribe asks
for ``last=HISTORY`` so every client starts at seq 0, whenever it subscribed. Every client checks
that it gets every seq exactly once, in order, across the restart, and counts ``ResetItem``s
(resume lost: must be 0). A second task per client records the times of its state changes.

A client counts as **resumed** at the first event its consumer receives after the client went
back to ``open`` following the restart (the resumed subscription's replay, or the first live
event).

Control (JSON lines, as ``bench/loadgen.py``): once every client has its first event it prints
``{"ready": ...}``; then on stdin:

* ``{"cmd": "resumed", "after": T, "timeout": S}``: wait until every client has resumed after
  time T (shared monotonic clock), or S seconds -> resume and reconnect times.
* ``{"cmd": "wait", "count": M, "timeout": S}``: wait until every client has seq M-1 (or S
  seconds, or 10 s without progress) -> correctness counters.
* ``{"cmd": "quit"}``: close every client (1000) and exit.
"""

from __future__ import annotations

import argparse
import math
from functools import partial
from typing import Any

import trio

import trioconn
from bench.common import cpu_seconds, emit, log, now, raise_nofile, rss_kib
from bench.servers._trio_control import _lines

#: ``last=`` of the first subscribe: replay from seq 0 (the server's default ``history_size``).
HISTORY = 2000
CONNECTING_AT_ONCE = 64
_MAX_ERRORS_KEPT = 10


class Rec:
    """What one client saw."""

    def __init__(self) -> None:
        self.next_seq = 0
        self.events = 0
        self.missing = 0
        self.late = 0  # duplicate or out of order
        self.resets = 0
        self.first_event = 0.0
        self.last_event = 0.0
        self.opens: list[float] = []  # times the client entered OPEN
        self.reopened = False  # OPEN again, no event since
        self.resumes: list[float] = []  # first event after each reconnect
        self.attempts_first = 0  # attempts it needed to connect the first time
        self.failed: str | None = None


class Storm:
    def __init__(self, url: str, topic: str, n: int, backoff: trioconn.Backoff) -> None:
        self.url = url
        self.topic = topic
        self.recs = [Rec() for _ in range(n)]
        self.backoff = backoff
        self.errors: list[str] = []
        self.consume_scopes: list[trio.CancelScope] = []
        self.started = trio.Semaphore(CONNECTING_AT_ONCE)
        self.ready = 0
        self.failed_first = 0  # clients that failed for good before their first event
        self.all_ready = trio.Event()
        self.closed = 0
        self.all_closed = trio.Event()

    def _error(self, text: str) -> None:
        if len(self.errors) < _MAX_ERRORS_KEPT:
            self.errors.append(text)

    async def client(self, rec: Rec) -> None:
        """One client: connect, subscribe, check every item until told to stop."""
        await self.started.acquire()
        holding = True
        try:
            async with (
                trioconn.connect(self.url, backoff=self.backoff) as client,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(self.watch, client, rec)
                with trio.CancelScope() as scope:
                    self.consume_scopes.append(scope)
                    async with client.subscribe(self.topic, last=HISTORY) as sub:
                        async for item in sub:
                            if isinstance(item, trioconn.EventItem):
                                self.on_event(rec, item.data["seq"])
                                if holding:
                                    holding = False
                                    rec.attempts_first = client.statistics().attempts
                                    self.started.release()
                                    self.ready += 1
                                    if self.ready + self.failed_first == len(self.recs):
                                        self.all_ready.set()
                            elif isinstance(item, trioconn.ResetItem):
                                rec.resets += 1
                                self._error(f"reset: {item!r}"[:300])
                            else:
                                self._error(f"unexpected item: {item!r}"[:300])
                nursery.cancel_scope.cancel()
        except Exception as exc:  # a client that fails for good is a result, not a crash
            rec.failed = repr(exc)
            self._error(f"client failed: {exc!r}"[:300])
            if holding:
                self.failed_first += 1
                if self.ready + self.failed_first == len(self.recs):
                    self.all_ready.set()
        finally:
            if holding:
                self.started.release()
            self.closed += 1
            if self.closed == len(self.recs):
                self.all_closed.set()

    @staticmethod
    def on_event(rec: Rec, seq: int) -> None:
        t = now()
        if rec.reopened:
            rec.reopened = False
            rec.resumes.append(t)
        if not rec.events:
            rec.first_event = t
        rec.events += 1
        rec.last_event = t
        if seq == rec.next_seq:
            rec.next_seq = seq + 1
        elif seq > rec.next_seq:
            rec.missing += seq - rec.next_seq
            rec.next_seq = seq + 1
        else:
            rec.late += 1

    @staticmethod
    async def watch(client: trioconn.Client, rec: Rec) -> None:
        async for change in client.state_changes():
            if change.state is trioconn.ClientState.OPEN:
                rec.opens.append(now())
                rec.reopened = len(rec.opens) > 1

    def resumed_after(self, after: float) -> list[float | None]:
        """Per client: when it resumed after ``after`` (first event after a reconnect), or None."""
        return [next((t for t in rec.resumes if t > after), None) for rec in self.recs]

    def all_resumed(self, after: float) -> bool:
        return all(self.resumed_after(after))

    def all_have(self, count: int) -> bool:
        return all(r.next_seq >= count for r in self.recs)

    def report(self, count: int = 0) -> dict[str, Any]:
        recs = self.recs
        return {
            "short": sum(max(0, count - r.next_seq) for r in recs),
            "clients": len(recs),
            "events": sum(r.events for r in recs),
            "min_next_seq": min(r.next_seq for r in recs),
            "max_next_seq": max(r.next_seq for r in recs),
            "missing": sum(r.missing for r in recs),
            "late_or_duplicate": sum(r.late for r in recs),
            "resets": sum(r.resets for r in recs),
            "failed": sum(r.failed is not None for r in recs),
            "reconnects": sum(max(0, len(r.opens) - 1) for r in recs),
            "errors": self.errors,
            "client_cpu_s": cpu_seconds(),
            "rss_kib": rss_kib(),
        }

    async def wait_for(self, done: Any, seconds: float, stall: float = math.inf) -> None:
        """Poll ``done()`` every 50 ms for at most ``seconds`` (or ``stall`` s without events)."""
        deadline = trio.current_time() + seconds
        last_events, last_change = -1, trio.current_time()
        while not done() and trio.current_time() < deadline:
            events = sum(r.events for r in self.recs)
            if events != last_events:
                last_events, last_change = events, trio.current_time()
            elif trio.current_time() - last_change > stall:
                return
            await trio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--topic", default="storm")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--cap", type=float, default=30.0, help="backoff cap (s); base 0.5, factor 2")
    args = parser.parse_args()
    raise_nofile(args.clients + 1024)
    trio.run(run, args)


async def run(args: argparse.Namespace) -> None:
    backoff = trioconn.Backoff(cap=args.cap)
    storm = Storm(args.url, args.topic, args.clients, backoff)
    t0 = now()
    async with trio.open_nursery() as nursery:
        for rec in storm.recs:
            nursery.start_soon(storm.client, rec)
        with trio.move_on_after(180):
            await storm.all_ready.wait()
        emit(
            {
                "ready": storm.ready,
                "clients": args.clients,
                "connect_s": now() - t0,
                "retried_first_connect": sum(r.attempts_first > 1 for r in storm.recs),
                "rss_kib": rss_kib(),
                "client_cpu_s": cpu_seconds(),
            }
        )
        async for cmd in _lines(trio.lowlevel.FdStream(0)):
            kind = cmd.get("cmd")
            if kind == "resumed":
                after = float(cmd["after"])
                await storm.wait_for(partial(storm.all_resumed, after), float(cmd["timeout"]))
                resumed = storm.resumed_after(after)
                emit(
                    {
                        "resumed": [t - after for t in resumed if t is not None],
                        "not_resumed": sum(t is None for t in resumed),
                        "opens": [t - after for r in storm.recs for t in r.opens if t > after],
                    }
                )
            elif kind == "wait":
                count = int(cmd["count"])
                await storm.wait_for(partial(storm.all_have, count), float(cmd["timeout"]), stall=10)
                emit(storm.report(count))
            elif kind == "stats":
                emit(storm.report())
            elif kind == "quit":
                break
            else:
                emit({"error": f"unknown command {kind!r}"})
        # Leave every subscription loop: each client then closes with 1000 (bounded by 5 s).
        for scope in storm.consume_scopes:
            scope.cancel()
        with trio.move_on_after(10) as scope:
            await storm.all_closed.wait()
        if scope.cancelled_caught:
            log("stormgen: clients did not close within 10 s")
            nursery.cancel_scope.cancel()
    emit({"bye": True})


if __name__ == "__main__":
    main()

"""The server under test: a ``trioconn.Hub`` fed by ``hub.publish_nowait()``.

The Hub speaks full protocol v1 (welcome, heartbeat pings, batches); the load generator handles
all of that. Control commands on stdin are the same as for the baselines
(``bench/servers/_trio_control.py``), plus four for the reconnect storm (trioconn only: the
baselines have no resume protocol):

* ``{"cmd": "pubstart", "topic", "rate", "size", "seq"}`` -> start publishing ``rate`` events/s
  in the background (``data.seq`` from ``seq``), on a fixed schedule, until ``pubstop`` -> ``{"t"}``.
* ``{"cmd": "pubstop"}`` -> stop it -> ``{"published", "next_seq", "max_lag_ms"}``.
* ``{"cmd": "restart", "down"}`` -> cancel ``hub.serve`` (every client gets 1001), wait until it
  has returned, wait ``down`` s, serve again on the same port with the same ``Hub`` (topics,
  epochs and history stay) -> ``{"t_cancel", "t_stopped", "t_serving"}``.
* ``{"cmd": "accepted"}`` -> ``{"samples": [[t, accepted], ...]}``: ``Hub.statistics().accepted``
  sampled every 100 ms since the server started (the samples are then cleared).

Run: ``python -m bench.servers.trioconn_server --port 8765`` (controlled on stdin).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import trio

import trioconn
from bench.common import emit, make_data, now, raise_nofile
from bench.servers._trio_control import control_loop

SAMPLE_INTERVAL = 0.1


class Server:
    """One ``Hub`` served (and re-served) on a fixed port, with a background publisher."""

    def __init__(self, nursery: trio.Nursery, port: int) -> None:
        self.nursery = nursery
        self.port = port
        self.hub = trioconn.Hub()
        self.serve_scope: trio.CancelScope | None = None
        self.serve_done = trio.Event()
        self.pub_scope: trio.CancelScope | None = None
        self.pub_result: dict[str, Any] = {}
        self.pub_done = trio.Event()
        self.samples: list[list[float]] = []
        self.sample_scope = trio.CancelScope()

    async def start_serving(self) -> None:
        """Run ``hub.serve`` in a task of its own; return once it listens."""

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with trio.CancelScope() as scope:
                self.serve_scope = scope
                try:
                    await self.hub.serve("127.0.0.1", self.port, task_status=task_status)
                finally:
                    done.set()

        done = self.serve_done = trio.Event()
        await self.nursery.start(run)

    async def sample(self) -> None:
        """Record the hub's ``accepted`` counter every 100 ms while the publisher runs."""
        with self.sample_scope:
            while True:
                # statistics() also snapshots every session (a few ms at 2000 connections),
                # so read the counter it reports.
                self.samples.append([now(), self.hub._accepted])
                await trio.sleep(SAMPLE_INTERVAL)

    async def pubstart(self, cmd: dict[str, Any]) -> dict[str, Any]:
        topic, rate, size = cmd["topic"], float(cmd["rate"]), int(cmd.get("size", 100))
        self.pub_done = trio.Event()
        self.pub_result = {}

        async def run() -> None:
            t0 = trio.current_time()
            max_lag = 0.0
            seq = first = int(cmd.get("seq", 0))
            with trio.CancelScope() as scope:
                self.pub_scope = scope
                try:
                    while True:
                        due = t0 + (seq - first) / rate
                        await trio.sleep_until(due)
                        max_lag = max(max_lag, trio.current_time() - due)
                        self.hub.publish_nowait(topic, make_data(seq, size))
                        seq += 1
                finally:
                    self.pub_result = {"published": seq - first, "next_seq": seq, "max_lag_ms": max_lag * 1e3}
                    self.pub_done.set()

        self.nursery.start_soon(run)
        self.sample_scope = trio.CancelScope()
        self.nursery.start_soon(self.sample)
        return {"t": now()}

    async def pubstop(self, _cmd: dict[str, Any]) -> dict[str, Any]:
        if self.pub_scope is not None:
            self.pub_scope.cancel()
            self.sample_scope.cancel()
            await self.pub_done.wait()
        return self.pub_result

    async def restart(self, cmd: dict[str, Any]) -> dict[str, Any]:
        down = float(cmd.get("down", 1.0))
        assert self.serve_scope is not None
        t_cancel = now()
        self.serve_scope.cancel()
        await self.serve_done.wait()  # every connection closed (1001) and its task finished
        t_stopped = now()
        await trio.sleep(max(0.0, t_cancel + down - now()))
        await self.start_serving()
        return {"t_cancel": t_cancel, "t_stopped": t_stopped, "t_serving": now()}

    async def accepted(self, _cmd: dict[str, Any]) -> dict[str, Any]:
        samples, self.samples = self.samples, []
        return {"samples": samples}


async def main(port: int) -> None:
    """Serve on 127.0.0.1:``port`` and obey the runner's commands on stdin."""
    nofile = raise_nofile(65536)
    async with trio.open_nursery() as nursery:
        server = Server(nursery, port)
        # The broker runs for the whole process, so publishing goes on while ``serve`` is down.
        async with server.hub.running():
            await server.start_serving()
            nursery.start_soon(server.sample)
            emit({"ready": True, "port": port, "pid": os.getpid(), "nofile": nofile})
            extra = {
                "pubstart": server.pubstart,
                "pubstop": server.pubstop,
                "restart": server.restart,
                "accepted": server.accepted,
            }
            await control_loop(server.hub.publish_nowait, extra)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    trio.run(main, parser.parse_args().port)

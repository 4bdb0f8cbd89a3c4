"""The server under test: a ``trioconn.Hub`` fed by ``hub.publish_nowait()``.

The Hub speaks full protocol v1 (welcome, heartbeat pings, batches); the load generator handles
all of that. Control commands on stdin are the same as for the baselines
(``bench/servers/_trio_control.py``).

Run: ``python -m bench.servers.trioconn_server --port 8765`` (controlled on stdin).
"""

from __future__ import annotations

import argparse
import os

import trio

import trioconn
from bench.common import emit, raise_nofile
from bench.servers._trio_control import control_loop


async def main(port: int) -> None:
    """Serve on 127.0.0.1:``port`` and obey the runner's commands on stdin."""
    nofile = raise_nofile(65536)
    hub = trioconn.Hub()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve, "127.0.0.1", port)
        emit({"ready": True, "port": port, "pid": os.getpid(), "nofile": nofile})
        await control_loop(hub.publish_nowait)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    trio.run(main, parser.parse_args().port)

"""A hub process for the Redis tests: ``python -m tests.redis_hub REDIS_URL``.

Serves a Hub with a RedisBroker on 127.0.0.1, port 0, prints the bound port on one line, and
runs until its standard input closes (the test ends it) or it is killed.
"""

import logging
import sys

import trio

from trioconn import Backoff, Hub
from trioconn.redis import RedisBroker


async def main(url: str) -> None:
    hub = Hub(
        broker=RedisBroker(url, timeout=2, backoff=Backoff(base=0.05, cap=0.5), block=1),
        heartbeat_interval=5,
        heartbeat_timeout=15,
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        print(port, flush=True)
        # the test closes our stdin to stop us: a clean shutdown, no signals needed
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        await hub.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(main, sys.argv[1])

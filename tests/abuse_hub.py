"""A hub process for the socket-exhaustion test: ``python -m tests.abuse_hub NOFILE HANDSHAKE_TIMEOUT``.

Lowers its own soft ``RLIMIT_NOFILE`` to NOFILE, serves a Hub on 127.0.0.1 (port 0), prints the
bound port on one line, logs to stderr, and runs until its standard input closes.
"""

import logging
import resource
import sys

import trio

from trioconn import Hub


async def main(handshake_timeout: float) -> None:
    hub = Hub(handshake_timeout=handshake_timeout)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        print(port, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        print(dict(hub.statistics().disconnects), flush=True)
        await hub.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    nofile, timeout = int(sys.argv[1]), float(sys.argv[2])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("trioconn").setLevel(logging.WARNING)  # not one line per connection
    trio.run(main, timeout)

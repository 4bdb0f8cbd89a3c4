"""A hub process for the abuse tests: ``python -m tests.budget_hub SEND_TIMEOUT``.

Default settings but ``send_timeout``; topic ``logs`` holds 2000 events of ~230 B and state topic
``big`` a 60 KB value. Serves on 127.0.0.1 port 0, prints the port, and runs until its standard
input closes. Everything it logs goes to standard error, which the test reads for tracebacks.
"""

import logging
import sys

import trio

from trioconn import Hub


async def main(send_timeout: float) -> None:
    hub = Hub(send_timeout=send_timeout)
    for i in range(2000):
        hub.publish_nowait("logs", f"{i:06d} " + "x" * 170)
    hub.set_state_nowait("big", "v" * 60_000)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        print(port, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        stats = hub.statistics()
        print(dict(stats.disconnects), file=sys.stderr, flush=True)
        await hub.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(main, float(sys.argv[1]))

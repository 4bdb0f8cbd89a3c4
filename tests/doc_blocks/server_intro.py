"""docs/server.md, the opening lines: a hub served on a free port, then closed."""

import trio

import trioconn


async def main():
    # doc-block
    assert port > 0
    assert hub.statistics().connections == 0


trio.run(main)

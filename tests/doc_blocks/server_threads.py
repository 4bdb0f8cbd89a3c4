"""docs/server.md, "From worker threads": a job in a worker thread writes through the handle."""

import trio

import trioconn


async def main():
    hub = trioconn.Hub()
    async with hub.running():
        # doc-block
        topic = hub.statistics().topics["job/42"]
        assert topic.ended and topic.offset == 101


trio.run(main)

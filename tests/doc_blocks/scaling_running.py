"""docs/scaling.md: publishing from a trio process that does not serve, through Redis."""

import os

import trio

from trioconn import Hub
from trioconn.redis import RedisBroker, SyncPublisher

url = os.environ["DOC_REDIS_URL"]


async def main():
    # doc-block
    with SyncPublisher(url) as publisher:  # the write is in Redis: the next one comes after it
        assert publisher.publish("jobs/42/log", "next") == 2


trio.run(main)

"""A worker process without trio for the Redis tests: ``python -m tests.redis_publish URL TOPIC N``.

Publishes ``0 .. N-1`` to stream TOPIC and sets state ``TOPIC/state`` to N, with SyncPublisher,
then prints the last offset.
"""

import sys

from trioconn.redis import SyncPublisher


def main(url: str, topic: str, count: int) -> None:
    with SyncPublisher(url) as pub:
        offset = 0
        for i in range(count):
            offset = pub.publish(topic, {"i": i})
        pub.set_state(f"{topic}/state", count)
    print(offset, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

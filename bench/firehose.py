"""The Redis design before per-topic following, kept runnable for ``bench/scale.py`` to compare.

Every write also goes to one stream, the *firehose*, and every hub reads all of it with
``XREAD BLOCK`` and drops what it does not mirror: with K hubs Redis sends every write K times
and every hub decodes every write. ``FirehoseBroker`` is ``RedisBroker`` with that write script
and that reader; loading, resynchronising and the mirror are shared, so the comparison measures
the difference in what reaches a hub and nothing else. Bench only: it is neither Redis Cluster
safe (a write touches its topic's slot and the firehose's) nor tested under faults.
"""

from __future__ import annotations

from typing import Any, Final

from trioconn._server.topics import TopicKind
from trioconn.redis import RedisBroker
from trioconn.redis._scripts import END, LOAD, WRITE, end_args, parse_message, write_args, write_result

#: The stream every write goes to, under the default prefix.
FIREHOSE: Final = "trioconn:firehose"
#: how many entries the firehose keeps (as the old default)
FIREHOSE_SIZE: Final = 100_000


def firehose_script(script: str) -> str:
    """``WRITE``/``END`` appending to the firehose (KEYS[3], topic name in the last ARGV) instead
    of publishing on the topic's channel."""
    publish = script.split("\n")[-3]
    assert publish.startswith("redis.call(ARGV["), publish
    payload = publish[publish.index("KEYS[3], ") + len("KEYS[3], ") : -1]
    xadd = (
        f"redis.call('XADD', KEYS[3], 'MAXLEN', '~', {FIREHOSE_SIZE}, '*', 't', ARGV[#ARGV], 'm', {payload})"
    )
    return script.replace(publish, xadd)


FIREHOSE_WRITE: Final = firehose_script(WRITE)
FIREHOSE_END: Final = firehose_script(END)


def firehose_keys(broker_keys: Any, topic: str) -> list[str]:
    return [broker_keys.topic(topic), broker_keys.history(topic), FIREHOSE]


class FirehoseBroker(RedisBroker):
    """Every hub reads every write of every topic (one Redis server only)."""

    async def _connected_session(self, lost_at: float | None) -> None:
        client = self._new_client()
        async with client:
            self._scripts = {
                "write": client.register_script(FIREHOSE_WRITE),
                "end": client.register_script(FIREHOSE_END),
                "load": client.register_script(LOAD),
            }
            newest = await client.xrevrange(FIREHOSE, count=1)
            position = str(newest[0].identifier) if newest else "0-0"
            await self._resync(self._mirrored())
            self._connected, self._down = True, None
            assert self._up is not None
            self._up.set()
            while True:
                reply = await client.xread({FIREHOSE: position}, count=1000, block=int(self._block * 1000))
                for entry in (reply or {}).get(FIREHOSE, ()):
                    position = str(entry.identifier)
                    self.received += 1
                    fields = entry.field_values
                    name = str(fields["t"])
                    write = (name, *parse_message(str(fields["m"])))
                    if self._on_write(write) in ("gap", "epoch"):  # type: ignore[arg-type]
                        await self._resync([name])

    async def _join(self, topic: str) -> int:
        await self._wait_up()  # the firehose already carries every topic
        return self._session

    async def write(self, topic: str, kind: TopicKind, data: Any) -> int:
        args = write_args(
            topic, kind, data, self.registry.history_size, self._target, self.registry.encode_data
        )
        reply = await self._script("write", firehose_keys(self._keys, topic), [*args, topic])
        return write_result(topic, kind, reply)

    async def end(self, topic: str) -> int:
        args = end_args(self.registry.ended_retention, self._target)
        reply = await self._script("end", firehose_keys(self._keys, topic), [*args, topic])
        return int(reply[2])

"""``SyncPublisher``: publish into Redis-backed topics from code that does not run trio.

A Celery task, a cron job or any blocking worker writes with the very Lua scripts the hubs use
(``_scripts``), so offsets, epochs, history, state and ends follow the same rules and every
hub following the same Redis delivers the writes to its subscribers. Uses the ``redis`` package.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import redis
import redis.cluster
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._core.codec import JsonCodec, JsonDumps, check_hook
from .._core.exceptions import BrokerUnavailable
from .._core.protocol import validate_topic
from .._server.topics import TopicKind
from ._scripts import END, WRITE, Keys, end_args, parse_url, write_args, write_result

__all__ = ["SyncPublisher"]


class SyncPublisher:
    """Blocking publisher for worker processes; thread-safe (redis-py pools its connections).

    Use the same ``url``, ``prefix``, ``history_size`` and ``ended_retention`` as the hubs::

        with SyncPublisher("redis://127.0.0.1:6379/0") as pub:
            pub.set_state("jobs/42", {"pct": 50})
            pub.publish("jobs/42/log", "halfway")
            pub.end("jobs/42")

    Args:
        url: the Redis URL the hubs' ``RedisBroker`` uses (``redis+cluster://`` for a cluster).
        prefix: the key prefix the hubs use.
        history_size: events kept per stream topic (the hubs' ``history_size``).
        ended_retention: seconds an ended topic is kept (the hubs' ``ended_retention``).
        timeout: seconds to connect or to wait for an answer.
        json_dumps: encodes published data (``str`` or UTF-8 ``bytes``), as the hubs'
            ``json_dumps`` does; None: the standard library, strict. The text is checked as the
            protocol demands, and a hook that raises makes the call raise ``TypeError``.

    Every method raises ``BrokerUnavailable`` when Redis cannot be reached (nothing was written;
    after a timeout the outcome is unknown and the message says so), ``TopicEnded``,
    ``ValueError`` (bad name, wrong kind) or ``TypeError`` (data is not JSON) like ``Hub``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "trioconn",
        history_size: int = 2000,
        ended_retention: float = 300.0,
        timeout: float = 5.0,
        json_dumps: JsonDumps | None = None,
    ) -> None:
        check_hook("json_dumps", json_dumps)
        self._encode = JsonCodec(json_dumps).encode
        self._target = parse_url(url)
        self.url = url
        self._keys = Keys(prefix)
        self._history_size = history_size
        self._retention = ended_retention
        self._options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),  # a retried write could be stored twice
        }
        self._lock = threading.Lock()
        self._redis: redis.Redis | redis.cluster.RedisCluster | None = None
        self._scripts: dict[str, Any] = {}

    def _connect(self) -> dict[str, Any]:
        """The scripts, on a client made at first use: redis-py's cluster client asks the
        cluster for its layout when it is made, which must not happen at import time."""
        with self._lock:
            if self._redis is None:
                if self._target.cluster:
                    self._redis = redis.cluster.RedisCluster.from_url(self._target.url, **self._options)
                else:
                    self._redis = redis.Redis.from_url(self._target.url, **self._options)
                self._scripts = {
                    "write": self._redis.register_script(WRITE),
                    "end": self._redis.register_script(END),
                }
            return self._scripts

    def publish(self, topic: str, data: Any) -> int:
        """Append ``data`` to stream topic ``topic``; returns the event's offset."""
        return self._call_write(topic, "stream", data)

    def set_state(self, topic: str, value: Any) -> int:
        """Set state topic ``topic`` to ``value``; returns the write's offset."""
        return self._call_write(topic, "state", value)

    def end(self, topic: str) -> int:
        """End ``topic`` (idempotent); returns its final offset."""
        validate_topic(topic)
        args = end_args(self._retention, self._target)
        return int(self._run("end", topic, args)[2])

    def _call_write(self, topic: str, kind: TopicKind, data: Any) -> int:
        args = write_args(topic, kind, data, self._history_size, self._target, self._encode)
        return write_result(topic, kind, self._run("write", topic, args))

    def _run(self, script: str, topic: str, args: list[Any]) -> list[Any]:
        try:
            reply = self._connect()[script](keys=self._keys.write_keys(topic), args=args)
        except redis.exceptions.TimeoutError as exc:
            raise BrokerUnavailable(
                f"redis at {self.url} did not answer in time (the write may or may not have been stored)"
            ) from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis at {self.url} is unreachable: {exc}") from exc
        assert isinstance(reply, list)
        return reply

    def close(self) -> None:
        """Release the connections. Safe to call twice."""
        with self._lock:
            if isinstance(self._redis, redis.cluster.RedisCluster):
                # its close() leaves the nodes' pools connected (redis-py 8.1)
                self._redis.disconnect_connection_pools()  # type: ignore[no-untyped-call]
            if self._redis is not None:
                self._redis.close()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

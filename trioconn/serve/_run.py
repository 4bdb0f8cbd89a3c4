"""Running a ``ServerApp`` under hypercorn's trio worker, with graceful shutdown on a signal.

Theory of operation
-------------------
``run`` listens, reports the port, and serves until a signal (SIGTERM, SIGINT) arrives or the
app's ``shutdown()`` is called. Then, in order: health turns 503, the hub closes every client with
1001 after its queued frames (bounded by ``drain_timeout``, and everything by
``shutdown_timeout``), hypercorn stops accepting and lets requests in flight finish (within
what is left of ``shutdown_timeout``), and the app's lifespan ends the hub and its broker. A
second signal during all this stops at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .._server.groups import _single
from ._app import ServerApp

__all__ = ["hypercorn_config", "run"]

logger = logging.getLogger("trioconn.serve")


def hypercorn_config(app: ServerApp) -> Config:
    """hypercorn's settings for ``app``: its address, no access log (it would print the
    ``?token=`` of every WebSocket request), logs through ``logging``, WebSocket messages capped
    at the hub's ``max_frame_size`` before they are buffered."""
    settings = app.settings
    config = Config()
    host = settings.host
    config.bind = [f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.shutdown_timeout
    config.websocket_max_message_size = settings.hub.max_frame_size
    config.include_server_header = False
    return config


async def run(
    app: ServerApp,
    *,
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> bool:
    """Serve ``app`` until it has shut down; returns False if a second signal cut the shutdown short.

    Args:
        app: the app to serve.
        signals: the signals that start a graceful shutdown (a second one stops at once); ``()``
            to handle none (then call ``await app.shutdown()``, or cancel).
        task_status: reports the port listened on (``await nursery.start(run, app)``).

    Raises:
        OSError: the address cannot be listened on.
    """
    try:
        return await _run(app, signals, task_status)
    except BaseExceptionGroup as group:
        # hypercorn nests nurseries: a busy port arrives three groups deep. One exception is
        # raised as itself (``OSError``); several really happened together and stay a group.
        single: BaseException = group
        while isinstance(single, BaseExceptionGroup) and (inner := _single(single)) is not None:
            single = inner
        if single is group:
            raise
        raise single from None


async def _run(app: ServerApp, signals: Sequence[int], task_status: trio.TaskStatus[int]) -> bool:
    config = hypercorn_config(app)
    graceful = True
    async with trio.open_nursery() as nursery:

        async def watch(received: AsyncIterator[int] | None) -> None:
            nonlocal graceful
            if received is None:
                return
            async for signum in received:
                if not app.stopping:
                    logger.info("%s received: shutting down gracefully", signal.Signals(signum).name)
                    nursery.start_soon(app.shutdown)
                else:
                    logger.warning("%s received again: stopping now", signal.Signals(signum).name)
                    graceful = False
                    nursery.cancel_scope.cancel()

        async def server(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(
                cast(Any, app.asgi), config, shutdown_trigger=app.wait_shutdown, task_status=task_status
            )
            nursery.cancel_scope.cancel()  # the server is done: stop watching for signals

        with trio.open_signal_receiver(*signals) if signals else contextlib.nullcontext() as received:
            nursery.start_soon(watch, received)
            binds: list[str] = await nursery.start(server)
            port = int(binds[0].rsplit(":", 1)[1])
            base = binds[0].replace("0.0.0.0", "127.0.0.1")
            path = app.settings.websocket_path
            logger.info("serving %s (WebSocket %s%s)", base, base.replace("http", "ws", 1), path)
            task_status.started(port)
            await trio.sleep_forever()
    return graceful

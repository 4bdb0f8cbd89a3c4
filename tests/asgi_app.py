"""A FastAPI app with a hub mounted at ``/ws`` and HTTP routes that drive it, for tests/test_asgi_e2e.py.

Served by uvicorn or ``hypercorn --worker-class trio`` (``tests.asgi_app:app``). The control
routes do in the server process what a test of the standalone hub does directly:

- ``POST /control/publish?topic=T&count=N``: publish N events now (data 1..N)
- ``POST /control/stream?topic=T&count=N&interval=S``: the same, one every S seconds, in a task
  of the lifespan's task group; returns at once
- ``POST /control/close?code=C&reason=R``: ``hub.close`` every session; returns how many
- ``POST /control/end?topic=T``: end the topic
- ``GET /control/stats``: the hub's connection counts
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
from fastapi import FastAPI, HTTPException

import trioconn
import trioconn.asgi


def allow_all(identity: Any, topic: str, action: str) -> bool:
    return True


hub = trioconn.Hub(authorize=allow_all)
_tasks: list[anyio.abc.TaskGroup] = []


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with trioconn.asgi.lifespan(hub), anyio.create_task_group() as tasks:
        _tasks.append(tasks)
        try:
            yield
        finally:
            _tasks.remove(tasks)
            tasks.cancel_scope.cancel()


app = FastAPI(lifespan=lifespan)
app.mount("/ws", trioconn.asgi.HubApp(hub))


async def publish_numbered(target: trioconn.Hub, topic: str, count: int, interval: float) -> list[int]:
    """Publish events 1..count (``interval`` seconds apart): on a new topic, each one's offset."""
    offsets = []
    for number in range(1, count + 1):
        offsets.append(target.publish_nowait(topic, number))
        if interval:
            await anyio.sleep(interval)
    return offsets


@app.post("/control/publish")
async def publish(topic: str, count: int) -> dict[str, Any]:
    return {"offsets": await publish_numbered(hub, topic, count, 0)}


@app.post("/control/stream")
async def stream(topic: str, count: int, interval: float) -> dict[str, Any]:
    if not _tasks:
        raise HTTPException(503, "not running")
    _tasks[0].start_soon(publish_numbered, hub, topic, count, interval)
    return {}


@app.post("/control/close")
async def close(code: int, reason: str = "") -> dict[str, Any]:
    return {"closed": sum(hub.close(session, code, reason) for session in hub.sessions())}


@app.post("/control/end")
async def end(topic: str) -> dict[str, Any]:
    return {"offset": await hub.end(topic)}


@app.get("/control/stats")
async def stats() -> dict[str, Any]:
    statistics = hub.statistics()
    return {"connections": statistics.connections, "accepted": statistics.accepted}

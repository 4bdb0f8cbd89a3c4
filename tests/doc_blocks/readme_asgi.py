"""README.md, "A server in a few lines": the FastAPI line, with what it names defined around it."""

import asyncio
import contextlib

from fastapi import FastAPI
from starlette.routing import WebSocketRoute

import trioconn
import trioconn.asgi
from tests.doc_blocks._asgi import lifespan

hub = trioconn.Hub()


@contextlib.asynccontextmanager
async def app_lifespan(app):
    async with trioconn.asgi.lifespan(hub):
        yield


# doc-block


async def main():
    assert [route.path for route in app.routes if isinstance(route, WebSocketRoute)] == ["/ws"]
    async with lifespan(app):  # the hub runs while the app runs
        assert await hub.publish("log/x", "hello") == 1


asyncio.run(main())

"""docs/browser.md, "Install": the routes that serve trioconn.js, in a Starlette app, asked for it."""

import asyncio

from starlette.applications import Starlette

import trioconn
from tests.doc_blocks._asgi import request

hub = trioconn.Hub()

# doc-block


async def main():
    app = Starlette(routes=routes)
    status, headers, body = await request(app, "GET", "/trioconn.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript"), headers
    assert b"export class Client" in body


asyncio.run(main())

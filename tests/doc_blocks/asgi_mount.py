"""docs/asgi.md, "Mounting": the app, with the two hooks it names, started and asked over HTTP."""

import asyncio

from tests.doc_blocks._asgi import body_json, lifespan, request


def check_token(request):
    return request.token  # the identity: here, the token itself


def may_follow(identity, topic, action):
    return action == "subscribe"


# doc-block


async def main():
    async with lifespan(app):
        status, _, body = await request(app, "POST", "/jobs/42/progress", "pct=10")
        assert (status, body_json(body)) == (200, {"offset": 1})
        status, _, body = await request(app, "POST", "/jobs/42/progress", "pct=20")
        assert (status, body_json(body)) == (200, {"offset": 2})


asyncio.run(main())

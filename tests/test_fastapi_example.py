"""examples/fastapi_jobs.py, started the way its docstring says, under uvicorn and hypercorn (trio).

Each test runs the documented command (``uvicorn examples.fastapi_jobs:app``, ``hypercorn
examples.fastapi_jobs:app --worker-class trio``) in a subprocess on a socket bound here, talks
HTTP to it and follows a job over the WebSocket with ``trioconn.connect``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio

from trioconn import ClientState, ConnectionClosed, EventItem, ReconnectFailed, ServerError, connect

from ._asgi_server import SERVERS, AsgiServer, asgi_server

APP = "examples.fastapi_jobs:app"
STEPS = 20
SECRET = "a-secret-for-tests-only-32-bytes!"
ENV = {
    "TRIOCONN_DEMO_SECRET": SECRET,
    "TRIOCONN_DEMO_STEPS": str(STEPS),
    "TRIOCONN_DEMO_STEP_SECONDS": "0.02",
}

pytestmark = pytest.mark.parametrize("server", SERVERS)


def token_of(value: str) -> Any:
    async def provide() -> str:
        return value

    return provide


async def login(app: AsgiServer, user: str) -> str:
    status, body = await app.http("POST", "/login", json_body={"user": user})
    assert status == 200, body
    assert body["token_type"] == "bearer"
    return str(body["access_token"])


async def start_job(app: AsgiServer, token: str) -> dict[str, str]:
    request = {"url": "https://videos.example/a.mp4"}
    status, body = await app.http("POST", "/jobs", json_body=request, token=token)
    assert status == 200, body
    assert body["topic"] == f"jobs/{body['job']}"
    return dict(body)


def ws_url(app: AsgiServer) -> str:
    return f"ws://127.0.0.1:{app.port}/ws"


async def test_a_job_reports_every_step_once_in_order_and_ends(server: str, tmp_path: Path) -> None:
    async with asgi_server(server, APP, tmp_path, ready_path="/", env=ENV) as app:
        token = await login(app, "alice")
        job = await start_job(app, token)
        with trio.fail_after(15):
            async with connect(ws_url(app), token_provider=token_of(token)) as client:
                # last=STEPS: the steps made before this subscription are replayed, once each
                async with client.subscribe(job["topic"], last=STEPS) as sub:
                    items = [item async for item in sub]
                stats = client.statistics()
                assert client.state is ClientState.OPEN  # the topic ended, the connection did not
        status, info = await app.http("GET", f"/jobs/{job['job']}", token=token)
    # stopped with SIGTERM: a clean shutdown (the lifespan ran, the job threads are gone).
    # uvicorn re-raises the signal once it has shut down, so it exits "killed by SIGTERM".
    assert app.proc.returncode in (0, -signal.SIGTERM), app.output()
    assert "Application shutdown complete" in app.output() or server != "uvicorn"
    assert "Traceback" not in app.output(), app.output()
    assert all(isinstance(item, EventItem) for item in items), items
    events = [item for item in items if isinstance(item, EventItem)]
    assert [event.offset for event in events] == list(range(1, STEPS + 1))
    assert [event.data["step"] for event in events] == list(range(1, STEPS + 1))
    assert [event.data["status"] for event in events] == ["running"] * (STEPS - 1) + ["done"]
    assert events[-1].data["pct"] == 100
    assert (stats.attempts, stats.connects, stats.reconnects, stats.resets) == (1, 1, 0, 0)
    assert status == 200 and info["status"] == "done" and info["step"] == STEPS


async def test_bad_tokens_are_refused_and_other_users_jobs_are_forbidden(server: str, tmp_path: Path) -> None:
    now = int(time.time())
    expired = jwt.encode({"sub": "alice", "iat": now - 120, "exp": now - 60}, SECRET, algorithm="HS256")
    other_secret = "another-secret-32-bytes-long!!!!"
    forged = jwt.encode({"sub": "alice", "iat": now, "exp": now + 60}, other_secret, algorithm="HS256")
    async with asgi_server(server, APP, tmp_path, ready_path="/", env=ENV) as app:
        for bad in ("not-a-jwt", expired, forged):
            client = None
            with trio.fail_after(10), pytest.raises(ReconnectFailed) as failed:
                async with connect(ws_url(app), token_provider=token_of(bad)) as client:
                    await client.wait_state(ClientState.OPEN)
            # refuse_with="close": the upgrade is accepted, then closed with 4401, which the
            # client answers with one fresh token (the same bad one here), then gives up.
            cause = failed.value.cause
            assert isinstance(cause, ConnectionClosed) and cause.code == 4401, cause
            assert client is not None and client.statistics().attempts == 2  # one fresh-token retry
        status, _ = await app.http("POST", "/jobs", token=expired)
        assert status == 401

        alice, bob = await login(app, "alice"), await login(app, "bob")
        job = await start_job(app, alice)
        status, _ = await app.http("GET", f"/jobs/{job['job']}", token=bob)
        assert status == 404
        with trio.fail_after(10):
            async with connect(ws_url(app), token_provider=token_of(bob)) as client:
                with pytest.raises(ServerError) as refused:
                    async with client.subscribe(job["topic"]) as sub:
                        async for _ in sub:
                            pass
                assert refused.value.code == "forbidden"
                with pytest.raises(ServerError) as refused:
                    await client.publish(job["topic"], {"pct": 100})
                assert refused.value.code == "forbidden"
                # alice may follow her job, but not publish to it
            async with connect(ws_url(app), token_provider=token_of(alice)) as client:
                with pytest.raises(ServerError) as refused:
                    await client.publish(job["topic"], {"pct": 100})
                assert refused.value.code == "forbidden"
                async with client.subscribe(job["topic"], last=STEPS) as sub:
                    offsets = [item.offset async for item in sub]
                assert client.statistics().reconnects == 0
    assert offsets == list(range(1, STEPS + 1))

"""Close-mode refusals through real ASGI servers: uvicorn and ``hypercorn --worker-class trio``.

``tests/asgi_refusing_app.py`` runs in a subprocess; the Python client and an independent client
(``websockets``) connect over loopback. What the messages are is checked in ``test_asgi.py``;
here, that each server carries them to the client as an upgrade (101) followed by a close frame
with the code and reason, and that the Python client decides on them (4401: one retry with a
fresh token; 4403: fail at once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import websockets.exceptions
from websockets.trio.client import connect as ws_connect

from trioconn import ClientState, ConnectionClosed, ReconnectFailed, connect, tcp_transport

from ._asgi_server import SERVERS, asgi_server
from ._client_fakes import token_sequence

APP = "tests.asgi_refusing_app:app"


async def with_origin(nursery: trio.Nursery, url: str, headers: list[tuple[bytes, bytes]]) -> Any:
    return await tcp_transport(nursery, url, [*headers, (b"origin", b"https://evil.example")])


@pytest.mark.parametrize("server", SERVERS)
async def test_close_mode_refusals_reach_the_clients_as_close_codes(server: str, tmp_path: Path) -> None:
    async with asgi_server(server, APP, tmp_path, ready_path="/") as running:
        url = f"ws://127.0.0.1:{running.port}/"
        with trio.fail_after(20):
            # An independent client: the upgrade succeeds, then the close frame says why.
            async with ws_connect(url + "?token=nope", proxy=None, open_timeout=5, close_timeout=5) as ws:
                assert ws.response is not None and ws.response.status_code == 101
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "unauthorized")

            # 4401, then a fresh token that works: connected on the second attempt.
            provide, handed = token_sequence("expired", "good")
            async with connect(url, token_provider=provide) as client:
                await client.wait_state(ClientState.OPEN)
                reauthed = client.statistics()
            assert handed == ["expired", "good"]
            assert (reauthed.attempts, reauthed.connects) == (2, 1)

            # 4401 again after the fresh token: fails after exactly two attempts.
            provide, handed = token_sequence("bad")
            with pytest.raises(ReconnectFailed) as info:
                async with connect(url, token_provider=provide) as client:
                    await trio.sleep_forever()
            cause = info.value.cause
            assert type(cause) is ConnectionClosed and (cause.code, cause.reason) == (4401, "unauthorized")
            assert len(handed) == client.statistics().attempts == 2

            # A refused origin: 4403, one attempt, no retry.
            with pytest.raises(ReconnectFailed) as info:
                async with connect(url + "?token=good", transport=with_origin) as client:
                    await trio.sleep_forever()
            cause = info.value.cause
            assert type(cause) is ConnectionClosed and cause.code == 4403
            assert cause.reason == "origin https://evil.example is not allowed"
            assert client.statistics().attempts == 1

"""TLS end to end for the Python client, with certificates made by ``trustme`` (a private CA).

``connect(url, ssl_context=...)`` trusts the CA; the hub serves wss with ``Hub.serve(...,
ssl_context=...)`` and, through the ASGI front end, under uvicorn and hypercorn (``--certfile``).
A certificate that fails verification is final (``UntrustedCertificate``, one attempt): retrying
cannot fix it. Other TLS failures (a server that does not speak TLS) still reconnect.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from trioconn import (
    Backoff,
    ClientState,
    ConnectionBroken,
    EventItem,
    Hub,
    ReconnectFailed,
    UntrustedCertificate,
    connect,
    tcp_transport,
)

from ._asgi_server import SERVERS, Tls, asgi_server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def allow_all(identity: Any, topic: str, action: str) -> bool:
    return True


async def serve_tls(nursery: trio.Nursery, hub: Hub, context: ssl.SSLContext) -> int:
    port: int = await nursery.start(functools.partial(hub.serve, "127.0.0.1", 0, ssl_context=context))
    return port


async def test_wss_with_a_private_ca_subscribes_publishes_and_receives(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    hub = Hub(authorize=allow_all)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serve_tls(nursery, hub, server_context)
            url = f"wss://127.0.0.1:{port}/"
            async with (
                connect(url, ssl_context=client_context) as client,
                client.subscribe("jobs/1", last=10) as sub,
            ):
                await client.wait_state(ClientState.OPEN)
                hub.publish_nowait("jobs/1", {"pct": 50})
                assert await client.publish("jobs/1", {"pct": 100}) == 2
                items = [await sub.__anext__(), await sub.__anext__()]
            await hub.aclose()
    assert [(item.offset, item.data) for item in items if isinstance(item, EventItem)] == [
        (1, {"pct": 50}),
        (2, {"pct": 100}),
    ]


@pytest.mark.parametrize("trust", ["system CAs", "right CA, wrong host"])
async def test_a_certificate_that_fails_verification_fails_the_client_at_once(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, trust: str, tmp_path: Path
) -> None:
    hub = Hub()
    context = server_context
    if trust == "right CA, wrong host":
        # A certificate from the trusted CA, but for another name than the one connected to.
        other = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        other.issue_cert("example.org").configure_cert(context)
        trusting = ssl.create_default_context()
        other.configure_trust(trusting)
    else:
        trusting = ssl.create_default_context()  # what connect() uses by default
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serve_tls(nursery, hub, context)
            with pytest.raises(ReconnectFailed) as info:
                async with connect(
                    f"wss://127.0.0.1:{port}/", ssl_context=trusting, backoff=Backoff(base=0.01)
                ) as client:
                    await trio.sleep_forever()
            await hub.aclose()
    cause = info.value.cause
    assert isinstance(cause, UntrustedCertificate) and isinstance(cause, ConnectionBroken)
    assert isinstance(cause.__cause__, ssl.SSLCertVerificationError)
    assert str(cause).startswith("the server's TLS certificate is not trusted: ")
    assert "connection failed for good" in str(info.value)
    assert client.statistics().attempts == 1  # no retry: it would meet the same certificate


async def test_the_default_context_is_the_systems_so_a_private_ca_needs_ssl_context(
    server_context: ssl.SSLContext,
) -> None:
    hub = Hub()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serve_tls(nursery, hub, server_context)
            with pytest.raises(ReconnectFailed) as info:
                async with connect(f"wss://127.0.0.1:{port}/"):
                    await trio.sleep_forever()
            await hub.aclose()
    assert isinstance(info.value.cause, UntrustedCertificate)


async def test_other_tls_failures_still_reconnect(client_context: ssl.SSLContext) -> None:
    hub = Hub()  # plain ws: the TLS handshake fails, but not on a certificate
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            with pytest.raises(ReconnectFailed) as info:
                async with connect(
                    f"wss://127.0.0.1:{port}/",
                    ssl_context=client_context,
                    backoff=Backoff(base=0.01, cap=0.01, max_attempts=3),
                ) as client:
                    await trio.sleep_forever()
            await hub.aclose()
    cause = info.value.cause
    assert type(cause) is ConnectionBroken
    assert client.statistics().attempts == 3


async def test_ssl_context_is_checked_when_connect_is_called(client_context: ssl.SSLContext) -> None:
    with pytest.raises(TypeError, match=r"ssl_context must be an ssl\.SSLContext"):
        connect("wss://127.0.0.1:1/", ssl_context="insecure")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ssl_context is only used with wss://"):
        connect("ws://127.0.0.1:1/", ssl_context=client_context)
    with pytest.raises(ValueError, match=r"functools\.partial"):
        connect("wss://127.0.0.1:1/", ssl_context=client_context, transport=tcp_transport)
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match=r"ssl_context is only used with wss://"):
            await tcp_transport(nursery, "ws://127.0.0.1:1/", [], ssl_context=client_context)


def test_a_certificate_error_behind_a_transport_failure_is_translated_as_final() -> None:
    from trioconn._client.errors import translate

    bad = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    broken = trio.BrokenResourceError("TLS failed")
    broken.__cause__ = bad
    error = translate(broken, secret=None)
    assert isinstance(error, UntrustedCertificate) and error.__cause__ is bad
    assert "self-signed certificate" in str(error)
    other = trio.BrokenResourceError("TLS failed")
    other.__cause__ = ssl.SSLError(1, "wrong version number")
    assert type(translate(other, secret=None)) is ConnectionBroken
    assert type(translate(ValueError("a bug"), secret=None)) is ValueError  # bugs stay bugs


# -- through the ASGI front end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(
    ca: trustme.CA, client_context: ssl.SSLContext, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tls]:
    folder = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    yield Tls(certfile, keyfile, client_context)


@pytest.mark.parametrize("server", SERVERS)
async def test_wss_through_an_asgi_server_with_a_private_ca(
    server: str, tls_files: Tls, tmp_path: Path
) -> None:
    async with asgi_server(
        server, "tests.asgi_app:app", tmp_path, ready_path="/control/stats", tls=tls_files
    ) as s:
        url = f"wss://127.0.0.1:{s.port}/ws/"
        with trio.fail_after(20):
            # A transport of one's own gets the context through functools.partial.
            transport = functools.partial(tcp_transport, ssl_context=tls_files.client)
            async with connect(url, transport=transport) as client, client.subscribe("feed", last=10) as sub:
                await client.wait_state(ClientState.OPEN)
                status, _ = await s.http("POST", "/control/publish?topic=feed&count=3")
                assert status == 200
                offsets = [(await sub.__anext__()).offset for _ in range(3)]
    assert offsets == [1, 2, 3]

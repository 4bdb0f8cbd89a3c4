"""Fixtures for the browser tests: Debian's chromium driven by playwright, servers as subprocesses.

One browser for all of them and a fresh context (cookies, storage, permissions) per test.
Nothing is downloaded: playwright drives ``/usr/bin/chromium`` (``TRIOCONN_CHROMIUM`` to use
another), with the background services that would call the network switched off. Without
chromium or the ``playwright`` package the tests are skipped with the reason, unless
``TRIOCONN_REQUIRE_BROWSER=1`` (as CI sets), when they fail.

The TLS test's certificate is made with ``trustme`` before the browser starts, because chromium
is told to trust it at launch: ``--ignore-certificate-errors-spki-list`` takes the base64
SHA-256 of the certificate's public key (its SPKI), which chromium then accepts for that key
alone.

Screenshots go to ``.artifacts/browser/`` (``TRIOCONN_ARTIFACTS`` overrides ``.artifacts``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._procs import ROOT, Server

CHROMIUM = os.environ.get("TRIOCONN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # no name resolves: whatever a test or the browser asks for, nothing leaves 127.0.0.1
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def tls() -> dict[str, Any]:
    """A CA, and a certificate for 127.0.0.1 signed by it, written to a directory of their own."""
    import tempfile

    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    directory = Path(tempfile.mkdtemp(prefix="trioconn-tls-"))
    certfile, keyfile, cafile = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    spki = (
        x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    yield {
        "certfile": certfile,
        "keyfile": keyfile,
        "cafile": cafile,
        "spki": base64.b64encode(hashlib.sha256(spki).digest()).decode(),
    }
    shutil.rmtree(directory, ignore_errors=True)


# Package scope, not session: while playwright's sync API is active, its event loop counts as
# running in this thread, and asyncio.run() in the tests after this package would fail.
@pytest.fixture(scope="package")
def browser(tls: dict[str, Any]) -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("TRIOCONN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TRIOCONN_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={tls['spki']}"],
        )
        try:
            yield launched
        finally:
            launched.close()


class Console:
    """What a page printed and threw, for the failure report."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __str__(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page in a fresh browser context; its console is printed if the test fails."""
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    console = Console()
    page.on("console", lambda message: console.lines.append(f"console.{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.lines.append(f"pageerror: {error}"))
    page.console = console
    try:
        yield page
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed and console.lines:
            print(f"--- browser console\n{console}", file=sys.stderr)
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: ``$TRIOCONN_ARTIFACTS/browser`` (default ``.artifacts/browser``)."""
    base = Path(os.environ.get("TRIOCONN_ARTIFACTS") or ROOT / ".artifacts")
    directory = base / "browser"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """``start_server(*args, name=...)`` runs ``python *args``; whatever still runs is killed after."""
    started: list[Server] = []

    def start(*args: str, name: str, cwd: Path = ROOT) -> Server:
        server = Server(*args, name=name, cwd=cwd)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def hub_server(start_server: Callable[..., Server]) -> Server:
    """``tests/browser/hub_server.py`` with a fast heartbeat (0.3 s, timeout 0.9 s), for one test."""
    return start_server("-m", "tests.browser.hub_server", "--heartbeat", "0.3", "0.9", name="hub_server")

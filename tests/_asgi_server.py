"""Run an ASGI app under uvicorn or ``hypercorn --worker-class trio`` in a subprocess.

The listening socket is bound here (127.0.0.1, port 0) and passed to the server by file
descriptor (``uvicorn --fd N``, ``hypercorn --bind fd://N``), so the port is known before the
server starts and no other process can take it in between. Readiness is an HTTP answer on a
given path, polled within a deadline; the server is stopped with SIGTERM by PID (killed if it
takes over 10 s) and waited for. With ``tls`` the server speaks HTTPS/WSS with the given
certificate files, and the test's own requests trust the given client context.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("uvicorn", "hypercorn-trio")
READY_TIMEOUT = 20.0


class Tls:
    """What a server needs to speak TLS (``certfile``, ``keyfile``) and what trusts it (``client``)."""

    def __init__(self, certfile: Path, keyfile: Path, client: ssl.SSLContext) -> None:
        self.certfile = certfile
        self.keyfile = keyfile
        self.client = client


def command(server: str, app: str, fd: int, tls: Tls | None = None) -> list[str]:
    """The documented command line for ``app`` (``module:attribute``), serving socket ``fd``."""
    if server == "uvicorn":
        line = [sys.executable, "-m", "uvicorn", app, "--fd", str(fd)]
        if tls is not None:
            line += ["--ssl-certfile", str(tls.certfile), "--ssl-keyfile", str(tls.keyfile)]
        return line
    if server == "hypercorn-trio":
        line = [sys.executable, "-m", "hypercorn", app, "--worker-class", "trio", "--bind", f"fd://{fd}"]
        if tls is not None:
            line += ["--certfile", str(tls.certfile), "--keyfile", str(tls.keyfile)]
        return line
    raise ValueError(server)


def _request(
    url: str, method: str, body: bytes | None, headers: dict[str, str], context: ssl.SSLContext | None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode("utf-8", "replace")


class AsgiServer:
    def __init__(self, server: str, port: int, proc: trio.Process, log: Path, tls: Tls | None = None) -> None:
        self.server = server
        self.port = port
        self.proc = proc
        self.log = log
        self.tls = tls

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def http(
        self, method: str, path: str, *, json_body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """One HTTP request (in a worker thread); returns the status and the decoded JSON body."""
        headers = {}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["content-type"] = "application/json"
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        context = self.tls.client if self.tls is not None else None
        return await trio.to_thread.run_sync(_request, self.base + path, method, body, headers, context)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def _wait_ready(server: AsgiServer, path: str) -> None:
    with trio.fail_after(READY_TIMEOUT):
        while True:
            if server.proc.poll() is not None:
                code = server.proc.returncode
                raise AssertionError(f"{server.server} exited with {code}\n{server.output()}")
            try:
                await server.http("GET", path)
                return
            except OSError:
                await trio.sleep(0.05)


@asynccontextmanager
async def asgi_server(
    server: str,
    app: str,
    log_dir: Path,
    *,
    ready_path: str,
    env: dict[str, str] | None = None,
    tls: Tls | None = None,
) -> AsyncIterator[AsgiServer]:
    """Serve ``app`` with ``server`` (one of ``SERVERS``) from the repository root."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    log = log_dir / f"{server}.log"
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        with open(log, "wb") as out:  # noqa: ASYNC230 (a local file, before the server starts)
            proc = await trio.lowlevel.open_process(
                command(server, app, fd, tls),
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    finally:
        listener.close()  # the server holds its own copy
    running = AsgiServer(server, port, proc, log, tls)
    ok = False
    try:
        await _wait_ready(running, ready_path)
        yield running
        ok = True
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(10):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        if not ok:
            print(f"--- {server} output\n{running.output()}")

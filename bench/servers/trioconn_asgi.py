"""The server under test, served through the ASGI front end: ``trioconn.asgi.HubApp`` on an ASGI server.

The same ``trioconn.Hub()`` (default settings) and the same ``hub.publish_nowait(topic, data)``
as ``trioconn_server.py``, so the load generator, the scenarios and the correctness checks are
the same; only the way frames reach the socket differs. ``Hub.serve`` builds each frame once and
writes it straight to every subscriber's socket; here every frame goes through the ASGI server's
``send`` (one ``websocket.send`` message per frame or batch per subscriber), and the server does
the WebSocket framing.

Two ASGI servers (``--server``):

* ``uvicorn`` (default): uvicorn's defaults, i.e. the uvloop event loop and, with ``websockets``
  installed, its ``websockets-sansio`` WebSocket implementation; uvicorn's own protocol-level
  pings every 20 s stay on. The hub core runs on anyio over asyncio.
* ``hypercorn-trio``: hypercorn with the trio worker (``hypercorn.trio.serve``), wsproto
  framing; the hub core runs on anyio over trio.

The benchmark's control tasks run inside the ASGI lifespan: a small wrapper app opens
``trioconn.asgi.lifespan(hub)`` and a task group holding the stdin control loop, and passes
every other scope to ``HubApp``. The control commands are those of the other servers
(``bench/servers/_commands.py``, on anyio): ``usage``, ``burst``, ``rate``, ``quit``. The
reconnect-storm commands are not implemented (restarting an ASGI server in-process is not what
the storm measures).

Run: ``python -m bench.servers.trioconn_asgi --port 8765 [--server hypercorn-trio]``
(controlled on stdin).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import anyio
import sniffio

import trioconn
import trioconn.asgi
from bench.common import emit, log, raise_nofile
from bench.servers._commands import Commands

ASGI_SERVERS = ("uvicorn", "hypercorn-trio")
#: The listening socket's backlog, as for the other servers (websockets: 4096).
BACKLOG = 4096
#: How long the server may take to listen after its lifespan started (the runner waits 30 s).
LISTEN_TIMEOUT = 25.0


async def _read_line() -> str:
    """One line of stdin, read in a worker thread (anyio has no portable pipe stream)."""
    return await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


async def _wait_listening(port: int) -> None:
    """Return once 127.0.0.1:``port`` accepts connections (the ASGI server binds after startup)."""
    with anyio.fail_after(LISTEN_TIMEOUT):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.02)
            else:
                await stream.aclose()
                return


class Control:
    """The runner's commands (``_commands.py``), once the server listens."""

    def __init__(self, hub: trioconn.Hub, port: int, stop: Callable[[], None]) -> None:
        self.hub = hub
        self.port = port
        self.stop = stop
        self.commands = Commands(hub.publish_nowait)

    async def run(self) -> None:
        """Announce readiness once the server listens, then obey stdin until ``quit`` or EOF."""
        await _wait_listening(self.port)
        library = sniffio.current_async_library()
        if library == "asyncio":
            library += f" ({type(asyncio.get_running_loop()).__module__})"
        log(f"hub core on {library}")
        emit({"ready": True, "port": self.port, "pid": os.getpid(), "nofile": raise_nofile(65536)})
        try:
            while line := await _read_line():
                if not line.strip():
                    continue
                answer = await self.command(json.loads(line))
                if answer is None:
                    emit({"bye": True})
                    return
                emit(answer)
        finally:
            self.stop()

    async def command(self, cmd: dict[str, Any]) -> dict[str, Any] | None:
        """Run one command; ``None`` means quit."""
        return await self.commands.run(cmd)


class BenchApp:
    """ASGI app: its lifespan runs the hub and the control loop; every other scope goes to ``HubApp``."""

    def __init__(self, hub: trioconn.Hub, control: Control) -> None:
        self.hub_app = trioconn.asgi.HubApp(hub)
        self.hub = hub
        self.control = control

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.hub_app(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            async with trioconn.asgi.lifespan(self.hub), anyio.create_task_group() as tasks:
                tasks.start_soon(self.control.run)
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                tasks.cancel_scope.cancel()
        except Exception as exc:
            log(f"lifespan failed: {exc!r}")
            await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})


def run_uvicorn(port: int) -> None:
    """uvicorn with its defaults (uvloop; websockets-sansio when websockets is installed)."""
    import uvicorn

    hub = trioconn.Hub()
    server: uvicorn.Server

    def stop() -> None:
        server.should_exit = True

    app = BenchApp(hub, Control(hub, port, stop))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        backlog=BACKLOG,
        log_level="warning",
        access_log=False,
    )
    config.load()
    ws = config.ws_protocol_class
    log(f"uvicorn {uvicorn.__version__}: loop {config.loop}, ws {config.ws} -> {getattr(ws, '__name__', ws)}")
    server = uvicorn.Server(config)
    server.run()


def run_hypercorn_trio(port: int) -> None:
    """hypercorn's trio worker (wsproto framing), in this process."""
    import hypercorn.trio
    import trio
    from hypercorn.config import Config

    async def main() -> None:
        stopped = trio.Event()
        hub = trioconn.Hub()
        app = BenchApp(hub, Control(hub, port, stopped.set))
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.backlog = BACKLOG
        config.accesslog = None
        config.loglevel = "WARNING"
        await hypercorn.trio.serve(app, config, shutdown_trigger=stopped.wait)

    trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", choices=ASGI_SERVERS, default="uvicorn")
    args = parser.parse_args()
    raise_nofile(65536)
    if args.server == "uvicorn":
        run_uvicorn(args.port)
    else:
        run_hypercorn_trio(args.port)


if __name__ == "__main__":
    main()

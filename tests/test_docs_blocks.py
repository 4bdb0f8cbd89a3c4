"""Every ```python block in README.md and docs/*.md runs, so the docs cannot drift from the code.

A block runs as a script in a subprocess (bounded in time) unless an HTML comment on the line
right before it says otherwise (``<!-- doc-test: KIND ARGS -->``):

- ``server NAME PORT``: a server that ends by itself. It is started, and once it accepts
  connections on PORT every ``client NAME`` block (in any file) runs against it, all at once;
  then each client and the server must exit 0.
- ``client NAME``: a client of the server block NAME (see above).
- ``serve PORT``: a server that runs until stopped: it is started, must accept connections on
  PORT and print a line once it is ready (what it does before it serves is done), and is then
  stopped with SIGINT (Ctrl-C), which must end it with ``KeyboardInterrupt`` and no other error.
- ``fragment FILE``: a fragment; FILE (under ``tests/doc_blocks/``) is a program with a line
  ``# doc-block`` (or ``pass  # doc-block``, where Python needs a statement) that the block
  replaces, indented as that line; the result runs as a script.
- ``pytest``: the block is a test module; pytest runs it (``trio_mode``) and it must pass.
- ``skip (REASON)``: not run. Skips must be rare: at most ``MAX_SKIPS``, each with its reason.

``redis`` after any of these starts a redis-server of the test's own for the block (skipped
without ``redis-server`` on PATH, unless ``TRIOCONN_REQUIRE_REDIS=1``): the block's
``redis://127.0.0.1:6379/0`` is replaced by its URL, which is also in ``DOC_REDIS_URL``.

What the harness changes in a block's text, and only that: a server's PORT becomes a free port
(in its clients too, since several test runs share a machine), ``0.0.0.0`` becomes
``127.0.0.1`` (tests listen on loopback only), and the Redis URL as above.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMPLETIONS = ROOT / "tests" / "doc_blocks"
MAX_SKIPS = 3
TIMEOUT = 60.0
REDIS_SERVER = shutil.which("redis-server")
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!-- doc-test: (.*?) -->\n(?:\n)?\Z")
_KINDS = {"script", "server", "client", "serve", "fragment", "pytest", "skip"}


@dataclass
class Block:
    path: Path
    line: int
    code: str
    kind: str
    args: list[str]
    redis: bool = False

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        marker = _MARKER.search(text, 0, match.start())
        words = marker.group(1).split() if marker else ["script"]
        kind, args = words[0], words[1:]
        redis = kind != "skip" and "redis" in args
        args = [a for a in args if a != "redis"] if redis else args
        blocks.append(Block(path, line, match.group(1), kind, args, redis))
    return blocks


BLOCKS = [block for path in DOCS for block in parse(path)]
SERVERS = {block.args[0]: block for block in BLOCKS if block.kind == "server"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env(redis_url: str | None) -> dict[str, str]:
    variables = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    if redis_url is not None:
        variables["DOC_REDIS_URL"] = redis_url
    return variables


def prepared(code: str, *, port: tuple[str, int] | None = None, redis_url: str | None = None) -> str:
    code = code.replace("0.0.0.0", "127.0.0.1")
    if port is not None:
        assert port[0] in code, f"the block does not use port {port[0]}"
        code = code.replace(port[0], str(port[1]))
    if redis_url is not None:
        code = code.replace(DEFAULT_REDIS, redis_url)
    return code


def start(code: str, tmp: Path, name: str, redis_url: str | None) -> subprocess.Popen[str]:
    script = tmp / f"{name}.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env(redis_url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], what: str, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what} did not end within {timeout:g} s\n{out}\n{err}", pytrace=False)
    return proc.returncode, out, err


def run_ok(code: str, tmp: Path, what: str, redis_url: str | None = None) -> str:
    returncode, out, err = finish(start(code, tmp, "block", redis_url), what)
    assert returncode == 0, f"{what} failed (exit {returncode}):\n{out}\n{err}"
    return out


def wait_listening(proc: subprocess.Popen[str], port: int, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:  # a condition with a deadline: the server accepts a connection
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"{what} exited before listening (exit {proc.returncode}):\n{out}\n{err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{what} did not listen on port {port} within {TIMEOUT:g} s")
            time.sleep(0.05)


def wait_ready_line(proc: subprocess.Popen[str], what: str) -> str:
    """The first line the server prints, within ``TIMEOUT``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what} printed no line to say it is ready within {TIMEOUT:g} s:\n{out}\n{err}")
    return line


@contextmanager
def redis_for(block: Block, tmp: Path) -> Iterator[str | None]:
    if not block.redis:
        yield None
        return
    if REDIS_SERVER is None:
        reason = f"{block.where} needs redis-server on PATH (set TRIOCONN_REQUIRE_REDIS=1 to fail instead)"
        if os.environ.get("TRIOCONN_REQUIRE_REDIS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # the server answers PING
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------ the rules


def test_every_block_has_a_known_kind_and_skips_are_rare() -> None:
    assert len(BLOCKS) >= 10, "the docs lost their examples?"
    for block in BLOCKS:
        assert block.kind in _KINDS, f"{block.where}: unknown doc-test kind {block.kind!r}"
        if block.kind == "skip":
            assert re.fullmatch(r"\(.+\)", " ".join(block.args)), f"{block.where}: a skip gives its reason"
        if block.kind == "fragment":
            assert len(block.args) == 1 and (COMPLETIONS / block.args[0]).is_file(), block.where
            assert "# doc-block" in (COMPLETIONS / block.args[0]).read_text(), block.where
        if block.kind == "client":
            assert block.args[0] in SERVERS, f"{block.where}: no server block named {block.args[0]!r}"
        if block.kind in ("server", "serve"):
            port = block.args[-1]
            assert port.isdigit() and port in block.code, f"{block.where}: the port it listens on"
    skips = [f"{b.where} {' '.join(b.args)}" for b in BLOCKS if b.kind == "skip"]
    assert len(skips) <= MAX_SKIPS, f"{len(skips)} doc blocks are skipped (at most {MAX_SKIPS}): {skips}"


def test_every_server_has_a_client() -> None:
    for name in SERVERS:
        assert any(b.kind == "client" and b.args == [name] for b in BLOCKS), name


# ------------------------------------------------------------------------------ running them


def _id(block: Block) -> str:
    return f"{block.where}-{block.kind}"


ALONE = [b for b in BLOCKS if b.kind in ("script", "fragment", "pytest", "serve", "skip")]


@pytest.mark.parametrize("block", ALONE, ids=_id)
def test_block(block: Block, tmp_path: Path) -> None:
    if block.kind == "skip":
        pytest.skip(f"{block.where}: {' '.join(block.args)}")
    with redis_for(block, tmp_path) as redis_url:
        code = prepared(block.code, redis_url=redis_url)
        if block.kind == "script":
            run_ok(code, tmp_path, block.where, redis_url)
        elif block.kind == "fragment":
            run_ok(complete(code, block.args[0]), tmp_path, block.where, redis_url)
        elif block.kind == "pytest":
            test_file = tmp_path / "test_doc_block.py"
            test_file.write_text(code, encoding="utf-8")
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "trio_mode=true"]
            result = subprocess.run(
                [*command, "--rootdir", str(tmp_path), str(test_file)],
                cwd=tmp_path,
                env=env(redis_url),
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            assert result.returncode == 0, f"{block.where}:\n{result.stdout}\n{result.stderr}"
            assert re.search(r"\b[1-9]\d* passed", result.stdout), result.stdout
        else:  # serve: runs until Ctrl-C
            port = free_port()
            code = prepared(code, port=(block.args[-1], port))
            proc = start(code, tmp_path, "server", redis_url)
            wait_listening(proc, port, block.where)
            wait_ready_line(proc, block.where)  # its start-up work is done: Ctrl-C interrupts no I/O
            proc.send_signal(signal.SIGINT)
            _, out, err = finish(proc, f"{block.where} after Ctrl-C", 20)
            assert "KeyboardInterrupt" in err, f"{block.where} (exit {proc.returncode}):\n{out}\n{err}"
            others = [e for e in re.findall(r"\b(\w+(?:Error|Exception))\b", err) if "Group" not in e]
            assert others == [], f"{block.where} ended with errors besides KeyboardInterrupt:\n{err}"


def complete(code: str, name: str) -> str:
    """The fragment ``code`` put into the program ``name`` at its ``# doc-block`` line."""
    program = (COMPLETIONS / name).read_text(encoding="utf-8")
    match = re.search(r"^([ \t]*)(?:pass  )?# doc-block\n", program, re.MULTILINE)
    assert match is not None, name
    indent = match.group(1)
    body = "".join(indent + line if line.strip() else line for line in code.splitlines(keepends=True))
    return program[: match.start()] + body + program[match.end() :]


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_server_with_its_clients(name: str, tmp_path: Path) -> None:
    server = SERVERS[name]
    clients = [b for b in BLOCKS if b.kind == "client" and b.args == [name]]
    with redis_for(server, tmp_path) as redis_url:
        port = (server.args[-1], free_port())
        proc = start(prepared(server.code, port=port, redis_url=redis_url), tmp_path, "server", redis_url)
        try:
            wait_listening(proc, port[1], server.where)
            running = []
            for i, client in enumerate(clients):
                code = prepared(client.code, port=port, redis_url=redis_url)
                running.append((client, start(code, tmp_path, f"client{i}", redis_url)))
            for client, client_proc in running:
                returncode, out, err = finish(client_proc, client.where)
                assert returncode == 0, f"{client.where} failed (exit {returncode}):\n{out}\n{err}"
                assert out.strip(), f"{client.where} printed nothing it received:\n{err}"
            returncode, out, err = finish(proc, f"{server.where} (it should end by itself)")
            assert returncode == 0, f"{server.where} failed (exit {returncode}):\n{out}\n{err}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

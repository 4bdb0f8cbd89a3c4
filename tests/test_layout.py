"""The package layout keeps its promises: which layer may import which library.

Read from the source (every import statement, also inside functions and ``TYPE_CHECKING``), so a
forbidden import fails here even if no test happens to execute it.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "trioconn"


def imports(path: pathlib.Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative ones resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            else:
                names.add(node.module or "")
    return names


def modules(*parts: str) -> list[pathlib.Path]:
    return sorted(PACKAGE.joinpath(*parts).rglob("*.py"))


def uses(names: set[str], library: str) -> bool:
    return any(name == library or name.startswith(library + ".") for name in names)


@pytest.mark.parametrize("path", modules("_core"), ids=lambda p: p.name)
def test_the_core_is_sans_io(path):
    names = imports(path)
    for library in ("trio", "anyio", "trio_websocket", "wsproto", "socket", "asyncio", "trioconn._server"):
        assert not uses(names, library), f"{path.name} imports {library}"


@pytest.mark.parametrize("path", modules("_server"), ids=lambda p: p.name)
def test_the_hub_core_runs_on_anyio_and_knows_no_front_end(path):
    names = imports(path)
    for library in (
        "trio",
        "trio_websocket",
        "wsproto",
        "asyncio",
        "trioconn._frontends",
        "trioconn._client",
    ):
        assert not uses(names, library), f"{path.name} imports {library}"


def test_only_the_client_imports_trio_websocket():
    # The server's own front end speaks WebSocket through wsproto (docs/performance.md).
    allowed = {PACKAGE / "_client", PACKAGE / "testing"}
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in modules()
        if uses(imports(path), "trio_websocket") and not any(path.is_relative_to(root) for root in allowed)
    ]
    assert offenders == []


def test_no_server_module_imports_the_hub_it_serves():
    """The connection and the thread handle get what they need handed to them."""
    for name in ("connection.py", "threads.py", "socket.py", "topics.py", "outbox.py", "broker.py"):
        assert "trioconn._server.hub" not in imports(PACKAGE / "_server" / name), name

"""Connection state changes as one readable line each, for the example clients.

``client.state_changes()`` yields every transition with its reason; a person watching a
terminal wants to know three things: are we connected, if not why, and are we still trying.
"""

from __future__ import annotations

import sys

from trioconn import Client, ClientState, StateChange


def describe(change: StateChange, previous: ClientState | None, url: str) -> str:
    """One line for ``change``; ``previous`` is the state before it (None for the first)."""
    why = change.reason or (f"close code {change.code}" if change.code is not None else "")
    if change.state is ClientState.CONNECTING:
        return f"connecting to {url}" + (f" (last attempt: {why})" if why else "")
    if change.state is ClientState.OPEN:
        return f"connected to {url}" + (f" ({why})" if why else "")
    if change.state is ClientState.RECONNECTING:
        what = "reconnect attempt failed" if previous is ClientState.RECONNECTING else "connection lost"
        return f"{what} ({why}); retrying"
    return f"connection closed ({why})" if why else "connection closed"


async def log_state_changes(client: Client, url: str, prog: str) -> None:
    """Print each state change of ``client`` on stderr as ``prog: …`` until it closes."""
    previous: ClientState | None = None
    async for change in client.state_changes():
        print(f"{prog}: {describe(change, previous, url)}", file=sys.stderr, flush=True)
        previous = change.state

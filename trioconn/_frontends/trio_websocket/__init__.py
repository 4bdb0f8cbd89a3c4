"""The trio-websocket front end: the hub's own server (``Hub.serve``).

The only server code that imports trio-websocket.

- ``listener``: accepting sockets, the opening handshake, protocol failures;
- ``writer``: pre-built frames written straight to the socket;
- ``socket``: ``ServerSocket`` over a trio-websocket connection;
- ``server``: ``Hub``, the core plus ``serve`` and ``serve_stream``.
"""

from __future__ import annotations

from .server import Hub as Hub

__all__ = ["Hub"]

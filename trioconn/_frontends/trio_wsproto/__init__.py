"""The trio front end: the hub's own server (``Hub.serve``), WebSocket through wsproto.

- ``listener``: accepting sockets, counting them, serving each stream;
- ``handshake``: the opening handshake (wsproto's ``H11Handshake``), refusals;
- ``socket``: ``ServerSocket`` on the trio stream, with the direct write path;
- ``writer``: frames built once per publication;
- ``server``: ``Hub``, the core plus ``serve`` and ``serve_stream``.
"""

from __future__ import annotations

from .server import Hub as Hub

__all__ = ["Hub"]

"""A hub inside an ASGI web app (Starlette, FastAPI) on uvicorn or hypercorn: ``pip install trioconn[asgi]``.

``HubApp(hub)`` is the ASGI app to mount; ``lifespan(hub)`` runs the hub for the app's lifetime.
The same ``Hub`` publishes from request handlers (``await hub.publish(...)``) and worker threads
(``hub.from_thread()``) under asyncio and trio alike. See ``docs/asgi.md``.
"""

from __future__ import annotations

from ._frontends.asgi import AsgiSocket as AsgiSocket
from ._frontends.asgi import HubApp as HubApp
from ._frontends.asgi import handshake_request as handshake_request
from ._frontends.asgi import lifespan as lifespan

__all__ = ["AsgiSocket", "HubApp", "handshake_request", "lifespan"]

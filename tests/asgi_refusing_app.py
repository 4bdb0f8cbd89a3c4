"""A hub that refuses with close codes, as the whole ASGI app, for tests/test_asgi_refusals.py.

Served by uvicorn or ``hypercorn --worker-class trio`` (``tests.asgi_refusing_app:app``): the
token ``good`` gets in, any other is refused (4401), and so is an ``Origin`` other than
``https://app.example`` (4403). Plain HTTP requests get 426, which is what the readiness check
waits for.
"""

from __future__ import annotations

from typing import Any

import trioconn
import trioconn.asgi


def authenticate(request: trioconn.HandshakeRequest) -> Any:
    return request.token if request.token == "good" else None


hub = trioconn.Hub(
    refuse_with="close",
    authenticate=authenticate,
    allowed_origins=["https://app.example"],
    authorize=lambda identity, topic, action: True,
)
app = trioconn.asgi.HubApp(hub)

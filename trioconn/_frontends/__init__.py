"""Front ends: the only modules that import an I/O server library.

Each turns its library's connections into the hub core's ``ServerSocket`` and ``HandshakeRequest``
(``trioconn/_server/socket.py``): ``trio_wsproto`` (the hub's own server, ``Hub.serve``: trio and wsproto) and
``asgi`` (``trioconn.asgi``, for Starlette/FastAPI under uvicorn or hypercorn).
"""

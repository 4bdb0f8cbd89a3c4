"""The sans-IO core shared by server and client: no trio, no anyio, no sockets.

- ``protocol``: the wire format (frames, close codes, validation, encoding);
- ``decision``: what a client does after an attempt ended, as a pure function;
- ``backoff``: reconnect delays;
- ``items``: what a subscription yields (client and hub alike);
- ``resume``: a subscription's resume position (no gap, no duplicate), client and hub alike;
- ``exceptions``: the one exception hierarchy;
- ``ratelog``: a log line for a recurring condition, at most once per period.
"""

"""The hub core, on anyio: it runs under trio and asyncio alike and knows no I/O library.

- ``hub``: ``BaseHub`` (publishing, policy, lifetimes) and the statistics;
- ``config``: ``HubConfig`` (every default, once) and ``HandshakeRequest``;
- ``socket``: the interface front ends implement for one connection, and ``admit``'s answers;
- ``connection``: one connection's receiver, sender and heartbeat in one task group;
- ``outbox``, ``topics``: what is queued for a client; topics with history and state;
- ``broker``: where topics live (``MemoryBroker``; ``trioconn.redis`` adds Redis);
- ``threads``: publishing from worker threads;
- ``follow``, ``publications``, ``requests``, ``presence`` (and ``patterns``, their topic rule):
  application code reacting to clients in-process;
- ``groups``: keeping our own task groups out of the exceptions users see.
"""

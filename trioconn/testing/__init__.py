"""Tools for testing real-time code: in-memory links and fault injection, in virtual time.

See ``docs/testing.md``. The pytest fixtures (``trioconn_hub``, ``trioconn_memory``,
``trioconn_fault_proxy``) live in ``trioconn.testing.pytest_plugin``, which pytest loads by itself;
the objects they yield are ``RunningHub``, ``MemoryHub`` and ``ProxiedHub``.
"""

from __future__ import annotations

from ._faults import FaultProxy as FaultProxy
from ._faults import FaultyLink as FaultyLink
from ._faults import MemoryLink as MemoryLink
from ._faults import open_fault_proxy as open_fault_proxy
from ._faults import open_memory_link as open_memory_link
from ._fixtures import MemoryHub as MemoryHub
from ._fixtures import ProxiedHub as ProxiedHub
from ._fixtures import RunningHub as RunningHub

__all__ = [
    "FaultProxy",
    "FaultyLink",
    "MemoryHub",
    "MemoryLink",
    "ProxiedHub",
    "RunningHub",
    "open_fault_proxy",
    "open_memory_link",
]

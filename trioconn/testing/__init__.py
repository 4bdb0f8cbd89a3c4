"""Tools for testing real-time code: in-memory links and fault injection, in virtual time.

See ``docs/testing.md``.
"""

from __future__ import annotations

from ._faults import FaultProxy as FaultProxy
from ._faults import FaultyLink as FaultyLink
from ._faults import MemoryLink as MemoryLink
from ._faults import open_fault_proxy as open_fault_proxy
from ._faults import open_memory_link as open_memory_link

__all__ = ["FaultProxy", "FaultyLink", "MemoryLink", "open_fault_proxy", "open_memory_link"]

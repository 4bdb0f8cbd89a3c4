"""Helpers shared by the benchmark servers, the load generator and the runner.

Everything here is dependency-free so that each server process imports only its own stack.
Numbers come from ``/proc`` so that every server is measured the same way, whatever its loop.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

#: Clock shared by every process: CLOCK_MONOTONIC is system-wide on Linux, so a timestamp taken
#: in the server can be subtracted from one taken in the load generator.
now = time.monotonic

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of process ``pid`` (all threads), from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLK_TCK


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size (VmRSS) of process ``pid`` in KiB, from ``/proc/<pid>/status``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS line for pid {pid}")


def usage() -> dict[str, Any]:
    """This process's CPU seconds and RSS, the answer to the control command ``usage``."""
    return {"cpu_s": cpu_seconds(), "rss_kib": rss_kib(), "t": now()}


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def make_data(seq: int, size: int) -> dict[str, Any]:
    """Event payload: publish time (shared monotonic clock), per-topic sequence, and padding.

    The padding makes the whole ``event`` frame (with a short topic) about ``size`` bytes, so every
    server sends the same bytes per event.
    """
    data: dict[str, Any] = {"ts": round(now(), 6), "seq": seq, "pad": ""}
    # {"type":"event","topic":"bench","offset":NNNNNN,"data":...} is ~50 bytes of envelope.
    overhead = 50 + len(_dumps(data))
    data["pad"] = "x" * max(0, size - overhead)
    return data


def encode_event(topic: str, offset: int, data: Any) -> str:
    """Protocol v1 ``event`` frame, as the baseline servers send it (same shape as trioconn's)."""
    return _dumps({"type": "event", "topic": topic, "offset": offset, "data": data})


def encode_subscribed(topic: str, offset: int) -> str:
    """Protocol v1 ``subscribed`` answer for a stream topic without history (baselines)."""
    return _dumps(
        {
            "type": "subscribed",
            "topic": topic,
            "epoch": "bench",
            "offset": offset,
            "kind": "stream",
            "replayed": 0,
            "ended": False,
        }
    )


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON line to stdout (the control channel back to the runner) and flush."""
    sys.stdout.write(_dumps(obj) + "\n")
    sys.stdout.flush()


def log(*parts: object) -> None:
    """Diagnostics go to stderr, never to the stdout control channel."""
    print(*parts, file=sys.stderr, flush=True)

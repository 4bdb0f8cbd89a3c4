"""Where a trioconn Hub spends CPU and memory (evidence for docs/performance.md).

This process runs a ``trioconn.Hub`` (heartbeat ``--interval`` s) on 127.0.0.1 and starts the
picows load generator (``bench/loadgen.py``) with ``--conns`` subscribed, idle clients that
answer every ping. Then, for ``--seconds``:

* ``--mode cpu``: server CPU and pongs seen, so CPU per ping round trip (no profiler);
* ``--mode profile``: the same under cProfile, top functions by ``tottime``;
* ``--mode memory``: tracemalloc snapshot before the clients connect and after, the difference
  per connection, grouped by file and by line;
* ``--mode burst``: publish ``--events`` events (~100 B, one checkpoint between events, as the
  runner's burst) to the ``--conns`` subscribers under cProfile; CPU per delivered event.

    python -m bench.profile_server --mode cpu --conns 1000 --interval 1 --seconds 10
    python -m bench.profile_server --mode burst --conns 1000 --events 200
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
import tracemalloc
from functools import partial

import trio

import trioconn
from bench.common import cpu_seconds, make_data, raise_nofile, rss_kib


def pongs(hub: trioconn.Hub) -> int:
    return sum(s.pongs_seen for s in hub.statistics().sessions)


async def main(args: argparse.Namespace) -> None:
    raise_nofile(args.conns + 1024)
    if args.mode == "memory":
        tracemalloc.start(args.frames)
    hub = trioconn.Hub(heartbeat_interval=args.interval, heartbeat_timeout=max(3 * args.interval, 3.0))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        hub.publish_nowait("bench", {"seq": -1})  # the topic exists; nobody checks this event
        await trio.sleep(0.5)
        before = tracemalloc.take_snapshot() if args.mode == "memory" else None
        rss0 = rss_kib()
        argv = [sys.executable, "-m", "bench.loadgen", "--url", f"ws://127.0.0.1:{port}/"]
        argv += ["--conns", str(args.conns), "--topic", "bench"]
        popen = partial(subprocess.Popen, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        gen = await trio.to_thread.run_sync(popen)
        if args.pin:  # as the runner does: the server on core 0, the generator on core 1
            os.sched_setaffinity(0, {0})
            os.sched_setaffinity(gen.pid, {1})
        try:
            assert gen.stdout is not None and gen.stdin is not None
            ready = json.loads(await trio.to_thread.run_sync(gen.stdout.readline))
            print(f"clients: {ready['subscribed']} subscribed in {ready['connect_s']:.1f} s", file=sys.stderr)
            await trio.sleep(1.0)
            if before is not None:
                after = tracemalloc.take_snapshot()
                report_memory(before, after, args.conns, rss_kib() - rss0)
                return
            # CPU time, not wall time: a write that wakes the generator must not count its run.
            profiled = args.mode == "profile" or (args.mode == "burst" and not args.plain)
            prof = cProfile.Profile(time.process_time) if profiled else None
            cpu0, p0, t0 = cpu_seconds(), pongs(hub), trio.current_time()
            if prof is not None:
                prof.enable()
            if args.mode == "burst":
                await burst(hub, args.events)
                cpu = cpu_seconds() - cpu0
                n = args.events * args.conns
                each = cpu / n * 1e6
                print(f"{args.events} events x {args.conns} subscribers: {each:.1f} us CPU/event")
                if prof is None:
                    return
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
                print(out.getvalue())
                if args.dump:
                    prof.dump_stats(args.dump)
                return
            await trio.sleep(args.seconds)
            if prof is not None:
                prof.disable()
            cpu, n, wall = cpu_seconds() - cpu0, pongs(hub) - p0, trio.current_time() - t0
            print(
                f"{args.conns} connections, heartbeat {args.interval:g} s, {wall:.1f} s: "
                f"server CPU {cpu:.2f} s "
                f"({cpu / wall:.3f} cores), {n} pongs, {cpu / max(n, 1) * 1e6:.0f} us CPU per ping round trip"
                + (" (under cProfile)" if prof else "")
            )
            if prof is not None:
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
                print(out.getvalue())
                if args.dump:
                    prof.dump_stats(args.dump)
        finally:
            if gen.stdin is not None:
                gen.stdin.close()  # EOF: the generator closes its clients and exits
            with trio.move_on_after(15):
                await trio.to_thread.run_sync(gen.wait)
            if gen.poll() is None:
                gen.kill()
            nursery.cancel_scope.cancel()


async def burst(hub: trioconn.Hub, events: int) -> None:
    """Publish like the runner's ``burst`` command, then wait until every outbox is empty."""
    for seq in range(events):
        hub.publish_nowait("bench", make_data(seq, 100))
        await trio.lowlevel.checkpoint()
    for _ in range(3000):  # at most 30 s
        if not any(s.queued for s in hub.statistics().sessions):
            return
        await trio.sleep(0.01)


def report_memory(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, rss: int) -> None:
    """Python heap growth per connection, by file and by line (tracemalloc)."""
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    heap = total / n / 1024
    print(f"{n} connections: RSS +{rss / n:.1f} KiB/conn; Python heap (tracemalloc) +{heap:.1f} KiB/conn")
    print("\nby file (bytes per connection):")
    for stat in after.compare_to(before, "filename")[:15]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / n:8.0f}  {stat.count_diff / n:6.1f} blocks  {frame.filename}")
    print("\nby line (bytes per connection):")
    for stat in after.compare_to(before, "lineno")[:25]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / n:8.0f}  {frame.filename}:{frame.lineno}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["cpu", "profile", "memory", "burst"], default="cpu")
    p.add_argument("--events", type=int, default=200, help="events published in --mode burst")
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--interval", type=float, default=1.0, help="heartbeat interval (s)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin to cores 0 and 1")
    p.add_argument("--plain", action="store_true", help="--mode burst without the profiler")
    p.add_argument("--dump", help="also write the cProfile stats to this file")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--frames", type=int, default=1, help="tracemalloc frames per allocation")
    trio.run(main, p.parse_args())

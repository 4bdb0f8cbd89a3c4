"""Runner: every scenario against every server, medians of several runs, one markdown report.

Each run starts a fresh server process and a fresh load generator process (``bench/loadgen.py``),
both on 127.0.0.1, and drives them over their stdin/stdout JSON control lines. The server
measures its own CPU (utime+stime from /proc/self/stat) and RSS (VmRSS); the generator checks
that every event arrived exactly once and in order and measures publish-to-receive latency.

    python -m bench.run              # everything, 3 runs each, report in bench/results/latest.md
    python -m bench.run --smoke      # 5 x 50 against trioconn and trioconn-asgi; exit 1 on any violation

See bench/README.md for the scenarios and all flags.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

#: Server name -> module and its arguments; the first one is the reference for the ratio columns.
SERVERS: dict[str, tuple[str, ...]] = {
    "raw-trio-websocket": ("bench.servers.raw_trio_websocket",),
    "websockets-asyncio": ("bench.servers.websockets_asyncio",),
    "trioconn": ("bench.servers.trioconn_server",),
    # the same Hub through the ASGI front end (trioconn.asgi.HubApp) on an ASGI server
    "trioconn-asgi": ("bench.servers.trioconn_asgi", "--server", "uvicorn"),
    "trioconn-asgi-hypercorn-trio": ("bench.servers.trioconn_asgi", "--server", "hypercorn-trio"),
}
REFERENCE = "raw-trio-websocket"
#: the second ratio column ("vs ws"): the asyncio stack the targets compare with
SECOND_REFERENCE = "websockets-asyncio"
#: Only trioconn has a resume protocol: the reconnect storm runs against it alone.
STORM_SERVERS = ("trioconn",)
TOPIC = "bench"

Metrics = dict[str, Any]


class BenchError(RuntimeError):
    """A server or generator misbehaved (crashed, timed out, or refused a command)."""


def note(*parts: object) -> None:
    """Progress goes to stderr so that stdout carries only the report."""
    print(*parts, file=sys.stderr, flush=True)


class Proc:
    """A child process controlled by JSON lines on its stdin/stdout; stderr goes to a log file."""

    def __init__(self, name: str, argv: list[str], cpu: int | None) -> None:
        self.name = name
        self.log: IO[str] = tempfile.NamedTemporaryFile("w+", prefix=f"bench-{name}-", suffix=".log")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=ROOT,
        )
        if cpu is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, {cpu})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, timeout: float) -> Metrics:
        """Next JSON line from the child, or ``BenchError`` with the tail of its stderr."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name}: no answer within {timeout:.0f} s{self._tail()}") from None
        if line is None:
            self.proc.wait(timeout=5)
            raise BenchError(f"{self.name}: exited with {self.proc.returncode}{self._tail()}")
        answer: Metrics = json.loads(line)
        if "error" in answer:
            raise BenchError(f"{self.name}: {answer['error']}")
        return answer

    def request(self, cmd: Metrics, timeout: float = 30) -> Metrics:
        """Send one command and wait for its answer."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.name}: exited{self._tail()}") from None
        return self.read(timeout)

    def _tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        tail = self.log.read()[-2000:].strip()
        return f"; stderr:\n{tail}" if tail else ""

    def stop(self) -> None:
        """Ask the child to quit; terminate (by pid) only if it does not."""
        if self.proc.poll() is None:
            with contextlib.suppress(BenchError, OSError, ValueError):
                self.request({"cmd": "quit"}, timeout=10)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        # The child has exited: its stdout reaches EOF, so the pump thread ends; close both pipes.
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self._pump_thread.join(timeout=5)
        if not self._pump_thread.is_alive():
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        self.log.close()


def system_busy_s() -> float:
    """CPU seconds all processes have used since boot (every core), from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait; guest time is already inside user
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def other_load(busy: float, before: Metrics, after: Metrics, client_cpu_s: float) -> float:
    """Cores used by processes other than this server and generator between two usage readings.

    The machine may be shared: anything well above 0 means the wall-clock numbers of this run
    (delivered/s, latency) were disturbed.
    """
    wall = max(after["t"] - before["t"], 1e-9)
    return max(0.0, busy - (after["cpu_s"] - before["cpu_s"]) - client_cpu_s) / wall


def free_port() -> int:
    """A currently unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    """Starts servers and generators with the options given on the command line."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        pin = args.pin and (os.cpu_count() or 1) >= 2
        self.server_cpu: int | None = 0 if pin else None
        self.client_cpu: int | None = 1 if pin else None
        self.client_kind = "?"

    def wait_quiet(self) -> float:
        """Wait (at most ``--quiet-wait`` s) until other processes use under ``--quiet-load`` cores.

        On a shared machine this keeps other work out of the measurement when it comes in bursts.
        Returns the load seen last; the run goes ahead anyway once the wait is over.
        """
        started = time.monotonic()
        while True:
            busy, t0 = system_busy_s(), time.monotonic()
            time.sleep(0.5)
            load = (system_busy_s() - busy) / (time.monotonic() - t0)
            waited = time.monotonic() - started
            if load < self.args.quiet_load or waited > self.args.quiet_wait:
                if waited > 1:
                    note(f"  waited {waited:.0f} s for a quieter machine; others use {load:.2f} cores")
                return load

    @contextlib.contextmanager
    def session(self, server: str, conns: int) -> Iterator[tuple[Proc, Proc, Metrics]]:
        """A fresh server and a generator whose ``conns`` clients are connected and subscribed."""
        port = free_port()
        py = self.args.python
        srv = Proc(server, [py, "-m", *SERVERS[server], "--port", str(port)], self.server_cpu)
        gen: Proc | None = None
        try:
            srv.read(timeout=30)  # {"ready": ...}
            idle = srv.request({"cmd": "usage"})
            gen_argv = [py, "-m", "bench.loadgen", "--url", f"ws://127.0.0.1:{port}/", "--conns", str(conns)]
            gen_argv += ["--topic", TOPIC, "--client", self.args.client]
            gen = Proc("loadgen", gen_argv, self.client_cpu)
            ready = gen.read(timeout=180)
            self.client_kind = ready["client"]
            if ready["subscribed"] < conns:
                raise BenchError(f"{server}: only {ready['subscribed']}/{conns} clients subscribed: {ready}")
            ready["server_idle"] = idle
            yield srv, gen, ready
        finally:
            if gen is not None:
                gen.stop()
            srv.stop()

    def burst(self, server: str, n: int, m: int) -> Metrics:
        """N subscribers, M events published as fast as possible; throughput, CPU, latency."""
        with self.session(server, n) as (srv, gen, _):
            busy = system_busy_s()
            before = srv.request({"cmd": "usage"})
            pub = srv.request({"cmd": "burst", "topic": TOPIC, "count": m, "size": self.args.size}, 600)
            stats = gen.request({"cmd": "wait", "count": m, "timeout": 60 + n * m * 5e-4, "stall": 10}, 900)
            after = srv.request({"cmd": "usage"})
            busy = system_busy_s() - busy
        delivered = stats["events"]
        span = max(stats["last_recv"] - pub["t_start"], 1e-9)
        return {
            "rate": delivered / span,
            "cpu_us": (after["cpu_s"] - before["cpu_s"]) / max(delivered, 1) * 1e6,
            "p50_ms": stats["lat_p50_ms"],
            "p99_ms": stats["lat_p99_ms"],
            "client_cpu_share": stats["client_cpu_s"] / span,
            "other_load": other_load(busy, before, after, stats["client_cpu_s"]),
            "batches": stats["batches"],
            **_violations(stats),
        }

    def steady(self, server: str, n: int, rate: float, seconds: float) -> Metrics:
        """N subscribers, a fixed publish rate for a fixed time; latency under sustainable load."""
        with self.session(server, n) as (srv, gen, _):
            busy = system_busy_s()
            before = srv.request({"cmd": "usage"})
            cmd = {"cmd": "rate", "topic": TOPIC, "rate": rate, "seconds": seconds, "size": self.args.size}
            pub = srv.request(cmd, seconds + 120)
            stats = gen.request({"cmd": "wait", "count": pub["published"], "timeout": 120, "stall": 10}, 300)
            after = srv.request({"cmd": "usage"})
            busy = system_busy_s() - busy
        return {
            "p50_ms": stats["lat_p50_ms"],
            "p99_ms": stats["lat_p99_ms"],
            "max_ms": stats["lat_max_ms"],
            "cpu_share": (after["cpu_s"] - before["cpu_s"]) / seconds,
            "publisher_lag_ms": pub["max_lag_ms"],
            "other_load": other_load(busy, before, after, stats["client_cpu_s"]),
            **_violations(stats),
        }

    def idle(self, server: str, n: int, seconds: float) -> Metrics:
        """N idle subscribers held for a while: memory per connection and background CPU."""
        with self.session(server, n) as (srv, gen, ready):
            # Leave out the transient of connecting (the cyclic garbage collector goes over the
            # whole heap a few times while a population grows): measured after ``--idle-warmup``.
            time.sleep(self.args.idle_warmup)
            warm = gen.request({"cmd": "stats", "count": 0})
            busy = system_busy_s()
            start = srv.request({"cmd": "usage"})
            time.sleep(seconds)
            end = srv.request({"cmd": "usage"})
            busy = system_busy_s() - busy
            stats = gen.request({"cmd": "stats", "count": 0})
        base = ready["server_idle"]["rss_kib"]
        cpu_s = end["cpu_s"] - start["cpu_s"]
        # trioconn's application pings and websockets' keepalive (protocol) pings alike
        round_trips = stats["pings"] + stats.get("protocol_pings", 0)
        round_trips -= warm["pings"] + warm.get("protocol_pings", 0)
        return {
            "kib_per_conn": (end["rss_kib"] - base) / n,
            "cpu_s": cpu_s,
            "us_per_round_trip": cpu_s / round_trips * 1e6 if round_trips else None,
            "connect_s": ready["connect_s"],
            "open": stats["open"],
            "pings": stats["pings"] - warm["pings"],
            "protocol_pings": stats.get("protocol_pings", 0) - warm.get("protocol_pings", 0),
            "other_load": other_load(busy, start, end, stats["client_cpu_s"]),
            "violations": stats["violations"] + (n - stats["open"]),
        }

    def connect(self, server: str, n: int) -> Metrics:
        """N clients connect and subscribe (64 attempts in flight): handshake throughput."""
        with self.session(server, n) as (srv, gen, ready):
            after = srv.request({"cmd": "usage"})
            stats = gen.request({"cmd": "stats", "count": 0})
        before = ready["server_idle"]
        wall = ready["connect_s"]
        return {
            "connect_s": wall,
            "per_s": n / wall,
            "cpu_us_per_conn": (after["cpu_s"] - before["cpu_s"]) / n * 1e6,
            "kib_per_conn": (after["rss_kib"] - before["rss_kib"]) / n,
            "client_cpu_share": stats["client_cpu_s"] / wall,
            "violations": n - stats["open"],
        }

    def storm(self, server: str, n: int) -> Metrics:
        """Reconnect storm: N trioconn clients, the server restarted under a steady publish rate.

        The clients are the real trioconn client (``bench/stormgen.py``); the server is the same
        ``Hub`` served again on the same port, so every client must resume without a gap. Only
        trioconn has a resume protocol, so ``server`` must be ``trioconn``.
        """
        args = self.args
        port = free_port()
        py, topic = args.python, "storm"
        srv = Proc(server, [py, "-m", *SERVERS[server], "--port", str(port)], self.server_cpu)
        gens: list[Proc] = []
        try:
            srv.read(timeout=30)
            srv.request({"cmd": "burst", "topic": topic, "count": 1, "size": args.size})  # seq 0
            per = [n // args.storm_procs + (i < n % args.storm_procs) for i in range(args.storm_procs)]
            for i, clients in enumerate(per):
                argv = [py, "-m", "bench.stormgen", "--url", f"ws://127.0.0.1:{port}/", "--topic", topic]
                argv += ["--clients", str(clients), "--cap", str(args.storm_cap)]
                gens.append(Proc(f"stormgen{i}", argv, self.client_cpu))
            readies = [gen.read(timeout=240) for gen in gens]
            if sum(r["ready"] for r in readies) < n:
                raise BenchError(
                    f"storm: only {sum(r['ready'] for r in readies)}/{n} clients got their first event"
                )
            cmd = {"cmd": "pubstart", "topic": topic, "rate": args.storm_rate, "size": args.size, "seq": 1}
            srv.request(cmd)
            time.sleep(args.storm_settle)
            busy = system_busy_s()
            before = srv.request({"cmd": "usage"})
            gen_cpu = sum(gen.request({"cmd": "stats"})["client_cpu_s"] for gen in gens)
            restart = srv.request({"cmd": "restart", "down": args.storm_down}, 120)
            t0 = restart["t_cancel"]
            limit = args.storm_cap + 5 + args.storm_down + 30
            resumed = [
                gen.request({"cmd": "resumed", "after": t0, "timeout": limit}, limit + 30) for gen in gens
            ]
            after = srv.request({"cmd": "usage"})
            gen_cpu = sum(gen.request({"cmd": "stats"})["client_cpu_s"] for gen in gens) - gen_cpu
            busy = system_busy_s() - busy
            time.sleep(1.0)  # a few more live events after the last resume
            pub = srv.request({"cmd": "pubstop"})
            count = pub["next_seq"]  # seq 0 .. next_seq - 1 were published
            finals = [gen.request({"cmd": "wait", "count": count, "timeout": 60}, 120) for gen in gens]
            samples = srv.request({"cmd": "accepted"})["samples"]
        finally:
            for gen in gens:
                gen.stop()
            srv.stop()
        times = sorted(t for r in resumed for t in r["resumed"])
        opens = sorted(t for r in resumed for t in r["opens"])
        not_resumed = sum(r["not_resumed"] for r in resumed)
        wall = max(after["t"] - before["t"], 1e-9)
        lost = sum(f["missing"] + f["short"] for f in finals)
        dup = sum(f["late_or_duplicate"] for f in finals)
        resets = sum(f["resets"] for f in finals)
        failed = sum(f["failed"] for f in finals)
        errors = [e for f in finals for e in f["errors"] if not e.startswith("reset")]
        all_s = times[-1] if times and not not_resumed else None
        return {
            "connect_s": max(r["connect_s"] for r in readies),
            "shutdown_s": restart["t_stopped"] - t0,
            "resume_p50_s": statistics.median(times) if times else None,
            "resume_all_s": all_s,
            "within_cap": int(all_s is not None and all_s <= args.storm_cap + 5),
            "peak_accepts_per_s": _peak_rate_samples(samples),
            "peak_opens_per_s": _peak_rate_events(opens),
            "server_cpu_s": after["cpu_s"] - before["cpu_s"],
            "client_cpu_share": gen_cpu / wall,
            "other_load": other_load(busy, before, after, gen_cpu),
            "published": count,
            "publisher_lag_ms": pub["max_lag_ms"],
            "lost": lost,
            "duplicates": dup,
            "resets": resets,
            "not_resumed": not_resumed,
            "errors": errors,
            "violations": lost + dup + resets + failed + not_resumed + len(errors),
        }


def _peak_rate_samples(samples: list[list[float]], window: float = 1.0) -> float:
    """Largest increase of a sampled counter within any ``window`` seconds, per second."""
    peak = 0.0
    j = 0
    for t, value in samples:
        while samples[j][0] < t - window - 1e-3:
            j += 1
        peak = max(peak, (value - samples[j][1]) / window)
    return peak


def _peak_rate_events(times: list[float], window: float = 1.0) -> float:
    """Most events (sorted timestamps) within any ``window`` seconds, per second."""
    peak, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        peak = max(peak, i - j + 1)
    return peak / window


def _summary(exc: BaseException) -> str:
    """One table-cell line for a failure: its first line and the last line of the child's stderr."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if len(lines) < 3 else f"{lines[0]} {lines[-1]}"
    return text.replace("|", "/")[:200]


def _violations(stats: Metrics) -> Metrics:
    """The correctness part of a generator report."""
    return {
        "delivered": stats["events"],
        "expected": stats["expected"],
        "missing": stats["missing"],
        "late_or_duplicate": stats["late_or_duplicate"],
        "offset_breaks": stats["offset_breaks"],
        "errors": stats["errors"],
        "violations": stats["violations"],
    }


# ------------------------------------------------------------------------------------------
# Report


def fmt(value: float | None) -> str:
    """Three significant digits, with a k/M suffix for large numbers."""
    if value is None:
        return "-"
    if abs(value) < 5e-4:
        return "0"
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def spread(values: list[float]) -> str:
    """``median (min-max)`` of the runs, or the single value."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}-{fmt(max(values))})"


def median(runs: list[Metrics], key: str) -> float | None:
    """Median of ``key`` over the runs that have it."""
    values = [r[key] for r in runs if r.get(key) is not None]
    return float(statistics.median(values)) if values else None


#: header, metric key, and the smallest reference median worth dividing by (None: no ratio
#: column). CPU seconds near one /proc clock tick would give meaningless ratios.
Column = tuple[str, str, float | None]


def table(results: dict[str, list[Metrics] | str], columns: list[Column]) -> list[str]:
    """A markdown table: one row per server, ``median (min-max)`` per metric, ratios to raw."""
    header = ["server"]
    for title, _, floor in columns:
        header += [title] if floor is None else [title, "vs raw", "vs ws"]
    header.append("violations")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    references = [results.get(REFERENCE), results.get(SECOND_REFERENCE)]
    for server, runs in results.items():
        if isinstance(runs, str):
            lines.append(f"| {server} | {runs} |" + " |" * (len(header) - 2))
            continue
        row = [server]
        for _, key, floor in columns:
            row.append(spread([r[key] for r in runs if r.get(key) is not None]))
            if floor is not None:
                for reference in references:
                    ref = median(reference, key) if isinstance(reference, list) else None
                    mine = median(runs, key)
                    if ref is not None and mine is not None and abs(ref) > floor:
                        row.append(f"{mine / ref:.2f}x")
                    else:
                        row.append("-")
        row.append(str(sum(r["violations"] for r in runs)))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def versions() -> str:
    """Versions of the stacks under test, for the report header."""
    parts = [f"Python {platform.python_version()}"]
    for dist in ("trio", "trio-websocket", "websockets", "picows", "uvloop", "trioconn"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            parts.append(f"{dist} {metadata.version(dist)}")
    return ", ".join(parts)


def cpu_model() -> str:
    """The CPU model line from /proc/cpuinfo."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


# ------------------------------------------------------------------------------------------
# Main


Scenario = tuple[str, str, Callable[[str], Metrics], list[Column], int]


def scenarios(bench: Bench, args: argparse.Namespace) -> list[Scenario]:
    """(key, title, run-one, columns, runs) for every scenario selected on the command line."""
    burst_cols: list[Column] = [
        ("delivered/s", "rate", 0),
        ("server CPU us/event", "cpu_us", 0),
        ("p50 ms", "p50_ms", None),
        ("p99 ms", "p99_ms", None),
        ("client CPU share", "client_cpu_share", None),
        ("other load", "other_load", None),
    ]
    out: list[Scenario] = []
    for n, m in args.burst:
        out.append(
            (
                f"burst-{n}x{m}",
                f"Burst fan-out: {n} subscribers x {m} events (~{args.size} B)",
                partial(bench.burst, n=n, m=m),
                burst_cols,
                args.runs,
            )
        )
    if args.steady_conns:
        out.append(
            (
                "steady",
                f"Steady rate: {args.steady_conns} subscribers, {args.steady_rate:g} events/s "
                f"for {args.steady_seconds:g} s",
                lambda s: bench.steady(s, args.steady_conns, args.steady_rate, args.steady_seconds),
                [
                    ("p50 ms", "p50_ms", 0),
                    ("p99 ms", "p99_ms", 0),
                    ("max ms", "max_ms", None),
                    ("server CPU share", "cpu_share", 0.01),
                    ("other load", "other_load", None),
                ],
                args.runs,
            )
        )
    if args.connect_conns:
        out.append(
            (
                "connect",
                f"Connect: {args.connect_conns} clients connect and subscribe, 64 at a time",
                lambda s: bench.connect(s, args.connect_conns),
                [
                    ("connect s", "connect_s", 0),
                    ("connections/s", "per_s", None),
                    ("server CPU us/conn", "cpu_us_per_conn", 0),
                    ("KiB RSS/conn", "kib_per_conn", None),
                    ("client CPU share", "client_cpu_share", None),
                ],
                args.runs,
            )
        )
    if args.idle_conns:
        out.append(
            (
                "idle",
                f"Idle: {args.idle_conns} connections held for {args.idle_seconds:g} s"
                + (f" after {args.idle_warmup:g} s of warm-up" if args.idle_warmup else ""),
                lambda s: bench.idle(s, args.idle_conns, args.idle_seconds),
                [
                    ("KiB RSS/conn", "kib_per_conn", 0),
                    ("server CPU s", "cpu_s", 0.1),
                    ("server CPU us/ping round trip", "us_per_round_trip", 0),
                    ("connect s", "connect_s", None),
                    ("pings answered", "pings", None),
                    ("protocol pings answered", "protocol_pings", None),
                    ("other load", "other_load", None),
                ],
                args.idle_runs,
            )
        )
    if args.storm_clients and set(STORM_SERVERS) & set(args.servers):
        out.append(
            (
                "storm",
                f"Reconnect storm: {args.storm_clients} trioconn clients, server restarted "
                f"(down {args.storm_down:g} s, {args.storm_rate:g} events/s throughout, backoff cap "
                f"{args.storm_cap:g} s); trioconn only: the baselines have no resume protocol",
                lambda s: bench.storm(s, args.storm_clients),
                [
                    ("connect s", "connect_s", None),
                    ("shutdown s", "shutdown_s", None),
                    ("resume p50 s", "resume_p50_s", None),
                    ("all resumed s", "resume_all_s", None),
                    ("within cap+5 s", "within_cap", None),
                    ("peak accepts/s", "peak_accepts_per_s", None),
                    ("peak opens/s (clients)", "peak_opens_per_s", None),
                    ("server CPU s", "server_cpu_s", None),
                    ("client CPU share", "client_cpu_share", None),
                    ("lost", "lost", None),
                    ("dup", "duplicates", None),
                    ("resets", "resets", None),
                    ("other load", "other_load", None),
                ],
                args.runs,
            )
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; every size, duration and run count can be changed."""

    def pair(text: str) -> tuple[int, int]:
        n, m = text.lower().split("x")
        return int(n), int(m)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny correctness run against trioconn and trioconn-asgi, no timings",
    )
    p.add_argument("--servers", help="comma-separated subset of: " + ", ".join(SERVERS) + " (default: all)")
    p.add_argument("--runs", type=int, default=3, help="runs per scenario (median and min-max)")
    p.add_argument("--burst", type=pair, nargs="*", default=[(100, 2000), (1000, 200)], metavar="NxM")
    p.add_argument("--size", type=int, default=100, help="bytes per event frame")
    p.add_argument("--steady-conns", type=int, default=1000, help="0 skips the steady scenario")
    p.add_argument("--steady-rate", type=float, default=5.0, help="events/s (every stack must keep up)")
    p.add_argument("--steady-seconds", type=float, default=10.0)
    p.add_argument("--connect-conns", type=int, default=1000, help="0 skips the connect scenario")
    p.add_argument("--idle-conns", type=int, default=5000, help="0 skips the idle scenario")
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--idle-runs", type=int, default=1)
    p.add_argument(
        "--idle-warmup", type=float, default=0.0, help="s held idle before the idle measurement starts"
    )
    p.add_argument("--storm-clients", type=int, default=2000, help="0 skips the reconnect storm")
    p.add_argument("--storm-procs", type=int, default=1, help="storm generator processes")
    p.add_argument("--storm-rate", type=float, default=2.0, help="events/s published during the storm")
    p.add_argument(
        "--storm-down", type=float, default=1.0, help="s from stopping the server to serving again"
    )
    p.add_argument("--storm-cap", type=float, default=30.0, help="client backoff cap (s); base 0.5, factor 2")
    p.add_argument("--storm-settle", type=float, default=2.0, help="s of live events before the restart")
    p.add_argument("--client", choices=["auto", "picows", "websockets"], default="auto")
    p.add_argument("--python", default=sys.executable, help="interpreter for servers and generator")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server/client to cores")
    p.add_argument("--quiet-load", type=float, default=0.3, help="cores other processes may use at a start")
    p.add_argument("--quiet-wait", type=float, default=15.0, help="max s to wait for that before each run")
    p.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    args = p.parse_args(argv)
    if args.smoke:
        # trioconn through both front ends: Hub.serve, and HubApp on uvicorn (ASGI)
        args.servers = args.servers or "trioconn,trioconn-asgi"
        args.runs, args.burst = 1, [(5, 50)]
        args.steady_conns, args.steady_rate, args.steady_seconds = 5, 50.0, 1.0
        args.idle_conns, args.quiet_wait = 0, 0.0
        args.connect_conns = 20
        args.storm_clients, args.storm_settle, args.storm_rate, args.storm_down = 20, 0.5, 20.0, 0.2
    args.servers = [s.strip() for s in (args.servers or ",".join(SERVERS)).split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        p.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios; print and save the report; exit 1 on any violation or failure."""
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench.common import raise_nofile

    nofile = raise_nofile(max(args.idle_conns, args.storm_clients, args.connect_conns, 1000) + 1024)
    bench = Bench(args)
    started = time.monotonic()
    failures = 0
    sections: list[str] = []
    raw: dict[str, Any] = {}
    for key, title, run_one, columns, runs in scenarios(bench, args):
        results: dict[str, list[Metrics] | str] = {}
        for server in args.servers:
            if key == "storm" and server not in STORM_SERVERS:
                continue
            done: list[Metrics] = []
            for i in range(runs):
                note(f"[{time.monotonic() - started:6.1f}s] {key} / {server} / run {i + 1}/{runs}")
                bench.wait_quiet()
                try:
                    done.append(run_one(server))
                except BenchError as exc:
                    note(f"  FAILED: {exc}")
                    failures += 1
                    results[server] = f"failed: {_summary(exc)}"
                    break
                note(f"  {json.dumps({k: v for k, v in done[-1].items() if k != 'errors'})}")
            else:
                results[server] = done
        raw[key] = results
        sections += [f"### {title}", "", *table(results, columns), ""]
        for server, runs_done in results.items():
            bad = [r for r in runs_done if isinstance(r, dict) and r["violations"]]
            for r in bad:
                failures += 1
                sections.append(f"- **{server}: correctness violations**: {json.dumps(r)}")
        if any(isinstance(r, list) and any(x["violations"] for x in r) for r in results.values()):
            sections.append("")
    elapsed = time.monotonic() - started
    header = [
        f"## trioconn benchmark{' (smoke: correctness only, timings meaningless)' if args.smoke else ''}",
        "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}; wall time {elapsed:.0f} s",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}; {versions()}",
        f"- load generator: {bench.client_kind} client, own process"
        + ("; server pinned to core 0, generator to core 1" if bench.server_cpu is not None else ""),
        f"- runs per scenario: {args.runs} (idle: {args.idle_runs}); cells are median (min-max); "
        f"'vs raw' / 'vs ws' = median / median of {REFERENCE} / {SECOND_REFERENCE}",
        f"- RLIMIT_NOFILE soft limit in the runner: {nofile}",
        "- 'other load': cores used by other processes during the measurement (the machine may be"
        " shared); well above 0 means delivered/s and latency of that run were disturbed",
        "",
    ]
    report = "\n".join(header + sections)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report + "\n")
    args.output.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    note(f"report written to {args.output} ({elapsed:.0f} s); failures/violations: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

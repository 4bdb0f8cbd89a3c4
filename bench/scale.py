"""Scale-out benchmark: several hub processes on one Redis, each following its share of topics.

    python -m bench.scale              # 2,000 topics, 1 and 4 hubs, both designs, 3 runs each
    python -m bench.scale --smoke      # 200 topics, 1 run: counts only (CI); exit 1 on a violation

For each *design* — ``follow`` (``RedisBroker``: a hub receives the writes of the topics its
clients follow) and ``firehose`` (``bench/firehose.py``: every hub reads every write) — and each
hub count (1, then ``--hubs``), one run starts a fresh redis-server, the hub processes, one client
process with four WebSocket connections (connection *c* follows the topics *i* with
*i* mod 4 = *c* and is connected to hub *c* mod *hubs*, so with four hubs each follows a
quarter), then a publisher process that writes ``--rounds`` events to every topic through the
design's own Lua script, paced at ``--rate`` writes/s. The run ends when every client has every
event of its topics, once and in order (checked), or at a deadline.

Measured between the publisher's start and the last event received, all from ``/proc`` and
Redis's ``INFO stats``: each hub's CPU per event it delivered, Redis's CPU, Redis's output bytes,
and ``other load`` (cores used by anything else on the machine meanwhile, as in ``bench.run``).
Everything listens on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds
from bench.run import free_port, note, system_busy_s

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DESIGNS = ("follow", "firehose")
CONNECTIONS = 4

# -- the processes -----------------------------------------------------------------------------------


def make_broker(url: str, design: str) -> Any:
    from bench.firehose import FirehoseBroker
    from trioconn import Backoff
    from trioconn.redis import RedisBroker

    cls = FirehoseBroker if design == "firehose" else RedisBroker
    return cls(url, timeout=10, backoff=Backoff(base=0.05, cap=0.5), block=1)


def hub_main(url: str, design: str) -> None:
    """A hub process: prints its port, serves until its standard input closes."""
    import trio

    from trioconn import Hub

    async def main() -> None:
        hub = Hub(broker=make_broker(url, design), heartbeat_interval=60, heartbeat_timeout=180)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve, "127.0.0.1", 0)
            print(port, flush=True)
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

    trio.run(main)


def clients_main(ports: list[int], topics: int, rounds: int, timeout: float) -> None:
    """The client process: four connections, ``ready`` once all are subscribed, then the counts."""
    import trio
    import trio_websocket

    async def connection(c: int, counts: list[int], violations: list[int], ready: trio.Event) -> None:
        mine = [f"s/{i}" for i in range(topics) if i % CONNECTIONS == c]
        port = ports[c % len(ports)]
        async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
            for name in mine:
                await ws.send_message(json.dumps({"type": "subscribe", "topic": name}))
            expected = dict.fromkeys(mine, 1)
            answered = 0
            ready_sent = False
            while sum(expected.values()) < len(mine) * (rounds + 1):
                message = json.loads(await ws.get_message())
                frames = message["frames"] if message["type"] == "batch" else [message]
                for frame in frames:
                    kind = frame["type"]
                    if kind == "subscribed":
                        answered += 1
                    elif kind == "event":
                        name = frame["topic"]
                        if frame["offset"] != expected[name]:
                            violations[c] += 1
                        expected[name] = frame["offset"] + 1
                        counts[c] += 1
                    elif kind == "ping":
                        await ws.send_message(json.dumps({"type": "pong", "id": frame["id"]}))
                    elif kind != "welcome":
                        violations[c] += 1
                if answered == len(mine) and not ready_sent:
                    ready_sent = True
                    ready.set()

    async def main() -> None:
        counts, violations = [0] * CONNECTIONS, [0] * CONNECTIONS
        readies = [trio.Event() for _ in range(CONNECTIONS)]
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for c in range(CONNECTIONS):
                    nursery.start_soon(connection, c, counts, violations, readies[c])
                for ready in readies:
                    await ready.wait()
                print(json.dumps({"ready": True}), flush=True)
        result = {
            "counts": counts,
            "violations": violations,
            "t_last": time.monotonic(),
            "cpu_s": cpu_seconds(),
        }
        print(json.dumps(result), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)

    trio.run(main)


def publish_main(url: str, design: str, topics: int, rounds: int, rate: float, size: int) -> None:
    """The publisher: every topic ``rounds`` times through the design's script, in pipelined batches."""
    import redis

    from bench.firehose import FIREHOSE_WRITE, firehose_keys
    from trioconn.redis._scripts import WRITE, Keys, parse_url, write_args

    target = parse_url(url)
    client = redis.Redis.from_url(target.url)
    script = client.register_script(FIREHOSE_WRITE if design == "firehose" else WRITE)
    keys = Keys("trioconn")
    batch, written, start = 200, 0, time.monotonic()
    names = [f"s/{i}" for i in range(topics)]
    writes = [(name, r) for r in range(rounds) for name in names]
    for first in range(0, len(writes), batch):
        pipe = client.pipeline(transaction=False)
        for name, r in writes[first : first + batch]:
            args = write_args(name, "stream", {"r": r, "pad": "x" * size}, 100, target)
            if design == "firehose":
                script(keys=firehose_keys(keys, name), args=[*args, name], client=pipe)
            else:
                script(keys=keys.write_keys(name), args=args, client=pipe)
        pipe.execute()
        written += min(batch, len(writes) - first)
        ahead = written / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    client.close()
    print(
        json.dumps({"written": written, "seconds": time.monotonic() - start, "cpu_s": cpu_seconds()}),
        flush=True,
    )


# -- the runner ----------------------------------------------------------------------------------------


class Child:
    """A child process of this runner: started, read line by line, ended by its PID."""

    def __init__(self, argv: list[str]) -> None:
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT
        )

    def line(self, timeout: float) -> str:
        """The next line it prints, within ``timeout`` seconds."""
        import selectors

        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"{self.proc.args[:4]} printed nothing within {timeout}s: {self.errors()}")
        text = self.proc.stdout.readline()
        if not text:
            raise RuntimeError(f"{self.proc.args[:4]} exited: {self.errors()}")
        return text

    def errors(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int, int]]:
    """A fresh redis-server on 127.0.0.1; yields its URL, port and PID; killed by PID after."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (Debian: apt-get install redis-server)")
    import redis

    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen([*argv, "--dir", directory], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            with redis.Redis(port=port, socket_timeout=1) as client:
                while True:
                    with contextlib.suppress(redis.RedisError, OSError):
                        if client.ping():
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start")
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0", port, proc.pid
        finally:
            proc.kill()
            proc.wait()


def redis_output_bytes(port: int) -> int:
    import redis

    with redis.Redis(port=port, socket_timeout=5) as client:
        return int(client.info("stats")["total_net_output_bytes"])


def one_run(args: argparse.Namespace, design: str, hubs: int, rate: float) -> dict[str, Any]:
    py = sys.executable
    me = [py, "-m", "bench.scale"]
    with redis_server() as (url, port, redis_pid), contextlib.ExitStack() as stack:
        procs = [Child([*me, "hub", url, design]) for _ in range(hubs)]
        for proc in procs:
            stack.callback(proc.stop)
        ports = [int(proc.line(30)) for proc in procs]
        clients = Child(
            [*me, "clients", ",".join(map(str, ports)), str(args.topics), str(args.rounds), str(args.timeout)]
        )
        stack.callback(clients.stop)
        clients.line(60)  # ready: every subscription answered
        hub_cpu = [cpu_seconds(proc.proc.pid) for proc in procs]
        redis_cpu, output, busy, t0 = (
            cpu_seconds(redis_pid),
            redis_output_bytes(port),
            system_busy_s(),
            time.monotonic(),
        )
        client_cpu = cpu_seconds(clients.proc.pid)
        publisher = Child(
            [*me, "publish", url, design, str(args.topics), str(args.rounds), str(args.rate), str(args.size)]
        )
        stack.callback(publisher.stop)
        published = json.loads(publisher.line(args.timeout))
        received = json.loads(clients.line(args.timeout))
        t1 = time.monotonic()
        hub_cpu = [cpu_seconds(proc.proc.pid) - before for proc, before in zip(procs, hub_cpu, strict=True)]
        redis_cpu = cpu_seconds(redis_pid) - redis_cpu
        output = redis_output_bytes(port) - output
        busy = system_busy_s() - busy
    wall = max(received["t_last"] - t0, t1 - t0, 1e-9)
    per_hub = [0] * hubs
    for c, count in enumerate(received["counts"]):
        per_hub[c % hubs] += count
    delivered = sum(per_hub)
    expected = args.topics * args.rounds
    accounted = sum(hub_cpu) + redis_cpu + (received["cpu_s"] - client_cpu) + published["cpu_s"]
    return {
        "design": design,
        "hubs": hubs,
        "rate": rate,
        "delivered": delivered,
        "missing": expected - delivered,
        "violations": sum(received["violations"]),
        "hub_us": [cpu / max(n, 1) * 1e6 for cpu, n in zip(hub_cpu, per_hub, strict=True)],
        "redis_cpu_s": redis_cpu,
        "redis_out_bytes": output,
        "seconds": wall,
        "other_load": max(0.0, busy - accounted) / wall,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"# Scale-out: {args.topics} topics, {args.rounds} events each, {args.rate:g} writes/s, "
        f"{args.runs} run(s) per row (median)",
        "",
        f"{dt.date.today().isoformat()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}. "
        "Hub CPU per event: each hub's CPU time over the events it delivered (median over hubs and runs); "
        "x 1 hub: that over the same design with one hub. Redis out: bytes Redis sent (INFO stats), "
        "per event delivered; x needed: over the one-hub run of the same design, where every write "
        "is sent once. The row at a lower rate is a control: one hub at the event rate each of the "
        "several hubs sees (a hub batches more at a higher rate, so cost per event depends on rate).",
        "",
        "| design | hubs | hub CPU µs/event | x 1 hub | Redis CPU ms | Redis out B/event | x needed | "
        "delivered | missing | violations | other load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows: dict[tuple[str, int, float], dict[str, float]] = {}
    scenarios = [(design, hubs, args.rate) for design in DESIGNS for hubs in (1, args.hubs)]
    scenarios.insert(2, ("follow", 1, args.rate / args.hubs))
    for design, hubs, rate in scenarios:
        runs = [r for r in results if (r["design"], r["hubs"], r["rate"]) == (design, hubs, rate)]
        if not runs:
            continue
        rows[design, hubs, rate] = {
            "hub_us": median([us for r in runs for us in r["hub_us"]]),
            "redis_ms": median([r["redis_cpu_s"] * 1000 for r in runs]),
            "out": median([r["redis_out_bytes"] / max(r["delivered"], 1) for r in runs]),
            "delivered": median([r["delivered"] for r in runs]),
            "missing": max(r["missing"] for r in runs),
            "violations": max(r["violations"] for r in runs),
            "other": median([r["other_load"] for r in runs]),
        }
        row, base = rows[design, hubs, rate], rows[design, 1, args.rate]
        label = design if rate == args.rate else f"{design}, {rate:g} writes/s"
        lines.append(
            f"| {label} | {hubs} | {row['hub_us']:.1f} | {_ratio(row['hub_us'], base['hub_us'])} | "
            f"{row['redis_ms']:.0f} | {row['out']:.0f} | {_ratio(row['out'], base['out'])} | "
            f"{row['delivered']:.0f} | {row['missing']} | {row['violations']} | {row['other']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _ratio(value: float, base: float) -> str:
    """``value / base`` for a table cell; "-" when the base is 0 (CPU below one /proc clock
    tick, as in a ``--smoke`` run)."""
    return f"{value / base:.2f}" if base else "-"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("hub", "clients", "publish"):
        role, rest = argv[0], argv[1:]
        if role == "hub":
            hub_main(rest[0], rest[1])
        elif role == "clients":
            clients_main([int(p) for p in rest[0].split(",")], int(rest[1]), int(rest[2]), float(rest[3]))
        else:
            publish_main(rest[0], rest[1], int(rest[2]), int(rest[3]), float(rest[4]), int(rest[5]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--topics", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10, help="events per topic")
    parser.add_argument("--rate", type=float, default=4000, help="writes per second, all topics together")
    parser.add_argument("--size", type=int, default=100, help="padding bytes per event")
    parser.add_argument("--hubs", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120, help="seconds one run may take")
    parser.add_argument("--designs", default=",".join(DESIGNS))
    parser.add_argument("--smoke", action="store_true", help="200 topics, 2 rounds, 1 run; counts only")
    parser.add_argument("--output", type=Path, default=RESULTS / "scale-latest.md")
    args = parser.parse_args(argv)
    if args.topics < CONNECTIONS or args.hubs < 1 or args.rounds < 1 or args.runs < 1 or args.rate <= 0:
        parser.error("--topics must be >= 4; --hubs, --rounds, --runs and --rate positive")
    if args.smoke:
        args.topics, args.rounds, args.runs, args.rate = 200, 2, 1, 4000
    results = []
    for run in range(args.runs):
        for design in args.designs.split(","):
            if design not in DESIGNS:
                parser.error(f"--designs: {design!r} is not one of {', '.join(DESIGNS)}")
            for hubs in (1, args.hubs):
                note(f"run {run + 1}/{args.runs}: {design}, {hubs} hub(s)")
                results.append(one_run(args, design, hubs, args.rate))
        if "follow" in args.designs.split(",") and args.hubs > 1 and not args.smoke:
            # the control: one hub at the event rate each of the several hubs sees
            note(f"run {run + 1}/{args.runs}: follow, 1 hub at 1/{args.hubs} of the rate")
            results.append(one_run(args, "follow", 1, args.rate / args.hubs))
    text = report(results, args)
    print(text)
    if not args.smoke:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
    bad = [r for r in results if r["missing"] or r["violations"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

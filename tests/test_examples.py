"""The examples, run as real programs on 127.0.0.1, the way a user runs them.

Each test starts the example scripts as subprocesses with a small workload and reads their
output. Nothing sleeps for a fixed time: every wait is for a line of output, bounded by a
deadline, so a broken example fails within seconds instead of hanging.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._procs import ROOT, Process

EXAMPLES = ROOT / "examples"
SCRIPTS = ["log_tail_server.py", "log_tail_client.py", "progress_server.py", "progress_client.py", "demo.py"]
WAIT = Process.wait_seconds


class Proc(Process):
    """One example running as a subprocess (``examples/<script> *args``)."""

    def __init__(self, *args: str, cwd: Path) -> None:
        super().__init__([str(EXAMPLES / args[0]), *args[1:]], name=args[0], cwd=cwd)


@pytest.fixture
def run(tmp_path: Path) -> Iterator:
    """``run("script.py", *args)`` starts an example; whatever is still running is killed after."""
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc(*args, cwd=tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


def served_port(server: Proc) -> int:
    line = server.out[server.wait_for(r"^serving ws://")]
    return int(line.rsplit(":", 1)[1])


def assert_clean(proc: Proc) -> None:
    assert "Traceback" not in "\n".join(proc.err), proc.report()


# -- every example ------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(run, script):
    proc = run(script, "--help")
    assert proc.wait() == 0, proc.report()
    assert proc.out[0].startswith("usage:"), proc.report()
    assert_clean(proc)


# -- log tail -----------------------------------------------------------------------------------


def append(path: Path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def test_log_tail_follows_a_file_and_survives_a_server_restart(run, tmp_path):
    log = tmp_path / "app.log"
    append(log, *(f"line {i}" for i in range(1, 6)))
    server = run("log_tail_server.py", str(log), "--port", "0", "--history", "50", "--poll", "0.05")
    port = served_port(server)
    client = run("log_tail_client.py", "app.log", "--port", str(port), "-n", "3")

    client.wait_for("^line 5$")
    assert client.out == ["line 3", "line 4", "line 5"]
    append(log, "line 6")
    with open(log, "a", encoding="utf-8") as f:  # half a line, then the rest
        f.write("line")
    append(log, " 7")
    client.wait_for("^line 7$")

    # A graceful restart: the client sees 1001 and reconnects to the new server (new epochs).
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.report()
    assert_clean(server)
    client.wait_for("connection lost", stream="err")
    append(log, *(f"line {i}" for i in range(8, 13)))  # while no server runs; more than -n 3
    server = run("log_tail_server.py", str(log), "--port", str(port), "--history", "50", "--poll", "0.05")
    served_port(server)
    client.wait_for("^line 12$")
    append(log, "line 13")
    client.wait_for("^line 13$")

    assert client.out == [f"line {i}" for i in range(3, 14)], client.report()
    assert sum("connected to" in line for line in client.err) == 2, client.report()

    client.signal(signal.SIGINT)  # Ctrl-C
    assert client.wait() == 130
    assert_clean(client)
    server.signal(signal.SIGINT)
    assert server.wait() == 130
    assert_clean(server)


def test_log_tail_reports_truncation_and_rotation(run, tmp_path):
    log = tmp_path / "app.log"
    append(log, "old")
    server = run("log_tail_server.py", str(log), "--port", "0", "--poll", "0.05")
    client = run("log_tail_client.py", "app.log", "--port", str(served_port(server)), "-n", "5")
    client.wait_for("^old$")
    log.write_text("after truncation\n", encoding="utf-8")
    client.wait_for("^after truncation$")
    client.wait_for("file truncated", stream="err")
    log.rename(tmp_path / "app.log.1")
    append(log, "new file")
    client.wait_for("^new file$")
    client.wait_for("has been replaced", stream="err")
    assert client.out == ["old", "after truncation", "new file"]


# -- job progress -------------------------------------------------------------------------------

PROGRESS_LINE = re.compile(r"^(?P<job>\S+): (?P<done>\d+)/(?P<total>\d+) \(\d+%\)$")


def progress_values(client: Proc, job: str) -> list[int]:
    values = []
    for line in client.out:
        match = PROGRESS_LINE.match(line)
        if match:
            assert match["job"] == job, line
            values.append(int(match["done"]))
    return values


def assert_finished_once(client: Proc, job: str, total: int) -> None:
    """Exit 0, progress never going back, "done" exactly once and last, no reconnect after it."""
    assert client.wait() == 0, client.report()
    assert_clean(client)
    values = progress_values(client, job)
    assert values == sorted(values) and values[-1] == total, client.report()
    done = [line for line in client.out if line.startswith(f"{job}: done: ")]
    assert len(done) == 1 and client.out[-1] == done[0], client.report()
    assert f"downloaded {total} chunks" in done[0]
    # After the job ended the client closed with 1000 itself: its last state line says so.
    assert client.err[-1] == "progress: connection closed (closed by the client)", client.report()


def start_progress_server(run, tmp_path, port: str = "0") -> tuple[Proc, int]:
    server = run("progress_server.py", "--port", port, "--jobs-dir", str(tmp_path / "jobs"))
    return server, served_port(server)


def test_progress_client_starts_a_job_and_exits_0_when_it_is_done(run, tmp_path):
    server, port = start_progress_server(run, tmp_path)
    client = run("progress_client.py", "--port", str(port), "--start", "--job", "j1", "--steps", "8",
                 "--step-seconds", "0.05")  # fmt: skip
    assert_finished_once(client, "j1", 8)
    assert progress_values(client, "j1") == list(range(0, 9)), client.report()
    assert sum("connected to" in line for line in client.err) == 1, client.report()

    # A late follower of the finished job gets its final state and the end at once.
    late = run("progress_client.py", "--port", str(port), "--job", "j1")
    assert_finished_once(late, "j1", 8)
    assert progress_values(late, "j1") == [8]

    server.signal(signal.SIGINT)  # Ctrl-C
    assert server.wait() == 130
    assert_clean(server)


def test_progress_bar_continues_after_the_server_is_killed_mid_job(run, tmp_path):
    server, port = start_progress_server(run, tmp_path)
    client = run("progress_client.py", "--port", str(port), "--start", "--job", "j2", "--steps", "30",
                 "--step-seconds", "0.08")  # fmt: skip
    client.wait_for(r"^j2: ([5-9]|1\d)/30 ")
    server.popen.kill()  # SIGKILL: no close frame, the worker thread dies mid-step
    server.wait()
    shown_before = progress_values(client, "j2")[-1]

    server, _ = start_progress_server(run, tmp_path, port=str(port))
    server.wait_for(r"resuming job j2 at \d+/30", stream="err")
    assert_finished_once(client, "j2", 30)
    values = progress_values(client, "j2")
    after = values[values.index(shown_before) + 1 :]
    assert after and after[0] >= shown_before, client.report()  # continued, did not start over
    assert "resumed once" in client.out[-1]
    assert any("connection lost" in line for line in client.err), client.report()
    assert sum("connected to" in line for line in client.err) == 2, client.report()


def test_progress_client_ctrl_c_leaves_the_job_running(run, tmp_path):
    _, port = start_progress_server(run, tmp_path)
    client = run("progress_client.py", "--port", str(port), "--start", "--job", "j3", "--steps", "100",
                 "--step-seconds", "0.05")  # fmt: skip
    client.wait_for(r"^j3: [1-9]\d*/100 ")
    client.signal(signal.SIGINT)
    assert client.wait() == 130, client.report()
    assert_clean(client)
    assert "--job j3" in client.err[-1]
    follower = run("progress_client.py", "--port", str(port), "--job", "j3")
    follower.wait_for(r"^j3: [1-9]\d*/100 ")
    follower.signal(signal.SIGINT)
    assert follower.wait() == 130, follower.report()


def test_progress_server_starts_jobs_on_request_with_no_client_inside_it(run, tmp_path):
    """``jobs/start`` answers with the job id; the server runs no trioconn client of its own."""
    import json

    from websockets.sync.client import connect as ws_connect

    server, port = start_progress_server(run, tmp_path)

    def frames(ws):  # the frames the server sends, batches unpacked
        while True:
            frame = json.loads(ws.recv(timeout=WAIT))
            yield from frame["frames"] if frame["type"] == "batch" else [frame]

    with ws_connect(f"ws://127.0.0.1:{port}/") as ws:
        received = frames(ws)
        assert next(received)["type"] == "welcome"

        def ask(data, ref):
            ws.send(json.dumps({"type": "request", "topic": "jobs/start", "data": data, "ref": ref}))
            return next(f for f in received if f.get("ref") == ref)

        reply = ask({"steps": 3, "step_seconds": 0.01}, 1)
        assert reply["type"] == "reply" and reply["data"]["started"] is True, reply
        job = reply["data"]["job"]
        assert re.fullmatch(r"job-[0-9a-f]{6}", job), job
        ws.send(json.dumps({"type": "subscribe", "topic": f"job/{job}", "ref": 2}))
        states = []
        for frame in received:
            if frame["type"] == "subscribed" and "snapshot" in frame:
                states.append(frame["snapshot"])
            elif frame["type"] == "event":
                states.append(frame["data"])
            elif frame["type"] == "end":
                break
        assert states[-1]["status"] == "done" and states[-1]["done"] == 3, states
        assert ask({"job": job}, 3)["data"] == {"job": job, "started": False}  # a retry is harmless
        refused = ask({"steps": 0}, 4)
        assert (refused["type"], refused["code"]) == ("error", "invalid-job"), refused
        assert "steps" in refused["message"]
        wrong = ask("go", 5)
        assert (wrong["type"], wrong["code"]) == ("error", "invalid-job"), wrong
    server.wait_for(r"connection \S+ closed: ", stream="err")
    opened = [line for line in server.err if re.search(r"connection \S+ opened from", line)]
    assert len(opened) == 1, server.report()  # this test's client, and nobody inside the server
    server.signal(signal.SIGINT)
    assert server.wait() == 130
    assert_clean(server)


def test_demo_runs_one_job_and_exits_0_by_itself(run):
    demo = run("demo.py", "--steps", "10", "--step-seconds", "0.05")
    assert demo.wait() == 0, demo.report()
    assert_clean(demo)
    assert demo.out[0].startswith("demo: server ws://127.0.0.1:")
    assert "demo-download: done: downloaded 10 chunks (10.0 MiB)" in demo.out
    assert demo.out[-1] == "demo: finished"

"""``trioconn tail`` and ``trioconn publish`` as a user runs them: subprocesses against a real hub.

The hub is ``tests/cli_hub.py`` (commands on its standard input: publish, end, kick); every wait
is for a line of output, bounded by a deadline (``tests/_procs.py``). Argument errors are checked
in-process through ``trioconn.cli.main``, which returns the exit code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from trioconn import cli

from ._procs import ROOT, Process

#: a loaded machine may take a while to start a Python process and to back off and reconnect
SLOW = 30.0


class HubProcess:
    """``tests/cli_hub.py``: started at once, stopped (standard input closed: 1001) by ``stop``."""

    def __init__(self, *args: str) -> None:
        self.proc = Process(["-m", "tests.cli_hub", *args], name="cli_hub", stdin=True)
        try:
            self.proc.wait_for(r"^\d+$", timeout=SLOW)
        except BaseException:
            self.proc.close()
            raise
        self.port = int(self.proc.out[0])

    def stop(self) -> None:
        """Stop gracefully; safe to call twice."""
        self.proc.close_stdin()
        try:
            self.proc.wait(SLOW)
        finally:
            self.proc.close()


@contextmanager
def hub(*args: str) -> Iterator[tuple[Process, int]]:
    running = HubProcess(*args)
    try:
        yield running.proc, running.port
    finally:
        running.stop()


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(proc: Process, line: str) -> str:
    """Send one command to the hub and return its answer."""
    start = len(proc.out)
    proc.send(line)
    return proc.out[proc.wait_for(".", start=start)]


@contextmanager
def trioconn(*args: str, name: str, stdin: bool = False) -> Iterator[Process]:
    proc = Process(["-m", "trioconn", *args], name=name, stdin=stdin)
    try:
        yield proc
    finally:
        proc.close()


def json_lines(proc: Process) -> list[dict]:
    return [json.loads(line) for line in proc.out]


# -- tail ------------------------------------------------------------------------------------------


def test_tail_prints_every_event_once_in_order_across_a_dropped_link_and_a_hub_restart():
    """A dropped link resumes without gap or duplicate; a restarted hub (a new epoch: what came
    before is gone) gives a reset on standard error, and tail goes on with the new hub's events."""
    first = HubProcess()
    hub1, port = first.proc, first.port
    url = f"ws://127.0.0.1:{port}/"
    try:
        with (
            trioconn("tail", url, "log", name="tail") as plain,
            trioconn("tail", url, "log", "--json", name="tail --json") as full,
        ):
            for tail in (plain, full):
                tail.wait_for(f"^trioconn tail: connected to {url}$", stream="err", timeout=SLOW)
                # subscribed: what is published from now on reaches it (before, it could miss n=1)
                tail.wait_for(r"^trioconn tail: following 'log' from offset 0 of epoch ", stream="err")
            for n in (1, 2, 3):
                assert command(hub1, f'publish log {{"n": {n}}}') == f"offset {n}"

            assert command(hub1, "kick 4001") == "kicked 2"  # 4001: reconnect and resume
            for n in (4, 5):  # while the clients reconnect (or already have: no matter)
                command(hub1, f'publish log {{"n": {n}}}')
            for tail in (plain, full):
                tail.wait_for(r"link lost \(connection closed with code 4001: kicked", stream="err")
                tail.wait_for(f"^trioconn tail: reconnected to {url}$", stream="err", timeout=SLOW)
            command(hub1, 'publish log {"n": 6}')
            for tail in (plain, full):
                tail.wait_for('"n": 6')

            first.stop()  # the hub stops: its clients get 1001
            for tail in (plain, full):
                tail.wait_for(r"link lost \(connection closed with code 1001", stream="err")
            with hub(str(port)) as (hub2, same_port):
                assert same_port == port
                for tail in (plain, full):
                    tail.wait_for(r"^trioconn tail: reset: ", stream="err", timeout=SLOW)
                assert command(hub2, 'publish log {"n": 7}') == "offset 1"  # a new epoch
                command(hub2, "end log")
                assert plain.wait(SLOW) == 0
                assert full.wait(SLOW) == 0

        assert plain.out == [json.dumps({"n": n}) for n in range(1, 8)]
        reset = plain.err[plain.wait_for("reset:", stream="err")]
        assert "what came after offset 6 of epoch" in reset
        assert "continuing from offset 0 of epoch" in reset
        assert plain.err[-1] == "trioconn tail: topic 'log' ended"
        assert not any("Traceback" in line for line in plain.err)

        items = json_lines(full)
        assert [item["type"] for item in items] == ["event"] * 6 + ["reset", "event"]
        before, after = items[0]["epoch"], items[-1]["epoch"]
        assert before != after
        assert [
            (item["epoch"], item["offset"], item["data"]) for item in items if item["type"] == "event"
        ] == [
            *((before, n, {"n": n}) for n in range(1, 7)),
            (after, 1, {"n": 7}),
        ]
        assert items[6] == {
            "type": "reset",
            "topic": "log",
            "epoch": after,
            "offset": 0,
            "previous_epoch": before,
            "previous_offset": 6,
            "kind": None,
        }
    finally:
        first.stop()


def test_tail_last_replays_history_and_a_state_topic_prints_its_value():
    with hub() as (proc, port):
        url = f"ws://127.0.0.1:{port}/"
        for n in range(1, 6):
            command(proc, f"publish log {n}")
        command(proc, 'state job {"pct": 40}')
        with (
            trioconn("tail", url, "log", "--last", "2", name="tail --last") as log,
            trioconn("tail", url, "job", "--json", name="tail job") as job,
        ):
            log.wait_for("^5$", timeout=SLOW)
            job.wait_for('"snapshot"', timeout=SLOW)
            command(proc, 'state job {"pct": 100}')
            job.wait_for('"pct": 100')
            command(proc, "end job")
            command(proc, "end log")
            assert log.wait(SLOW) == 0 and job.wait(SLOW) == 0
        assert log.out == ["4", "5"]
        snapshot, event = json_lines(job)
        assert (snapshot["type"], snapshot["offset"], snapshot["data"]) == ("snapshot", 1, {"pct": 40})
        assert (event["type"], event["offset"], event["data"]) == ("event", 2, {"pct": 100})


@pytest.mark.parametrize(
    ("hub_args", "token", "message"),
    [
        ((), "nobody", "refused the connection: HTTP 401 unauthorized (check --token)"),
        ((), "banned", "refused the connection: HTTP 403 forbidden (check --token)"),
        (("--refuse-with", "close"), "nobody", "closed the connection: 4401 unauthorized (check --token)"),
        (("--refuse-with", "close"), "banned", "closed the connection: 4403 forbidden (check --token)"),
    ],
    ids=["http-401", "http-403", "close-4401", "close-4403"],
)
def test_tail_refused_credentials_exit_1_with_a_clear_message(hub_args, token, message, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(f"{token}\n")
    with hub(*hub_args) as (_proc, port):
        url = f"ws://127.0.0.1:{port}/"
        with trioconn("tail", url, "log", "--token-file", str(token_file), name="tail") as tail:
            assert tail.wait(SLOW) == 1
        assert tail.out == []
        assert tail.err == [tail.err[0]] and tail.err[0].startswith(f"trioconn tail: the hub {message}")
        assert token not in tail.err[0].split("(check --token)")[0]


def test_tail_a_refused_subscription_exits_1_with_the_error_code():
    with hub() as (_proc, port), trioconn("tail", f"ws://127.0.0.1:{port}/", "secret/x", name="tail") as tail:
        assert tail.wait(SLOW) == 1
    assert tail.err[-1] == "trioconn tail: the hub refused: forbidden: subscribe not allowed on this topic"


def test_tail_gives_up_after_max_attempts_and_exits_1(free_port):
    url = f"ws://127.0.0.1:{free_port}/"
    with trioconn("tail", url, "log", "--max-attempts", "2", name="tail") as tail:
        assert tail.wait(SLOW) == 1
    assert len(tail.err) == 1
    assert tail.err[0].startswith("trioconn tail: gave up after 2 failed attempt(s) in a row; last: ")


def test_tail_interrupted_by_ctrl_c_exits_130_without_a_traceback():
    with hub() as (_proc, port), trioconn("tail", f"ws://127.0.0.1:{port}/", "log", name="tail") as tail:
        tail.wait_for("connected", stream="err", timeout=SLOW)
        tail.signal(signal.SIGINT)
        assert tail.wait(SLOW) == 130
    assert tail.err[-1] == "trioconn tail: interrupted"
    assert not any("Traceback" in line for line in tail.err)


def test_tail_whose_reader_went_away_exits_141_quietly():
    """``trioconn tail … | head -1``: the next write finds the pipe closed."""
    with hub() as (proc, port):
        tail = subprocess.Popen(
            [sys.executable, "-m", "trioconn", "tail", f"ws://127.0.0.1:{port}/", "log"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tail.stderr is not None and tail.stdout is not None
            assert "connected" in tail.stderr.readline()
            assert "following 'log'" in tail.stderr.readline()  # subscribed: nothing is missed
            command(proc, "publish log 1")
            assert tail.stdout.readline() == "1\n"
            tail.stdout.close()  # the reader is gone
            command(proc, "publish log 2")
            assert tail.wait(SLOW) == 141
            assert tail.stderr.read() == ""
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait()
            tail.stderr.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tail", "http://127.0.0.1:1/", "log"], "argument URL: must be a ws:// or wss:// URL"),
        (
            ["tail", "ws://127.0.0.1:99999/", "log"],
            "argument URL: 'ws://127.0.0.1:99999/' is not a valid URL",
        ),
        (["tail", "ws://127.0.0.1:1/", ""], "argument TOPIC: topic must not be empty"),
        (["tail", "ws://127.0.0.1:1/", "log", "--last", "-1"], "argument --last: must be at least 0, got -1"),
        (
            ["tail", "ws://127.0.0.1:1/", "log", "--max-attempts", "0"],
            "argument --max-attempts: must be at least 1",
        ),
        (
            ["tail", "ws://127.0.0.1:1/", "log", "--max-attempts", "x"],
            "argument --max-attempts: must be a whole number",
        ),
        (
            ["tail", "ws://127.0.0.1:1/", "log", "--token", "a b"],
            "argument --token: the token must be visible ASCII",
        ),
        (
            ["tail", "ws://127.0.0.1:1/", "log", "--token-file", "/nonexistent"],
            "argument --token-file: cannot read",
        ),
        (["publish", "ws://127.0.0.1:1/", "log", "{oops"], "argument DATA: is not JSON"),
        (
            ["publish", "ws://127.0.0.1:1/", "log", "[1, NaN]"],
            "argument DATA: is not JSON: NaN is not valid JSON",
        ),
        (
            ["publish", "ws://127.0.0.1:1/", "log", "1e999"],
            "argument DATA: is not JSON: numbers must be finite",
        ),
    ],
)
def test_invalid_arguments_exit_2_naming_the_argument(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_token_and_token_file_together_is_a_usage_error(tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text("secret")
    assert cli.main(["tail", "ws://h:1/", "log", "--token", "a", "--token-file", str(token_file)]) == 2
    assert "argument --token-file: not allowed with argument --token" in capsys.readouterr().err


# -- publish -----------------------------------------------------------------------------------------


def test_publish_prints_the_offset_and_a_forbidden_publish_exits_1_with_the_code():
    with hub() as (proc, port):
        url = f"ws://127.0.0.1:{port}/"
        with trioconn("publish", url, "log", '{"pct": 5}', "--token", "writer", name="publish") as ok:
            assert ok.wait(SLOW) == 0
        assert ok.out == ["1"]
        with trioconn("publish", url, "log", '"not allowed"', name="publish as reader") as refused:
            assert refused.wait(SLOW) == 1
        assert refused.out == []
        assert refused.err == [
            "trioconn publish: the hub refused: forbidden: publish not allowed on this topic"
        ]
        with trioconn(
            "publish", url, "log", "1", "--token", "nobody", name="publish bad token"
        ) as unauthorized:
            assert unauthorized.wait(SLOW) == 1
        assert "HTTP 401 unauthorized (check --token)" in unauthorized.err[0]
        assert command(proc, "publish log 2") == "offset 2"  # only the first one was stored


def test_publish_from_standard_input_one_event_per_line_stops_at_a_line_that_is_not_json():
    with hub() as (proc, port):
        url = f"ws://127.0.0.1:{port}/"
        with trioconn("publish", url, "log", "-", "--token", "writer", name="publish -", stdin=True) as pub:
            for line in ('{"n": 1}', "", '"two"', "[3]", "not json", "5"):
                pub.send(line)
            pub.close_stdin()
            assert pub.wait(SLOW) == 2
        assert pub.out == ["1", "2", "3"]
        assert pub.err == [
            "trioconn publish: line 5 of standard input is not JSON: "
            "Expecting value: line 1 column 1 (char 0)"
        ]
        with trioconn("tail", url, "log", "--last", "10", name="tail") as tail:
            tail.wait_for(r"^\[3\]$", timeout=SLOW)
            command(proc, "end log")
            assert tail.wait(SLOW) == 0
        assert tail.out == ['{"n": 1}', '"two"', "[3]"]


def test_publish_data_nested_too_deep_exits_2(free_port):
    with hub() as (_proc, port):
        deep = "[" * 40 + "]" * 40
        with trioconn(
            "publish", f"ws://127.0.0.1:{port}/", "log", deep, "--token", "writer", name="pub"
        ) as pub:
            assert pub.wait(SLOW) == 2
    assert pub.err == ["trioconn publish: data is nested more than 32 levels deep"]


def test_publish_to_a_hub_that_is_not_there_gives_up_after_three_attempts(free_port):
    with trioconn("publish", f"ws://127.0.0.1:{free_port}/", "log", "1", name="publish") as pub:
        assert pub.wait(SLOW) == 1
    assert pub.err[0].startswith("trioconn publish: gave up after 3 failed attempt(s) in a row")

"""The JavaScript client's unit tests (``tests/js/*.test.mjs``), run with node's own test runner.

The browser client must take the same reconnect decisions as the Python client, so the rules are
handed to it from the one source of truth: this wrapper writes ``decision_table()`` and the
outcome of Python's ``decide()`` over many scripted sequences of connection ends to a JSON file
(``TRIOCONN_DECISION_TABLE``), and ``tests/js/decision.test.mjs`` replays them against the
JavaScript ``decide()``. Without node the tests skip, unless ``TRIOCONN_REQUIRE_BROWSER=1``
(CI), where they fail.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import trioconn
from trioconn._core.backoff import Backoff
from trioconn._core.decision import AttemptEnd, EndKind, Tally, decide, decision_table
from trioconn._core.protocol import CloseAction
from trioconn.browser import SCRIPT_PATH

ROOT = Path(__file__).resolve().parent.parent
JS_TESTS = [
    "tests/js/backoff.test.mjs",
    "tests/js/decision.test.mjs",
    "tests/js/protocol.test.mjs",
    "tests/js/client.test.mjs",
    "tests/js/subscriptions.test.mjs",
    "tests/js/publish.test.mjs",
    "tests/js/fanout.test.mjs",
    "tests/js/request.test.mjs",
]
#: Values the scripted random source returns, in turn (the jitter's draw in [0, 1]).
RANDOMS = [0.0, 0.25, 0.5, 0.75, 0.999, 1.0]
NODE_TIMEOUT = 120


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("TRIOCONN_REQUIRE_BROWSER") == "1":
            pytest.fail("node is not on PATH, and TRIOCONN_REQUIRE_BROWSER=1 requires the JavaScript tests")
        pytest.skip("node is not on PATH: the JavaScript unit tests need node >= 18")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"v(\d+)\.", version)
    assert match is not None and int(match.group(1)) >= 18, f"node >= 18 is needed, found {version!r}"
    return node


class _Scripted(random.Random):
    """A random source that returns ``RANDOMS`` in turn, so both languages draw the same values."""

    def __init__(self) -> None:
        super().__init__(0)
        self.drawn = 0

    def random(self) -> float:
        value = RANDOMS[self.drawn % len(RANDOMS)]
        self.drawn += 1
        return value


def _end_json(end: AttemptEnd) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": end.kind.value, "uptime": end.uptime}
    if end.code is not None:
        obj["code"] = end.code
    return obj


def _tally_json(tally: Tally) -> dict[str, Any]:
    return {"attempts": tally.attempts, "failures": tally.failures, "reauthUsed": tally.reauth_used}


def _scenario(
    *,
    max_attempts: int | None,
    token: bool,
    overrides: dict[int, CloseAction],
    ends: list[AttemptEnd],
) -> dict[str, Any]:
    """Run Python's ``decide`` over ``ends`` (until done/fail) and record every decision."""
    backoff = Backoff(base=0.5, factor=2.0, cap=4.0, max_attempts=max_attempts)
    scripted = _Scripted()
    tally = Tally()
    steps = []
    for end in ends:
        decision = decide(
            end,
            tally,
            backoff=backoff,
            rng=scripted,
            min_uptime=10.0,
            has_token_provider=token,
            overrides=overrides,
        )
        steps.append(
            {
                "end": _end_json(end),
                "action": decision.action.value,
                "delay": decision.delay,
                "tally": _tally_json(decision.tally),
                "exhausted": decision.exhausted,
            }
        )
        tally = decision.tally
        if decision.action in (CloseAction.DONE, CloseAction.FAIL):
            break
    return {
        "backoff": {"base": 0.5, "factor": 2.0, "cap": 4.0, "maxAttempts": max_attempts},
        "minUptime": 10.0,
        "hasTokenProvider": token,
        "overrides": {str(code): action.value for code, action in overrides.items()},
        "steps": steps,
    }


def decision_data() -> dict[str, Any]:
    """The table, plus Python's decisions (seconds) over every code and many sequences of ends."""
    scenarios = []
    # Every close code, once with and once without a token getter, from a fresh tally.
    for code in range(1000, 5000):
        for token in (False, True):
            end = AttemptEnd(EndKind.CLOSED, code=code)
            scenarios.append(_scenario(max_attempts=None, token=token, overrides={}, ends=[end]))
    # Sequences: the counting, the min_uptime reset, the reauth rule, overrides.
    picker = random.Random(20240613)
    codes = [1000, 1001, 1006, 1008, 1011, 1013, 2999, 3000, 4000, 4001, 4401, 4403, 4999]
    uptimes: list[float | None] = [None, None, 0.0, 5.0, 9.999, 10.0, 60.0]
    kinds = [EndKind.CLOSED] * 4 + [k for k in EndKind if k not in (EndKind.CLOSED, EndKind.REJECTED)]
    for _ in range(400):
        ends = []
        for _ in range(25):
            kind = picker.choice(kinds)
            code = picker.choice(codes) if kind is EndKind.CLOSED else None
            ends.append(AttemptEnd(kind, code=code, uptime=picker.choice(uptimes)))
        overrides = picker.choice([{}, {}, {4403: CloseAction.RECONNECT, 1000: CloseAction.RECONNECT}])
        scenarios.append(
            _scenario(
                max_attempts=picker.choice([None, 1, 2, 3, 5]),
                token=picker.choice([False, True]),
                overrides=overrides,
                ends=ends,
            )
        )
    return {"table": decision_table(), "randoms": RANDOMS, "scenarios": scenarios}


def test_node_unit_tests(tmp_path: Path) -> None:
    node = _node()
    table = tmp_path / "decision.json"
    table.write_text(json.dumps(decision_data()))
    env = {**os.environ, "TRIOCONN_DECISION_TABLE": str(table), "NODE_NO_WARNINGS": "1"}
    result = subprocess.run(
        [node, "--test", *JS_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"node --test failed (exit {result.returncode}):\n{output}", pytrace=False)
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    skipped = re.search(r"^# skipped (\d+)$", output, re.MULTILINE)
    assert passed is not None and int(passed.group(1)) > 50, output
    assert skipped is not None and skipped.group(1) == "0", output


def _node_eval(node: str, source: str) -> Any:
    result = subprocess.run(
        [node, "--input-type=module", "-e", source],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_js_close_code_table_has_exactly_the_python_rows() -> None:
    node = _node()
    js = _node_eval(
        node,
        f"import {{ CLOSE_CODES }} from {json.dumps(SCRIPT_PATH.as_uri())};"
        "console.log(JSON.stringify(CLOSE_CODES));",
    )
    python = {
        str(code): {"name": info.name, "action": info.action.value, "meaning": info.meaning}
        for code, info in trioconn.CLOSE_CODES.items()
    }
    assert js == python


def test_the_js_version_is_the_package_json_version() -> None:
    node = _node()
    js = _node_eval(
        node,
        f"import {{ VERSION }} from {json.dumps(SCRIPT_PATH.as_uri())};console.log(JSON.stringify(VERSION));",
    )
    package = json.loads((SCRIPT_PATH.parent / "package.json").read_text())
    assert js == package["version"]


def test_the_declarations_declare_every_export_and_nothing_else() -> None:
    """``trioconn.d.ts`` cannot be compiled here without TypeScript; its runtime names at least
    must be the module's exports, each declared as the kind of thing it is."""
    node = _node()
    exports = _node_eval(
        node,
        f"const m = await import({json.dumps(SCRIPT_PATH.as_uri())});"
        "console.log(JSON.stringify(Object.fromEntries(Object.entries(m).map(([k, v]) => "
        "[k, typeof v === 'function' ? (/^class /.test(String(v)) ? 'class' : 'function') : 'const']))));",
    )
    declarations = (SCRIPT_PATH.parent / "trioconn.d.ts").read_text(encoding="utf-8")
    pattern = r"^export declare (const|function|class) (\w+)"
    declared = {name: kind for kind, name in re.findall(pattern, declarations, re.M)}
    assert declared == exports


def test_without_node_the_tests_skip_unless_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("TRIOCONN_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="node is not on PATH"):
        _node()
    monkeypatch.setenv("TRIOCONN_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="TRIOCONN_REQUIRE_BROWSER=1"):
        _node()

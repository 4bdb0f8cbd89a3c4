"""The ``trioconn`` dispatcher: subcommands register through ``add_parser``/``run``."""

from __future__ import annotations

import subprocess
import sys

from trioconn import cli


def test_no_command_is_a_usage_error_with_exit_2(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unknown_command_names_it(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "no-such-command" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_main():
    done = subprocess.run(
        [sys.executable, "-m", "trioconn", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "usage: trioconn" in done.stdout

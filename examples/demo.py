"""The trioconn demo: a progress server, a client, one short job, live output; ends by itself.

Run it from the repository root::

    python examples/demo.py

It starts ``progress_server.py`` on a free port with a fresh jobs directory, then
``progress_client.py --start`` for one job of a few seconds, whose progress you watch live (a bar
on a terminal, plain lines otherwise). When the job is done the client exits 0 on its own, the
demo stops the server and exits with the client's status. Both are separate processes, started
exactly as you would start them by hand in two terminals.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Start the progress server and a client, run one short job, and exit.",
        epilog="Exits with the client's status: 0 once the job is done.",
    )
    parser.add_argument("--steps", type=int, default=30, help="chunks in the job (default: %(default)s)")
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=0.1,
        metavar="S",
        help="seconds per chunk (default: %(default)s)",
    )
    return parser.parse_args(argv)


def start_server(jobs_dir: str) -> tuple[subprocess.Popen[str], int]:
    """Start the server on a free port; return it and the port it printed first."""
    server = subprocess.Popen(
        [sys.executable, str(HERE / "progress_server.py"), "--port", "0", "--jobs-dir", jobs_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # its connection log would mix with the client's output
        text=True,
    )
    assert server.stdout is not None
    first = server.stdout.readline()  # "serving ws://127.0.0.1:PORT", or "" if it died
    if not first.startswith("serving ws://"):
        server.wait()
        raise SystemExit(f"demo: the server did not start (exit status {server.returncode})")
    print(f"demo: server {first.split()[1]}", flush=True)
    return server, int(first.rsplit(":", 1)[1])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trioconn-demo-") as jobs_dir:
        server, port = start_server(jobs_dir)
        try:
            client = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "progress_client.py"),
                    "--port",
                    str(port),
                    "--start",
                    "--job",
                    "demo-download",
                    "--steps",
                    str(args.steps),
                    "--step-seconds",
                    str(args.step_seconds),
                ],
                check=False,
            )
            status = client.returncode
        except KeyboardInterrupt:
            status = 130  # the client, in the same process group, got Ctrl-C too and said so
        finally:
            server.terminate()  # SIGTERM: the server closes its connections and exits
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            assert server.stdout is not None
            server.stdout.close()
    print(f"demo: {'finished' if status == 0 else f'client exited with status {status}'}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

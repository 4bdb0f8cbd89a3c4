"""Run jobs in worker threads and push their progress to WebSocket clients.

Run it::

    python examples/progress_server.py --port 8765

and start a job from another terminal with ``python examples/progress_client.py --start``.

The jobs are plain synchronous code, the kind a Celery task or a ``ThreadPoolExecutor`` runs:
``download()`` below "downloads" a file chunk by chunk, sleeping where real code would wait for
the network. Each job runs in a worker thread (``trio.to_thread.run_sync``) and reports through
the hub's thread-safe handle (``hub.from_thread()``) into the *state topic* ``job/<id>``: a
client that subscribes, or comes back after a lost connection, gets the current value at once
(the snapshot), not a replay of every step. When the job is finished its last state carries the
result and the topic is *ended*; following clients see their subscription end normally.

Starting a job
--------------
Two ways, both handled in this process by the hub itself (no client inside the server):

- a *request* to ``jobs/start`` with ``{"steps": 40, "step_seconds": 0.1}`` (and optionally
  ``"job": "<id>"``): the handler (``hub.on_request``) starts the job and replies
  ``{"job": "<id>", "started": true}``, so the caller learns the id it should follow; invalid
  values are refused with the error code ``invalid-job`` and a message saying which;
- *publishing* ``{"start": "<id>", "steps": 40, "step_seconds": 0.1}`` to the stream topic
  ``jobs/control``, as older clients do: the server reads those publications in-process
  (``hub.publications``); invalid ones are logged and ignored.

Starting an id that exists already does nothing (``"started": false``), so a retry is harmless.
The ``authorize`` hook allows exactly these: the ``jobs/start`` request, publishing to
``jobs/control``, and subscribing to anything but ``jobs/control``.

Surviving a restart
-------------------
Jobs outlive the server process: each one checkpoints to a small JSON file in ``--jobs-dir``
after every step, *before* reporting the step, so what a client has seen is never ahead of the
file. A server started again on the same directory resumes unfinished jobs from their last
checkpoint and re-publishes finished ones (result and end), so a client that lost its connection
reconnects, gets a ``reset`` (a new server means new epochs) whose snapshot is the current
value, and its bar continues from there. This is what happens to real workers (a deploy, a crash,
the OOM killer), which is why the example restarts the *process* rather than only the listener.

The page
--------
The same port serves a page for the browser, ``examples/web/progress.html``: it starts a job
(or follows ``?job=ID``) and shows its bar and the connection's state. WebSocket requests to
``/`` go to the hub, other requests to the page and ``/trioconn.js``; see ``_web.py``.

Any web site the user visits could open a WebSocket to 127.0.0.1 from the user's browser and
start jobs here, so a browser (a request with an ``Origin`` header) must come from this server's
own page *and* show the page token: a random token kept in ``<jobs-dir>/page-token``, so it
stays the same across restarts, and printed in the page's URL (``?token=...``). A wrong or
missing token is refused with 4401, another site's page with 4403: the hub's
``refuse_with="close"`` accepts such a handshake and closes it at once with that code, because
a browser shows a page an HTTP 401/403 only as 1006, which it would retry forever. Programs
(the Python clients) send no ``Origin`` and need no token.

The first line on stdout is ``serving ws://HOST:PORT``, the second ``page
http://HOST:PORT/?token=TOKEN``. Ctrl-C or SIGTERM stops the server: running jobs stop at their
next step and are resumed by the next start.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
from _cli import log_to_stderr, run_program
from _web import same_origin, serve_with_page, url_host

import trioconn
from trioconn import HandshakeRejected, HandshakeRequest, HubThreadHandle, Request, RequestRefused

logger = logging.getLogger("progress_server")

CONTROL = "jobs/control"
START = "jobs/start"
JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CHUNK_BYTES = 1024 * 1024


def job_topic(job_id: str) -> str:
    return f"job/{job_id}"


# -- a job and its file -----------------------------------------------------------------------


@attrs.define
class Job:
    """A job's durable state: what ``<jobs-dir>/<id>.json`` holds."""

    id: str
    total: int
    step_seconds: float
    done: int = 0
    status: str = "running"  # running | done | failed
    result: str | None = None
    resumed: int = 0
    path: Path = attrs.field(default=Path(), eq=False)

    def state(self) -> dict[str, Any]:
        """The value published on the job's state topic."""
        return {
            "job": self.id,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "result": self.result,
        }

    def save(self) -> None:
        """Write the file atomically: a crash leaves the old version or the new one, whole."""
        data = attrs.asdict(self, filter=lambda attribute, _: attribute.name != "path")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> Job:
        return cls(**json.loads(path.read_text(encoding="utf-8")), path=path)


def download(job: Job, progress: HubThreadHandle, stop: threading.Event) -> None:
    """The work: plain blocking code, as it would be in a Celery task.

    ``stop.wait(seconds)`` is the "network wait"; it is an ordinary sleep that returns early
    (True) when the server is shutting down, so the thread never outlives the server.
    """
    topic = job_topic(job.id)
    job.save()
    progress.set_state(topic, job.state())
    while job.done < job.total:
        if stop.wait(job.step_seconds):
            logger.info("job %s paused at %d/%d (server stopping)", job.id, job.done, job.total)
            return
        job.done += 1
        job.save()  # checkpoint first: a restarted server never goes back behind a client
        progress.set_state(topic, job.state())
    job.status = "done"
    mib = job.total * CHUNK_BYTES / 2**20
    resumed = {0: "", 1: ", resumed once"}.get(job.resumed, f", resumed {job.resumed} times")
    job.result = f"downloaded {job.total} chunks ({mib:.1f} MiB){resumed}"
    job.save()
    progress.set_state(topic, job.state())
    progress.end(topic)
    logger.info("job %s done: %s", job.id, job.result)


def load_jobs(jobs_dir: Path) -> list[Job]:
    """Every readable job file in ``jobs_dir`` (blocking: run it in a thread)."""
    jobs = []
    for path in sorted(jobs_dir.glob("*.json")):
        try:
            jobs.append(Job.load(path))
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("ignoring %s: %s", path, exc)
    return jobs


# -- running jobs -------------------------------------------------------------------------------


class JobRunner:
    """Starts jobs in worker threads and keeps their files in ``jobs_dir``."""

    def __init__(self, hub: trioconn.Hub, jobs_dir: Path, nursery: trio.Nursery) -> None:
        self.hub = hub
        self.jobs_dir = jobs_dir
        self.nursery = nursery
        self.stop = threading.Event()
        self.known: set[str] = set()

    async def stop_threads_on_exit(self) -> None:
        # Cancelling a task does not stop a thread; this tells the jobs to stop at their next
        # step, so the server exits within one step_seconds.
        try:
            await trio.sleep_forever()
        finally:
            self.stop.set()

    async def recover(self) -> None:
        """Re-publish finished jobs and resume unfinished ones from their files."""
        for job in await trio.to_thread.run_sync(load_jobs, self.jobs_dir):
            self.known.add(job.id)
            self.hub.set_state_nowait(job_topic(job.id), job.state())
            if job.status == "running":
                job.resumed += 1
                logger.info("resuming job %s at %d/%d", job.id, job.done, job.total)
                self._run(job)
            else:
                self.hub.end_nowait(job_topic(job.id))

    def start(self, job_id: str, steps: int, step_seconds: float) -> bool:
        """Start job ``job_id`` unless it exists already; True if it was started."""
        if job_id in self.known:
            logger.info("job %s exists already; not started again", job_id)
            return False
        self.known.add(job_id)
        job = Job(job_id, steps, float(step_seconds), path=self.jobs_dir / f"{job_id}.json")
        logger.info("starting job %s: %d steps of %gs", job_id, steps, step_seconds)
        self._run(job)
        return True

    async def handle_start(self, request: Request) -> dict[str, Any]:
        """The ``jobs/start`` request handler: start a job and reply with its id."""
        data = request.data if request.data is not None else {}
        if not isinstance(data, dict):
            raise RequestRefused("invalid-job", "the request must be an object like {'steps': 40}")
        if data.get("job") is None:
            data = {**data, "job": "job-" + secrets.token_hex(3)}
        try:
            job_id, steps, step_seconds = job_request(data, "job")
        except ValueError as exc:
            raise RequestRefused("invalid-job", str(exc)) from None
        return {"job": job_id, "started": self.start(job_id, steps, step_seconds)}

    async def follow_control(self, publications: trioconn.Publications) -> None:
        """Start what clients publish to ``jobs/control``; invalid requests are logged and ignored."""
        while True:
            try:
                async for publication in publications:
                    try:
                        self.start(*job_request(publication.data, "start"))
                    except ValueError as exc:
                        logger.warning("ignoring control message %r: %s", publication.data, exc)
            except trioconn.PublicationsLost as lost:  # a burst faster than jobs start
                logger.warning("%d control messages were not read in time", lost.count)
            else:
                return  # the hub is closed

    def _run(self, job: Job) -> None:
        self.nursery.start_soon(self._thread, job)

    async def _thread(self, job: Job) -> None:
        try:
            await trio.to_thread.run_sync(download, job, self.hub.from_thread(), self.stop)
        except trioconn.HubStopped:
            pass  # shutting down: the file keeps the job for the next start
        except Exception as exc:
            logger.exception("job %s failed", job.id)
            job.status, job.result = "failed", f"{type(exc).__name__}: {exc}"
            await trio.to_thread.run_sync(job.save)
            self.hub.set_state_nowait(job_topic(job.id), job.state())
            self.hub.end_nowait(job_topic(job.id))


def job_request(data: Any, id_field: str) -> tuple[str, int, float]:
    """The job id, steps and step seconds a start request asks for; ``ValueError`` says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("a start request must be an object")
    job_id = data.get(id_field)
    steps = data.get("steps", 40)
    step_seconds = data.get("step_seconds", 0.1)
    if not isinstance(job_id, str) or not JOB_ID.match(job_id):
        raise ValueError(f"{id_field!r} must be a job id of 1-64 letters, digits, '_', '.', '-'")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100_000:
        raise ValueError("'steps' must be an int from 1 to 100000")
    if (
        isinstance(step_seconds, bool)
        or not isinstance(step_seconds, int | float)
        or not 0 <= step_seconds <= 60
    ):
        raise ValueError("'step_seconds' must be a number from 0 to 60")
    return job_id, steps, float(step_seconds)


# -- the server ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run download-like jobs in worker threads and publish their progress.",
        epilog=f"Start a job with a request to {START}, by publishing {{'start': ID}} to {CONTROL}, "
        "or with progress_client.py --start.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to listen on; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--jobs-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "trioconn-progress-jobs",
        metavar="DIR",
        help="where jobs are checkpointed; unfinished ones resume on start (default: %(default)s)",
    )
    return parser.parse_args(argv)


def page_token(jobs_dir: Path) -> str:
    """The token pages show, made once and kept in the jobs directory (blocking: use a thread)."""
    path = jobs_dir / "page-token"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(16)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(token, encoding="ascii")
        os.replace(tmp, path)
        return token


def matches(given: str | None, token: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), token.encode())


async def serve(args: argparse.Namespace) -> None:
    await trio.Path(args.jobs_dir).mkdir(parents=True, exist_ok=True)
    page = await trio.to_thread.run_sync(page_token, args.jobs_dir)

    def authenticate(request: HandshakeRequest) -> str | None:
        if not request.origins:
            return "client"  # a program, not a page in a browser
        if not same_origin(request):
            raise HandshakeRejected(403, b"pages of other sites may not connect")
        if matches(request.token, page):
            return "page"
        return None  # 401: the page sees 4401

    def authorize(identity: str, topic: str, action: str) -> bool:
        if topic == CONTROL:
            return action == "publish"
        if topic == START:
            return action == "request"
        return action == "subscribe"

    hub = trioconn.Hub(authenticate=authenticate, authorize=authorize, refuse_with="close")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_sigterm, hub, nursery.cancel_scope)
        runner = JobRunner(hub, args.jobs_dir, nursery)
        nursery.start_soon(runner.stop_threads_on_exit)
        hub.on_request(START, runner.handle_start)
        await runner.recover()  # before serving: a returning client finds its job's state at once
        # Reading jobs/control from before the first client is served: no start is missed.
        await nursery.start(read_control, hub, runner)
        port = await nursery.start(
            lambda task_status: serve_with_page(
                hub, "progress.html", args.host, args.port, task_status=task_status
            )
        )
        local = url_host(args.host)
        print(f"serving ws://{args.host}:{port}", flush=True)
        print(f"page http://{local}:{port}/?token={page}", flush=True)
        print(f"  jobs in {args.jobs_dir}; start one: progress_client.py --port {port} --start", flush=True)


async def read_control(hub: trioconn.Hub, runner: JobRunner, *, task_status: trio.TaskStatus[None]) -> None:
    """Start the jobs clients publish to ``jobs/control``; started once the reader is open."""
    async with hub.publications(CONTROL) as publications:
        task_status.started()
        await runner.follow_control(publications)


async def stop_on_sigterm(hub: trioconn.Hub, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            logger.info("SIGTERM: closing connections (1001) and stopping")
            await hub.aclose()
            scope.cancel()
            return


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    log_to_stderr()
    # OSError: port in use, jobs directory not writable …
    return run_program(
        "progress_server",
        lambda: trio.run(serve, args),
        errors=(OSError,),
        interrupted="interrupted, stopped",
    )


if __name__ == "__main__":
    sys.exit(main())

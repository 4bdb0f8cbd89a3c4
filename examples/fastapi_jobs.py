"""A FastAPI service that runs "video downloads" in worker threads and streams their progress.

Run it from the repository root (``pip install -e '.[asgi]'``)::

    uvicorn examples.fastapi_jobs:app                                # asyncio
    hypercorn examples.fastapi_jobs:app --worker-class trio          # trio

and open http://127.0.0.1:8000/ (hypercorn: http://127.0.0.1:8000/ too). The page logs in,
starts a job and shows its progress as it arrives over the WebSocket, through ``trioconn.js``:
a status badge with "reconnecting in N s" and a "Retry now" button; when the job's topic ends
the page closes its client (1000) and never reconnects.

The HTTP API:

- ``POST /login`` with ``{"user": "alice"}`` (JSON) or ``user=alice`` (form) returns
  ``{"access_token": <JWT>, "token_type": "bearer"}``. A demo: there is no password.
- ``POST /jobs`` with ``Authorization: Bearer <JWT>`` (optional JSON body ``{"url": ...}``)
  starts a job and returns ``{"job": id, "topic": "jobs/<id>"}``.
- ``GET /jobs/<id>`` (same header) returns the job's status.
- ``/ws/`` is the WebSocket endpoint, a ``trioconn.asgi.HubApp``. Connect with ``?token=<JWT>``
  (or ``Authorization: Bearer``) and subscribe to ``jobs/<id>`` with ``last`` large enough to
  replay what the job published before you subscribed (every job has at most ``STEPS`` events).
  A missing, invalid or expired token is refused with close code 4401 after the upgrade
  (``refuse_with="close"``), which a browser page can see, where an HTTP 401 would reach it as
  1006; a client with a token getter fetches a fresh token once, then gives up.
- ``GET /`` is the page; ``GET /trioconn.js`` the browser client it imports
  (``trioconn.browser.SCRIPT_PATH``).

Each progress report is an event on the stream topic ``jobs/<id>``:
``{"status": "running", "step": 3, "steps": 30, "pct": 10, "bytes": ..., "total_bytes": ...}``;
the last one has ``"status": "done"`` (or ``"cancelled"`` if the server stopped first), and then
the topic is ended, so a subscriber's iteration ends normally.

How the pieces fit
------------------
The hub and the jobs live for exactly as long as the app: the lifespan opens
``trioconn.asgi.lifespan(hub)`` and, inside it, a task group. ``POST /jobs`` starts a task in
that group, which runs the blocking ``download`` in a worker thread
(``anyio.to_thread.run_sync``) and hands it ``hub.from_thread()`` to publish with. At shutdown a
``threading.Event`` tells every job to stop at its next step; the task group then waits for
their threads, each of which reports ``cancelled`` and ends its topic while the hub still runs.
No thread outlives the app. (The lifespan's shutdown comes after the server has closed the
WebSocket connections, though: uvicorn closes them with 1012 as soon as it is told to stop,
hypercorn lets them run for its ``--graceful-timeout`` and then ends them, and the hub closes them
with 1001. Followers see that close, not the ``cancelled`` report.)

Settings (environment variables): ``TRIOCONN_DEMO_SECRET`` (the JWT signing key; a random one
per start if unset, so tokens do not survive a restart), ``TRIOCONN_DEMO_STEPS`` (default 30),
``TRIOCONN_DEMO_STEP_SECONDS`` (default 0.1), ``TRIOCONN_DEMO_TOKEN_SECONDS`` (token lifetime,
default 3600).
"""

import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import jwt
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.routing import WebSocketRoute

import trioconn
import trioconn.asgi
import trioconn.browser

logger = logging.getLogger("fastapi_jobs")

USER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_ACTIVE_JOBS = 50  # worker threads are a finite resource: refuse (429) beyond this


@attrs.define
class Job:
    """A job's status, written by its worker thread and read by ``GET /jobs/<id>``."""

    id: str
    owner: str
    url: str
    steps: int
    total_bytes: int
    status: str = "queued"  # queued | running | done | cancelled | failed
    step: int = 0

    @property
    def topic(self) -> str:
        return f"jobs/{self.id}"

    def progress(self) -> dict[str, Any]:
        """The event published for the current step (and ``GET /jobs/<id>``'s answer)."""
        return {
            "job": self.id,
            "status": self.status,
            "step": self.step,
            "steps": self.steps,
            "pct": self.step * 100 // self.steps,
            "bytes": self.total_bytes * self.step // self.steps,
            "total_bytes": self.total_bytes,
        }


def download(
    job: Job, step_seconds: float, progress: trioconn.HubThreadHandle, stop: threading.Event
) -> None:
    """The work: plain blocking code, as it would be with a real HTTP client.

    ``stop.wait`` stands for the network wait; it returns True early when the app shuts down.
    """
    job.status = "running"
    try:
        while job.step < job.steps:
            if stop.wait(step_seconds):
                job.status = "cancelled"
                progress.publish(job.topic, job.progress())
                return
            job.step += 1
            if job.step == job.steps:
                job.status = "done"
            progress.publish(job.topic, job.progress())
    finally:
        if job.status not in ("done", "cancelled"):
            job.status = "failed"
        with contextlib.suppress(trioconn.HubStopped):
            progress.end(job.topic)


class Jobs:
    """The app's jobs and the task group their threads run in (open only during the lifespan)."""

    def __init__(self, hub: trioconn.Hub, steps: int, step_seconds: float) -> None:
        self.hub = hub
        self.steps = steps
        self.step_seconds = step_seconds
        self.by_id: dict[str, Job] = {}
        self.stop = threading.Event()
        self._tasks: anyio.abc.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield
            finally:
                self._tasks = None  # no new jobs from here on
                self.stop.set()  # running jobs stop at their next step; the group waits for them

    def active(self) -> int:
        return sum(job.status in ("queued", "running") for job in self.by_id.values())

    def start(self, owner: str, url: str) -> Job:
        if self._tasks is None:
            raise HTTPException(503, "shutting down")
        if self.active() >= MAX_ACTIVE_JOBS:
            raise HTTPException(429, "too many jobs running; try again later")
        job = Job(secrets.token_hex(6), owner, url, self.steps, total_bytes=self.steps * 1_048_576)
        self.by_id[job.id] = job
        self._tasks.start_soon(self._run, job)
        return job

    async def _run(self, job: Job) -> None:
        handle = self.hub.from_thread()  # in the event loop; the thread only uses the handle
        try:
            await anyio.to_thread.run_sync(download, job, self.step_seconds, handle, self.stop)
        except Exception:
            # Raised further, it would cancel every other job and stop the app: a failed job
            # is that job's business only (``download`` has marked it failed and ended its topic).
            logger.exception("job %s failed", job.id)

    def owned_by(self, job_id: str, user: str) -> Job | None:
        job = self.by_id.get(job_id)
        return job if job is not None and job.owner == user else None


class JobRequest(BaseModel):
    url: str = "https://videos.example/big-buck-bunny.mp4"


def create_app(
    *, secret: str | None = None, steps: int | None = None, step_seconds: float | None = None
) -> FastAPI:
    """The app; settings not given are read from the environment (see the module's docstring)."""
    secret = secret or os.environ.get("TRIOCONN_DEMO_SECRET") or secrets.token_urlsafe(32)
    steps = steps if steps is not None else int(os.environ.get("TRIOCONN_DEMO_STEPS", "30"))
    if step_seconds is None:
        step_seconds = float(os.environ.get("TRIOCONN_DEMO_STEP_SECONDS", "0.1"))
    token_seconds = float(os.environ.get("TRIOCONN_DEMO_TOKEN_SECONDS", "3600"))

    def user_of(token: str | None) -> str | None:
        """The user a valid, unexpired token names; None otherwise."""
        if not token:
            return None
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        except jwt.InvalidTokenError:
            return None
        user = claims["sub"]
        return user if isinstance(user, str) else None

    def authenticate(request: trioconn.HandshakeRequest) -> str | None:
        return user_of(request.token)  # None: the handshake is refused with 401

    def authorize(user: str, topic: str, action: str) -> bool:
        if action != "subscribe" or not topic.startswith("jobs/"):
            return False  # clients never publish; progress comes from the jobs
        return jobs.owned_by(topic.removeprefix("jobs/"), user) is not None

    # refuse_with="close": a page sees a refused token as close code 4401 (its client fetches a
    # fresh token once) instead of the 1006 a browser reports for an HTTP 401.
    hub = trioconn.Hub(authenticate=authenticate, authorize=authorize, refuse_with="close")
    jobs = Jobs(hub, steps, step_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The hub outlives the jobs: their last reports and ends still reach the followers.
        async with trioconn.asgi.lifespan(hub), jobs.running():
            yield

    app = FastAPI(title="trioconn jobs demo", lifespan=lifespan)
    hub_app = trioconn.asgi.HubApp(hub)
    app.mount("/ws", hub_app)  # serves /ws/ and below
    # Starlette redirects /ws to /ws/ for HTTP only; this route lets WebSocket clients use /ws too.
    app.router.routes.append(WebSocketRoute("/ws", hub_app))
    bearer = HTTPBearer(auto_error=False)

    def current_user(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        user = user_of(credentials.credentials if credentials else None)
        if user is None:
            raise HTTPException(401, "missing, invalid or expired token", {"WWW-Authenticate": "Bearer"})
        return user

    User = Annotated[str, Depends(current_user)]

    @app.post("/login")
    async def login(request: Request) -> dict[str, Any]:
        body = await request.body()
        fields: Any
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                fields = json.loads(body)
            except ValueError:
                raise HTTPException(400, "invalid JSON") from None
        else:
            fields = dict(urllib.parse.parse_qsl(body.decode("latin-1")))
        user = fields.get("user") if isinstance(fields, dict) else None
        if not isinstance(user, str) or not USER.match(user):
            raise HTTPException(422, "give a user name: 1-64 letters, digits or _.@-")
        now = int(time.time())
        claims = {"sub": user, "iat": now, "exp": now + int(token_seconds)}
        token = jwt.encode(claims, secret, algorithm="HS256")
        return {"access_token": token, "token_type": "bearer", "expires_in": int(token_seconds)}

    @app.post("/jobs")
    async def start_job(user: User, body: JobRequest | None = None) -> dict[str, str]:
        job = jobs.start(user, (body or JobRequest()).url)
        return {"job": job.id, "topic": job.topic}

    @app.get("/jobs/{job_id}")
    async def job_status(job_id: str, user: User) -> dict[str, Any]:
        job = jobs.owned_by(job_id, user)
        if job is None:
            raise HTTPException(404, "no such job")  # another user's job does not exist for you
        return {**job.progress(), "url": job.url, "topic": job.topic}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/trioconn.js")
    async def script() -> FileResponse:
        return FileResponse(trioconn.browser.SCRIPT_PATH, media_type="text/javascript")

    return app


PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>trioconn jobs demo</title>
<style>
  body { font: 16px system-ui, sans-serif; margin: 2em; max-width: 40em }
  progress { width: 100% }
  #status { padding: 0.2em 0.6em; border-radius: 0.3em; background: #eee }
  #status[data-state="open"] { background: #cfc } #status[data-state="reconnecting"] { background: #fd9 }
</style>
<h1>Download jobs</h1>
<form id="start">
  <label>User <input id="user" value="alice" required></label>
  <button>Start a download</button>
</form>
<p>
  <span id="status" data-state="idle">not connected</span>
  <button id="retry" hidden>Retry now</button>
</p>
<p><progress id="bar" max="100" value="0"></progress></p>
<pre id="log"></pre>
<script type="module">
import { Client } from "/trioconn.js";

const $ = (id) => document.getElementById(id);
const log = (text) => { $("log").textContent += text + "\\n"; };

async function post(path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = "Bearer " + token;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

// Called before every connection attempt: a token that expired meanwhile (the hub closes
// with 4401) is replaced by a fresh one. A real app would ask its session here.
const login = async () => (await post("/login", { user: $("user").value })).access_token;

let client = null;
let countdown = null;

function showStatus({ state, code, nextAttemptAt }) {
  clearInterval(countdown);
  const show = () => {
    let text = state;
    const seconds = Math.max(0, Math.ceil((nextAttemptAt - Date.now()) / 1000));
    if (nextAttemptAt !== null) text += " in " + seconds + " s";
    if (code !== null) text += " (" + code + ")";
    $("status").textContent = text;
  };
  show();
  if (nextAttemptAt !== null) countdown = setInterval(show, 250);
  $("status").dataset.state = state;
  $("retry").hidden = state !== "reconnecting" && state !== "connecting";
}

$("retry").onclick = () => client?.reconnectNow();

$("start").onsubmit = async (submit) => {
  submit.preventDefault();
  await client?.close();
  $("log").textContent = "";
  $("bar").value = 0;
  try {
    const { job, topic } = await post("/jobs", {}, await login());
    log("started job " + job);
    client = new Client("/ws", { token: login });
    client.addEventListener("statechange", (change) => showStatus(change.detail));
    const subscription = client.subscribe(topic, { last: 1000 });
    subscription.addEventListener("event", ({ detail: { data } }) => {
      $("bar").value = data.pct;
      log(data.status + " " + data.pct + "% (" + data.bytes + " bytes)");
    });
    subscription.addEventListener("end", () => {
      log("job finished");
      client.close(); // done: close with 1000, never reconnect
    });
    subscription.addEventListener("error", ({ detail }) => log("error: " + detail.message));
  } catch (error) {
    log(String(error));
  }
};
</script>
</html>
"""


app = create_app()

"""``trioconn serve`` as a subprocess, started as docs/operate.md shows.

Publishing over HTTP reaches WebSocket subscribers (``trioconn.connect`` and an independent
``websockets`` client); every HTTP error code; ``/metrics`` parsed with prometheus_client's parser
and checked against what happened; JWT verification (HS256, RS256, expiry, claims); config file
and flags; SIGTERM. The Redis tests (health, resuming on a second server) are in
``test_serve_redis.py``. Everything listens on 127.0.0.1, port 0.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
import websockets.exceptions
import websockets.sync.client
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import trioconn
from trioconn import cli

from ._procs import Process
from ._serve import Serve, command, docs_block, eventually, metric, request, serve_args

KEY = "test-api-key-0123456789"


# -- an independent WebSocket client (websockets, sync API, in a thread) -----------------------------


class WsClient:
    """A protocol-v1 client written on ``websockets`` alone: frames in, frames out."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._opened = websockets.sync.client.connect(url, open_timeout=10, **kwargs)
        self.conn = self._opened.__enter__()  # websockets 17 wants connect() entered
        self.pending: list[dict[str, Any]] = []
        #: frames read by ``close_code`` and the like, in order
        self.kept: list[dict[str, Any]] = []
        self.welcome = self.recv()
        assert self.welcome["type"] == "welcome", self.welcome

    def send(self, frame: dict[str, Any]) -> None:
        self.conn.send(json.dumps(frame))

    def recv(self, timeout: float = 10) -> dict[str, Any]:
        """The next frame (batches flattened, pings answered); TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.pending:
                frame = self.pending.pop(0)
            else:
                frame = json.loads(self.conn.recv(timeout=max(0.0, deadline - time.monotonic())))
                if frame["type"] == "batch":
                    self.pending.extend(frame["frames"])
                    continue
            if frame["type"] == "ping":
                self.send({"type": "pong", "id": frame["id"]})
                continue
            return frame

    def subscribe(self, topic: str, **fields: Any) -> dict[str, Any]:
        self.send({"type": "subscribe", "topic": topic, "ref": topic, **fields})
        return self.recv()

    def close_code(self, timeout: float = 20) -> int | None:
        """Read until the server closes; the close code (frames still arriving are kept)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.kept.append(self.recv(timeout=deadline - time.monotonic()))
        except websockets.exceptions.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
        raise AssertionError("the server did not close the connection")

    def close(self) -> None:
        self._opened.__exit__(None, None, None)


def subscriptions(server: Serve) -> float:
    return metric(server.metrics(), "trioconn_subscriptions")


@pytest.fixture
def servers():
    """``servers(*args, ...)`` starts ``trioconn serve``; whatever still runs is killed after."""
    started: list[Serve] = []

    def start(*args: str, **kwargs: Any) -> Serve:
        server = Serve(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


# -- the docs' quickstart ------------------------------------------------------------------------------


def docs_quickstart(tmp_path: Path) -> tuple[list[str], dict[str, Any], str]:
    """Do in ``tmp_path`` what docs/operate.md says: the key file, the serve arguments, and the
    curl request's path and body."""
    args: list[str] = []
    for line in docs_block("quickstart").splitlines():
        if line.startswith("echo "):
            words = shlex.split(line)
            assert words[-2] == ">", line
            (tmp_path / words[-1]).write_text(words[1] + "\n")
        elif line.startswith("trioconn serve"):
            args = serve_args(line)
    assert args, "docs/operate.md shows no trioconn serve command"
    curl = shlex.split(docs_block("publish").replace("\\\n", " "))
    assert curl[:3] == ["curl", "-X", "POST"], curl
    url = next(word for word in curl if word.startswith("http://"))
    body = json.loads(curl[curl.index("-d") + 1])
    return args, body, url.split("8765", 1)[1]


async def test_the_docs_quickstart_delivers_one_curl_post_to_both_kinds_of_subscriber(servers, tmp_path):
    args, body, path = docs_quickstart(tmp_path)
    server = servers(*args, "--port", "0", cwd=tmp_path)
    key = (tmp_path / "api-key").read_text().strip()
    topic = body["topic"]

    independent: dict[str, Any] = {}
    subscribed = threading.Event()

    def websockets_subscriber() -> None:
        try:
            client = WsClient(server.ws)
            try:
                independent["answer"] = client.subscribe(topic)
                subscribed.set()
                independent["event"] = client.recv(timeout=20)
            finally:
                client.close()
        finally:
            subscribed.set()

    async with trioconn.connect(server.ws) as client, client.subscribe(topic) as sub:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, websockets_subscriber)
            await trio.to_thread.run_sync(subscribed.wait, 20)
            # both subscriptions are registered at the server before anything is published
            await trio.to_thread.run_sync(lambda: eventually(lambda: subscriptions(server) == 2))
            status, answer = await trio.to_thread.run_sync(
                lambda: request("POST", server.http + path, body, token=key)
            )
            assert (status, answer) == (200, {"topic": topic, "offset": 1})
            with trio.fail_after(20):
                item = await sub.__anext__()
        assert isinstance(item, trioconn.EventItem)
        assert (item.topic, item.offset, item.data) == (topic, 1, body["data"])
    assert independent["answer"]["type"] == "subscribed"
    assert independent["event"] == {"type": "event", "topic": topic, "offset": 1, "data": body["data"]}


def test_the_docs_quickstart_delivers_one_curl_post_to_trioconn_tail(servers, tmp_path):
    args, body, path = docs_quickstart(tmp_path)
    server = servers(*args, "--port", "0", cwd=tmp_path)
    key = (tmp_path / "api-key").read_text().strip()
    topic = body["topic"]
    tail = Process(command("tail", server.ws, topic), name="tail")
    try:
        tail.wait_for(r"following", stream="err", timeout=15)
        assert request("POST", server.http + path, body, token=key) == (200, {"topic": topic, "offset": 1})
        line = tail.out[tail.wait_for(r".", timeout=15)]
        assert json.loads(line) == body["data"]
        assert server.call("POST", "/api/end", {"topic": topic}, token=key)[0] == 200
        assert tail.wait(15) == 0  # the topic ended: tail's documented exit code 0
    finally:
        tail.close()


def test_python_dash_m_trioconn_serve_is_the_same_server(servers, tmp_path):
    server = Serve("--port", "0", "--api-key", KEY, cwd=tmp_path)
    try:
        assert server.call("GET", "/health")[0] == 200
    finally:
        server.close()


# -- the HTTP API ----------------------------------------------------------------------------------


def test_a_batch_is_published_in_order_and_answered_with_its_offsets(servers):
    server = servers("--port", "0", "--api-key", KEY)
    batch = {"events": [{"topic": "a", "data": 1}, {"topic": "b", "data": "x"}, {"topic": "a", "data": [2]}]}
    assert server.call("POST", "/api/publish", batch, token=KEY) == (200, {"offsets": [1, 1, 2]})
    assert server.call("POST", "/api/publish", {"topic": "a", "data": None}, token=KEY) == (
        200,
        {"topic": "a", "offset": 3},
    )
    client = WsClient(server.ws)
    try:
        answer = client.subscribe("a", last=10)
        assert (answer["type"], answer["replayed"], answer["offset"]) == ("subscribed", 3, 3)
        replayed = [client.recv() for _ in range(3)]
        assert [(f["offset"], f["data"]) for f in replayed] == [(1, 1), (2, [2]), (3, None)]
    finally:
        client.close()
    # A batch stops at the first failure and says what went through.
    assert server.call("POST", "/api/end", {"topic": "b"}, token=KEY) == (200, {"topic": "b", "offset": 1})
    status, error = server.call(
        "POST", "/api/publish", {"events": [{"topic": "a", "data": 4}, {"topic": "b", "data": 5}]}, token=KEY
    )
    assert status == 409
    assert (error["error"], error["index"], error["offsets"]) == ("topic-ended", 1, [4])


def test_state_and_end_answer_with_offsets_and_reach_subscribers(servers):
    server = servers("--port", "0", "--api-key", KEY)
    client = WsClient(server.ws)
    try:
        assert client.subscribe("job/1")["kind"] is None
        assert server.call("POST", "/api/state", {"topic": "job/1", "value": {"pct": 5}}, token=KEY) == (
            200,
            {"topic": "job/1", "offset": 1},
        )
        assert client.recv() == {"type": "event", "topic": "job/1", "offset": 1, "data": {"pct": 5}}
        status, answer = server.call("POST", "/api/end", {"topic": "job/1"}, token=KEY)
        assert (status, answer["topic"]) == (200, "job/1")
        assert client.recv()["type"] == "end"
    finally:
        client.close()


def error_of(result: tuple[int, Any]) -> tuple[int, str]:
    status, body = result
    assert isinstance(body, dict) and body.get("status") == status and body.get("message"), body
    return status, body["error"]


def make_token(secret: Any, algorithm: str = "HS256", lifetime: float = 300, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "tester", "iat": now, "exp": now + lifetime, **claims}
    return jwt.encode(payload, secret, algorithm=algorithm)


def test_every_http_error_is_json_with_its_status_and_code(servers, tmp_path):
    secret = "s" * 32
    server = servers("--port", "0", "--api-key", KEY, "--jwt-secret", secret, "--max-body-bytes", "2048")
    call = server.call
    good = {"topic": "t", "data": 1}
    # 400: not JSON, not an object, fields wrong, missing or unknown
    assert error_of(call("POST", "/api/publish", raw=b"{not json", token=KEY)) == (400, "invalid-json")
    assert error_of(call("POST", "/api/publish", [1], token=KEY)) == (400, "invalid-body")
    for body, named in [
        ({"topic": 5, "data": 1}, "'topic'"),
        ({"topic": "", "data": 1}, "'topic'"),
        ({"topic": "t"}, "'data'"),
        ({"topic": "t", "data": 1, "extra": 2}, "'extra'"),
        ({"events": []}, "'events'"),
        ({"events": [good, 3]}, "events[1]"),
        ({"events": [good, {"topic": "t"}]}, "events[1]"),
    ]:
        status, error = call("POST", "/api/publish", body, token=KEY)
        assert (status, error["error"]) == (400, "invalid-body"), body
        assert named in error["message"], (named, error)
    assert error_of(call("POST", "/api/state", {"topic": "s"}, token=KEY)) == (400, "invalid-body")
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    assert error_of(call("POST", "/api/publish", {"topic": "t", "data": deep}, token=KEY)) == (
        400,
        "invalid-body",
    )
    # 401: no credentials, a wrong key, an expired or forged token
    assert error_of(call("POST", "/api/publish", good)) == (401, "unauthorized")
    assert error_of(call("POST", "/api/publish", good, token="wrong")) == (401, "unauthorized")
    expired = make_token(secret, lifetime=-60, publish=["*"])
    status, error = call("POST", "/api/publish", good, token=expired)
    assert (status, error["error"]) == (401, "unauthorized") and "expired" in error["message"]
    forged = make_token("another-secret-of-32-bytes-length", publish=["*"])
    assert error_of(call("POST", "/api/publish", good, token=forged)) == (401, "unauthorized")
    # 403: a valid token whose publish claim does not cover the topic
    token = make_token(secret, publish=["jobs/*"])
    assert call("POST", "/api/publish", {"topic": "jobs/1", "data": 1}, token=token) == (
        200,
        {"topic": "jobs/1", "offset": 1},
    )
    status, error = call("POST", "/api/publish", {"topic": "logs/1", "data": 1}, token=token)
    assert (status, error["error"], error["topic"]) == (403, "forbidden", "logs/1")
    batch = {"events": [{"topic": "jobs/2", "data": 1}, {"topic": "logs/2", "data": 1}]}
    assert error_of(call("POST", "/api/publish", batch, token=token)) == (403, "forbidden")
    assert call("POST", "/api/publish", {"topic": "jobs/2", "data": 0}, token=token)[1]["offset"] == 1
    no_claim = make_token(secret)
    assert error_of(call("POST", "/api/end", {"topic": "jobs/1"}, token=no_claim)) == (403, "forbidden")
    # 404, 405
    assert error_of(call("GET", "/nowhere")) == (404, "not-found")
    assert error_of(call("GET", "/api/publish")) == (405, "method-not-allowed")
    # 409: topic ended, wrong kind
    assert call("POST", "/api/state", {"topic": "st", "value": 1}, token=KEY)[0] == 200
    assert error_of(call("POST", "/api/publish", {"topic": "st", "data": 1}, token=KEY)) == (
        409,
        "wrong-kind",
    )
    assert call("POST", "/api/end", {"topic": "t"}, token=KEY)[0] == 200
    assert error_of(call("POST", "/api/publish", good, token=KEY)) == (409, "topic-ended")
    # 413: over --max-body-bytes, declared or not
    big = {"topic": "big", "data": "x" * 3000}
    assert error_of(call("POST", "/api/publish", big, token=KEY)) == (413, "too-large")
    chunked = iter([json.dumps(big).encode()])  # no Content-Length: read and counted
    status, error = call(
        "POST", "/api/publish", raw=chunked, token=KEY, headers={"Transfer-Encoding": "chunked"}
    )
    assert (status, error["error"]) == (413, "too-large")
    # nothing published by a refused request
    assert call("POST", "/api/publish", {"topic": "big", "data": 1}, token=KEY)[1]["offset"] == 1


def test_without_a_key_or_jwt_the_api_refuses_writes_with_403(servers):
    server = servers("--port", "0")
    assert error_of(server.call("POST", "/api/publish", {"topic": "t", "data": 1}, token="x")) == (
        403,
        "api-disabled",
    )


def test_an_event_larger_than_a_subscribers_budget_is_refused_with_413(servers):
    server = servers("--port", "0", "--api-key", KEY, "--outbox-bytes", "4096")
    status, error = server.call("POST", "/api/publish", {"topic": "t", "data": "x" * 5000}, token=KEY)
    assert (status, error["error"]) == (413, "too-large") and "outbox_bytes" in error["message"]


# -- metrics ---------------------------------------------------------------------------------------


def test_metrics_parse_and_count_what_happened(servers):
    server = servers(
        "--port", "0", "--api-key", KEY, "--heartbeat-interval", "0.05", "--heartbeat-timeout", "2",
        "--allowed-origin", "http://good.example",
    )  # fmt: skip
    before = server.metrics()
    assert metric(before, "trioconn_connections") == 0
    assert metric(before, "trioconn_broker_connected") == 1
    # one refused handshake (origin), one client that subscribes, gets 3 events and pongs
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        WsClient(server.ws, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    client = WsClient(server.ws)
    try:
        assert client.subscribe("m/1")["type"] == "subscribed"
        for n in range(3):
            assert server.call("POST", "/api/publish", {"topic": "m/1", "data": n}, token=KEY)[0] == 200
        assert [client.recv()["data"] for _ in range(3)] == [0, 1, 2]
        server.call("POST", "/api/state", {"topic": "m/state", "value": 1}, token=KEY)
        server.call("POST", "/api/publish", {"topic": "m/1", "data": 1}, token="wrong")
        # pongs are answered by recv(): read until the server has measured a few round trips
        deadline = time.monotonic() + 15
        while metric(server.metrics(), "trioconn_ping_rtt_seconds_count") < 3:
            assert time.monotonic() < deadline, "no ping round trips measured"
            with contextlib.suppress(TimeoutError):
                client.kept.append(client.recv(timeout=0.2))
        live = server.metrics()
    finally:
        client.close()
    assert metric(live, "trioconn_connections") == 1
    assert metric(live, "trioconn_handshakes_total", result="accepted") == 1
    assert metric(live, "trioconn_handshakes_total", result="refused-403") == 1
    assert metric(live, "trioconn_subscriptions") == 1
    assert metric(live, "trioconn_topics", kind="stream", ended="false") == 1
    assert metric(live, "trioconn_topics", kind="state", ended="false") == 1
    assert metric(live, "trioconn_events_published_total") == 4
    assert metric(live, "trioconn_events_delivered_total") == 3
    assert metric(live, "trioconn_events_dropped_total") == 0
    assert metric(live, "trioconn_ping_rtt_seconds_count") >= 3
    assert metric(live, "trioconn_ping_rtt_seconds_bucket", le="+Inf") == metric(
        live, "trioconn_ping_rtt_seconds_count"
    )
    assert 0 < metric(live, "trioconn_ping_rtt_seconds_sum") < metric(live, "trioconn_ping_rtt_seconds_count")
    assert metric(live, "trioconn_outbox_bytes") >= 0
    assert metric(live, "trioconn_http_requests_total", endpoint="publish", status="200") == 3
    assert metric(live, "trioconn_http_requests_total", endpoint="state", status="200") == 1
    assert metric(live, "trioconn_http_requests_total", endpoint="publish", status="401") == 1

    def disconnected() -> Any:
        samples = server.metrics()
        return samples if metric(samples, "trioconn_connections") == 0 else None

    after = eventually(disconnected)
    # hypercorn reports a client's close as 1006 (connection-lost) to ASGI apps: count causes
    causes = {
        dict(labels)["cause"]: value
        for (name, labels), value in after.items()
        if name == "trioconn_disconnects_total"
    }
    assert sum(causes.values()) == 1 and set(causes) <= {"client-closed", "connection-lost"}, causes
    assert metric(after, "trioconn_subscriptions") == 0
    assert metric(after, "trioconn_events_delivered_total") == 3  # kept after the connection ended


# -- JWT -------------------------------------------------------------------------------------------


def test_hs256_tokens_authenticate_and_their_claims_authorize(servers, tmp_path):
    secret = "a-shared-secret-of-at-least-32-bytes"
    (tmp_path / "secret").write_text(secret + "\n")
    server = servers("--port", "0", "--jwt-secret-file", str(tmp_path / "secret"), "--jwt-audience", "live")
    token = make_token(secret, aud="live", topics=["jobs/*", "news"], publish=["jobs/7"])
    client = WsClient(f"{server.ws}?token={token}")
    try:
        assert client.subscribe("jobs/7")["type"] == "subscribed"
        assert client.subscribe("news")["type"] == "subscribed"
        refused = client.subscribe("newsroom")
        assert (refused["type"], refused["code"]) == ("error", "forbidden")
        client.send({"type": "publish", "topic": "jobs/7", "data": "hi", "ref": "p1"})
        frames = [client.recv(), client.recv()]
        assert {f["type"] for f in frames} == {"published", "event"}
        client.send({"type": "publish", "topic": "jobs/8", "data": "no", "ref": "p2"})
        assert client.recv()["code"] == "forbidden"
    finally:
        client.close()
    # the same token in an Authorization header, as non-browser clients send it
    client = WsClient(server.ws, additional_headers={"Authorization": f"Bearer {token}"})
    client.close()
    for bad, why in [
        (None, "token required"),
        (make_token(secret, lifetime=-30, aud="live"), "token expired"),
        (make_token(secret, aud="other"), "audience"),
        (make_token("wrong-secret-wrong-secret-wrong-secret", aud="live"), "signature"),
        (jwt.encode({"sub": "x", "aud": "live"}, secret, algorithm="HS256"), "exp"),
        (make_token(secret, aud="live", topics="jobs/*", publish=[3]), "publish"),
    ]:
        url = server.ws if bad is None else f"{server.ws}?token={bad}"
        with pytest.raises(websockets.exceptions.InvalidStatus) as exc:
            WsClient(url)
        assert exc.value.response.status_code == 401
        assert why in exc.value.response.body.decode().lower(), (why, exc.value.response.body)


async def test_an_expired_token_is_refused_to_the_trioconn_client_too(servers):
    secret = "a-shared-secret-of-at-least-32-bytes"
    server = servers("--port", "0", "--jwt-secret", secret)
    expired = make_token(secret, lifetime=-30)

    async def provider() -> str:
        return expired

    with pytest.raises(trioconn.TrioconnError) as failed, trio.fail_after(20):
        async with (
            trioconn.connect(server.ws, token_provider=provider) as client,
            client.subscribe("x") as sub,
        ):
            await sub.__anext__()
    error = failed.value
    rejected = error.cause if isinstance(error, trioconn.ReconnectFailed) else error
    assert isinstance(rejected, trioconn.HandshakeRejected), repr(error)
    assert rejected.status == 401 and b"token expired" in rejected.body


def rsa_pair(tmp_path: Path, name: str) -> tuple[Any, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / f"{name}.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, path


def hs256_signed_with(secret: str, **claims: Any) -> str:
    """A token signed with HMAC over ``secret`` by hand: pyjwt itself refuses to make one with a
    PEM key, which is the algorithm-confusion attack this forges."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = part(json.dumps({"sub": "x", "exp": int(time.time()) + 300, **claims}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{part(signature)}"


def test_rs256_tokens_are_verified_with_the_public_key(servers, tmp_path):
    private, public = rsa_pair(tmp_path, "issuer")
    other, _ = rsa_pair(tmp_path, "other")
    server = servers("--port", "0", "--jwt-public-key", str(public), "--jwt-issuer", "https://auth.example")
    good = make_token(private, "RS256", iss="https://auth.example", topics=["*"], publish=["feeds/*"])
    client = WsClient(f"{server.ws}?token={good}")
    try:
        assert client.subscribe("anything")["type"] == "subscribed"
    finally:
        client.close()
    # the HTTP API takes the same token, within its publish claim
    assert server.call("POST", "/api/publish", {"topic": "feeds/1", "data": 1}, token=good) == (
        200,
        {"topic": "feeds/1", "offset": 1},
    )
    assert error_of(server.call("POST", "/api/publish", {"topic": "x", "data": 1}, token=good)) == (
        403,
        "forbidden",
    )
    public_pem = public.read_text()
    for bad in [
        make_token(other, "RS256", iss="https://auth.example"),  # another key
        make_token(private, "RS256", iss="https://elsewhere.example"),  # another issuer
        hs256_signed_with(public_pem, iss="https://auth.example"),  # the public key as an HMAC secret
    ]:
        with pytest.raises(websockets.exceptions.InvalidStatus) as exc:
            WsClient(f"{server.ws}?token={bad}")
        assert exc.value.response.status_code == 401


# -- settings: file, flags, errors -----------------------------------------------------------------


def test_a_config_file_is_read_and_flags_override_it(servers, tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "api").write_text(KEY + "\n")
    config = tmp_path / "trioconn.toml"
    config.write_text(
        'host = "127.0.0.1"\nport = 8765\nlog_format = "json"\n'
        "[hub]\nheartbeat_interval = 2.0\nheartbeat_timeout = 9\nhistory_size = 7\n"
        '[api]\nkey_file = "keys/api"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()  # the key file is found relative to the config file, not the cwd
    server = servers("--config", str(config), "--port", "0", "--heartbeat-interval", "1.5", cwd=elsewhere)
    client = WsClient(server.ws)
    try:
        assert client.welcome["heartbeat"] == {"interval": 1.5, "timeout": 9}
    finally:
        client.close()
    assert server.call("POST", "/api/publish", {"topic": "t", "data": 1}, token=KEY)[0] == 200
    records = [json.loads(line) for line in server.err if line.startswith("{")]
    assert any(record["message"].startswith("serving http://") for record in records), server.report()
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    # --check shows the merged result: file, then flags
    assert cli.main(["serve", "--config", str(config), "--history-size", "9", "--check"]) == 0


def test_check_prints_the_merged_settings_without_secrets(tmp_path, capsys):
    config = tmp_path / "serve.toml"
    config.write_text('port = 9000\n[hub]\nhistory_size = 7\nrefuse_with = "close"\n[api]\nkey = "sekrit"\n')
    assert cli.main(["serve", "--config", str(config), "--history-size", "9", "--check"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["port"], shown["hub"]["history_size"], shown["hub"]["refuse_with"]) == (9000, 9, "close")
    assert (
        shown["hub"]["heartbeat_interval"] == trioconn.HubConfig().heartbeat_interval
    )  # HubConfig's default
    assert shown["api"]["key"] == "***"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "x"], "--port"),
        (["--port", "70000"], "--port"),
        (["--heartbeat-interval", "30"], "--heartbeat-interval"),
        (["--history-size", "0"], "--history-size"),
        (["--log-format", "xml"], "--log-format"),
        (["--refuse-with", "never"], "--refuse-with"),
        (["--static", "/no/such/directory"], "--static"),
        (["--websocket-path", "ws"], "--websocket-path"),
        (["--redis", "http://localhost"], "--redis"),
        (["--redis-prefix", "p"], "--redis-prefix"),
        (["--jwt-secret", "s", "--jwt-algorithm", "RS256"], "--jwt-algorithm"),
        (["--jwt-audience", "a"], "--jwt-audience"),
        (["--jwt-public-key", "/no/such/key.pem"], "--jwt-public-key"),
        (["--api-key", "k", "--api-key-file", "f"], "--api-key-file"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_invalid_flags_exit_2_naming_them(args, named, capsys):
    assert cli.main(["serve", *args]) == 2
    assert named in capsys.readouterr().err


def test_invalid_config_files_exit_2_naming_the_key(tmp_path, capsys):
    cases = {
        "prot = 1\n": "'prot'",
        "[hub]\nhistory_sise = 1\n": "'history_sise'",
        "[hub]\nhistory_size = 1.5\n": "[hub] history_size",
        "[hub]\nheartbeat_interval = 40\n": "[hub] heartbeat_interval",
        'port = "8765"\n': ": port",
        "[jwt]\nleeway = 1\n": "[jwt] leeway",
        "not toml = = 1\n": "not valid TOML",
    }
    for text, named in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        assert cli.main(["serve", "--config", str(path), "--check"]) == 2, text
        err = capsys.readouterr().err
        assert named in err and str(path) in err, (text, err)
    assert cli.main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_the_process_exits_2_and_1_as_documented(servers, tmp_path):
    bad = Process(command("serve", "--max-topics", "-1"), name="bad")
    assert bad.wait() == 2
    assert any("--max-topics" in line for line in bad.err), bad.report()
    bad.close()
    first = servers("--port", "0")
    busy = Process(command("serve", "--port", str(first.port)), name="busy")
    assert busy.wait() == 1
    assert any("cannot serve" in line for line in busy.err), busy.report()
    busy.close()


# -- static files and trioconn.js ------------------------------------------------------------------


def test_static_files_and_the_browser_client_are_served(servers, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>hi</title>")
    server = servers("--port", "0", "--static", str(tmp_path))
    status, page = server.call("GET", "/")
    assert status == 200 and "<title>hi</title>" in page
    status, script = server.call("GET", "/trioconn.js")
    assert status == 200 and "export class Client" in script
    assert error_of(server.call("GET", "/missing.html")) == (404, "not-found")
    # the hub still answers WebSocket requests at / and nowhere else
    WsClient(server.ws).close()
    with pytest.raises(websockets.exceptions.InvalidStatus):
        WsClient(server.ws + "elsewhere")


# -- shutdown --------------------------------------------------------------------------------------


def test_sigterm_sends_queued_events_then_1001_and_exits_0(servers):
    server = servers("--port", "0", "--api-key", KEY)
    clients = [WsClient(server.ws) for _ in range(3)]
    try:
        for client in clients:
            assert client.subscribe("burst")["type"] == "subscribed"
        batch = {"events": [{"topic": "burst", "data": "x" * 200 + str(n)} for n in range(300)]}
        assert server.call("POST", "/api/publish", batch, token=KEY)[0] == 200
        # the events are queued at the server now (the in-memory broker queues before answering)
        server.signal(signal.SIGTERM)
        for client in clients:
            assert client.close_code() == 1001
            events = [frame for frame in client.kept if frame["type"] == "event"]
            assert [frame["offset"] for frame in events] == list(range(1, 301))
    finally:
        for client in clients:
            client.close()
    assert server.wait(20) == 0
    assert any(re.search(r"SIGTERM received: shutting down", line) for line in server.err), server.report()
    assert any("stopped" in line for line in server.err)


def test_a_hub_that_cannot_take_a_new_topic_answers_503_too_many_topics(servers):
    server = servers("--port", "0", "--api-key", KEY, "--max-topics", "1")
    assert server.call("POST", "/api/state", {"topic": "kept", "value": 1}, token=KEY)[0] == 200
    status, error = server.call("POST", "/api/publish", {"topic": "new", "data": 1}, token=KEY)
    assert (status, error["error"]) == (503, "too-many-topics"), error


def test_while_draining_health_says_stopping_and_writes_get_503_shutting_down(servers):
    # A client that stops reading keeps its connection draining until drain_timeout: the window
    # in which the server is stopping but still answers HTTP.
    server = servers(
        "--port", "0", "--api-key", KEY, "--outbox-bytes", str(64 << 20), "--outbox-size", "100000",
        "--send-timeout", "60",
        "--drain-timeout", "5", "--shutdown-timeout", "20",
    )  # fmt: skip
    stuck = WsClient(server.ws, max_queue=1, close_timeout=0.5)
    try:
        assert stuck.subscribe("flood")["type"] == "subscribed"
        chunk = {"events": [{"topic": "flood", "data": "x" * 1000} for _ in range(900)]}
        for _ in range(24):  # ~21 MB: more than the socket buffers between us hold
            assert server.call("POST", "/api/publish", chunk, token=KEY)[0] == 200
        eventually(lambda: metric(server.metrics(), "trioconn_outbox_bytes") > 1 << 20)
        server.signal(signal.SIGTERM)
        status, body = eventually(lambda: (r := server.call("GET", "/health"))[0] == 503 and r)
        assert body["status"] == "stopping", body
        status, error = server.call("POST", "/api/publish", {"topic": "flood", "data": 1}, token=KEY)
        assert (status, error["error"]) == (503, "shutting-down"), error
        assert server.popen.poll() is None  # still draining
    finally:
        stuck.close()
    assert server.wait(30) == 0


def test_every_settable_hub_field_has_a_flag_that_reaches_hubconfig(capsys):
    import attrs

    from trioconn.serve import HUB_SETTINGS

    fields = {field.name: field for field in attrs.fields(trioconn.HubConfig)}
    args: list[str] = []
    expected: dict[str, Any] = {}
    for name in HUB_SETTINGS:
        default = fields[name].default
        if name == "allowed_origins":
            args += ["--allowed-origin", "https://a.example", "--allowed-origin", "https://b.example"]
            expected[name] = ["https://a.example", "https://b.example"]
        elif name == "refuse_with":
            args += ["--refuse-with", "close"]
            expected[name] = "close"
        else:
            value = 7 if default is None else default
            args += ["--" + name.replace("_", "-"), str(value)]
            expected[name] = value
    assert cli.main(["serve", *args, "--check"]) == 0
    shown = json.loads(capsys.readouterr().out)["hub"]
    assert {name: shown[name] for name in expected} == expected
    # the hooks and Hub.serve's socket limits are not settings of trioconn serve
    assert {"authenticate", "authorize", "json_dumps", "json_loads", "max_sockets"}.isdisjoint(HUB_SETTINGS)

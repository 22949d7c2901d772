"""The API as it runs in production: `covfefe serve` starts gunicorn on 127.0.0.1."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import pytest

from covfefe import config
from tests.helpers import ROOT, START_SECONDS, free_port, stop_process, wait_for

pytestmark = pytest.mark.network


def _wait_for_health(process: subprocess.Popen, base: str, log) -> None:
    """Wait until the server at ``base`` answers /api/health; fail with its log if it exits
    or does not answer within START_SECONDS (the first start on a fresh clone compiles the
    generator's kernels, over a minute on a busy machine)."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/health", timeout=1)
            return
        except OSError:
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
    stop_process(process)
    pytest.fail(f"gunicorn did not answer within {START_SECONDS} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "covfefe", "serve", "--port", str(port), "--workers", "2",
             "--model", str(tiny_model.path)], stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    _wait_for_health(process, base, log)
    yield base, log
    process.terminate()
    process.wait(timeout=20)


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_gunicorn_serves_generation(server, tiny_model):
    base, log = server
    status, body = post(f"{base}/api/generate", {"prefix": "Make ", "n": 2, "seed": 3})
    assert status == 200
    assert [c["text"][:5] for c in body["completions"]] == ["Make ", "Make "]
    assert body["model"]["version"] == tiny_model.version
    status, body = post(f"{base}/api/generate", {"n": "two"})
    assert status == 400 and "n must be a whole number" in body["error"]
    assert '"path": "/api/generate"' in log.read_text()  # structured access log
    # Each worker says it is loading the model (quiet for a while on a first start), then that
    # it is ready (the server answered once one was: the other may still be loading).
    ready = re.compile(r"worker \d+: ready in \d+\.\d s")
    wait_for(lambda: len(ready.findall(log.read_text())) >= 2, "both workers ready", log=log,
             timeout=60)
    text = log.read_text()
    assert text.count(": loading the model; on a first start numba compiles") == 2
    assert len(ready.findall(text)) == 2


def test_gunicorn_streams_server_sent_events(server):
    base, _ = server
    with urllib.request.urlopen(f"{base}/api/generate/stream?prefix=The%20&seed=5",
                                timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = response.read().decode()
    assert text.startswith("event: prefix\n") and "event: done\n" in text


def test_serve_refuses_a_missing_model_before_starting(tmp_path):
    result = subprocess.run([sys.executable, "-m", "covfefe", "serve", "--model",
                             str(tmp_path / "none")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


# gunicorn as Dockerfile.serve starts it: plain `gunicorn -c python:serve.gunicorn_conf`, one
# worker (so that /api/health reports the counter of the worker that streamed), the bundled
# model (slow enough per step for arrival times to mean something).
THREADS = 4


def start_gunicorn(log, **env):
    port = free_port()
    settings = {"COVFEFE_BIND": f"127.0.0.1:{port}", "COVFEFE_WORKERS": "1",
                "COVFEFE_THREADS": str(THREADS), **env}
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:serve.gunicorn_conf",
             "serve:create_app()"], env={**os.environ, **settings}, cwd=ROOT,
            stdout=output, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def bundled_server(log, **env):
    """gunicorn (start_gunicorn) serving the bundled model, the rate limit lifted, with ``env``;
    yields its base URL and log once it is healthy, and stops it."""
    process, base = start_gunicorn(log, COVFEFE_MODEL=str(config.BUNDLED_MODEL),
                                   COVFEFE_RATE_LIMIT="100000 per minute", **env)
    try:
        _wait_for_health(process, base, log)
        yield base, log
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    log = tmp_path_factory.mktemp("gunicorn-bundled") / "server.log"
    with bundled_server(log, COVFEFE_REQUEST_READ_TIMEOUT="1") as server:
        yield server


LONG_STREAM = "/api/generate/stream?n=16&temperature=2&seed={seed}"


def health(base) -> dict:
    with urllib.request.urlopen(f"{base}/api/health", timeout=5) as response:
        return json.loads(response.read())


def timed_events(url) -> tuple[dict, list[tuple[float, str]]]:
    """The response headers and each event's (arrival time from the request, first line)."""
    started = time.perf_counter()
    events = []
    with urllib.request.urlopen(url, timeout=60) as response:
        headers = dict(response.headers)
        previous = b""
        for line in response:  # an event: "event: NAME" (optional), "data: JSON", a blank
            if line.startswith(b"event:") or (line.startswith(b"data:")
                                              and not previous.startswith(b"event:")):
                events.append((time.perf_counter() - started, line.decode().strip()))
            previous = line
    return headers, events


def logged(log, path) -> dict:
    """The access log's entry for ``path`` (a stream's is written as it closes, just after
    the client has read its end)."""
    deadline = time.monotonic() + 10
    while True:
        entries = [json.loads(line) for line in log.read_text().splitlines()
                   if f'"path": "{path}"' in line]
        if entries or time.monotonic() > deadline:
            assert entries, log.read_text()
            return entries[-1]
        time.sleep(0.1)


def test_the_stream_arrives_event_by_event_through_gunicorn(bundled):
    base, log = bundled
    headers, events = timed_events(base + LONG_STREAM.format(seed=1))
    assert "Content-Length" not in headers and headers["Transfer-Encoding"] == "chunked"
    assert events[0][1] == "event: prefix" and events[-1][1] == "event: done"
    steps = [at for at, line in events if line.startswith("data:")]
    first, last = events[1][0], events[-1][0]  # the first character step, and "done"
    assert len(steps) > 50
    # Sent as generated: the first step well before the end (buffered, they arrive together).
    assert first < last / 2, (first, last)
    entry = logged(log, "/api/generate/stream")
    # Logged when the stream closed: its status, and the time of the whole stream.
    assert entry["status"] == 200 and entry["ms"] >= (last - first) * 1000
    assert entry["bytes"] > 1000


def test_a_stream_whose_client_hangs_up_stops_generating(bundled):
    base, _ = bundled
    _, complete = timed_events(base + LONG_STREAM.format(seed=2))
    full = sum(1 for _, line in complete if line.startswith("data:"))
    before = health(base)["stream_steps"]
    hung_up = 4
    for seed in range(hung_up):
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as client:
            client.sendall(f"GET {LONG_STREAM.format(seed=seed)} HTTP/1.1\r\n"
                           f"Host: x\r\n\r\n".encode())
            received = b""
            while b"data: {\"chars\"" not in received:  # the first character step
                received += client.recv(4096)
    time.sleep(2)  # time enough for 4 whole generations, were they still running
    steps = health(base)["stream_steps"] - before
    assert full > 50 and steps < hung_up * full / 3, (steps, full)
    time.sleep(1)
    assert health(base)["stream_steps"] - before == steps  # and nothing runs on


def test_health_answers_ahead_of_the_pool_while_every_thread_generates(bundled):
    base, _ = bundled
    stop = threading.Event()
    streams = []

    def keep_streaming(seed):
        while not stop.is_set():
            timed_events(base + LONG_STREAM.format(seed=seed))
            streams.append(seed)

    clients = [threading.Thread(target=keep_streaming, args=(seed,))
               for seed in range(3 * THREADS)]
    for client in clients:
        client.start()
    try:
        time.sleep(1)
        # A request that takes the thread pool waits behind the generation...
        model = threading.Thread(
            target=lambda: urllib.request.urlopen(f"{base}/api/model", timeout=60).close())
        model.start()
        time.sleep(0.2)
        answered_first = []
        for _ in range(5):
            before = len(streams)
            assert health(base)["status"] == "ok"
            answered_first.append(model.is_alive())
            time.sleep(0.3)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
    model.join(timeout=60)  # the pool is free again
    assert before > 0 and len(streams) > before  # generation ran all along
    # ... while health, asked after it, is answered before it.
    assert answered_first[0], answered_first


def test_a_client_trickling_its_headers_does_not_hold_a_thread(bundled):
    base, _ = bundled

    def trickle_headers(client) -> bool:
        client.sendall(b"GET /api/model HTTP/1.1\r\nHost: x\r\n")
        return trickle(client)

    # Each was closed at the deadline for its request's head (1 s here), not left to trickle.
    assert held_by_slow_clients(base, trickle_headers) == [True] * 2 * THREADS


def held_by_slow_clients(base: str, send) -> list[bool]:
    """Open 2 * THREADS connections, each running ``send(client)`` in a thread of its own (True
    once the server closes the connection); meanwhile health and /api/model must be answered.
    Return what each ``send`` returned."""
    address = ("127.0.0.1", int(base.rsplit(":", 1)[1]))
    slow = [socket.create_connection(address) for _ in range(2 * THREADS)]
    closed = []
    try:
        senders = [threading.Thread(target=lambda c=client: closed.append(send(c)))
                   for client in slow]
        for sender in senders:
            sender.start()
        time.sleep(0.5)  # in gthread, every thread of the pool now reads a slow request
        assert health(base)["status"] == "ok"
        with urllib.request.urlopen(f"{base}/api/model", timeout=30) as response:
            assert response.status == 200
        # No thread waited on them (in gthread: until they stop, here 20 s, giving up unclosed).
        assert False not in closed, closed
        for sender in senders:
            sender.join(timeout=30)
    finally:
        for client in slow:
            client.close()
    return closed


def trickle(client, data: bytes = b"X", seconds: float = 20.0) -> bool:
    """Send ``data`` (a header byte by default; b"": nothing) every 0.2 s until the server
    closes the connection (True) or the time is up (False)."""
    deadline = time.monotonic() + seconds
    client.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if data:
                client.sendall(data)
            if client.recv(1024) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def run_until_it_stops(log, timeout: float = 60, **env) -> subprocess.CompletedProcess:
    """Start gunicorn (start_gunicorn) with ``env``, wait up to ``timeout`` seconds for it to
    stop by itself (then stop it), and return its status and log."""
    process, _ = start_gunicorn(log, **env)
    try:
        process.wait(timeout=timeout)
    finally:
        stop_process(process)
    return subprocess.CompletedProcess(process.args, process.returncode, log.read_text())


def bad_model_run(tmp_path, model) -> subprocess.CompletedProcess:
    return run_until_it_stops(tmp_path / "server.log", timeout=30, COVFEFE_MODEL=str(model))


def test_plain_gunicorn_stops_at_once_on_a_missing_model(tmp_path):
    result = bad_model_run(tmp_path, "/nope")
    # Stopped by itself (bad_model_run stops it after 30 s), not workers booted again and again.
    assert result.returncode == 3, result.stdout
    assert "covfefe serve: model artifact /nope does not exist" in result.stdout
    assert "Traceback" not in result.stdout and result.stdout.count("Booting worker") <= 2


def test_a_bad_model_is_status_3_and_one_sentence_every_time(tmp_path):
    # With two workers failing at once, gunicorn's master could halt twice: a HaltServer
    # traceback and status 1, about one start in 4. The master now checks the model first.
    for attempt in range(4):
        result = run_until_it_stops(tmp_path / f"server-{attempt}.log", COVFEFE_MODEL="/nope",
                                    COVFEFE_WORKERS="2")
        text = result.stdout
        assert result.returncode == 3, text
        assert text.count("covfefe serve: model artifact /nope does not exist") == 1, text
        assert "Traceback" not in text and "Booting worker" not in text, text


@pytest.mark.parametrize(("name", "value", "message"), [
    # Flask-Limiter logged an error on every request and limited nothing.
    ("COVFEFE_RATE_LIMIT", "lots", "COVFEFE_RATE_LIMIT is 'lots'; it must be a rate limit"),
    # A ValueError traceback from gunicorn_conf.py.
    ("COVFEFE_ENGINE_ROWS", "abc", "COVFEFE_ENGINE_ROWS is 'abc'; it must be a whole number "
                                   "from 16 to 4096"),
    ("COVFEFE_REQUEST_READ_TIMEOUT", "-1", "COVFEFE_REQUEST_READ_TIMEOUT is '-1'; it must be "
                                           "a number of seconds above 0"),
    ("COVFEFE_RATE_LIMT", "5/second", "COVFEFE_RATE_LIMT is not a setting; did you mean "
                                      "COVFEFE_RATE_LIMIT?"),  # silently dropped before
])
def test_plain_gunicorn_refuses_a_bad_setting_in_one_sentence(tmp_path, name, value, message):
    result = run_until_it_stops(tmp_path / "server.log", **{name: value})
    text = result.stdout
    assert result.returncode == 2, text
    assert text.startswith(f"covfefe serve: {message}") and text.count("\n") == 1, text


def test_plain_gunicorn_stops_on_weights_that_do_not_load(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(config.BUNDLED_MODEL, model)
    weights = model / "weights.npz"
    weights.write_bytes(os.urandom(4096))
    metadata = json.loads((model / "metadata.json").read_text())
    # The checksums match: the damage is in what the file holds.
    metadata["files"]["weights.npz"] = {"bytes": 4096,
                                        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    (model / "metadata.json").write_text(json.dumps(metadata))
    result = bad_model_run(tmp_path, model)
    assert result.returncode == 3, result.stdout
    assert f"the weights of the model artifact {model} cannot be read" in result.stdout
    assert "Traceback" not in result.stdout


def raw_request(base, request: bytes) -> tuple[int, dict, bytes]:
    """Send bytes as they are; return the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])),
                                  timeout=30) as client:
        client.sendall(request)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def chunked(body: bytes, size: int = 4096) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def test_a_chunked_body_over_the_limit_is_413_not_cut_and_parsed(bundled):
    base, _ = bundled
    head = (b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    big = json.dumps({"prefix": "x" * 20000}).encode()
    status, _, body = raw_request(base, head + chunked(big))
    assert status == 413 and json.loads(body)["error"].startswith("Request Entity Too Large")
    small = json.dumps({"prefix": "Make ", "max_length": 20}).encode()
    status, _, body = raw_request(base, head + chunked(small, 5))
    assert status == 200, body


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
])
def test_requests_gunicorn_cannot_parse_get_json_errors(bundled, request_bytes, status):
    base, _ = bundled
    answer_status, headers, body = raw_request(base, request_bytes)
    assert answer_status == status and headers["content-type"] == "application/json"
    assert len(body.splitlines()) == 1 and json.loads(body)["error"]


def test_a_lone_surrogate_is_400_through_gunicorn_not_500(bundled):
    base, _ = bundled
    for body in (b'{"prefix": "\\ud800"}', b'{"prefix": "\xed\xa0\x80"}'):
        request = (b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        status, headers, answer = raw_request(base, request)
        assert status == 400 and headers["content-type"] == "application/json", answer
        assert json.loads(answer)["field"] == "prefix" and len(answer.splitlines()) == 1
    try:
        urllib.request.urlopen(f"{base}/api/generate/stream?prefix=%FF", timeout=30)
        pytest.fail("?prefix=%FF was taken as the text '%FF'")
    except urllib.error.HTTPError as error:
        assert error.code == 400 and json.loads(error.read())["field"] == "prefix"


def hold_body(client, trickle_body: bool, seconds: float = 20.0, length: int = 200) -> bool:
    """After a POST's headers, send its body a byte every 0.2 s, or nothing; True when the
    server closes the connection before ``seconds``, False when it is still open then."""
    client.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                   b"\r\nContent-Length: %d\r\n\r\n" % length)
    return trickle(client, b" " if trickle_body else b"", seconds)


@pytest.mark.parametrize(("trickle_body", "length"), [(True, 200), (False, 200), (True, 10**6)],
                         ids=["trickled", "never sent", "trickled, over the limit"])
def test_a_slow_body_holds_no_thread_and_has_a_deadline(bundled, trickle_body, length):
    # The read timeout covered the request line and headers only: a thread read the body for
    # as long as the client liked (80 such clients kept ordinary requests from any thread).
    base, _ = bundled
    closed = held_by_slow_clients(base, partial(hold_body, trickle_body=trickle_body,
                                                length=length))
    # Each is closed at the whole request's deadline (1 s here), not held for 20 s; one over
    # the limit is answered 413 at once (it held a thread while gunicorn read it all).
    assert closed == [True] * 2 * THREADS


REFUSED = (b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 34\r\n\r\n{\"prefix\": \"I \", \"max_length\": 20}")


def answer_of(client, skip_continue: bool = False) -> tuple[int, dict, bytes]:
    """Read an answer to its end (the server closes the connection): status, headers, body
    (past any "100 Continue" with ``skip_continue``)."""
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
    while skip_continue and answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
        answer = answer[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_a_client_waiting_for_100_continue_is_told_to_send_its_body(bundled):
    # curl waits for "100 Continue" (a second at most) before a body over 1 KB: the worker's
    # loop, which now reads whole requests, says it rather than wait for a body to come.
    base, _ = bundled
    body = json.dumps({"prefix": "Make " + " " * 2000}).encode()  # 400: too long
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])),
                                  timeout=30) as client:
        client.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/json\r\nExpect: 100-continue\r\nConnection: close\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body))
        assert client.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(body)
        status, _, answer = answer_of(client, skip_continue=True)
    assert status == 400 and json.loads(answer)["field"] == "prefix"


@pytest.fixture
def full_engine(tmp_path):
    """One worker of 4 threads whose engine takes 16 rows and queues nothing."""
    with bundled_server(tmp_path / "server.log", COVFEFE_ENGINE_QUEUE="0") as server:
        yield server


def test_a_full_engine_refuses_before_flask_without_a_thread(full_engine):
    # A refusal went through a thread, Flask, the rate limit and the JSON before the engine
    # said no: 64 clients retrying at once spent 50 CPU-seconds in 31 s on being refused.
    base, log = full_engine
    first_steps = threading.Semaphore(0)

    def stream(seed):  # 4 rows each: 4 streams fill the 16 rows and the 4 threads
        url = f"{base}/api/generate/stream?n=4&temperature=2&seed={seed}"
        with urllib.request.urlopen(url, timeout=120) as response:
            for line in response:
                if line.startswith(b"data: {\"chars\""):
                    first_steps.release()
                    break
            response.read()

    # 32 requests all but their last byte, sent once the streams hold the rows: they arrive
    # together, within the fraction of a second that the bundled model's streams take.
    address = ("127.0.0.1", int(base.rsplit(":", 1)[1]))
    clients = [socket.create_connection(address, timeout=30) for _ in range(32)]
    for client in clients:
        client.sendall(REFUSED[:-1])
    streams = [threading.Thread(target=stream, args=(seed,)) for seed in range(THREADS)]
    for thread in streams:
        thread.start()
    try:
        for _ in streams:
            assert first_steps.acquire(timeout=60)
        for client in clients:
            client.sendall(REFUSED[-1:])
        answers = [answer_of(client) for client in clients]  # paced: 0.1-0.3 s, together
        engine = health(base)["engine"]
    finally:
        for thread in streams:
            thread.join(timeout=120)
        for client in clients:
            client.close()
    assert [status for status, _, _ in answers] == [503] * 32
    assert all("the server is busy" in json.loads(body)["error"] for _, _, body in answers)
    assert engine["requests_refused_early"] == 32 and engine["requests_refused"] >= 32
    # Not through Flask, so not in a thread of the pool (every request a thread takes goes
    # to Flask, which logs it): no access-log line for a refusal.
    assert '"status": 503' not in log.read_text()
    # Spread between 1 and 2 s, so that refused clients do not come back in step.
    assert {int(headers["retry-after"]) for _, headers, _ in answers} == {1, 2}
    assert post(f"{base}/api/generate", {"prefix": "I ", "max_length": 20})[0] == 200


def test_a_reload_keeps_the_old_workers_until_the_new_ones_are_ready(tmp_path):
    # gunicorn's own SIGHUP stops the old workers at once: for the 2-3 s the new ones take to
    # load the model nothing answered (no request failed, but health took 2.9 s).
    log = tmp_path / "server.log"
    process, base = start_gunicorn(log, COVFEFE_MODEL=str(config.BUNDLED_MODEL),
                                   COVFEFE_WORKERS="2", COVFEFE_RATE_LIMIT="100000 per minute")
    stop, answered, failed, clients = threading.Event(), [], [], []

    def client(path, body):
        while not stop.is_set():
            try:
                if body is None:
                    urllib.request.urlopen(base + path, timeout=30).close()
                    answered.append(path)
                else:
                    status, _ = post(base + path, body)
                    (answered if status == 200 else failed).append(status)
            except OSError as error:
                failed.append(repr(error))

    try:
        _wait_for_health(process, base, log)
        ready = re.compile(r"worker (\d+): ready in")
        wait_for(lambda: len(ready.findall(log.read_text())) == 2, "two workers", log=log)
        old = set(ready.findall(log.read_text()))
        clients += [threading.Thread(target=client, args=("/api/generate", {
            "prefix": "I ", "max_length": 30, "seed": seed})) for seed in range(19)]
        clients.append(threading.Thread(target=client, args=("/api/health", None)))
        for thread in clients:
            thread.start()
        wait_for(lambda: len(answered) > 20, "answers before the reload", log=log)
        process.send_signal(signal.SIGHUP)
        gone = [f"Worker exiting (pid: {pid})" for pid in old]
        wait_for(lambda: all(line in log.read_text() for line in gone), "the old workers gone",
                 process, log, timeout=90)
        before = len(answered)
        wait_for(lambda: len(answered) > before + 20, "answers from the new workers", log=log)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        wait_for(lambda: len(children.read_text().split()) == 2, "2 workers again", log=log)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
        stop_process(process)
    text = log.read_text()
    assert failed == [], failed[:5]
    new = [pid for pid in ready.findall(text) if pid not in old]
    assert len(new) == 2, text
    # Each old worker was told to go only once a new one was ready.
    first_ready = text.index(f"worker {new[0]}: ready in")
    assert all(text.index(line) > first_ready for line in gone), text

"""The API as it runs in production: `covfefe serve` starts gunicorn on 127.0.0.1."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "covfefe", "serve", "--port", str(port), "--workers", "2",
             "--model", str(tiny_model.path)], stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/health", timeout=1)
            break
        except OSError:
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"gunicorn did not answer within 60 s:\n{log.read_text()}")
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

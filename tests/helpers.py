"""Helpers the tests share (fixtures live in conftest.py): the checkout's root, system tools
that a test needs, stopping a server, waiting for a condition, a free port, the command line,
HTTPS to a local nginx, schemathesis's generated requests, shared constants."""

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "trump-twitter-archive"

# A tiny slice of the archive and a tiny network: enough to train for real in seconds.
TINY_SINCE, TINY_UNTIL = "2016-01-01", "2016-03-01"
TINY_PARAMS = dict(cell="lstm", layers=1, units=32, embedding_dim=16, dropout=0.0,
                   batch_size=32, epochs=2, learning_rate=0.01, seed=7, baseline_order=5)

# The web page's origin that the test app allows (CORS).
ALLOWED_ORIGIN = "https://www.covfefe.example"
# How long a server may take to answer its first health check: the first start on a fresh clone
# compiles the generator's kernels (half a minute of CPU, over a minute on a busy machine).
START_SECONDS = 240


def require_all() -> bool:
    """Return True when a missing system tool must fail the run rather than skip (CI)."""
    return os.environ.get("COVFEFE_REQUIRE_ALL") == "1"


def require_tool(name: str) -> str:
    """Return the path of a system tool, or skip (fail under COVFEFE_REQUIRE_ALL=1) without it."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"system tool {name!r} is not installed (see .ci/apt-packages.txt)"
    if require_all():
        pytest.fail(f"{reason}, and COVFEFE_REQUIRE_ALL=1 requires every tool")
    pytest.skip(reason)


def require_playwright():
    """Return ``playwright.sync_api``, or skip (fail under COVFEFE_REQUIRE_ALL=1) without it."""
    try:
        from playwright import sync_api
    except ImportError:  # pragma: no cover - the dev extra installs it
        if require_all():
            pytest.fail("playwright is not installed (pip install -e '.[dev]')")
        pytest.skip("playwright is not installed")
    return sync_api


def stop_process(process: subprocess.Popen, *, group: bool = False, timeout: float = 15) -> None:
    """Stop a server that a test started (its process group, when it has its own): terminate,
    then kill if it has not ended within ``timeout`` seconds."""
    if process.poll() is None:
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def wait_for(condition, what: str, process: subprocess.Popen | None = None,
             log: Path | None = None, timeout: float = 30):
    """Poll condition() until it is true; fail with the log when it is not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what}: the process ended ({process.returncode}):\n"
                        f"{log.read_text() if log else ''}")
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout} s\n{log.read_text() if log else ''}")


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The files of the mlflow image (deploy/07-stack.sh tags it with the last commit of these).
MLFLOW_IMAGE_FILES = ("deploy/mlflow", "requirements/mlflow-server.txt")


def last_commit(*paths: str) -> str:
    """The short hash of the last commit that changed ``paths``, as the stack script tags the
    images it does not tag by release (``git log -1 --format=%h -- PATHS``)."""
    return subprocess.run(["git", "log", "-1", "--format=%h", "--", *paths], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()


def covfefe(*args, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m covfefe`` as a user would and return the completed process."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "covfefe", *args], capture_output=True,
                          text=True, env=environment, timeout=timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a name (SNI and Host) at 127.0.0.1, whatever the name resolves to."""

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def https_request(host: str, port: int, method: str, path: str, body: dict | None = None
                  ) -> tuple[int, bytes]:
    """One request (JSON body) to ``host`` served at 127.0.0.1:``port``: status and body. The
    placeholder certificate is self-signed: TLS itself is the nginx tests' business."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    connection = PinnedHTTPSConnection(host, port, context=context, timeout=30)
    try:
        connection.request(method, path, body=json.dumps(body) if body else None,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def engine_health(base: str) -> dict:
    """The serving engine's part of ``/api/health`` (rows in flight, queue, counts)."""
    with urllib.request.urlopen(f"{base}/api/health", timeout=10) as response:
        return json.loads(response.read())["engine"]


def call_generated_requests(operation, mode, examples: int, statuses: dict[int, int],
                            excluded_checks=(), check=None) -> None:
    """Send the requests that schemathesis generates for ``operation`` in ``mode`` (at most
    ``examples``, the same ones every run) and validate each answer against the document,
    without ``excluded_checks``; count their statuses into ``statuses``; ``check(case,
    response)``, when given, checks each answer further."""
    # Deferred: Hypothesis only for the two schemathesis tests, not every test that uses this
    # module.
    from hypothesis import HealthCheck, given, settings

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case):
        response = case.call_and_validate(excluded_checks=list(excluded_checks))
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if check is not None:
            check(case, response)

    call()

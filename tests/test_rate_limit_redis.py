"""One rate limit for every worker and every instance: Flask-Limiter counting in a real Redis.

Debian's redis-server runs on a free port of 127.0.0.1 (no configuration file, nothing saved),
and two gunicorn instances of the API (`covfefe serve`, 2 workers each) count in it through
``COVFEFE_RATELIMIT_STORAGE_URI``. With the default in-memory store each worker counts on its
own, so a client gets up to 4 times the limit from these 4 workers; with Redis it gets exactly
the limit. When Redis goes away the API keeps serving, each worker counting in its own memory
(the decided fallback: a limit still holds, per worker), logs a warning and says so in
``/api/health``; when Redis is back, the workers use it again.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import require_tool, stop_process

pytestmark = pytest.mark.network

LIMIT = 12
CHEAP = {"prefix": "", "n": 1, "max_length": 1, "seed": 1}  # a real generation, a short one


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check, what: str, process: subprocess.Popen, log: Path, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        assert process.poll() is None, f"{what}: the process exited:\n{log.read_text()}"
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout:.0f} s:\n{log.read_text()}")


class Redis:
    """A redis-server of the test's own, on 127.0.0.1, that can be stopped and started again."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.process = folder, free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = folder / "redis.log"

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")

    def start(self) -> None:
        with self.log.open("a") as output:
            self.process = subprocess.Popen(
                [require_tool("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
                stdout=output, stderr=subprocess.STDOUT)
        wait_for(self.ping, "redis-server did not answer", self.process, self.log)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class Instance:
    """`covfefe serve` (gunicorn, 2 workers, the bundled model) on a free port."""

    def __init__(self, folder: Path, name: str, storage: str, limit: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"{name}.log"
        env = {**os.environ, "COVFEFE_RATELIMIT_STORAGE_URI": storage,
               "COVFEFE_RATE_LIMIT": limit}
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "covfefe", "serve", "--port", str(self.port),
                 "--workers", "2"], env=env, stdout=output, stderr=subprocess.STDOUT)
        wait_for(lambda: self.health()["version"], "gunicorn did not answer", self.process,
                 self.log)

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.base}/api/health", timeout=5) as response:
            assert response.status == 200
            return json.loads(response.read())

    def generate(self) -> tuple[int, str | None]:
        """POST a cheap generation; return the status and X-RateLimit-Remaining (read when the
        answer was made, so concurrent requests may see the same value)."""
        request = urllib.request.Request(f"{self.base}/api/generate",
                                         data=json.dumps(CHEAP).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                return response.status, response.headers.get("X-RateLimit-Remaining")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.headers.get("X-RateLimit-Remaining")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def redis(tmp_path):
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def instances(tmp_path):
    """Start two instances (same storage and limit); stop them at the end of the test."""
    started = []

    def start(storage: str, limit: str = f"{LIMIT} per hour") -> list[Instance]:
        pair = [Instance(tmp_path, f"api-{len(started) + n}", storage, limit) for n in (1, 2)]
        started.extend(pair)
        return pair

    yield start
    for instance in started:
        instance.stop()


def hammer(pair: list[Instance], requests: int) -> list[tuple[int, str | None]]:
    """`requests` generations, alternating between the instances, two at a time per instance so
    that both workers of each take some."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda n: pair[n % 2].generate(), range(requests)))


def test_the_limit_is_exact_across_two_instances_of_two_workers(redis, instances):
    pair = instances(redis.url)
    assert pair[0].health()["rate_limit"] == {"storage": "redis", "shared": True}
    answers = hammer(pair, 3 * LIMIT)
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: LIMIT, 429: 2 * LIMIT}, statuses
    # The last answers are refusals: the count was used up, not skipped at random.
    assert [status for status, _ in answers[-LIMIT:]] == [429] * LIMIT


def test_without_the_shared_store_each_worker_counts_on_its_own(instances):
    """The control: the same load with the in-memory default gets more than the limit."""
    pair = instances("memory://")
    assert pair[0].health()["rate_limit"] == {"storage": "memory", "shared": False}
    answers = hammer(pair, 3 * LIMIT)
    allowed = sum(status == 200 for status, _ in answers)
    assert allowed >= 2 * LIMIT, "each instance has its own count at least"


def test_redis_down_the_api_keeps_serving_in_memory_and_says_so(redis, instances):
    [api, _] = instances(redis.url, f"{LIMIT} per hour")
    assert api.generate()[0] == 200
    redis.stop()
    # Served, not failed: the workers fall back to counting in their own memory.
    answers = [api.generate() for _ in range(3 * LIMIT)]
    statuses = Counter(status for status, _ in answers)
    assert not set(statuses) - {200, 429}, statuses
    # A limit still holds, per worker (2 workers): no more than twice the limit gets through.
    assert LIMIT <= statuses[200] <= 2 * LIMIT, statuses
    health = api.health()
    assert health["status"] == "degraded"
    assert health["rate_limit"]["shared"] is False
    assert health["rate_limit"]["fallback"] == "memory"
    assert "unreachable" in health["rate_limit"]["error"]
    assert "redis://" not in json.dumps(health), "the store's address stays private"
    assert "Rate limit storage unreachable - falling back to in-memory storage" in \
        api.log.read_text()
    # Redis back: the health check pings it, and the workers go back to it (Flask-Limiter
    # retries the store with a growing back-off while in fallback).
    redis.start()
    assert api.health()["rate_limit"] == {"storage": "redis", "shared": True}
    assert api.health()["status"] == "ok"
    deadline = time.monotonic() + 90
    while "Rate limit storage recovered" not in api.log.read_text():
        assert time.monotonic() < deadline, api.log.read_text()[-3000:]
        api.generate()
        time.sleep(1)

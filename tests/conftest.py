"""Shared fixtures: the archive, an isolated data folder, local HTTP servers, system tools.

Tests never write into the checkout's ``data/`` or ``runs/``: ``COVFEFE_DATA_DIR`` and
``COVFEFE_RUNS_DIR`` point at temporary folders for the whole session (notebooks run by nbval
inherit them), and ``COVFEFE_ARCHIVE`` defaults to ``../shared/data/trump-twitter-archive``
beside the checkout.
"""

import functools
import http.server
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

# tests/docker_engine.py: the private dockerd and the images, shared by the Docker tests.
pytest_plugins = ["pytester", "tests.docker_engine"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "trump-twitter-archive"


def pytest_configure(config):
    os.environ.setdefault("COVFEFE_ARCHIVE", str(DEFAULT_ARCHIVE))
    os.environ["COVFEFE_HOME"] = str(ROOT)
    os.environ["COVFEFE_DATA_DIR"] = tempfile.mkdtemp(prefix="covfefe-test-data-")
    os.environ["COVFEFE_RUNS_DIR"] = tempfile.mkdtemp(prefix="covfefe-test-runs-")
    # A developer's real token must never reach a test (the tests use local stand-ins).
    os.environ.pop("TWITTER_BEARER_TOKEN", None)


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


@pytest.fixture(scope="session")
def archive_dir() -> Path:
    """The Trump Twitter Archive folder (``COVFEFE_ARCHIVE``)."""
    path = Path(os.environ["COVFEFE_ARCHIVE"])
    if not path.is_dir():
        pytest.fail(f"COVFEFE_ARCHIVE={path} is not a folder holding the archive's JSON files")
    return path


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A path for a fresh dataset file."""
    return tmp_path / "data" / "tweets.parquet"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def serve_folder():
    """Serve a folder over HTTP on 127.0.0.1; returns a function folder -> base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# A tiny slice of the archive and a tiny network: enough to train for real in seconds.
TINY_SINCE, TINY_UNTIL = "2016-01-01", "2016-03-01"
TINY_PARAMS = dict(cell="lstm", layers=1, units=32, embedding_dim=16, dropout=0.0,
                   batch_size=32, epochs=2, learning_rate=0.01, seed=7, baseline_order=5)


@pytest.fixture(scope="session")
def tiny_tweets(archive_dir, tmp_path_factory):
    """Two months of the real archive (about 700 tweets), collected into a dataset file."""
    from covfefe.data.collect import collect_archive

    path = tmp_path_factory.mktemp("tiny-data") / "tweets.parquet"
    collect_archive(str(archive_dir), path, since=TINY_SINCE, until=TINY_UNTIL, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_training(tiny_tweets, tmp_path_factory):
    """A real (tiny) training run on `tiny_tweets`: its `covfefe.train.TrainResult`."""
    from covfefe.train import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("tiny-run")
    config = TrainConfig(run_dir=str(run_dir), dataset=str(tiny_tweets), **TINY_PARAMS)
    return train(config, progress=False)


@pytest.fixture(scope="session")
def tiny_model(tiny_training):
    """The tiny trained model's artifact (`covfefe.artifact.ModelArtifact`)."""
    return tiny_training.artifact


ALLOWED_ORIGIN = "https://www.covfefe.example"


@pytest.fixture(scope="session")
def app(tiny_model):
    """The API application (`serve.create_app`) serving the tiny trained model."""
    from serve import create_app

    return create_app({"TESTING": True, "MODEL_DIR": str(tiny_model.path),
                       "CORS_ORIGINS": [ALLOWED_ORIGIN]})


@pytest.fixture
def client(app):
    """A test client of `app`."""
    return app.test_client()

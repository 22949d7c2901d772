"""Shared fixtures: the archive, an isolated data folder, local HTTP servers, a tiny model.

Helpers that are not fixtures (system tools, stopping a server, constants) are in helpers.py.

Here too, in one table (``SLOW_MODULES``): which test modules need a Docker engine, a browser,
the notebooks, a fresh install or minutes of CPU (``make test-fast`` leaves them out by these
markers, and the servers of the ``network`` ones) and the longer time limits they get beside
pyproject.toml's default ``timeout``. Under ``COVFEFE_REQUIRE_ALL=1`` (CI) a
test that skips, for whatever reason, fails instead.

``make test`` runs on two pytest-xdist workers (``--dist loadgroup``): each module goes whole to
one worker, so that its module and session fixtures are set up once, and the two Docker modules
go together, since they share one private dockerd and its images. The slow modules come first,
longest first (the order of ``SLOW_MODULES``), so that the other worker takes the short ones
meanwhile.

Tests never write into the checkout's ``data/`` or ``runs/``: ``COVFEFE_DATA_DIR`` and
``COVFEFE_RUNS_DIR`` point at temporary folders for the whole session (notebooks run by papermill
inherit them), and ``COVFEFE_ARCHIVE`` defaults to ``../shared/data/trump-twitter-archive``
beside the checkout.
"""

import functools
import http.server
import os
import tempfile
import threading
from pathlib import Path

import pytest

from tests.helpers import (
    ALLOWED_ORIGIN,
    DEFAULT_ARCHIVE,
    ROOT,
    TINY_PARAMS,
    TINY_SINCE,
    TINY_UNTIL,
    require_all,
)

# tests/docker_engine.py: the private dockerd and the images, shared by the Docker tests.
pytest_plugins = ["pytester", "tests.docker_engine"]


# Module -> (what it needs beyond Python, its time limit per test in seconds), longest module
# first (the order the workers take them in). The limit covers the session fixtures a module's
# first test sets up: the private dockerd with its stand-in base images and image builds, the
# notebooks' one papermill run. Every other test has the default of pyproject.toml
# ([tool.pytest.ini_options] timeout).
SLOW_MODULES = {
    "test_deploy_images": ("docker", 2400),
    "test_swarm": ("docker", 2400),
    "test_webapp": ("browser", 600),
    "test_deploy_nginx": ("browser", 600),
    "test_notebooks": ("notebooks", 1800),
    "test_serve_install": ("install", 900),  # a fresh virtualenv, the serve extra installed
    # A minute or more of CPU each: the bundled model measured on the whole archive, real
    # training runs (a GPU script's sizes side by side, a killed run resumed, two devices
    # against one), evaluations of the whole archive, generated requests by the thousand.
    "test_bundled_model": ("slow", 1200),
    "test_training": ("slow", 900),
    "test_distributed_training": ("slow", 600),
    "test_evaluate": ("slow", 600),  # covfefe evaluate on the whole archive, several times
    "test_fuzz": ("slow", 600),  # a thousand generated requests
    "test_contract_v2": ("slow", 600),  # covfefe-flow v2's own contract, run whole
}


# Modules that must run in one worker because they share session fixtures of their own.
SHARED_WORKER = {"test_deploy_images": "docker", "test_swarm": "docker"}


def module_name(item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1]


@pytest.hookimpl(tryfirst=True)  # before xdist's hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    order = {name: rank for rank, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: order.get(module_name(item), len(order)))  # stable
    for item in items:
        name = module_name(item)
        item.add_marker(pytest.mark.xdist_group(SHARED_WORKER.get(name, name)))
        needs, limit = SLOW_MODULES.get(name, (None, None))
        if needs:
            item.add_marker(needs)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(limit))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under COVFEFE_REQUIRE_ALL=1 a skipped test is a failed one: CI runs every test."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and require_all() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and COVFEFE_REQUIRE_ALL=1 runs every test: {reason}"


def pytest_configure(config):
    os.environ.setdefault("COVFEFE_ARCHIVE", str(DEFAULT_ARCHIVE))
    os.environ["COVFEFE_HOME"] = str(ROOT)
    os.environ["COVFEFE_DATA_DIR"] = tempfile.mkdtemp(prefix="covfefe-test-data-")
    os.environ["COVFEFE_RUNS_DIR"] = tempfile.mkdtemp(prefix="covfefe-test-runs-")
    # A developer's real token must never reach a test (the tests use local stand-ins).
    os.environ.pop("TWITTER_BEARER_TOKEN", None)


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


@pytest.fixture(scope="session")
def tiny_tweets(archive_dir, tmp_path_factory):
    """Two months of the real archive (about 700 tweets), collected into a dataset file."""
    from covfefe.data.collect import collect_archive

    path = tmp_path_factory.mktemp("tiny-data") / "tweets.parquet"
    collect_archive(str(archive_dir), path, since=TINY_SINCE, until=TINY_UNTIL, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_training(tiny_tweets, tmp_path_factory):
    """A real (tiny) training run on `tiny_tweets`: its `covfefe.training.train.TrainResult`."""
    from covfefe.training.train import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("tiny-run")
    config = TrainConfig(run_dir=str(run_dir), dataset=str(tiny_tweets), **TINY_PARAMS)
    return train(config, progress=False)


@pytest.fixture(scope="session")
def tiny_model(tiny_training):
    """The tiny trained model's artifact (`covfefe.inference.artifact.ModelArtifact`)."""
    return tiny_training.artifact


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

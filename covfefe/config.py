"""Settings: paths, defaults and the environment variables that override them, in one place.

Every environment variable the project reads is read here:

- ``COVFEFE_HOME``: the project root that relative paths resolve against (default: the
  checkout this package lives in, or the current directory once installed elsewhere).
- ``COVFEFE_DATA_DIR``: where collected data lives (default ``<home>/data``).
- ``COVFEFE_ARCHIVE``: a Trump Twitter Archive folder, file, glob or URL (default
  ``<home>/../shared/data/trump-twitter-archive``, where a developer checkout finds it).
- ``COVFEFE_RUNS_DIR``: where training runs and executed notebooks go (default ``<home>/runs``).
- ``COVFEFE_MODEL``: the model artifact that evaluation, generation and the API use by default
  (default ``<home>/models/covfefe``, the bundled model).
- ``COVFEFE_BIND``: the address the API listens on (default ``127.0.0.1:8000``); ``covfefe serve
  --host/--port`` override it.
- The API's own settings (``COVFEFE_RATE_LIMIT``, ``COVFEFE_RATELIMIT_STORAGE_URI``: a shared
  store such as ``redis://host:6379/0`` for one exact limit across workers and replicas...) are
  read by ``serve.create_app`` with Flask's ``from_prefixed_env``; README.md lists them all.
- ``TWITTER_BEARER_TOKEN``: the X/Twitter API v2 bearer token (a secret: only ever read from
  the environment, never written anywhere).
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _default_home() -> Path:
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.cwd()


def home() -> Path:
    """Return the project root that relative paths are resolved against."""
    return Path(os.environ.get("COVFEFE_HOME") or _default_home())


def data_dir() -> Path:
    """Return the folder for collected data (``COVFEFE_DATA_DIR``)."""
    return Path(os.environ.get("COVFEFE_DATA_DIR") or home() / "data")


def dataset_path() -> Path:
    """Return the default dataset that collection writes and every later step reads."""
    return data_dir() / DATASET_FILENAME


def archive_source() -> str:
    """Return the default archive source (``COVFEFE_ARCHIVE``): a folder, file, glob or URL."""
    return os.environ.get("COVFEFE_ARCHIVE") or str(
        home().parent / "shared" / "data" / "trump-twitter-archive"
    )


def runs_dir() -> Path:
    """Return the folder of training runs and executed notebooks (``COVFEFE_RUNS_DIR``)."""
    return Path(os.environ.get("COVFEFE_RUNS_DIR") or home() / "runs")


def model_dir() -> Path:
    """Return the default model artifact (``COVFEFE_MODEL``, else the bundled model)."""
    return resolve(os.environ.get("COVFEFE_MODEL") or BUNDLED_MODEL)


def bind_address(host: str | None = None, port: int | None = None) -> str:
    """Return the address the API listens on: ``host`` and ``port`` (``covfefe serve --host
    --port``) over ``COVFEFE_BIND`` over ``DEFAULT_BIND``."""
    setting = os.environ.get("COVFEFE_BIND") or DEFAULT_BIND
    if host is None and port is None:
        return setting  # as given: gunicorn also takes unix:PATH or several addresses
    setting_host, _, setting_port = setting.rpartition(":")
    host = host or setting_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address, as gunicorn reads it
    return f"{host}:{port or setting_port}"


def twitter_bearer_token() -> str | None:
    """Return the X/Twitter API bearer token from the environment, or None when it is not set."""
    return os.environ.get(TWITTER_TOKEN_ENV) or None


def resolve(path: str | os.PathLike) -> Path:
    """Resolve a path given relative to the project root (absolute paths are kept)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else home() / path


DATASET_FILENAME = "tweets.parquet"
BUNDLED_MODEL = "models/covfefe"
TWITTER_TOKEN_ENV = "TWITTER_BEARER_TOKEN"
DEFAULT_BIND = "127.0.0.1:8000"  # this machine only; COVFEFE_BIND=0.0.0.0:8000 for every address

# Collection defaults.
DEFAULT_SCREEN_NAME = "realDonaldTrump"
TWITTER_PAGE_SIZE = 100  # the v2 timeline endpoint's maximum
TWITTER_MAX_RATE_LIMIT_WAITS = 5  # consecutive 429s before giving up
DOWNLOAD_TIMEOUT_S = 30
DOWNLOAD_CHUNK_BYTES = 1 << 16

# Vocabulary defaults: characters seen fewer times than this map to the unknown symbol.
VOCAB_MIN_COUNT = 20

# Serving engine (covfefe.serving.engine), per API worker; the API reads COVFEFE_ENGINE,
# COVFEFE_ENGINE_ROWS, COVFEFE_ENGINE_QUEUE and COVFEFE_ENGINE_THREADS (serve.create_app,
# serve/gunicorn_conf.py).
ENGINE_ENABLED = True  # False: each request runs its own steps in its thread (the old path)
# 16 rows per worker keep a core busy (a step costs about the same per row at 16 as at 32), and
# a step of 16 is half as long as one of 32, so an answer comes twice as fast: on 2 cores, 128
# clients got p99 1.4 s at 80 requests/s with 16/16, against 2.6 s at 78 with 32/32.
ENGINE_ROWS = 16  # sequences stepped together (a request with n candidates is n rows)
ENGINE_QUEUE = 16  # requests waiting for rows; beyond that, 503 with Retry-After
ENGINE_RETRY_AFTER_S = 1


def cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's cpuset counts, its
    CPU quota does not)."""
    return len(os.sched_getaffinity(0))


def engine_threads() -> int:
    """Threads stepping a worker's batch (COVFEFE_ENGINE_THREADS): 2 where this process may
    run on 2 cores or more (a batch of 4 rows or more is stepped in two halves side by side,
    covfefe.inference.parallel), else 1."""
    return 2 if cores() >= 2 else 1

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
- The API's own settings (``COVFEFE_RATE_LIMIT``, ``COVFEFE_WORKERS``...): the table
  `SERVE_SETTINGS` below, read and checked by `serve_settings` for gunicorn's configuration
  (serve/gunicorn_conf.py) and the application (``serve.create_app``) alike. A value that
  cannot be used, or a ``COVFEFE_`` name that no part of the project reads, stops the server
  with one sentence; none is ever dropped silently. deploy/README.md lists them all.
- ``MLFLOW_TRACKING_URI``: a shared MLflow tracking server (default: a SQLite file beside the
  dataset; covfefe.tracking).
- ``TWITTER_BEARER_TOKEN``: the X/Twitter API v2 bearer token (a secret: only ever read from
  the environment, never written anywhere).
"""

import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from covfefe.errors import UserError

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
# COVFEFE_ENGINE_ROWS and COVFEFE_ENGINE_QUEUE (serve.create_app, serve/gunicorn_conf.py).
ENGINE_ENABLED = True  # False: each request runs its own steps in its thread (the old path)
# 16 rows per worker keep a core busy (a step costs about the same per row at 16 as at 32), and
# a step of 16 is half as long as one of 32, so an answer comes twice as fast: on 2 cores, 128
# clients got p99 1.4 s at 80 requests/s with 16/16, against 2.6 s at 78 with 32/32.
ENGINE_ROWS = 16  # sequences stepped together (a request with n candidates is n rows)
# A short queue: a request that waits behind a full batch waits a whole batch's time, so under
# overload p99 grows with the queue; a shorter one refuses more, and each refusal costs CPU.
# 64 clients (1-8 candidates) retrying a 503 at once, machine at load 7-12: p99 2.6-6.9 s
# with 8 waiting against 6.6-16.1 s with 16, throughput 0.92-1.49 of polite clients' (with 4:
# 0.65-1.34, its refusals' CPU). bench/README.md, issue 30.
ENGINE_QUEUE = 8  # requests waiting for rows; beyond that, 503 with Retry-After
ENGINE_RETRY_AFTER_S = 1


# The API's settings: every COVFEFE_* variable that serve reads, its default and what it accepts.
MAX_CANDIDATES = 16  # the most candidates (n) one request may ask for
REQUEST_TIMEOUT_S = 5.0  # a client's time from its first byte to the end of its body
MAX_BODY_BYTES = 16 * 1024  # the largest request body (a prefix is at most 200 characters)
DEFAULT_RATE_LIMIT = "60 per minute"  # per client address, the generating routes together


class SettingError(UserError):
    """A ``COVFEFE_*`` setting whose value cannot be used, or a name nothing reads."""


@dataclass(frozen=True)
class Setting:
    """One setting of the API: its default, and ``read``, which turns a value from the
    environment (a string) or from ``create_app(test_config)`` into what the server uses,
    raising ValueError with what it accepts."""

    default: object
    read: Callable[[object], object]
    meaning: str


def _whole(low: int, high: int | None = None) -> Callable[[object], int]:
    accepted = f"a whole number from {low} to {high}" if high else f"a whole number, at least {low}"

    def read(value) -> int:
        text = str(value).strip()
        if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,9}", text) or not (
                low <= int(text) <= (high if high else int(text))):
            raise ValueError(accepted)
        return int(text)

    return read


def _seconds(value) -> float:
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", text) or not (
            float(text) > 0):
        raise ValueError("a number of seconds above 0, such as 5 or 0.5")
    return float(text)


_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _switch(value) -> bool:
    text = str(value).strip().lower()
    if text not in _ON + _OFF:
        raise ValueError(f"on or off: one of {', '.join(_ON)} or {', '.join(_OFF)}")
    return text in _ON


def _text(value) -> str | None:
    return None if value is None else str(value)


def _rate_limit(value) -> str:
    # Deferred: limits belongs to the serve extra, and this module is imported everywhere.
    from limits import parse_many

    text = str(value).strip()
    try:
        parse_many(text)
    except ValueError:
        raise ValueError("a rate limit such as '60 per minute', '60/minute' or "
                         "'10/second;500/day'") from None
    return text


def _storage_uri(value) -> str:
    from limits.storage import SCHEMES

    text = str(value).strip()
    scheme = text.partition("://")[0]
    if "://" not in text or scheme not in SCHEMES:
        shown = ", ".join(sorted(known for known in SCHEMES if "+" not in known))
        raise ValueError("memory:// or a shared store's URI such as redis://host:6379/0 "
                         f"(schemes: {shown}...)")
    return text


def _origins(value) -> list[str]:
    origins = ([origin.strip() for origin in value.split(",") if origin.strip()]
               if isinstance(value, str) else list(value or []))
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
            raise ValueError("origins separated by commas, such as https://www.example.org "
                             "(scheme and host, no path), or *")
    return origins


def _bind(value) -> str:
    text = str(value).strip()
    if not (text.startswith(("unix:", "fd://"))
            or re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):[0-9]{1,5}", text)
            and int(text.rpartition(":")[2]) <= 65535):
        raise ValueError("HOST:PORT such as 127.0.0.1:8000 or 0.0.0.0:8000, or unix:PATH")
    return text


def _log_level(value) -> str:
    levels = ("debug", "info", "warning", "error", "critical")
    if str(value).strip().lower() not in levels:
        raise ValueError(f"one of {', '.join(levels)}")
    return str(value).strip().lower()


SERVE_SETTINGS: dict[str, Setting] = {
    # gunicorn (serve/gunicorn_conf.py)
    "BIND": Setting("127.0.0.1:8000", _bind, "the address gunicorn listens on"),
    "WORKERS": Setting(2, _whole(1, 64), "worker processes, each with its own model"),
    "THREADS": Setting(None, _whole(1, 1000), "threads per worker (default: engine rows + "
                       "queue + 4, or 4 without the engine)"),
    "TIMEOUT": Setting(30, _whole(1), "seconds a worker may be silent before gunicorn "
                       "restarts it"),
    "LOG_LEVEL": Setting("info", _log_level, "gunicorn's log level"),
    "REQUEST_READ_TIMEOUT": Setting(REQUEST_TIMEOUT_S, _seconds, "seconds a client has, from "
                                    "its first byte, to send its whole request: line, headers "
                                    "and body (serve/worker.py)"),
    # the application (serve.create_app)
    "MODEL_DIR": Setting(None, _text, "the model artifact (`covfefe serve --model`; else "
                         "COVFEFE_MODEL, else the bundled model)"),
    "MAX_BODY_BYTES": Setting(MAX_BODY_BYTES, _whole(256, 1 << 20), "the largest request "
                              "body, in bytes (413 beyond)"),
    "RATE_LIMIT": Setting(DEFAULT_RATE_LIMIT, _rate_limit, "per client address, for the "
                          "three generating routes together"),
    "RATELIMIT_STORAGE_URI": Setting("memory://", _storage_uri, "where the rate limit is "
                                     "counted: memory:// (each worker on its own) or a shared "
                                     "store such as redis://host:6379/0"),
    "RETRY_AFTER": Setting(ENGINE_RETRY_AFTER_S, _whole(1, 60), "seconds a refused client "
                           "(503) is asked to wait at least; each answer says between that "
                           "and twice that, at random, so that they do not come back together"),
    "CORS_ORIGINS": Setting([], _origins, "origins allowed to call the API from a browser"),
    "PROXIES": Setting(0, _whole(0, 10), "proxies in front that append to X-Forwarded-For"),
    "WEBAPP_DIR": Setting(None, _text, "the web page's folder served at /"),
    "BLAS_THREADS": Setting(1, _whole(1, 256), "NumPy BLAS threads per worker"),
    "ENGINE": Setting(ENGINE_ENABLED, _switch, "the serving engine (off: each request runs "
                      "alone in its thread)"),
    "ENGINE_ROWS": Setting(ENGINE_ROWS, _whole(MAX_CANDIDATES, 4096), "sequences a worker "
                           "steps together (a request of n candidates is n rows)"),
    "ENGINE_QUEUE": Setting(ENGINE_QUEUE, _whole(0, 4096), "requests waiting for rows; "
                            "beyond, 503 with Retry-After"),
}
# COVFEFE_* names that other parts of the project read (the package's paths above, the tests,
# the deploy scripts and images): the server takes no notice of them.
OTHER_SETTINGS = ("HOME", "DATA_DIR", "ARCHIVE", "RUNS_DIR", "MODEL", "REQUIRE_ALL", "AXE_JS",
                  "API_BASE", "DEPLOY_CONFIG", "DEPLOY_SECRETS", "BUILD_TRAIN_IMAGE",
                  "STACK_FILE", "DEBIAN_MIRROR", "DICTIONARY")
SETTING_PREFIX = "COVFEFE_"


def read_setting(name: str, value):
    """Return a setting's value as the server uses it; SettingError (one sentence naming the
    setting, the value and what it accepts) when it cannot be used."""
    try:
        return SERVE_SETTINGS[name].read(value)
    except ValueError as accepted:
        raise SettingError(f"{SETTING_PREFIX}{name} is {str(value)[:100]!r}; it must be "
                           f"{accepted}") from None


def serve_settings(environ=None) -> dict[str, object]:
    """Every setting of the API, read from ``COVFEFE_*`` variables of ``environ`` (default:
    this process's) and checked; the defaults for the others. SettingError for the first
    value that cannot be used or name that nothing reads."""
    environ = os.environ if environ is None else environ
    names = [key[len(SETTING_PREFIX):] for key in environ if key.startswith(SETTING_PREFIX)]
    for name in sorted(names):
        if name not in SERVE_SETTINGS and name not in OTHER_SETTINGS:
            close = difflib.get_close_matches(name, [*SERVE_SETTINGS, *OTHER_SETTINGS], n=1)
            hint = f"did you mean {SETTING_PREFIX}{close[0]}? " if close else ""
            raise SettingError(f"{SETTING_PREFIX}{name} is not a setting; {hint}the server's "
                               f"settings are {', '.join(SERVE_SETTINGS)} (deploy/README.md)")
    settings = {}
    for name, setting in SERVE_SETTINGS.items():
        key = SETTING_PREFIX + name
        settings[name] = (read_setting(name, environ[key]) if environ.get(key, "").strip()
                          else setting.default)
    return settings

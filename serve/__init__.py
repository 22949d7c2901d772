"""The covfefe-flow web API: a Flask application factory, run by gunicorn as ``serve:create_app()``.

``create_app(test_config=None)`` reads its settings from ``COVFEFE_*`` environment variables
(or ``test_config``), loads the model once per worker (`init_app`), and registers the API
blueprint. Every error is a one-line JSON ``{"error": ...}`` with a 4xx status for the client's
mistakes; CORS is answered only for the configured origins.
"""

import json
import logging
import time
import zipfile

from flask import Flask, g, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from covfefe import config
from covfefe.errors import UserError
from covfefe.serving.engine import EngineBusy
from serve import ratelimit  # noqa: F401 (memory:// is its store from here on)
from serve.api import LIMITED_ENDPOINTS, api
from serve.validation import RequestError
from serve.web import web, webapp_dir

MAX_BODY_BYTES = 16 * 1024
DEFAULT_RATE_LIMIT = "60 per minute"  # per client address, one budget for the generating routes


def _json_error(error: HTTPException):
    """Answer every HTTP error with a one-line JSON body instead of an HTML page, keeping the
    headers the error carries (Allow on 405, as RFC 9110 requires)."""
    response = jsonify(error=f"{error.name}: {error.description}")
    response.status_code = error.code
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers.add(name, value)
    return response


def _request_error(error: RequestError):
    body = {"error": str(error)}
    if error.field:
        body["field"] = error.field
    return jsonify(body), error.status


def _busy(error: EngineBusy):
    """503 at once when the engine has no room: a one-line JSON error and Retry-After."""
    response = jsonify(error=str(error))
    response.status_code = 503
    response.headers["Retry-After"] = str(error.retry_after)
    g.busy_retry_after = error.retry_after  # kept over the rate limiter's own value
    return response


def _whole_number(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not str(value).isdigit() or int(value) < low:
        raise SystemExit(f"covfefe serve: {name} must be a whole number, at least {low}, "
                         f"not {value!r}")
    return int(value)


def _start_engine(app: Flask, generator) -> None:
    """One engine per worker (COVFEFE_ENGINE, on by default): the requests of this worker
    are stepped together (covfefe.serving.engine). Off, each request runs alone in its thread."""
    from covfefe.serving.engine import Engine
    from serve.api import MAX_CANDIDATES

    enabled = app.config["ENGINE"]
    if str(enabled).lower() in ("0", "false", "no", "off"):
        return
    rows = _whole_number("ENGINE_ROWS", app.config["ENGINE_ROWS"], MAX_CANDIDATES)
    waiting = _whole_number("ENGINE_QUEUE", app.config["ENGINE_QUEUE"], 0)
    threads = _whole_number("ENGINE_THREADS", app.config["ENGINE_THREADS"], 1)
    if threads > 2:
        raise SystemExit(f"covfefe serve: ENGINE_THREADS must be 1 or 2, not {threads}")
    app.extensions["covfefe.serving.engine"] = Engine(generator, max_rows=rows, max_queue=waiting,
                                              retry_after=config.ENGINE_RETRY_AFTER_S,
                                              threads=threads)


def _limit_blas_threads(threads: int) -> None:
    """Cap the threads of NumPy's BLAS in this worker. The generator's matrix products are
    small: with several requests at once in a worker, each product spreading over every core
    only makes them fight (bench/load.py: 1.6 requests/s with the default, against ~20 with one
    thread). Done at run time, as NumPy is already imported by now."""
    from threadpoolctl import threadpool_limits

    if isinstance(threads, bool) or not str(threads).isdigit() or int(threads) < 1:
        raise SystemExit(f"covfefe serve: BLAS_THREADS must be a whole number, at least 1, "
                         f"not {threads!r}")
    threadpool_limits(limits=int(threads), user_api="blas")


def init_app(app: Flask) -> None:
    """Load the model artifact and its generator once, for every request of this worker."""
    from covfefe.inference.artifact import load_artifact
    from covfefe.inference.generate import TweetGenerator

    _limit_blas_threads(app.config["BLAS_THREADS"])
    artifact = load_artifact(config.resolve(app.config["MODEL_DIR"]) if app.config.get("MODEL_DIR")
                             else config.model_dir())
    try:
        generator = TweetGenerator.from_artifact(artifact)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        # Checksums match what export wrote, yet the weights do not load: a damaged export.
        raise UserError(f"the weights of the model artifact {artifact.path} cannot be read "
                        f"({type(error).__name__}: {str(error)[:200]}); export it again"
                        ) from None
    # The first tweet compiles the generator's kernels (numba): with the engine's step, about
    # half a minute where numba has no cache of them yet (33 s for two workers on 2 cores), a
    # tenth of a second where it has. Here, before the worker takes requests, rather than in
    # some user's first request (gunicorn_conf logs the worker's start and when it is ready).
    generator.complete("", max_length=2, seed=0)
    app.extensions["covfefe.inference.artifact"] = artifact
    app.extensions["covfefe.generator"] = generator
    _start_engine(app, generator)


def _allowed_origins(app: Flask) -> set[str]:
    origins = app.config.get("CORS_ORIGINS") or []
    if isinstance(origins, str):
        origins = [origin.strip() for origin in origins.split(",") if origin.strip()]
    return set(origins)


def _cors(app: Flask):
    allowed = _allowed_origins(app)

    def add_headers(response):
        origin = request.headers.get("Origin")
        if origin and ("*" in allowed or origin in allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        response.headers.add("Vary", "Origin")
        return response

    return add_headers


access_log = logging.getLogger("covfefe.access")
limiter_log = logging.getLogger("flask-limiter")


def _start_timer():
    g.started = time.perf_counter()


def _engine_times(job) -> dict:
    """A request's queue wait and generation time in the engine (a `covfefe.serving.engine.Job`)."""
    return {"queue_ms": None if job.queue_wait_s is None else round(job.queue_wait_s * 1000, 1),
            "generation_ms": None if job.generation_s is None
            else round(job.generation_s * 1000, 1)}


def _log_access(response):
    """One JSON line per request: what, who, how it went, how long it took. A streamed
    response is logged when it closes (sent in full, or its client gone), with the time and
    bytes of the whole stream; measuring it here would consume the stream before it is sent."""
    if not access_log.isEnabledFor(logging.INFO):
        return response
    started, job = g.get("started"), g.get("engine_job")
    entry = {"method": request.method, "path": request.path, "status": response.status_code,
             "ms": None, "client": request.remote_addr, "bytes": None,
             "agent": request.user_agent.string[:200] or None}

    def write(sent):
        if started:
            entry["ms"] = round((time.perf_counter() - started) * 1000, 1)
        entry["bytes"] = sent
        if job is not None:  # it ran in the engine: how long it waited, how long it ran
            entry.update(_engine_times(job))
        access_log.info(json.dumps(entry))

    if not response.is_streamed:
        write(response.calculate_content_length())
        return response
    sent = [0]

    def counted(chunks):
        try:
            for chunk in chunks:
                sent[0] += len(chunk.encode() if isinstance(chunk, str) else chunk)
                yield chunk
        finally:
            if hasattr(chunks, "close"):
                chunks.close()  # stops the generation when the client has hung up

    response.response = counted(response.response)
    response.call_on_close(lambda: write(sent[0]))
    return response


def _refuse_long_chunked_bodies():
    """413 for a chunked body over the limit. It has no Content-Length to check up front, and
    Werkzeug only stops reading at the limit: the body would be cut there and parsed."""
    limit = request.max_content_length
    if limit and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        body = request.get_data(cache=True)  # at most `limit` bytes
        if len(body) >= limit:
            raise RequestEntityTooLarge()


def _retry_after_only_when_limited(response):
    """Flask-Limiter sends Retry-After with every response; it belongs on 429 alone, and on
    the engine's 503 with the engine's own value."""
    if response.status_code == 503 and g.get("busy_retry_after"):
        response.headers["Retry-After"] = str(g.busy_retry_after)
    elif response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def _options_without_a_page(response):
    """Flask answers OPTIONS itself with an empty text/html page: 204 No Content instead,
    with its Allow header (and CORS's, for a preflight)."""
    if request.method == "OPTIONS" and response.status_code == 200 and not response.data:
        response.status_code = 204
        del response.headers["Content-Type"]
        del response.headers["Content-Length"]
    return response


def _proxies(value) -> int:
    try:
        proxies = int(value)
    except (TypeError, ValueError):
        proxies = -1
    if proxies < 0 or isinstance(value, bool):
        raise SystemExit(f"covfefe serve: PROXIES must be a whole number of proxies, at least 0, "
                         f"not {value!r}")
    return proxies


def create_app(test_config: dict | None = None) -> Flask:
    """Create and configure the API application."""
    app = Flask(__name__)
    app.json.sort_keys = False  # keep fields in the order the API documents them
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES, MODEL_DIR=None,
        CORS_ORIGINS=[], RATE_LIMIT=DEFAULT_RATE_LIMIT,
        # In memory by default: each worker counts on its own. With several workers, point
        # all of them at one store, e.g. COVFEFE_RATELIMIT_STORAGE_URI=redis://host:6379.
        RATELIMIT_STORAGE_URI="memory://", RATELIMIT_HEADERS_ENABLED=True,
        # While that store is unreachable, each worker counts in its own memory (a logged
        # warning, and /api/health says so) rather than failing the request; it goes back to
        # the store once a ping answers again.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        # How many proxies (nginx, a CDN) stand in front of the app and append to
        # X-Forwarded-For. The client address (rate limit key, access log) is taken that many
        # hops from the right; 0 trusts no header, so a client cannot pick its own address.
        PROXIES=0,
        WEBAPP_DIR=None,  # the page's folder; None: the repository's webapp/ if it is there
        BLAS_THREADS=1,  # NumPy BLAS threads per worker (see _limit_blas_threads)
        ENGINE=config.ENGINE_ENABLED, ENGINE_ROWS=config.ENGINE_ROWS,
        ENGINE_QUEUE=config.ENGINE_QUEUE, ENGINE_THREADS=config.engine_threads(),
        # the serving engine (see _start_engine)
    )
    if test_config is None:
        app.config.from_prefixed_env("COVFEFE")
    else:
        app.config.update(test_config)
    try:
        init_app(app)
    except UserError as error:
        raise SystemExit(f"covfefe serve: {error}") from None
    proxies = _proxies(app.config["PROXIES"])
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    app.register_blueprint(api)
    folder = webapp_dir(app)
    if folder is not None:
        app.extensions["covfefe.webapp"] = folder
        app.register_blueprint(web)
    # Registered before the limiter's own hook so that it runs after it (Flask runs them in
    # reverse), once the limiter has added its headers.
    app.after_request(_retry_after_only_when_limited)
    limiter = Limiter(get_remote_address, app=app)
    app.extensions["covfefe.limiter"] = limiter  # /api/health reports where it counts
    # One budget per client for the three generating routes together (not one each).
    generating = limiter.shared_limit(app.config["RATE_LIMIT"], scope="generate")
    for endpoint in LIMITED_ENDPOINTS:
        app.view_functions[endpoint] = generating(app.view_functions[endpoint])
    app.register_error_handler(HTTPException, _json_error)
    app.register_error_handler(RequestError, _request_error)
    app.register_error_handler(EngineBusy, _busy)
    app.after_request(_cors(app))
    app.after_request(_options_without_a_page)
    app.before_request(_start_timer)
    app.before_request(_refuse_long_chunked_bodies)
    app.after_request(_log_access)
    if not limiter_log.handlers or all(isinstance(h, logging.NullHandler)
                                       for h in limiter_log.handlers):
        # Flask-Limiter's warnings (the store unreachable, then recovered) reach the log.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        limiter_log.addHandler(handler)
        limiter_log.setLevel(logging.INFO)
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    return app

"""The covfefe-flow web API: a Flask application factory, run by gunicorn as ``serve:create_app()``.

``create_app(test_config=None)`` reads its settings from ``COVFEFE_*`` environment variables
(or ``test_config``), each checked by `covfefe.config.serve_settings` (a value that cannot be
used stops it with one sentence), loads the model once per worker (`init_app`), and registers
the API blueprint. Every error is a one-line JSON ``{"error": ...}`` with a 4xx status for the
client's mistakes; CORS is answered only for the configured origins.
"""

import json
import logging
import random
import time
import zipfile

from flask import Flask, current_app, g, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from covfefe import config
from covfefe.errors import UserError
from covfefe.serving.engine import EngineBusy
from serve import ratelimit  # noqa: F401 (memory:// is its store from here on)
from serve.api import LIMITED_ENDPOINTS, api, refused_early
from serve.validation import RequestError
from serve.web import web, webapp_dir


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


def spread(retry_after: int) -> int:
    """A Retry-After between ``retry_after`` and twice that, at random: clients refused
    together, told the same, would all come back together and be refused together again."""
    return random.randint(retry_after, 2 * retry_after)


def busy_retry_after(app: Flask) -> int | None:
    """Retry-After (spread) when this worker's engine has room for no request at all (rows
    and queue full), else None: serve.worker answers 503 then, before Flask and any model
    work. Only when sure: a request it lets through may still be refused by the engine for
    its own n (`_busy`)."""
    engine = app.extensions.get("covfefe.serving.engine")
    if engine is None:
        return None
    stats = engine.stats()
    # The rows of the requests waiting are at least one each.
    if (stats["queued"] >= stats["max_queue"]
            and stats["rows_in_flight"] + stats["queued"] >= stats["max_rows"]):
        refused_early.add()
        return spread(app.config["RETRY_AFTER"])
    return None


def _busy(error: EngineBusy):
    """503 at once when the engine has no room: a one-line JSON error and Retry-After."""
    retry_after = spread(error.retry_after)
    response = jsonify(error=f"the server is busy; retry in {retry_after} s")
    response.status_code = 503
    response.headers["Retry-After"] = str(retry_after)
    g.busy_retry_after = retry_after  # kept over the rate limiter's own value
    return response


def _start_engine(app: Flask, generator) -> None:
    """One engine per worker (COVFEFE_ENGINE, on by default): the requests of this worker
    are stepped together (covfefe.serving.engine). Off, each request runs alone in its thread."""
    from covfefe.serving.engine import Engine

    if not app.config["ENGINE"]:
        return
    app.extensions["covfefe.serving.engine"] = Engine(
        generator, max_rows=app.config["ENGINE_ROWS"], max_queue=app.config["ENGINE_QUEUE"],
        retry_after=app.config["RETRY_AFTER"])


def _limit_blas_threads(threads: int) -> None:
    """Cap the threads of NumPy's BLAS in this worker. The generator's matrix products are
    small: with several requests at once in a worker, each product spreading over every core
    only makes them fight (bench/load.py: 1.6 requests/s with the default, against ~20 with one
    thread). Done at run time, as NumPy is already imported by now."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


def load_model(model_dir: str | None):
    """The model artifact (``model_dir``, else COVFEFE_MODEL, else the bundled model) and its
    generator; UserError, one sentence, when either cannot be loaded."""
    from covfefe.inference.artifact import load_artifact
    from covfefe.inference.generate import TweetGenerator

    artifact = load_artifact(config.resolve(model_dir) if model_dir else config.model_dir())
    try:
        return artifact, TweetGenerator.from_artifact(artifact)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        # Checksums match what export wrote, yet the weights do not load: a damaged export.
        raise UserError(f"the weights of the model artifact {artifact.path} cannot be read "
                        f"({type(error).__name__}: {str(error)[:200]}); export it again"
                        ) from None


def check_model(model_dir: str | None) -> str | None:
    """Why the model cannot be served (one sentence), or None when it loads: gunicorn's
    master asks before it starts any worker (serve/gunicorn_conf.py)."""
    try:
        load_model(model_dir)
    except UserError as error:
        return str(error)
    return None


def init_app(app: Flask) -> None:
    """Load the model artifact and its generator once, for every request of this worker."""
    _limit_blas_threads(app.config["BLAS_THREADS"])
    artifact, generator = load_model(app.config.get("MODEL_DIR"))
    # The first tweet compiles the generator's kernels (numba): with the engine's step, about
    # half a minute where numba has no cache of them yet (33 s for two workers on 2 cores), a
    # tenth of a second where it has. Here, before the worker takes requests, rather than in
    # some user's first request (gunicorn_conf logs the worker's start and when it is ready).
    generator.complete("", max_length=2, seed=0)
    app.extensions["covfefe.inference.artifact"] = artifact
    app.extensions["covfefe.generator"] = generator
    _start_engine(app, generator)


def _cors(app: Flask):
    allowed = set(app.config["CORS_ORIGINS"])

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
    the engine's 503 with the engine's own value. On a 429 it is when the client's budget
    comes back, plus up to RETRY_AFTER seconds at random: clients limited together are not
    told to come back at the same second."""
    if response.status_code == 503 and g.get("busy_retry_after"):
        response.headers["Retry-After"] = str(g.busy_retry_after)
    elif response.status_code == 429 and response.headers.get("Retry-After", "").isdigit():
        extra = spread(current_app.config["RETRY_AFTER"]) - current_app.config["RETRY_AFTER"]
        response.headers["Retry-After"] = str(int(response.headers["Retry-After"]) + extra)
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


def _settings(test_config: dict | None) -> dict:
    """The settings, checked (SettingError): from the environment, or the defaults and
    ``test_config`` (whose other keys, such as TESTING, go to Flask as they are)."""
    if test_config is None:
        return config.serve_settings()
    settings = config.serve_settings({})
    for name, value in test_config.items():
        known = name in config.SERVE_SETTINGS and value is not None
        settings[name] = config.read_setting(name, value) if known else value
    return settings


def create_app(test_config: dict | None = None) -> Flask:
    """Create and configure the API application."""
    app = Flask(__name__)
    app.json.sort_keys = False  # keep fields in the order the API documents them
    try:
        # The settings of covfefe.config.SERVE_SETTINGS under their own names; the ones below
        # are Flask's and Flask-Limiter's. RATELIMIT_STORAGE_URI is memory:// by default: each
        # worker counts on its own; with several, point all of them at one store (redis://).
        # PROXIES: how many proxies (nginx, a CDN) stand in front and append to
        # X-Forwarded-For; the client address (rate limit key, access log) is taken that many
        # hops from the right; 0 trusts no header, so a client cannot pick its own address.
        app.config.from_mapping(_settings(test_config))
    except config.SettingError as error:
        raise SystemExit(f"covfefe serve: {error}") from None
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=app.config["MAX_BODY_BYTES"], RATELIMIT_HEADERS_ENABLED=True,
        # While the shared store is unreachable, each worker counts in its own memory (a logged
        # warning, and /api/health says so) rather than failing the request; it goes back to
        # the store once a ping answers again.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True)
    try:
        init_app(app)
    except UserError as error:
        raise SystemExit(f"covfefe serve: {error}") from None
    proxies = app.config["PROXIES"]
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

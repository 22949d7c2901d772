"""The covfefe-flow web API: a Flask application factory, run by gunicorn as ``serve:create_app()``.

``create_app(test_config=None)`` reads its settings from ``COVFEFE_*`` environment variables
(or ``test_config``), loads the model once per worker (`init_app`), and registers the API
blueprint. Every error is a one-line JSON ``{"error": ...}`` with a 4xx status for the client's
mistakes; CORS is answered only for the configured origins.
"""

import json
import logging
import time

from flask import Flask, g, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from covfefe import config
from covfefe.errors import UserError
from serve.api import LIMITED_ENDPOINTS, api
from serve.validation import RequestError
from serve.web import web, webapp_dir

MAX_BODY_BYTES = 16 * 1024
DEFAULT_RATE_LIMIT = "60 per minute"  # per client address, on the generating routes


def _json_error(error: HTTPException):
    """Answer every HTTP error with a one-line JSON body instead of an HTML page."""
    return jsonify(error=f"{error.name}: {error.description}"), error.code


def _request_error(error: RequestError):
    body = {"error": str(error)}
    if error.field:
        body["field"] = error.field
    return jsonify(body), error.status


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
    from covfefe.artifact import load_artifact
    from covfefe.generate import TweetGenerator

    _limit_blas_threads(app.config["BLAS_THREADS"])
    artifact = load_artifact(config.resolve(app.config["MODEL_DIR"]) if app.config.get("MODEL_DIR")
                             else config.model_dir())
    app.extensions["covfefe.artifact"] = artifact
    app.extensions["covfefe.generator"] = TweetGenerator.from_artifact(artifact)


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


def _log_access(response):
    """One JSON line per request: what, who, how it went, how long it took."""
    if access_log.isEnabledFor(logging.INFO):
        started = g.get("started")
        access_log.info(json.dumps({
            "method": request.method, "path": request.path, "status": response.status_code,
            "ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
            "client": request.remote_addr, "bytes": response.calculate_content_length(),
            "agent": request.user_agent.string[:200] or None,
        }))
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
    limiter = Limiter(get_remote_address, app=app)
    app.extensions["covfefe.limiter"] = limiter  # /api/health reports where it counts
    for endpoint in LIMITED_ENDPOINTS:
        app.view_functions[endpoint] = limiter.limit(app.config["RATE_LIMIT"])(
            app.view_functions[endpoint])
    app.register_error_handler(HTTPException, _json_error)
    app.register_error_handler(RequestError, _request_error)
    app.after_request(_cors(app))
    app.before_request(_start_timer)
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

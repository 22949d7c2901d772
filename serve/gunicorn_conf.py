"""gunicorn settings for the API: ``gunicorn -c python:serve.gunicorn_conf "serve:create_app()"``.

Every setting can be overridden from the environment (``COVFEFE_BIND``, ``COVFEFE_WORKERS``...)
or on the command line. Each worker loads the model once when it starts (serve.init_app); a
model that does not load stops the server (serve.worker).
"""

import os
import time as _time

from covfefe import config as _covfefe  # not "config": gunicorn reads every name here

bind = _covfefe.bind_address()  # COVFEFE_BIND, else 127.0.0.1:8000
workers = int(os.environ.get("COVFEFE_WORKERS", "2"))
# Threads let a worker keep answering while it streams server-sent events to other clients.
# With the serving engine on, a worker needs a thread for every request its engine holds
# (rows in flight and waiting), so that a request beyond them reaches it and gets its 503 at
# once instead of waiting for a thread; a few more for health, the page and the model card.
_engine = os.environ.get("COVFEFE_ENGINE", "1").lower() not in ("0", "false", "no", "off")
_engine_threads = (int(os.environ.get("COVFEFE_ENGINE_ROWS", _covfefe.ENGINE_ROWS))
                   + int(os.environ.get("COVFEFE_ENGINE_QUEUE", _covfefe.ENGINE_QUEUE)) + 4)
threads = int(os.environ.get("COVFEFE_THREADS", _engine_threads if _engine else 4))
# gthread with a thread of its own for /api/health, request heads read by the main loop (a
# slow client holds no thread; COVFEFE_REQUEST_READ_TIMEOUT, 5 s, to send one) and JSON error
# pages: see serve/worker.py.
worker_class = "serve.worker.ApiWorker"
timeout = int(os.environ.get("COVFEFE_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5  # seconds an idle connection is kept (and a new one may wait for its request)
# No control socket (gunicornc): nothing here uses it, and every server on a machine would
# share its one default path.
control_socket_disable = True
accesslog = None  # serve.create_app writes structured JSON access logs itself
errorlog = "-"
loglevel = os.environ.get("COVFEFE_LOG_LEVEL", "info")


def post_fork(server, worker):
    """Say that this worker is loading the model, which is quiet for a while on a first start."""
    worker.covfefe_started = _time.monotonic()
    worker.log.info("worker %s: loading the model; on a first start numba compiles its kernels "
                    "(about half a minute of CPU: 30 s on an idle 2-core machine, a minute or "
                    "more on a busy one), later starts read them from its cache", worker.pid)


def post_worker_init(worker):
    """Say when this worker has loaded the model and takes requests, and how long it took."""
    worker.log.info("worker %s: ready in %.1f s", worker.pid,
                    _time.monotonic() - worker.covfefe_started)

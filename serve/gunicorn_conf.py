"""gunicorn settings for the API: ``gunicorn -c python:serve.gunicorn_conf "serve:create_app()"``.

Every setting can be overridden from the environment (``COVFEFE_BIND``, ``COVFEFE_WORKERS``...,
read and checked with the application's in `covfefe.config.serve_settings`: a value that
cannot be used stops the server before it starts, in one sentence) or on the command line.
The model is checked once here, in the master, before any worker starts (a bad one: exit 3
and one sentence); then each worker loads it (serve.init_app).

A reload (``kill -HUP <master>``) keeps the old workers serving until the new ones have
loaded the model: each new worker, once ready, asks the master (SIGTTOU) to retire one old
one. gunicorn's own reload stops the old workers at once, and for the 2-3 s the new ones take
to load, nothing answers.
"""

import os
import signal
import sys
import time as _time

from covfefe import config as _covfefe  # not "config": gunicorn reads every name here

try:
    _settings = _covfefe.serve_settings()
except _covfefe.SettingError as _error:
    print(f"covfefe serve: {_error}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None

bind = _settings["BIND"]
workers = _settings["WORKERS"]
# Threads let a worker keep answering while it streams server-sent events to other clients.
# With the serving engine on, a worker needs a thread for every request its engine holds
# (rows in flight and waiting), so that a request beyond them reaches it and gets its 503 at
# once instead of waiting for a thread; a few more for health, the page and the model card.
threads = _settings["THREADS"] or (
    _settings["ENGINE_ROWS"] + _settings["ENGINE_QUEUE"] + 4 if _settings["ENGINE"] else 4)
# gthread with a thread of its own for /api/health, whole requests read by the main loop (a
# slow client holds no thread; COVFEFE_REQUEST_READ_TIMEOUT, 5 s, to send one), refusals
# answered there, and JSON error pages: see serve/worker.py.
worker_class = "serve.worker.ApiWorker"
timeout = _settings["TIMEOUT"]
graceful_timeout = 10
keepalive = 5  # seconds an idle connection is kept (and a new one may wait for its request)
# No control socket (gunicornc): nothing here uses it, and every server on a machine would
# share its one default path.
control_socket_disable = True
accesslog = None  # serve.create_app writes structured JSON access logs itself
errorlog = "-"
loglevel = _settings["LOG_LEVEL"]
BAD_MODEL_EXIT = 3  # gunicorn's own status for a worker that cannot boot


def on_starting(server):
    """Check the model in the master, before any worker starts: a bad one stops the server
    with one sentence and status 3, every time (when two workers found it at once, gunicorn
    could halt twice and end in a traceback with status 1)."""
    from serve import check_model

    problem = check_model(_settings["MODEL_DIR"])
    if problem:
        print(f"covfefe serve: {problem}", file=sys.stderr, flush=True)
        sys.exit(BAD_MODEL_EXIT)


def on_reload(server):
    """Keep the old workers while the new ones load: gunicorn starts ``workers`` new ones
    next and stops all but ``num_workers``; with room for both, the old ones go one at a
    time as the new ones say they are ready (post_worker_init)."""
    # Exactly the workers started next are marked: each retires one (another reload before
    # they are ready adds its own, and a worker started later to replace a crashed one is
    # not marked).
    server.covfefe_to_retire = server.cfg.workers
    server.num_workers = len(server.WORKERS) + server.cfg.workers
    server.log.info("reload: the %d workers serving keep on until new ones are ready",
                    len(server.WORKERS))


def pre_fork(server, worker):
    """Mark the workers that a reload starts: each retires one old worker once it is ready."""
    worker.covfefe_replaces = getattr(server, "covfefe_to_retire", 0) > 0
    if worker.covfefe_replaces:
        server.covfefe_to_retire -= 1


def post_fork(server, worker):
    """Say that this worker is loading the model, which is quiet for a while on a first start."""
    worker.covfefe_started = _time.monotonic()
    worker.log.info("worker %s: loading the model; on a first start numba compiles its kernels "
                    "(about half a minute of CPU: 30 s on an idle 2-core machine, a minute or "
                    "more on a busy one), later starts read them from its cache", worker.pid)


def post_worker_init(worker):
    """Say when this worker has loaded the model and takes requests, and how long it took;
    started by a reload, ask the master to retire the oldest worker (SIGTTOU: one fewer)."""
    worker.log.info("worker %s: ready in %.1f s", worker.pid,
                    _time.monotonic() - worker.covfefe_started)
    if worker.covfefe_replaces:
        os.kill(worker.ppid, signal.SIGTTOU)

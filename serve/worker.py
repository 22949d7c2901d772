"""The gunicorn worker of the API: gunicorn's threaded worker (``gthread``) with three changes.

- **Health has a thread of its own.** A ``GET /api/health`` is answered by a separate thread,
  not queued behind generation in the main pool: an orchestrator whose health check times out
  restarts the container, so it must answer while every generating thread is busy.
- **A client has ``REQUEST_READ_TIMEOUT`` seconds (``COVFEFE_REQUEST_READ_TIMEOUT``, 5) to send
  its request line and headers** once a thread reads them. A client that trickles them would
  otherwise hold the thread as long as it likes (gunicorn only waits for the first byte); past
  the deadline its connection is shut. nginx buffers whole requests in production, but
  ``make demo`` and direct installs are reached without it.
- **gunicorn's own errors are JSON** (400, 414, 431... for requests it cannot parse), like the
  application's, instead of HTML pages.

A bad model or setting stops the server at once: the application's one-sentence error is
printed and the worker exits with gunicorn's boot-error status (3), on which gunicorn halts
instead of starting workers again and again.
"""

import contextlib
import json
import os
import selectors
import socket
import sys
import time
from concurrent import futures
from functools import partial

from gunicorn import util
from gunicorn.workers import gthread

REQUEST_READ_TIMEOUT = float(os.environ.get("COVFEFE_REQUEST_READ_TIMEOUT", "5"))
HEALTH_THREADS = 1
WORKER_BOOT_ERROR = 3  # gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR: the master halts on it
_HEALTH_REQUESTS = (b"GET /api/health ", b"GET /api/health?", b"HEAD /api/health ",
                    b"HEAD /api/health?")
_PEEK = 8192


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's error answer (util.write_error), as one line of JSON instead of HTML."""
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn writes its error pages with this module function (Worker.handle_error); this worker
# runs in its own process, so the replacement affects nothing else.
util.write_error = write_json_error


def _is_health_check(data: bytes) -> bool:
    """True for a health check that has fully arrived, with no body: answering it cannot wait
    on the client, so a slow client cannot hold the health thread."""
    head, complete, _ = data.partition(b"\r\n\r\n")
    lowered = head.lower()
    return (bool(complete) and data.startswith(_HEALTH_REQUESTS)
            and b"content-length" not in lowered and b"transfer-encoding" not in lowered)


class ApiWorker(gthread.ThreadWorker):
    """gthread with a health lane, a deadline on reading requests and JSON error pages."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.health_pool = None
        self.reading = {}  # connection -> the time by which its request must have been read

    def init_process(self):
        self.health_pool = futures.ThreadPoolExecutor(max_workers=HEALTH_THREADS)
        super().init_process()

    def load_wsgi(self):
        try:
            super().load_wsgi()
        except SystemExit as error:
            if not isinstance(error.code, str):
                raise
            print(error.code, file=sys.stderr, flush=True)  # serve.create_app's one sentence
            raise SystemExit(WORKER_BOOT_ERROR) from None

    def enqueue_req(self, conn):
        """Send a health check to its own thread; everything else to the pool. A connection
        with nothing to read yet (a fresh one, usually) waits in the poller until it has."""
        try:
            data = conn.sock.recv(_PEEK, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            conn.sock.setblocking(False)
            conn.timeout = time.monotonic() + self.cfg.keepalive
            self.pending_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ,
                                 partial(self.on_pending_socket_readable, conn))
            return
        except OSError:
            data = None  # closed or broken: the pool finds out and cleans up
        if data is not None and _is_health_check(data):
            future = self.health_pool.submit(self.handle, conn)
            future.add_done_callback(
                lambda done: self.method_queue.defer(self.finish_request, conn, done))
        else:
            super().enqueue_req(conn)

    def handle(self, conn):
        self.reading[conn] = time.monotonic() + REQUEST_READ_TIMEOUT
        try:
            return super().handle(conn)
        finally:
            self.reading.pop(conn, None)

    def handle_request(self, req, conn):
        self.reading.pop(conn, None)  # the request line and headers are in
        return super().handle_request(req, conn)

    def murder_keepalived(self, force=False):
        """Also (on each turn of the main loop) shut the connections whose request has not
        arrived in time: the thread reading it sees the end of the stream and moves on."""
        super().murder_keepalived(force)
        now = time.monotonic()
        for conn, deadline in list(self.reading.items()):
            if deadline < now and self.reading.pop(conn, None) is not None:
                with contextlib.suppress(OSError):  # already closed
                    conn.sock.shutdown(socket.SHUT_RDWR)

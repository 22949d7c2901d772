"""The gunicorn worker of the API: gunicorn's threaded worker (``gthread``) with three changes.

- **Health has a thread of its own.** A ``GET /api/health`` (without a body) is answered by a
  separate thread, not queued behind generation in the main pool: an orchestrator whose health
  check times out restarts the container, so it must answer while every generating thread is
  busy.
- **A request's line and headers are read by the main loop, not by a thread.** A connection
  goes to a thread once they are all in, so a client that trickles them holds no thread (in
  gthread it holds one as long as it likes: gunicorn only waits for the first byte). It has
  ``REQUEST_READ_TIMEOUT`` seconds (``COVFEFE_REQUEST_READ_TIMEOUT``, 5) from its first byte,
  then its connection is closed. nginx buffers whole requests in production, but ``make demo``
  and direct installs are reached without it.
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
import sys
import time
from concurrent import futures
from functools import partial

from gunicorn import http, util
from gunicorn.workers import gthread

REQUEST_READ_TIMEOUT = float(os.environ.get("COVFEFE_REQUEST_READ_TIMEOUT", "5"))
HEALTH_THREADS = 1
WORKER_BOOT_ERROR = 3  # gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR: the master halts on it
_HEALTH_REQUESTS = (b"GET /api/health ", b"GET /api/health?", b"HEAD /api/health ",
                    b"HEAD /api/health?")
MAX_HEAD = 65536  # read at most this much while waiting for a request's head


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
    """gthread with a health lane, request heads read in the main loop, JSON error pages."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.health_pool = None

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
        """Hand a connection to a thread once its request line and headers are all in: a
        health check to the health thread, anything else to the pool."""
        read_ahead = conn.parser is not None and conn.parser.unreader.buf.getvalue()
        if self.cfg.is_ssl or read_ahead:  # TLS, or a request already read: as gthread does
            super().enqueue_req(conn)
            return
        head = self._read_head(conn)
        if head is None:
            return
        conn.data_ready = True  # what the thread is to read is in the parser already
        pool = self.health_pool if _is_health_check(head) else self.tpool
        future = pool.submit(self.handle, conn)
        future.add_done_callback(
            lambda done: self.method_queue.defer(self.finish_request, conn, done))

    def _read_head(self, conn) -> bytes | None:
        """Read what the client has sent, without waiting. Return the request's head (and any
        bytes after it), handed to gunicorn's parser; None while it is incomplete (the
        connection waits in the poller, until REQUEST_READ_TIMEOUT after its first byte) or
        when the client has gone."""
        try:
            chunk = conn.sock.recv(MAX_HEAD)
        except (BlockingIOError, InterruptedError):
            chunk = None
        except OSError:
            chunk = b""  # reset: as good as gone
        head = getattr(conn, "head", b"") + (chunk or b"")
        if chunk == b"" and not head:  # closed before sending anything
            self.nr_conns -= 1
            conn.close()
            return None
        if chunk is not None and b"\r\n\r\n" not in head and len(head) < MAX_HEAD and chunk:
            chunk = None  # more to come
        if chunk is None:
            conn.head = head
            if head and not getattr(conn, "head_deadline", None):
                conn.head_deadline = time.monotonic() + REQUEST_READ_TIMEOUT
            conn.sock.setblocking(False)
            conn.timeout = (conn.head_deadline if head
                            else time.monotonic() + self.cfg.keepalive)
            self.pending_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ,
                                 partial(self.on_pending_socket_readable, conn))
            return None
        conn.head, conn.head_deadline = b"", None
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(head)  # the parser reads these first, then the socket
        return head

    def murder_pending(self):
        """Close the connections whose request has not come in time (all of them: gthread
        only looks at the oldest, and a head's deadline is older than its last wait)."""
        now = time.monotonic()
        for conn in [conn for conn in self.pending_conns if conn.timeout <= now]:
            self.pending_conns.remove(conn)
            with contextlib.suppress(OSError, KeyError, ValueError):  # already unregistered
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            conn.close()

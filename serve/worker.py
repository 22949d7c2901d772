"""The gunicorn worker of the API: gunicorn's threaded worker (``gthread``) with four changes.

- **Health has a thread of its own.** A ``GET /api/health`` (without a body) is answered by a
  separate thread, not queued behind generation in the main pool: an orchestrator whose health
  check times out restarts the container, so it must answer while every generating thread is
  busy.
- **A whole request (line, headers and body) is read by the main loop, not by a thread.** A
  connection goes to a thread once it is all in, so a client that trickles its headers or its
  body, or sends no body after its headers, holds no thread (in gthread it holds one as long
  as it likes: gunicorn only waits for the first byte). It has ``REQUEST_READ_TIMEOUT``
  seconds (``COVFEFE_REQUEST_READ_TIMEOUT``, 5) from its first byte, then its connection is
  closed. A body over the largest allowed (``COVFEFE_MAX_BODY_BYTES``) is answered 413
  by the main loop without reading it (gunicorn read all of it in a thread, at the client's
  pace). nginx buffers whole requests in production, but ``make demo`` and direct installs
  are reached without it.
- **A refusal costs no thread and no model work.** A request to a generating route that
  arrives while the engine has neither rows nor queue room left is answered 503 by the main
  loop itself, before Flask, with a ``Retry-After`` spread at random between
  ``COVFEFE_RETRY_AFTER`` and twice that, so that refused clients do not come back together.
  The 503 is sent 0.1 to 0.3 s later (`REFUSAL_PACE`), by one thread that only writes it:
  a client that retries at once, ignoring Retry-After, then tries a few times a second
  instead of hundreds, and its refusals cannot crowd out the work (64 such clients: 1,000
  refusals a second, a third of the machine's CPU between them and the server).
- **gunicorn's own errors are JSON** (400, 414, 431... for requests it cannot parse), like the
  application's, instead of HTML pages.

A bad model is found by gunicorn's master before any worker starts (serve/gunicorn_conf.py);
should a worker still fail to load it, the application's one-sentence error is printed and the
worker exits with gunicorn's boot-error status (3), on which gunicorn halts instead of
starting workers again and again.

What this needs of gthread beyond its documented settings (no public way exists to read a
request before a thread takes it): its connection objects (``conn.sock``, ``conn.parser``,
``conn.data_ready``, ``conn.timeout``), pool and poller (``tpool``, ``poller``,
``pending_conns``, ``nr_conns``, ``method_queue``), the methods it overrides or calls
(``enqueue_req``, ``murder_pending``, ``handle``, ``finish_request``,
``on_pending_socket_readable``), ``http.get_parser``, ``util.write_nonblock`` and
``util.write_error``, which is replaced. pyproject.toml pins one gunicorn version, and
tests/test_gunicorn_internals.py names each of these, so that an upgrade that drops one fails
there with its name.
"""

import contextlib
import heapq
import json
import random
import re
import selectors
import socket
import sys
import threading
import time
from concurrent import futures
from functools import partial

from gunicorn import http, util
from gunicorn.workers import gthread

from covfefe import config
from serve import busy_retry_after

# Checked by gunicorn's master already (serve/gunicorn_conf.py): a bad value never gets here.
_SETTINGS = config.serve_settings()
REQUEST_READ_TIMEOUT = _SETTINGS["REQUEST_READ_TIMEOUT"]
MAX_BODY = _SETTINGS["MAX_BODY_BYTES"]
HEALTH_THREADS = 1
REFUSAL_PACE = (0.1, 0.3)  # seconds before a refusal is sent, at random in this range
LINGER_S = 0.2  # at most this long reading what a refused client still sends, before closing
WORKER_BOOT_ERROR = 3  # gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR: the master halts on it
_HEALTH_REQUESTS = (b"GET /api/health ", b"GET /api/health?", b"HEAD /api/health ",
                    b"HEAD /api/health?")
MAX_HEAD = 65536  # read at most this much while waiting for a request's head
# The routes that run the model (serve.api.LIMITED_ENDPOINTS): refused here when it is full.
_GENERATING = (b"POST /api/generate ", b"POST /api/generate?", b"GET /api/generate/stream ",
               b"GET /api/generate/stream?", b"POST /api/autocomplete ",
               b"POST /api/autocomplete?")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,12})[ \t]*\r\n")
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,8})(?:;[^\r\n]*)?\r\n")


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's error answer (util.write_error), as one line of JSON instead of HTML."""
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn writes its error pages with this module function (Worker.handle_error); this worker
# runs in its own process, so the replacement affects nothing else.
util.write_error = write_json_error


TOO_LARGE = -1  # a body over MAX_BODY: the main loop answers 413 without reading it all


def _body_end(head: bytes, body: bytes) -> int | None:
    """How many bytes of ``body`` the request's body takes, once all of it is in; None while
    more is to come; TOO_LARGE past MAX_BODY. A body of unknown framing counts as complete
    (0): gunicorn's parser answers it in a thread (400)."""
    lowered = head.lower() + b"\r\n"
    if b"\r\ntransfer-encoding:" in lowered:
        if not re.search(rb"\r\ntransfer-encoding:[^\r\n]*chunked", lowered):
            return 0
        return _chunked_end(body)
    lengths = _CONTENT_LENGTH.findall(lowered)
    if b"\r\ncontent-length:" not in lowered:
        return 0  # no body
    if len(lengths) != 1:
        return 0
    if int(lengths[0]) > MAX_BODY:
        return TOO_LARGE
    length = int(lengths[0])
    return length if len(body) >= length else None


def _chunked_end(body: bytes) -> int | None:
    """Where a chunked body ends (after its last chunk and trailers), None while it is
    incomplete; 0 (complete: the thread sorts it out) when it is malformed; TOO_LARGE past
    MAX_BODY."""
    at = 0
    while True:
        size = _CHUNK_SIZE.match(body, at)
        if size is None:
            complete_line = b"\r\n" in body[at:at + 80] or len(body) - at >= 80
            return 0 if complete_line else None
        at = size.end() + int(size.group(1), 16)
        if at > MAX_BODY:
            return TOO_LARGE
        if int(size.group(1), 16) == 0:
            trailers = body.find(b"\r\n", at)
            while trailers > at:  # a trailer line; the last one is empty
                at, trailers = trailers + 2, body.find(b"\r\n", trailers + 2)
            return None if trailers < 0 else trailers + 2
        if len(body) < at + 2:
            return None
        at += 2  # the chunk's closing CRLF


def _too_large() -> bytes:
    """The 413 that the main loop answers for a body over MAX_BODY (Flask's words)."""
    body = json.dumps({"error": "Request Entity Too Large: The data value transmitted exceeds "
                                "the capacity limit."}).encode()
    return (f"HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode("latin-1") + body


def _refusal(retry_after: int) -> bytes:
    """The 503 that the main loop answers when the engine has no room."""
    body = json.dumps({"error": f"the server is busy; retry in {retry_after} s"}).encode()
    return (f"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nRetry-After: {retry_after}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


class RefusalPacer:
    """Sends each 503 a moment after the request, from one thread that sleeps in between:
    the connection is the pacer's from then on (the worker's loop has let it go)."""

    def __init__(self):
        self._due: list[tuple[float, int, object, bytes]] = []
        self._wake = threading.Condition()
        self._count = 0
        threading.Thread(target=self._run, daemon=True, name="covfefe-refusal-pacer").start()

    def refuse(self, sock, answer: bytes, paced: bool = True) -> None:
        """Send ``answer`` on ``sock`` (now, unless ``paced``), then close it."""
        delay = random.uniform(*REFUSAL_PACE) if paced else 0.0
        with self._wake:
            self._count += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._count, sock, answer))
            self._wake.notify()

    def _run(self) -> None:
        while True:  # a daemon thread: it ends with the worker
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, sock, answer = heapq.heappop(self._due)
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.settimeout(1.0)  # the answer fits a socket buffer: never stuck on it
                sock.sendall(answer)
                # A client may still be sending (a body over the limit): closing with its
                # bytes unread would reset the connection, and the answer with it. Say that
                # nothing more comes, and read a little of what it sends, briefly.
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(0.05)
                until = time.monotonic() + LINGER_S
                while sock.recv(65536) and time.monotonic() < until:
                    pass
            with contextlib.suppress(OSError):
                sock.close()


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
        self.pacer = None

    def init_process(self):
        self.health_pool = futures.ThreadPoolExecutor(max_workers=HEALTH_THREADS)
        self.pacer = RefusalPacer()
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
        """Hand a connection to a thread once its whole request is in: a health check to the
        health thread, anything else to the pool; answer a generating request 503 here when
        the engine has no room for it."""
        read_ahead = conn.parser is not None and conn.parser.unreader.buf.getvalue()
        if self.cfg.is_ssl or read_ahead:  # TLS, or a request already read: as gthread does
            super().enqueue_req(conn)
            return
        head = self._read_head(conn)
        if head is None:
            return
        request_head, _, body = head.partition(b"\r\n\r\n")
        if _body_end(request_head, body) == TOO_LARGE:
            self.nr_conns -= 1
            self.pacer.refuse(conn.sock, _too_large(), paced=False)
            return
        if head.startswith(_GENERATING):
            retry_after = busy_retry_after(self.wsgi)
            if retry_after is not None:
                self._refuse(conn, retry_after)
                return
        conn.data_ready = True  # what the thread is to read is in the parser already
        pool = self.health_pool if _is_health_check(head) else self.tpool
        future = pool.submit(self.handle, conn)
        future.add_done_callback(
            lambda done: self.method_queue.defer(self.finish_request, conn, done))

    def _refuse(self, conn, retry_after: int) -> None:
        """Hand the connection (its request all read) to the pacer, which answers it 503 and
        closes it."""
        self.nr_conns -= 1
        self.pacer.refuse(conn.sock, _refusal(retry_after))

    def _read_head(self, conn) -> bytes | None:
        """Read what the client has sent, without waiting. Return the whole request (and any
        bytes after it), handed to gunicorn's parser; None while it is incomplete (the
        connection waits in the poller, until REQUEST_READ_TIMEOUT after its first byte) or
        when the client has gone."""
        try:
            chunk = conn.sock.recv(MAX_HEAD + MAX_BODY)
        except (BlockingIOError, InterruptedError):
            chunk = None
        except OSError:
            chunk = b""  # reset: as good as gone
        head = getattr(conn, "head", b"") + (chunk or b"")
        if chunk == b"" and not head:  # closed before sending anything
            self.nr_conns -= 1
            conn.close()
            return None
        if chunk and not self._complete(conn, head):
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
        conn.head, conn.head_deadline, conn.continued = b"", None, False
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(head)  # the parser reads these first, then the socket
        return head

    def _complete(self, conn, data: bytes) -> bool:
        """True once the request's head and its whole body are in (or too much to wait for:
        the thread answers it); a client that waits for "100 Continue" before its body is
        sent one."""
        head, blank, body = data.partition(b"\r\n\r\n")
        if not blank:
            return len(data) >= MAX_HEAD
        if _body_end(head, body) is not None:
            return True
        if not getattr(conn, "continued", False) and re.search(
                rb"\r\nexpect:[ \t]*100-continue", head.lower()):
            conn.continued = True  # gunicorn sends its own once it parses: two are allowed
            with contextlib.suppress(OSError):
                util.write_nonblock(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
        return False

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

"""Every gunicorn internal that serve/worker.py relies on, named (issue 28).

No public way exists to read a whole request before a thread takes it, so the API's worker
subclasses gthread's ThreadWorker and uses what is private to it; pyproject.toml pins one
gunicorn version. Each entry below is one such internal: after an upgrade (``make lock``),
a failure here names the internal that has gone or changed, instead of a server that hangs or
answers wrongly under load. Fast: no server, no model.
"""

import inspect
import io
import socket

import gunicorn
import pytest
from gunicorn import http, util
from gunicorn.arbiter import Arbiter
from gunicorn.config import Config
from gunicorn.workers import base, gthread


@pytest.fixture(scope="module")
def conn():
    """A gthread connection on one end of a socket pair."""
    ours, theirs = socket.socketpair()
    yield gthread.TConn(Config(), ours, ("127.0.0.1", 12345), ("127.0.0.1", 8000))
    ours.close()
    theirs.close()


def _short(internal: str) -> str:
    """The internal's name for the test's id, as ``util.write_error()``."""
    name = internal.split(" ", 1)[0]
    return name.split("(", 1)[0] + "()" if "(" in name else name


def _source(function) -> str:
    return inspect.getsource(function)


# (the internal, what serve/worker.py does with it, a check that is true while it holds)
INTERNALS = [
    *[(f"gthread.ThreadWorker.{method}()", use,
       lambda conn, method=method: callable(getattr(gthread.ThreadWorker, method, None)))
      for method, use in [
          ("enqueue_req", "overrides it to read the whole request first"),
          ("murder_pending", "overrides it to close every connection past its deadline"),
          ("init_process", "extends it with the health thread and the refusal pacer"),
          ("load_wsgi", "extends it to exit with WORKER_BOOT_ERROR and one sentence"),
          ("handle", "submits it to a pool once the request is in"),
          ("finish_request", "defers it to the main loop when a thread is done"),
          ("on_pending_socket_readable", "registers it for a connection still sending")]],
    ("gthread.ThreadWorker.accept handing each new connection to self.enqueue_req(conn)",
     "reads the whole request in its enqueue_req, before a thread takes the connection",
     lambda conn: "self.enqueue_req(conn)" in _source(gthread.ThreadWorker.accept)),
    ("gthread.ThreadWorker.on_pending_socket_readable handing the connection to "
     "self.enqueue_req(conn)",
     "parks a connection whose request is incomplete in pending_conns, with that callback",
     lambda conn: "self.enqueue_req(conn)" in _source(
         gthread.ThreadWorker.on_pending_socket_readable)),
    ("gthread.ThreadWorker.run calling self.murder_pending()",
     "closes the connections whose request has not come in time in its murder_pending",
     lambda conn: "self.murder_pending()" in _source(gthread.ThreadWorker.run)),
    *[(f"gthread.ThreadWorker.{name} (set in {method})", use,
       lambda conn, name=name, method=method: f"self.{name} =" in _source(
           getattr(gthread.ThreadWorker, method)))
      for name, method, use in [
          ("pending_conns", "__init__", "parks and drops connections still sending there"),
          ("nr_conns", "__init__", "counts a connection it closes or hands away"),
          ("method_queue", "__init__", "defers finish_request through it"),
          ("tpool", "init_process", "submits a complete request to it"),
          ("poller", "init_process", "registers a connection still sending with it")]],
    ("gthread.PollableMethodQueue.defer(callback, *args)",
     "defers finish_request to the main loop when a thread is done, as gthread does",
     lambda conn: list(inspect.signature(gthread.PollableMethodQueue.defer).parameters)
     == ["self", "callback", "args"]),
    *[(f"gthread.TConn.{name}", "reads from sock, hands the parser the bytes read, sets "
       "data_ready and timeout, closes the connections it drops",
       lambda conn, name=name: hasattr(conn, name))
      for name in ("sock", "client", "parser", "data_ready", "timeout", "close")],
    ("gthread.ThreadWorker.handle not waiting for data once conn.data_ready is set",
     "sets data_ready: the request is in the parser already, the socket may have nothing",
     lambda conn: "conn.data_ready" in _source(gthread.ThreadWorker.handle)),
    ("gthread.TConn.init keeping a parser that is already set",
     "sets conn.parser (with the bytes read) before the thread initializes the connection",
     lambda conn: "if self.parser is None" in _source(gthread.TConn.init)),
    ("http.get_parser(cfg, source, source_addr), whose parser has unreader.buf and "
     "unreader.unread(data)",
     "makes the parser and hands it the request read; looks for bytes read ahead in buf",
     lambda conn: list(inspect.signature(http.get_parser).parameters)[:3]
     == ["cfg", "source", "source_addr"]
     and isinstance(http.get_parser(Config(), conn.sock, conn.client).unreader.buf, io.BytesIO)
     and callable(http.get_parser(Config(), conn.sock, conn.client).unreader.unread)),
    ("util.write_error(sock, status_int, reason, mesg), called by Worker.handle_error",
     "replaces it with a JSON error page",
     lambda conn: list(inspect.signature(util.write_error).parameters)
     == ["sock", "status_int", "reason", "mesg"]
     and "util.write_error(" in _source(base.Worker.handle_error)),
    ("util.write_nonblock(sock, data)",
     "writes its JSON error pages and 100 Continue with it",
     lambda conn: list(inspect.signature(util.write_nonblock).parameters)[:2]
     == ["sock", "data"]),
    ("Arbiter.WORKER_BOOT_ERROR == 3",
     "exits with it when the model cannot load, so that the master halts",
     lambda conn: Arbiter.WORKER_BOOT_ERROR == 3),
]


@pytest.mark.parametrize(("internal", "use", "holds"), INTERNALS,
                         ids=[_short(internal) for internal, _, _ in INTERNALS])
def test_gunicorn_still_has_what_the_worker_relies_on(internal, use, holds, conn):
    try:
        held = holds(conn)
    except Exception as error:  # noqa: BLE001 (any error means the internal is not as it was)
        held, internal = False, f"{internal} ({type(error).__name__}: {error})"
    assert held, (f"serve/worker.py relies on gunicorn's {internal} (it {use}), which gunicorn "
                  f"{gunicorn.__version__} does not have as 27.0.1 did: adapt serve/worker.py "
                  "and this list, or keep the pinned version")


def test_gunicorn_is_pinned_to_one_version():
    from tests.helpers import ROOT

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"gunicorn==27.0.1"' in pyproject, "pyproject.toml no longer pins gunicorn==27.0.1"
    assert gunicorn.__version__ == "27.0.1", (
        f"gunicorn {gunicorn.__version__} is installed, not the pinned 27.0.1: make install")

"""The rate limit's in-memory store (``COVFEFE_RATELIMIT_STORAGE_URI=memory://``, the default).

limits' own `MemoryStorage` drops expired counters from a `threading.Timer` of 10 ms that it
starts anew on nearly every hit once the last one has run: under load, a new thread per
request or two. That was a measurable share of a worker's CPU: the whole rate limit cost about
0.7-0.8 ms of CPU per request, and 0.3-0.5 ms of it went with these timers. This store
counts the same way (a counter that has expired is dropped when it is next read, as before)
and sweeps the expired ones from one long-lived thread every `SWEEP_S` seconds instead.

Importing this module makes ``memory://`` mean this store (limits picks a storage class by
URI scheme from a registry that each storage class joins when it is defined).
"""

import threading
import time

from limits.storage import MemoryStorage

SWEEP_S = 1.0  # how often the expired counters are dropped (memory only: reads check expiry)


class SweptMemoryStorage(MemoryStorage):
    """limits' `MemoryStorage`, with one sweeping thread instead of a timer per hit."""

    STORAGE_SCHEME = ["memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        self._sweeper: threading.Thread | None = None
        self._sweeper_lock = threading.Lock()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 (the name limits calls)
        # Called on every hit: start the sweeper if it is not running (the first hit, and
        # after a fork, which keeps no threads).
        if self._sweeper is None or not self._sweeper.is_alive():
            with self._sweeper_lock:
                if self._sweeper is None or not self._sweeper.is_alive():
                    self._sweeper = threading.Thread(target=self._sweep, daemon=True,
                                                     name="covfefe-ratelimit-sweeper")
                    self._sweeper.start()

    def _sweep(self) -> None:
        while True:  # a daemon thread: it ends with the worker
            time.sleep(SWEEP_S)
            self._MemoryStorage__expire_events()

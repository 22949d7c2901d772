"""A second thread for the serving engine: one task at a time, on another core when one is free.

The engine's batch step is compute-bound from about 4 rows up (each row costs about the same),
and its rows are independent, so two halves of a batch can be stepped side by side in two
threads (the compiled step gives up the GIL). `Helper.both` runs one half in the calling thread
and hands the other to the helper's thread. When the helper has not begun its half soon (no
core was free: under load the other worker and the request threads have it), the caller runs
that half itself after its own, so a busy machine costs little and never a wait for a thread
that is not running.

The hand-over avoids sleeping. On this 2-core VM a thread woken from sleep started a median
100-200 us late (Linux puts it on the waker's core, behind the waker; half of a 4-row step),
and so does a thread that must wait for the GIL. So the helper, after each task, watches for
the next one for `WATCH_NS` without sleeping, yielding its core to any thread that wants it
(``sched_yield``); and the two threads take turns with the GIL: the caller hands the task over
and waits for it to begin from compiled code (no GIL), the task signals from its own compiled
code that it has begun (``begun``), and the helper signals its end from compiled code too.

Splitting only pays when a core is idle: under load (two workers on two cores) the halves
fight the other worker for the cores, and 32 clients got 3-8% fewer answers a second. So the
engine asks `Helper.core_free` before each split, which counts the threads running or ready
to run on the machine (Linux's /proc/loadavg: 2 us to read).
"""

import os
import queue
import threading

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from covfefe import config
from covfefe.compiled import compiled

WATCH_NS = 300_000  # how long the helper watches for its next task before it sleeps
START_NS = 150_000  # how long the caller waits for the helper to begin before doing it itself
FINISH_NS = 2_000_000  # how long the caller watches for the helper's end before it sleeps
_CLOCK_MONOTONIC = 1  # Linux's number for it (the engine's helper is for Linux servers)
_I32, _I64 = ir.IntType(32), ir.IntType(64)


@intrinsic
def _read(typingctx, counter):
    """``counter[0]`` (int64) read afresh each time (an atomic load: written by another
    thread, so the compiler may not keep it in a register)."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(array.data, "acquire", 8)

    return types.int64(counter), codegen


@intrinsic
def count(typingctx, counter):
    """``counter[0] += 1`` (int64), at once visible to other threads (an atomic add)."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        builder.atomic_rmw("add", array.data, ir.Constant(_I64, 1), "seq_cst")
        return context.get_dummy_value()

    return types.void(counter), codegen


@intrinsic
def _now_ns(typingctx):
    """The monotonic clock in nanoseconds (C's ``clock_gettime``, called by name, so the
    compiled code can be cached on disk, unlike a call through ctypes)."""
    def codegen(context, builder, signature, args):
        timespec = ir.LiteralStructType([_I64, _I64])
        clock_gettime = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_I32, [_I32, timespec.as_pointer()]),
            "clock_gettime")
        value = cgutils.alloca_once(builder, timespec)
        builder.call(clock_gettime, [ir.Constant(_I32, _CLOCK_MONOTONIC), value])
        seconds = builder.load(cgutils.gep_inbounds(builder, value, 0, 0))
        nanoseconds = builder.load(cgutils.gep_inbounds(builder, value, 0, 1))
        return builder.add(builder.mul(seconds, ir.Constant(_I64, 1_000_000_000)), nanoseconds)

    return types.int64(), codegen


@intrinsic
def _yield_core(typingctx):
    """Let another thread that wants this core have it (C's ``sched_yield``)."""
    def codegen(context, builder, signature, args):
        sched_yield = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, []),
                                                     "sched_yield")
        builder.call(sched_yield, [])
        return context.get_dummy_value()

    return types.void(), codegen


@compiled
def _count_and_watch(signal, counter, seen, nanoseconds):
    """`count` ``signal``, then `_watch`: the GIL is already given up when the other thread
    sees the signal."""
    count(signal)
    return _watch(counter, seen, nanoseconds)


@compiled
def _watch(counter, seen, nanoseconds):
    """Wait without sleeping, yielding the core, until ``counter[0]`` is no longer ``seen``
    or ``nanoseconds`` have passed; return whether it changed."""
    end = _now_ns() + nanoseconds
    while _read(counter) == seen:
        _yield_core()
        if _now_ns() >= end:
            return False
    return True


class Helper:
    """One daemon thread that runs tasks handed to it by `both` (started on first use, and
    again in a process forked after it started: a thread does not survive a fork)."""

    def __init__(self, name: str = "covfefe-engine-helper"):
        self.name = name
        # What the task given to `both` must `count` as it begins, from compiled code.
        self.begun = np.zeros(1, dtype=np.int64)
        self._finished = np.zeros(1, dtype=np.int64)  # tasks the helper thread has ended
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._posted = np.zeros(1, dtype=np.int64)  # tasks handed so far: the helper watches it
        self._thread: threading.Thread | None = None
        self._watching = False  # the helper thread is watching for a task (it counts as running)
        self._cores = config.cores()
        try:
            self._loadavg: int | None = os.open("/proc/loadavg", os.O_RDONLY)
        except OSError:  # not Linux: take every core as free
            self._loadavg = None
        self.handed = 0  # tasks the helper thread ran
        self.kept = 0  # tasks the caller ran itself, the helper not having begun them
        _watch(self._posted, -1, 0)  # compiled (or loaded from numba's cache) now, not in use
        _count_and_watch(np.zeros(1, dtype=np.int64), self._posted, -1, 0)

    def both(self, mine, theirs):
        """Run ``mine()`` here and ``theirs()`` on the helper thread, or here after ``mine`` if
        the helper has not begun it by then; return both results (an exception from either
        is raised here, after both have ended). ``theirs`` must `count` `begun` from compiled
        code as it begins."""
        self._start()
        claim, done = threading.Lock(), threading.Lock()
        done.acquire()
        outcome: list = []

        def task() -> bool:
            if not claim.acquire(blocking=False):
                return False
            try:
                outcome.append((True, theirs()))
            except BaseException as error:  # handed back to the caller, raised there
                outcome.append((False, error))
            finally:
                done.release()
            return True

        begun, finished = int(self.begun[0]), int(self._finished[0])
        self._tasks.put(task)
        started = _count_and_watch(self._posted, self.begun, begun, START_NS)
        try:
            my_result = mine()
        finally:
            if not started and claim.acquire(blocking=False):  # not begun: run it here
                self.kept += 1
                their_result = theirs()
            else:
                _watch(self._finished, finished, FINISH_NS)
                done.acquire()
                self.handed += 1
                succeeded, their_result = outcome[0]
                if not succeeded:
                    raise their_result
        return my_result, their_result

    def core_free(self) -> bool:
        """Whether a core is free for the helper now: fewer threads running or ready to run on
        the machine than cores, leaving out the caller and the helper itself when it is only
        watching for a task. True where the count cannot be read."""
        if self._loadavg is None:
            return True
        try:  # "0.52 0.58 0.59 2/345 12345": the fourth field is running/existing
            running = int(os.pread(self._loadavg, 64, 0).split()[3].split(b"/")[0])
        except (OSError, ValueError, IndexError):
            return True
        return running - 1 - self._watching < self._cores - 1

    def stop(self) -> None:
        """End the helper thread (a later `both` starts it again)."""
        if self._thread is not None and self._thread.is_alive():
            self._tasks.put(None)
            self._thread.join()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            # A fresh start (`both` never leaves a task running): a new queue and count.
            self._tasks, self._posted = queue.SimpleQueue(), np.zeros(1, dtype=np.int64)
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        tasks, posted, taken = self._tasks, self._posted, 0
        while (task := tasks.get()) is not None:
            taken += 1
            ran = task()
            self._watching = True
            if ran:  # signal its end from compiled code, then watch for the next one
                _count_and_watch(self._finished, posted, taken, WATCH_NS)
            else:
                _watch(posted, taken, WATCH_NS)
            self._watching = False

"""The serving engine's second thread (covfefe.inference.parallel): a task handed over, run here
when the
helper does not begin it, errors brought back, and the free-core test."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from covfefe.inference.parallel import START_NS, Helper, _count_and_watch, _watch


def test_both_tasks_run_one_on_the_helper_thread_and_their_results_come_back():
    helper = Helper()
    try:
        where = {"mine": set(), "theirs": set()}

        def task(name, value):
            def run():
                where[name].add(threading.get_ident())
                return value
            return run

        for round_ in range(20):
            assert helper.both(task("mine", round_), task("theirs", -round_)) == (round_,
                                                                                  -round_)
        assert where["mine"] == {threading.get_ident()}
        assert helper.handed + helper.kept == 20
        # A plain Python task does not signal that it has begun; it still goes over when the
        # helper takes it in time, which it does while it watches after each task.
        assert helper.handed > 0 and helper._thread.ident in where["theirs"]
    finally:
        helper.stop()
    assert not helper._thread.is_alive()


def test_a_task_the_helper_never_begins_is_run_by_the_caller(monkeypatch):
    helper = Helper()
    monkeypatch.setattr(helper, "_start", lambda: None)  # no thread takes the task
    ran = []
    started = time.perf_counter()
    assert helper.both(lambda: ran.append("mine") or 1, lambda: ran.append("theirs") or 2) \
        == (1, 2)
    assert ran == ["mine", "theirs"] and (helper.kept, helper.handed) == (1, 0)
    assert time.perf_counter() - started >= START_NS / 1e9  # it waited, then took it over


@pytest.mark.parametrize("failing", ["mine", "theirs"])
def test_an_error_in_either_task_is_raised_to_the_caller_after_both_end(failing):
    helper = Helper()
    ended = []

    def task(name):
        def run():
            time.sleep(0.05)
            ended.append(name)
            if name == failing:
                raise ValueError(f"{name} failed")
            return name
        return run

    try:
        with pytest.raises(ValueError, match=f"{failing} failed"):
            helper.both(task("mine"), task("theirs"))
        assert sorted(ended) == ["mine", "theirs"]
        assert helper.both(lambda: 1, lambda: 2) == (1, 2)  # and it goes on
    finally:
        helper.stop()


def test_the_watch_sees_a_count_from_another_thread_and_gives_up_after_its_time():
    counter = np.zeros(1, dtype=np.int64)
    started = time.perf_counter()
    assert not _watch(counter, 0, 20_000_000)
    assert time.perf_counter() - started >= 0.02
    elsewhere = np.zeros(1, dtype=np.int64)  # watched with seen = -1: no wait
    timer = threading.Timer(0.05, lambda: _count_and_watch(counter, elsewhere, -1, 0))
    timer.start()
    assert _watch(counter, 0, 5_000_000_000)
    assert counter[0] == 1
    timer.join()


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux counts running threads")
def test_no_core_is_free_while_every_core_is_busy():
    helper = Helper()
    cores = len(os.sched_getaffinity(0))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(cores)]
    try:
        # The spinning processes, once started, are always running or ready to run.
        deadline = time.monotonic() + 30
        while helper.core_free():
            assert time.monotonic() < deadline, "a core looked free with every core busy"
            time.sleep(0.05)
        time.sleep(0.5)
        assert sum(helper.core_free() for _ in range(20)) <= 2
    finally:
        for process in busy:
            process.kill()
            process.wait()

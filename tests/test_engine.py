"""The serving engine (continuous batching) with the bundled model: the same tweets alone and
in a crowd, rows freed when a client goes away, refusal when full, survival of bad requests."""

import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from covfefe import config
from covfefe.errors import UserError
from covfefe.inference.generate import TweetGenerator, sample, top_p_filter
from covfefe.inference.rowwise import lstm_cell, matmul
from covfefe.inference.sampling import sample_rows
from covfefe.serving.engine import (
    Engine,
    EngineBusy,
    EngineError,
    join_rows,
    take_rows,
)
from tests.helpers import engine_health as health
from tests.helpers import free_port, stop_process

# Varied requests: prefixes of different lengths (fed while others generate), every sampling
# option, 1 to 4 candidates, shorter and full lengths.
REQUESTS = [
    dict(prefix="", temperature=0.8, n=1),
    dict(prefix="Make America ", temperature=1.0, n=3),
    dict(prefix="The Fake News Media is", temperature=0.5, n=2, top_k=5, max_length=120),
    dict(prefix="Crooked ", temperature=1.2, n=1, top_p=0.9),
    dict(prefix="", temperature=1e-5, n=2, max_length=90),
    dict(prefix="Wow", temperature=0.9, n=4, top_k=40, top_p=0.95),
    dict(prefix="We will win ", temperature=0.7, n=1, max_length=60),
    dict(prefix="I", temperature=1.5, n=2, top_k=1000),
]


@pytest.fixture(scope="module")
def generator():
    return TweetGenerator.from_artifact(config.resolve(config.BUNDLED_MODEL))


@pytest.fixture
def engine(generator):
    engine = Engine(generator, max_rows=64, max_queue=64)
    yield engine
    engine.stop()


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.01)


def test_rowwise_products_do_not_depend_on_the_other_rows():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 203)).astype(np.float32)  # depth not a multiple of 8
    w = rng.standard_normal((203, 150)).astype(np.float32)
    bias = rng.standard_normal(150).astype(np.float32)
    together = matmul(x, w, bias)
    np.testing.assert_allclose(together, x @ w + bias, rtol=1e-4, atol=1e-4)
    for rows in (slice(0, 1), slice(5, 6), slice(3, 5), slice(1, 8), slice(20, 37)):
        assert np.array_equal(matmul(x[rows], w, bias), together[rows])
    assert matmul(x[:2], w).flags.c_contiguous


def test_rowwise_products_work_where_numba_has_no_folder_to_cache_in():
    """A read-only install without a home: numba cannot cache, the kernel compiles anyway."""
    script = ("import numba.core.caching as caching\n"
              "caching.CacheImpl._locator_classes = []  # no writable folder anywhere\n"
              "import numpy as np\n"
              "from covfefe.inference.rowwise import matmul\n"
              "print(matmul(np.ones((5, 9), np.float32), np.ones((9, 2), np.float32)).sum())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "90.0"


def test_the_network_gives_a_row_the_same_logits_alone_as_in_a_batch(generator):
    network = generator.network
    ids = np.random.default_rng(1).integers(3, len(generator.vocabulary), size=(12, 33))
    state = network.initial_state(33)
    together = []
    for symbols in ids:
        logits, state = network.step(symbols, state)
        together.append(logits)
    for row in (0, 7, 32):
        alone = network.initial_state(1)
        for t, symbols in enumerate(ids):
            logits, alone = network.step(symbols[row:row + 1], alone)
            assert np.array_equal(logits[0], together[t][row])


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6, 1e-5])
@pytest.mark.parametrize(("top_k", "top_p"), [(0, 1.0), (3, 1.0), (0, 0.8), (10, 0.5),
                                             (200, 0.99)])
def test_sampling_row_by_row_draws_what_sample_draws(temperature, top_k, top_p):
    rng = np.random.default_rng(int(temperature * 1000) + top_k)
    logits = rng.normal(0, 3, size=(40, 30))
    logits[:, :2] = -np.inf  # banned symbols
    logits[::7, 5:9] = logits[::7, 4:5]  # ties
    expected = [sample(row[None], np.random.default_rng(seed), temperature=temperature,
                       top_k=top_k, top_p=top_p)[0] for seed, row in enumerate(logits)]
    uniforms = np.array([np.random.default_rng(seed).random() for seed in range(40)])
    ones = np.ones(40)
    drawn = sample_rows(logits, uniforms, temperature * ones, np.full(40, top_k),
                        top_p * ones)
    assert drawn.tolist() == expected


def test_sampling_rows_with_different_parameters_side_by_side():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4))
    uniforms = np.full(4, 0.99)  # the least likely symbol each row still allows
    drawn = sample_rows(logits, uniforms, np.array([1.0, 1.0, 1.0, 1e-6]),
                        np.array([0, 2, 0, 0]), np.array([1.0, 1.0, 0.7, 1.0]))
    assert drawn.tolist() == [3, 1, 1, 0]


def test_top_p_keeps_or_drops_tied_symbols_together():
    # Probabilities 0.4, 0.2, 0.2, 0.2: p = 0.5 reaches past the first symbol into the tie.
    logits = np.log(np.array([[0.4, 0.2, 0.2, 0.2], [0.2, 0.2, 0.4, 0.2]]))
    assert np.isfinite(top_p_filter(logits, 0.5)).all()
    assert np.isfinite(top_p_filter(logits, 0.3)).tolist() == [[True, False, False, False],
                                                                 [False, False, True, False]]
    for uniform in np.linspace(0, 0.999, 40):  # any of the tied symbols can be drawn
        drawn = sample_rows(logits, np.full(2, uniform), 1.0, 0, 0.5)
        expected = [sample(row[None], _Fixed(uniform), top_p=0.5)[0] for row in logits]
        assert drawn.tolist() == expected
    assert set(sample_rows(np.repeat(logits[:1], 400, axis=0),
                           np.random.default_rng(0).random(400), 1.0, 0, 0.5)) == {0, 1, 2, 3}


class _Fixed:
    """A stand-in random generator that always returns the same uniform."""

    def __init__(self, uniform: float):
        self.uniform = uniform

    def random(self, shape):
        return np.full(shape, self.uniform)


def test_the_compiled_lstm_cell_computes_the_lstm_gates():
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(0, 4, size=(50, 4 * 37)),
                        np.full((1, 4 * 37), 30.0), np.full((1, 4 * 37), 1e-5)]).astype(np.float32)
    c = rng.normal(0, 2, size=(52, 37)).astype(np.float32)
    h_new, c_new = lstm_cell(z, c)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    i, f, g, o = np.split(z.astype(np.float64), 4, axis=1)
    expected_c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    np.testing.assert_allclose(c_new, expected_c, rtol=0, atol=2e-6)
    np.testing.assert_allclose(h_new, sigmoid(o) * np.tanh(expected_c), rtol=0, atol=2e-6)
    h_row, c_row = lstm_cell(z[7:8], c[7:8])  # a row alone: the same bits
    assert np.array_equal(h_row[0], h_new[7]) and np.array_equal(c_row[0], c_new[7])


def test_state_rows_are_taken_and_joined_leaf_by_leaf_whatever_the_nest():
    state = [(np.arange(6.0).reshape(3, 2), np.zeros((3, 4))), (np.array([[1], [2], [3]]),)]
    taken = take_rows(state, np.array([True, False, True]))
    assert isinstance(taken, list) and isinstance(taken[0], tuple)
    assert taken[1][0].tolist() == [[1], [3]] and taken[0][0].tolist() == [[0, 1], [4, 5]]
    joined = join_rows(taken, take_rows(state, [1]))
    assert joined[1][0].tolist() == [[1], [3], [2]] and joined[0][1].shape == (3, 4)


def test_a_request_gets_the_same_tweets_alone_and_among_31_others(generator, engine):
    requests = [dict(REQUESTS[i % len(REQUESTS)], seed=100 + i) for i in range(32)]
    alone = [generator.complete(**request) for request in requests]
    results = [None] * len(requests)
    go = threading.Barrier(len(requests))

    def run(index):
        go.wait()
        results[index] = engine.complete(**requests[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    before = engine.stats()
    for thread in threads:
        thread.start()
    seen = []  # what /api/health would report while they run
    while any(thread.is_alive() for thread in threads):
        seen.append(engine.stats())
        time.sleep(0.05)
    after = engine.stats()
    assert results == alone  # text, log-probability (bit for bit), ended, novelty
    assert max(stats["rows_in_flight"] for stats in seen) > 32  # some have n > 1
    assert max(stats["steps_per_second"] for stats in seen) > 0
    assert max(stats["rows_per_step"] for stats in seen) > 0
    # Stepped together: many rows a step over the run (the figure of /api/health covers the
    # last whole second, which a fast run may not fill).
    assert (after["rows_stepped"] - before["rows_stepped"]) / (after["steps"] - before["steps"]) > 8
    # The 32, and the fresh draws that replaced their copies and empty tweets.
    assert after["requests_done"] - before["requests_done"] >= 32
    # They really ran together: far fewer steps than the requests' steps one after another.
    one_after_another = sum(len(r[0].prefix) + max(len(c.generated) for c in r)
                            for r in results)
    assert engine.steps < one_after_another / 4


def test_the_network_mixed_with_an_ngram_table_gives_the_same_tweets_in_a_crowd(generator):
    """The mixture's state holds each row's recent symbols (integers) beside the network's."""
    from covfefe.lm.mixture import MixedModel
    from covfefe.lm.ngram import KneserNeyModel
    from covfefe.training.corpus import encode_tweets

    texts = [c.text for c in generator.complete("", n=16, seed=1, temperature=0.9)]
    table = KneserNeyModel(5, len(generator.vocabulary)).fit(
        encode_tweets(texts + ["Make America Great Again!"], generator.vocabulary))
    mixed = TweetGenerator(MixedModel(generator.network, table, 0.7), generator.vocabulary,
                           generator.max_chars)
    engine = Engine(mixed, max_rows=64)
    try:
        requests = [dict(REQUESTS[i % len(REQUESTS)], seed=i) for i in range(12)]
        results = [None] * len(requests)
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, engine.complete(**requests[i]))) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert results == [mixed.complete(**request) for request in requests]
    finally:
        engine.stop()


def test_unknown_prefix_characters_are_listed_as_the_generator_lists_them(generator, engine):
    request = dict(prefix="Great \u0436 news ", seed=3, n=2, max_length=80)
    completions = engine.complete(**request)
    assert completions == generator.complete(**request)
    assert completions[0].unknown == ["\u0436"]


def test_a_request_alone_in_the_engine_streams_what_the_generator_streams(generator, engine):
    request = dict(REQUESTS[1], seed=9)
    assert list(engine.stream(**request)) == list(generator.stream(**request))


def test_the_served_stack_takes_several_steps_per_call_with_the_same_tweets(generator, engine,
                                                                           monkeypatch):
    """While every row draws, the engine steps up to STEPS times in one compiled call
    (covfefe.inference.fused); a row that ends draws no more, and the call stops early only when
    every
    row has ended: far fewer calls than steps, and every request still gets the tweets it gets
    alone."""
    from covfefe.inference.fused import FusedStep
    from covfefe.serving.engine import STEPS

    calls = []
    step_and_draw = FusedStep.step_and_draw

    def counted(self, *args, most=1):
        taken, state = step_and_draw(self, *args, most=most)
        calls.append((most, taken))
        return taken, state

    monkeypatch.setattr(FusedStep, "step_and_draw", counted)
    requests = [dict(REQUESTS[i], seed=40 + i) for i in range(len(REQUESTS))]
    jobs = [engine.submit(**request, streamed=False) for request in requests]
    for request, job in zip(requests, jobs, strict=True):
        alone = generator.complete(**request)
        assert [(c.text, c.log_prob) for c in job.result()] == [(c.text, c.log_prob)
                                                                for c in alone]
    assert sum(taken for _, taken in calls) == engine.steps
    assert all(1 <= taken <= most <= STEPS for most, taken in calls)
    assert max(taken for _, taken in calls) == STEPS > 1
    assert len(calls) < engine.steps / 2


class _Gated:
    """The real network, stepping only when the test allows it (so that the test, not the
    machine's speed, decides where the engine is when the client acts)."""

    def __init__(self, network):
        self.network = network
        self.permits = threading.Semaphore(0)
        self.waiting = threading.Event()

    def initial_state(self, n):
        return self.network.initial_state(n)

    def step(self, ids, state):
        self.waiting.set()
        assert self.permits.acquire(timeout=60), "the test never allowed this step"
        self.waiting.clear()
        return self.network.step(ids, state)

    def allow(self, steps: int) -> None:
        for _ in range(steps):
            self.permits.release()


@pytest.fixture
def gated(generator):
    engine = Engine(generator, max_rows=2, max_queue=1)
    engine.network = _Gated(generator.network)
    yield engine, engine.network
    engine.network.allow(10_000)
    engine.stop()


def test_a_closed_stream_frees_its_rows_at_the_next_step(gated):
    engine, network = gated
    job = engine.stream("Thank you ", n=2, seed=1, temperature=0.5)
    events = iter(job)
    assert next(events) == ("prefix", "Thank you ")
    network.allow(len("Thank you ") + 1 + 3)  # END and the prefix, then 3 characters
    for _ in range(3):
        kind, chars = next(events)
        assert kind == "chars" and len(chars) == 2
    assert engine.stats()["rows_in_flight"] == 2
    wait_until(network.waiting.is_set)  # the engine waits to take its next step
    steps, rows = engine.steps, engine.rows_stepped
    events.close()  # what the web server does when the client hangs up
    network.allow(100)
    wait_until(lambda: engine.stats()["rows_in_flight"] == 0)
    time.sleep(0.3)
    assert engine.steps <= steps + 1 and engine.rows_stepped <= rows + 2  # at most the step
    assert engine.stats()["requests_cancelled"] == 1  # that had begun when the client left


def test_a_full_engine_refuses_at_once_and_serves_again_when_rows_free(generator, gated):
    engine, network = gated
    running = iter(engine.stream("", n=2, seed=1))
    next(running)
    wait_until(network.waiting.is_set)  # both rows in flight, the engine mid-step
    waiting = engine.submit("", n=1, seed=2, max_length=20, streamed=False)
    # At once: the gated network takes no step until the end, so a submit that waited for
    # rows would hang here (and fail at the test's time limit).
    with pytest.raises(EngineBusy, match="the server is busy") as refused:
        engine.submit("", n=1, seed=3)
    assert refused.value.retry_after >= 1
    assert engine.stats()["queued"] == 1 and engine.stats()["requests_refused"] == 1
    running.close()
    network.allow(10_000)
    assert waiting.result() == generator.complete("", n=1, seed=2, max_length=20)


def test_the_engine_survives_bad_prefixes_and_vanishing_clients(generator, engine):
    with pytest.raises(UserError, match="must be shorter than max_length"):
        engine.submit("Make America Great", max_length=5)
    with pytest.raises(UserError, match="at most 64"):
        engine.submit("", n=65)
    # Clients that hang up at every moment: before admission, while their prefix is fed,
    # mid-generation, from other threads while the engine steps.
    jobs = [engine.stream("The ", n=2, seed=i) for i in range(40)]
    for index, job in enumerate(jobs):
        events = iter(job)
        for _ in range(index % 4):
            next(events)
        threading.Thread(target=events.close).start()
    wait_until(lambda: engine.stats()["rows_in_flight"] == 0 and not engine.stats()["queued"])
    assert engine.running
    request = dict(REQUESTS[2], seed=4)
    assert engine.complete(**request) == generator.complete(**request)


class _FailingOnce:
    """The real network, whose next step raises once (as a bug in a step would)."""

    def __init__(self, network):
        self.network = network
        self.fail = False

    def initial_state(self, n):
        return self.network.initial_state(n)

    def step(self, ids, state):
        if self.fail:
            self.fail = False
            raise FloatingPointError("a step went wrong")
        return self.network.step(ids, state)


def test_a_failing_step_fails_its_requests_and_the_engine_keeps_serving(generator):
    engine = Engine(generator)
    engine.network = failing = _FailingOnce(generator.network)
    try:
        job = engine.stream("", seed=1, temperature=0.2)
        events = iter(job)
        next(events), next(events)
        failing.fail = True
        with pytest.raises(EngineError, match="the generation engine failed"):
            list(events)
        assert engine.running and engine.stats()["rows_in_flight"] == 0
        assert engine.complete("Hello", seed=2) == generator.complete("Hello", seed=2)
    finally:
        engine.stop()


# Through gunicorn, as it runs in production: `covfefe serve`, one worker (so that every
# request meets the same engine), the bundled model.


def start_server(tmp_path, **settings) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "COVFEFE_RATE_LIMIT": "100000 per minute",
           **{f"COVFEFE_{name}": str(value) for name, value in settings.items()}}
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "covfefe", "serve", "--port", str(port), "--workers", "1"],
            stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/health", timeout=2)
            return process, base, log
        except OSError:
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
    stop_process(process, group=True)
    pytest.fail(f"gunicorn did not answer within 90 s:\n{log.read_text()}")


def post(url: str, body: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, base, log = start_server(tmp_path_factory.mktemp("engine-server"),
                                      ENGINE_ROWS=64, ENGINE_QUEUE=16)
    yield base, log
    stop_process(process, group=True)


@pytest.mark.network
def test_through_gunicorn_32_requests_at_once_get_what_each_gets_alone(server, generator):
    base, log = server
    requests = [dict(REQUESTS[i % len(REQUESTS)], seed=500 + i) for i in range(32)]
    for request in requests:
        request.setdefault("max_length", 280)
    answers = [None] * len(requests)
    go = threading.Barrier(len(requests))

    def run(index):
        go.wait()
        answers[index] = post(f"{base}/api/generate", requests[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    for request, (status, _, body) in zip(requests, answers, strict=True):
        assert status == 200, body
        alone = generator.complete(**request)
        assert [c["text"] for c in body["completions"]] == [c.text for c in alone]
        assert [c["log_prob"] for c in body["completions"]] == [round(c.log_prob, 4)
                                                                 for c in alone]
    stats = health(base)
    assert stats["requests_done"] >= 32 and stats["max_rows"] == 64 and stats["max_queue"] == 16
    # Every answer's access log line says how long it waited for rows and how long it ran.
    lines = [json.loads(line) for line in log.read_text().splitlines()
             if line.startswith("{") and '"/api/generate"' in line]
    assert len(lines) >= 32
    assert all(line["queue_ms"] >= 0 and line["generation_ms"] > 0 for line in lines)


@pytest.mark.network
def test_through_gunicorn_a_client_that_hangs_up_frees_its_rows(server):
    base, _ = server
    # Wild candidates rarely end before 280 characters: the request would run 280 steps, a
    # fraction of a second. A client that is itself slow (a busy CI machine) can take that long
    # between reading the first event and hanging up: then the request ends first and the
    # attempt shows nothing either way, so the hang-up is tried again (a server that never
    # noticed hang-ups fails every attempt).
    outcomes = []
    for seed in range(3, 9):
        before = health(base)
        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
        connection.request("GET", f"/api/generate/stream?n=16&temperature=2&seed={seed}")
        response = connection.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"event: prefix")
        # Hang up at once (checking the rows in flight first would race the generation).
        connection.sock.shutdown(socket.SHUT_RDWR)
        response.close()
        connection.close()
        # Until the request is over, either way (it may still have been waiting for rows when
        # the hang-up came: then nothing is in flight yet, and it must not count in the next
        # attempt).
        wait_until(lambda before=before: _over(health(base), before))
        after = health(base)
        outcome = {name: after[name] - before[name]
                   for name in ("requests_cancelled", "requests_done", "steps")}
        outcomes.append(outcome)
        if outcome["requests_cancelled"]:
            break
    # It never ran to its end: cancelled, and stepped only until the hang-up was seen.
    assert outcome == {**outcome, "requests_cancelled": 1, "requests_done": 0}, outcomes
    assert outcome["steps"] < 200, outcomes


def _over(stats: dict, before: dict) -> bool:
    """Whether the engine is idle and has ended one more request than ``before`` says."""
    ended = stats["requests_done"] + stats["requests_cancelled"]
    return (stats["rows_in_flight"] == 0 and stats["queued"] == 0
            and ended > before["requests_done"] + before["requests_cancelled"])


@pytest.mark.network
def test_through_gunicorn_a_worker_may_compile_for_longer_than_its_timeout(tmp_path,
                                                                        monkeypatch):
    """A first start compiles every kernel (numba: 20-35 s on this machine, for the served step
    in one call) before the worker serves, far past gunicorn's timeout (30 s by default).
    gunicorn counts a worker's timeout from its first heartbeat, which comes once the app has
    loaded; this holds it to that: with a 4 s timeout and an empty compile cache the worker
    comes up once (never killed and booted again) and answers."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba-cache"))
    process, base, log = start_server(tmp_path, TIMEOUT=4)
    try:
        status, _, body = post(f"{base}/api/generate", {"prefix": "The ", "seed": 1})
        assert status == 200 and body["completions"][0]["text"].startswith("The ")
        assert any((tmp_path / "numba-cache").rglob("*.nbc"))  # it did compile, cold
        text = log.read_text()
        assert "WORKER TIMEOUT" not in text and text.count("Booting worker") == 1, text
    finally:
        stop_process(process, group=True)


@pytest.mark.network
def test_through_gunicorn_a_full_engine_answers_503_at_once(tmp_path):
    process, base, _ = start_server(tmp_path, ENGINE_ROWS=16, ENGINE_QUEUE=0)
    try:
        answers = [None] * 6
        go = threading.Barrier(len(answers))
        finished = itertools.count()

        def run(index):
            go.wait()
            answer = post(f"{base}/api/generate", {"n": 16, "seed": index, "prefix": "I"})
            answers[index] = (*answer, next(finished))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(answers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        refused = [a for a in answers if a[0] == 503]
        served = [a for a in answers if a[0] == 200]
        assert refused and served and len(refused) + len(served) == len(answers)
        for _, headers, body, _ in refused:
            assert int(headers["Retry-After"]) >= 1
            assert list(body) == ["error"] and "the server is busy" in body["error"]
        # Refused without rows: by the worker's main loop before Flask when it sees the engine
        # full, else by the engine (issue 30 paces the first kind 0.1-0.3 s, so the order of the
        # answers against the served one's no longer shows it).
        assert health(base)["requests_refused"] == len(refused)
        status, _, body = post(f"{base}/api/generate", {"prefix": "Great ", "seed": 1})
        assert status == 200 and body["completions"][0]["text"].startswith("Great ")
    finally:
        stop_process(process, group=True)

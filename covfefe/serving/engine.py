"""The serving engine: one loop thread steps all the sequences in flight together (batching).

A `TweetGenerator` runs one request's recurrent steps by itself. Under load that leaves the
network's arithmetic idle: one step costs nearly as much for 1 sequence as for 16. The
`Engine` keeps the network state of every sequence in flight (a request with ``n`` candidates
is ``n`` rows) and runs them all through one ``step`` per loop: new requests join at the next
step (their prefixes are fed while the others generate), rows leave as soon as they end, and
each request is handed its characters as they come.

The engine uses the generator's step object only through ``initial_state(n)`` and
``step(ids, state) -> (logits, state)``, where the state is a nest (lists, tuples) of arrays
with the rows on axis 0; rows are gathered and joined leaf by leaf. It relies on one property of
that step: each row's result depends on that row alone, bit for bit (`covfefe.inference.rowwise`).
With
each request drawing from its own random generator, exactly as `TweetGenerator.complete` does
(one uniform per candidate per step), a request gets the same tweets here as alone.

Admission is bounded: at most ``max_rows`` rows in flight and ``max_queue`` requests waiting;
beyond that `submit` raises `EngineBusy` at once (the API answers 503 with Retry-After).
"""

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from covfefe.errors import UserError
from covfefe.inference.generate import (
    BANNED,
    Completion,
    TweetGenerator,
    mark_cut,
    with_fresh_draws,
)
from covfefe.inference.sampling import Draw, draw_and_record
from covfefe.text import END_ID, MAX_TWEET_CHARS, PAD_ID

# Steps per compiled call while every row draws: the engine's Python between steps (and the
# wait to take the GIL back from the request threads) once per call, not per step. A row that
# ends within a call writes no more; it leaves, and its request is answered, when the call
# ends (or at once, when every row has ended). A new request joins, and a cancelled one
# leaves, at most this many steps later (a few milliseconds).
STEPS = 8
log = logging.getLogger(__name__)

WAIT_POLL_S = 1.0  # how often a waiting request checks that the engine is still alive


class EngineBusy(Exception):
    """The engine has no room for a request now; ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class EngineError(RuntimeError):
    """The engine failed while a request was in flight (a bug; the request cannot finish)."""


def _map(function, *nests):
    """Apply ``function`` to the matching array leaves of nests of lists and tuples."""
    first = nests[0]
    if isinstance(first, list | tuple):
        return type(first)(_map(function, *parts) for parts in zip(*nests, strict=True))
    return function(*nests)


def take_rows(state, index):
    """Return the rows ``index`` (indices or a boolean mask) of every array in a state nest."""
    return _map(lambda leaf: leaf[index], state)


def join_rows(first, second):
    """Return two state nests of the same shape joined along the rows."""
    return _map(lambda a, b: np.concatenate([a, b]), first, second)


@dataclass(frozen=True)
class Generated:
    """What the engine hands back when a request ends: ids, log-probabilities, ended rows."""

    ids: np.ndarray  # [n, positions] (PAD after a candidate's end)
    log_prob: np.ndarray  # [n]
    finished: np.ndarray  # [n] bool: the model wrote END


class Job:
    """One request in the engine; iterate it for ``("prefix", str)``, ``("chars", [str] * n)``
    per step (streamed jobs only) and ``("done", [Completion] * n)``. ``close()`` (or leaving
    the iteration early) frees its rows at the next step."""

    def __init__(self, engine: "Engine", prefix: str, feed: np.ndarray, *, n: int,
                 positions: int, temperature: float, top_k: int, top_p: float, seed,
                 streamed: bool):
        self.engine = engine
        self.prefix = prefix
        self.feed = feed  # END, then the prefix: fed one per step before generating
        self.n = n
        self.positions = positions
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.streamed = streamed
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False
        self.submitted = time.perf_counter()
        self.admitted: float | None = None
        self.ended: float | None = None
        # Engine-thread state.
        self.fed = 0  # symbols of `feed` stepped so far
        self.live = np.arange(n)  # the candidates still in the batch, in row order
        self.ids = np.full((n, positions), PAD_ID, dtype=np.int64)  # filled as rows end
        self.log_prob = np.zeros(n)
        self.finished = np.zeros(n, dtype=bool)

    @property
    def queue_wait_s(self) -> float | None:
        """Seconds between submission and admission (None until admitted)."""
        return None if self.admitted is None else self.admitted - self.submitted

    @property
    def generation_s(self) -> float | None:
        """Seconds between admission and the last step (None until it ends)."""
        return None if self.ended is None or self.admitted is None else self.ended - self.admitted

    def close(self) -> None:
        """Give up the request: the engine drops its rows (or its place in the queue)."""
        if self.ended is None:
            self.cancelled = True
            self.engine._wake()

    def __iter__(self):
        try:
            yield "prefix", self.prefix
            while True:
                kind, value = self._next_event()
                if kind == "chars":
                    yield kind, value
                else:
                    yield "done", self.engine._completions(self, value)
                    return
        finally:
            self.close()

    def result(self) -> list[Completion]:
        """Wait for the request to end; return its completions, each near copy or empty one
        replaced by a fresh draw as `TweetGenerator.complete` does (in the request's thread;
        a fresh draw the engine has no room for leaves the candidate as it is)."""
        def redraw(n: int, seed: int | None) -> list[Completion]:
            try:
                return self.engine.submit(
                    self.prefix, temperature=self.temperature, n=n, seed=seed,
                    max_length=self.positions + len(self.prefix), top_k=self.top_k,
                    top_p=self.top_p, streamed=False)._result()
            except EngineBusy:
                return None

        return with_fresh_draws(self._result(), self.seed, redraw)

    def _result(self) -> list[Completion]:
        try:
            while True:
                kind, value = self._next_event()
                if kind == "generated":
                    return self.engine._completions(self, value)
        finally:
            self.close()

    def _next_event(self):
        while True:
            try:
                kind, value = self.events.get(timeout=WAIT_POLL_S)
            except queue.Empty:
                if not self.engine.running:
                    raise EngineError("the generation engine stopped") from None
                continue
            if kind == "error":
                raise EngineError(value)
            return kind, value


class Engine:
    """Continuous batching over a `TweetGenerator`'s network, in one loop thread."""

    def __init__(self, generator: TweetGenerator, *, max_rows: int = 32, max_queue: int = 32,
                 retry_after: int = 1):
        if max_rows < 1 or max_queue < 0:
            raise ValueError(f"max_rows must be at least 1 and max_queue at least 0, not "
                             f"{max_rows} and {max_queue}")
        self.generator = generator
        self.network = generator.network
        self.max_rows = max_rows
        self.max_queue = max_queue
        self.retry_after = retry_after
        self._lock = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._reserved = 0  # rows of the jobs admitted (in flight)
        self._waiting_rows = 0  # rows of the jobs waiting
        self._jobs: list[Job] = []  # in flight, their rows in this order (engine thread only)
        self._feeding: list[Job] = []  # those still feeding their prefix
        self._state = None  # the network state of every row
        self._rows = _Rows(generator.max_chars)  # what the engine keeps per row
        self._thread: threading.Thread | None = None
        self._stop = False
        self.steps = 0
        self.rows_stepped = 0
        self.requests_done = 0
        self.requests_refused = 0
        self.requests_cancelled = 0
        self._window = _Window(time.perf_counter())  # the last whole second of stepping
        self._warm_up()

    def _warm_up(self) -> None:
        """Compile the engine's step now, not in a request (numba: seconds without its disk
        cache): one step and draw of a throwaway row, typed as `_Rows` holds its arrays."""
        fused = getattr(self.network, "fused", None)
        if fused is None:
            return
        positions = self.generator.max_chars
        fused.step_and_draw(np.array([END_ID]), self.network.initial_state(1),
                            Draw(np.arange(1), BANNED, np.zeros((1, positions)), np.ones(1),
                                 np.zeros(1, np.int64), np.ones(1), END_ID,
                                 np.full(1, positions), np.zeros(1, np.int64),
                                 np.zeros((1, positions), np.int64), np.zeros(1),
                                 np.zeros(1, dtype=bool)))

    # The request side (any thread).

    def submit(self, prefix: str = "", *, temperature: float | None = None, n: int = 1,
               max_length: int = MAX_TWEET_CHARS, seed: int | None = None, top_k: int = 0,
               top_p: float | None = None, streamed: bool = True) -> Job:
        """Check the arguments as `TweetGenerator.stream` does (UserError; a temperature or
        top-p of None is the model's default), then queue the request; EngineBusy at once
        when neither the batch nor the queue has room."""
        defaults = self.generator.defaults
        temperature = defaults["temperature"] if temperature is None else temperature
        top_p = defaults["top_p"] if top_p is None else top_p
        # The generator's own checks and prefix cleaning: its stream checks before yielding
        # and yields the cleaned prefix first, before any step.
        checked = self.generator.stream(prefix, temperature=temperature, n=n,
                                        max_length=max_length, seed=seed, top_k=top_k,
                                        top_p=top_p)
        kind, prefix = next(checked)
        checked.close()
        assert kind == "prefix"
        if n > self.max_rows:
            raise UserError(f"n must be at most {self.max_rows} here (the engine's rows), "
                            f"not {n}")
        positions = min(max_length, self.generator.max_chars) - len(prefix)
        feed = np.array([END_ID, *self.generator.vocabulary.encode(prefix)], dtype=np.int64)
        job = Job(self, prefix, feed, n=n, positions=positions, temperature=temperature,
                  top_k=top_k, top_p=top_p, seed=seed, streamed=streamed)
        with self._lock:
            fits = self._reserved + self._waiting_rows + n <= self.max_rows
            if not fits and len(self._waiting) >= self.max_queue:
                self.requests_refused += 1
                raise EngineBusy(f"the server is busy ({self._reserved} rows in flight, "
                                 f"{len(self._waiting)} requests waiting); retry in "
                                 f"{self.retry_after} s", self.retry_after)
            self._waiting.append(job)
            self._waiting_rows += n
            self._start()
            self._lock.notify()
        return job

    def stream(self, prefix: str = "", **options) -> Job:
        """Submit a request whose characters are handed over step by step (iterate the job)."""
        return self.submit(prefix, streamed=True, **options)

    def complete(self, prefix: str = "", **options) -> list[Completion]:
        """Submit a request and wait for its completions (as `TweetGenerator.complete`)."""
        return self.submit(prefix, streamed=False, **options).result()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict:
        """Rows in flight, requests waiting, steps per second and rows per step (how full the
        batch is; both over the last whole second of stepping, 0 once idle), and counts of
        steps, rows stepped, and requests done, cancelled, refused."""
        window = self._window
        rate, occupancy = window.steps_per_second, window.rows_per_step
        if time.perf_counter() - window.start > 2.0:  # no step has closed a window lately: idle
            rate = occupancy = 0.0
        with self._lock:
            return {"rows_in_flight": self._reserved, "max_rows": self.max_rows,
                    "queued": len(self._waiting), "max_queue": self.max_queue,
                    "steps_per_second": round(rate, 1), "rows_per_step": round(occupancy, 1),
                    "steps": self.steps, "rows_stepped": self.rows_stepped,
                    "requests_done": self.requests_done,
                    "requests_cancelled": self.requests_cancelled,
                    "requests_refused": self.requests_refused}

    def stop(self, timeout: float = 10) -> None:
        """Stop the loop thread (the requests in flight get an EngineError)."""
        with self._lock:
            self._stop = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _start(self) -> None:
        # Started on the first request rather than at creation: gunicorn forks its workers
        # after the app factory may have run, and a thread does not survive a fork.
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="covfefe-engine",
                                            daemon=True)
            self._thread.start()

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify()

    def _completions(self, job: Job, generated: Generated) -> list[Completion]:
        """Build the completions of an ended job (in the request's thread: the novelty
        look-up need not hold up the batch)."""
        vocabulary, novelty = self.generator.vocabulary, self.generator.novelty
        completions = [Completion(job.prefix, mark_cut(job.prefix, vocabulary.decode(row),
                                                       bool(end)), float(log_prob), bool(end))
                       for row, log_prob, end in zip(generated.ids, generated.log_prob,
                                                     generated.finished, strict=True)]
        unknown = vocabulary.unknown(job.prefix)  # prefix characters read as UNK
        for completion in completions:
            completion.unknown = list(unknown)
        if novelty is not None:
            for completion in completions:
                completion.longest_shared = novelty.longest_shared(completion.text)
        return completions

    # The loop (engine thread).

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._jobs and not self._waiting:
                    self._lock.wait()
                if self._stop:
                    break
                arriving = self._admit()
            try:
                for job in arriving:
                    self._join(job)
                self._drop_cancelled()
                if self._jobs:
                    self._step()
            except Exception:  # a bug: fail the requests in flight, keep serving the next
                log.exception("the generation engine failed a step; its requests are dropped")
                self._fail_all("the generation engine failed; please retry")
        self._fail_all("the generation engine stopped")

    def _admit(self) -> list[Job]:
        """Take waiting jobs, first come first served, while their rows fit (lock held)."""
        arriving = []
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                self._waiting_rows -= job.n
                job.ended = time.perf_counter()
                self.requests_cancelled += 1
                continue
            if self._reserved + job.n > self.max_rows:
                break
            self._waiting.popleft()
            self._waiting_rows -= job.n
            self._reserved += job.n
            job.admitted = time.perf_counter()
            arriving.append(job)
        return arriving

    def _join(self, job: Job) -> None:
        fresh = self.network.initial_state(job.n)
        self._state = fresh if self._state is None else join_rows(self._state, fresh)
        self._rows.add(job)
        self._jobs.append(job)
        self._feeding.append(job)

    def _drop_cancelled(self) -> None:
        if any(job.cancelled for job in self._jobs):
            for job in self._jobs:
                if job.cancelled:
                    self._end(job)
                    self.requests_cancelled += 1
            self._remove_rows(np.array([not job.cancelled for job, _ in self._rows.owners]))

    def _remove_rows(self, keep: np.ndarray) -> None:
        """Keep only the rows ``keep`` (a mask); the jobs that have ended leave the lists."""
        if keep.all():
            return
        if keep.any():
            self._state = take_rows(self._state, keep)
        else:
            self._state = None
        self._rows.keep(keep)
        self._jobs = [job for job in self._jobs if job.ended is None]
        self._feeding = [job for job in self._feeding if job.ended is None]

    def _end(self, job: Job) -> None:
        job.ended = time.perf_counter()
        with self._lock:
            self._reserved -= job.n

    def _step(self) -> None:
        rows = self._rows
        fed = []  # (rows, symbol): the next prefix symbol, put in once this step has read ids
        if self._feeding:  # the rows that feed their prefix's last symbol now draw after it
            start = 0
            for job in self._jobs:
                if job.fed < job.feed.size:
                    job.fed += 1
                    span = slice(start, start + job.live.size)
                    if job.fed < job.feed.size:
                        fed.append((span, job.feed[job.fed]))
                    else:
                        rows.sampling[span] = True
                start += job.live.size
            self._feeding = [job for job in self._feeding if job.fed < job.feed.size]
        if self._feeding:  # some rows still feed their prefix: only the others draw
            index = np.flatnonzero(rows.sampling)
            drawing = [job for job in self._jobs if job.fed == job.feed.size]
        else:  # every row draws (the usual case)
            index = np.arange(rows.ids.size)
            drawing = self._jobs
        # Each row's uniform for its position was drawn when its job joined (see _Rows.add).
        ending = np.zeros(rows.ids.size, dtype=bool)
        draw = Draw(index, BANNED, rows.uniforms, rows.temperature, rows.top_k, rows.top_p,
                    END_ID, rows.limit, rows.length, rows.history, rows.log_prob, ending)
        before = rows.length[index]
        fused = getattr(self.network, "fused", None)  # the served stack: one compiled call
        if fused is not None:
            # Several steps in one call while every row draws (see STEPS).
            taken, self._state = fused.step_and_draw(
                rows.ids, self._state, draw, most=1 if fed or self._feeding else STEPS)
        else:
            logits, self._state = self.network.step(rows.ids, self._state)
            draw_and_record(logits, index, draw, rows.ids)
            taken = 1
        for span, symbol in fed:
            rows.ids[span] = symbol
        self.steps += taken
        self.rows_stepped += rows.ids.size * taken
        now, window = time.perf_counter(), self._window
        if now - window.start >= 1.0:
            steps = self.steps - window.steps
            self._window = _Window(now, self.steps, self.rows_stepped, steps / (now - window.start),
                                   (self.rows_stepped - window.rows_stepped) / max(steps, 1))
        if index.size == 0:
            return
        ended = np.flatnonzero(ending)
        if any(job.streamed for job in drawing):
            self._hand_out(drawing, index, before, rows.length[index] - before, taken)
        if ended.size:
            self._finish_rows(ended)

    def _hand_out(self, drawing: list[Job], index: np.ndarray, before: np.ndarray,
                  steps: np.ndarray, taken: int) -> None:
        """Give each streamed job among ``drawing`` (the jobs of the rows ``index``, in order)
        one event per step in which its rows wrote (``steps``: how many each wrote): each
        candidate's character, "" for one that had ended."""
        rows = self._rows
        for step in range(taken):  # one event per step, as the rows wrote them
            stepped = steps > step
            positions = np.where(stepped, before + step, 0)
            texts = self.generator.symbol_text[rows.history[index, positions]].tolist()
            stepped = stepped.tolist()
            offset = 0
            for job in drawing:
                size = job.live.size
                if job.streamed and any(stepped[offset:offset + size]):
                    chars = [""] * job.n
                    for candidate, text, wrote in zip(job.live.tolist(),
                                                      texts[offset:offset + size],
                                                      stepped[offset:offset + size],
                                                      strict=True):
                        if wrote:
                            chars[candidate] = text
                    job.events.put(("chars", chars))
                offset += size

    def _finish_rows(self, ended: np.ndarray) -> None:
        """Hand the rows that have ended to their jobs; end the jobs whose rows all have."""
        rows = self._rows
        for row in ended.tolist():
            job, candidate = rows.owners[row]
            length = rows.length[row]
            job.ids[candidate, :length] = rows.history[row, :length]
            job.log_prob[candidate] = rows.log_prob[row]
            job.finished[candidate] = rows.history[row, length - 1] == END_ID
            job.live = job.live[job.live != candidate]
            if job.live.size == 0:
                self._end(job)
                self.requests_done += 1
                job.events.put(("generated", Generated(job.ids, job.log_prob, job.finished)))
        keep = np.ones(rows.ids.size, dtype=bool)
        keep[ended] = False
        self._remove_rows(keep)

    def _fail_all(self, message: str) -> None:
        for job in self._jobs:
            self._end(job)
            job.events.put(("error", message))
        self._jobs, self._feeding = [], []
        self._state = None
        self._rows = _Rows(self.generator.max_chars)
        with self._lock:
            self._waiting_rows = 0
            while self._waiting:
                job = self._waiting.popleft()
                job.ended = time.perf_counter()
                job.events.put(("error", message))


@dataclass(frozen=True)
class _Window:
    """A window of the engine's stepping: when it began, the engine's counts of steps and of
    rows stepped then, and the steps per second and rows per step of the window before it."""

    start: float
    steps: int = 0
    rows_stepped: int = 0
    steps_per_second: float = 0.0
    rows_per_step: float = 0.0


class _Rows:
    """What the engine keeps per row of the batch, in row order: the next input symbol, the
    sampling parameters, whether the row draws yet, what it has written, its log-probability,
    the uniform of each of its draws, and which job and candidate it belongs to."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        self.ids = np.zeros(0, dtype=np.int64)
        self.temperature = np.zeros(0)
        self.top_k = np.zeros(0, dtype=np.int64)
        self.top_p = np.zeros(0)
        self.sampling = np.zeros(0, dtype=bool)
        self.history = np.zeros((0, max_chars), dtype=np.int64)
        self.length = np.zeros(0, dtype=np.int64)
        self.limit = np.zeros(0, dtype=np.int64)
        self.log_prob = np.zeros(0)
        self.uniforms = np.zeros((0, max_chars))
        self.owners: list[tuple[Job, int]] = []

    _ARRAYS = ("ids", "temperature", "top_k", "top_p", "sampling", "history", "length",
               "limit", "log_prob", "uniforms")

    def add(self, job: Job) -> None:
        n = job.n
        # The uniforms of every position at once: one per candidate per step, ended candidates
        # included, in the order TweetGenerator draws them (``rng.random(n)`` per step), so a
        # request's text does not depend on its batch.
        uniforms = np.zeros((n, self.max_chars))
        uniforms[:, :job.positions] = job.rng.random((job.positions, n)).T
        fresh = {"ids": np.full(n, job.feed[0]), "temperature": np.full(n, job.temperature),
                 "top_k": np.full(n, job.top_k), "top_p": np.full(n, job.top_p),
                 "sampling": np.zeros(n, dtype=bool),
                 "history": np.zeros((n, self.max_chars), dtype=np.int64),
                 "length": np.zeros(n, dtype=np.int64), "limit": np.full(n, job.positions),
                 "log_prob": np.zeros(n), "uniforms": uniforms}
        for name in self._ARRAYS:
            setattr(self, name, np.concatenate([getattr(self, name), fresh[name]]))
        self.owners.extend((job, candidate) for candidate in range(n))

    def keep(self, mask: np.ndarray) -> None:
        for name in self._ARRAYS:
            setattr(self, name, getattr(self, name)[mask])
        self.owners = [owner for owner, kept in zip(self.owners, mask.tolist(), strict=True)
                       if kept]

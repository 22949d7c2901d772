"""Drawing the next symbol of every row at once, each row with its own temperature, top-k and
top-p, compiled: what `covfefe.inference.generate.TweetGenerator` and the serving engine
(`covfefe.serving.engine`) both draw with, so a request gets the same text from either.

Row by row the arithmetic is that of `covfefe.inference.generate.sample` (the NumPy reference,
which a
test compares it with): temperatures below ``GREEDY_BELOW`` keep only the most likely symbols;
top-k keeps the symbols at least as likely as the k-th; top-p keeps a symbol when the mass of the
symbols strictly likelier than it is below p (so tied symbols are kept or dropped together);
then one uniform in [0, 1) picks a symbol by the running sum of the kept weights. The
log-probability of the drawn symbol under the untempered distribution comes with it. Each row
is computed by itself, so a row draws the same symbol in any batch. In NumPy the same work cost
about as much per step as the network's own step for a single row (a dozen ufunc calls, each a
pass over a temporary); compiled, a row costs about a microsecond.
"""

import math
from typing import NamedTuple

import numpy as np

from covfefe.compiled import compiled, largest

GREEDY_BELOW = 1e-3  # a temperature below this is greedy (dividing by it could overflow)


@compiled
def _draw_row(row, uniform, temperature, top_k, top_p, scaled, cumulative):
    """Draw one symbol from ``row`` (float64 log-probabilities up to a constant, -inf for a
    symbol that may not be written) with ``uniform``; return it and its log-probability under
    the untempered distribution. ``scaled`` and ``cumulative`` are scratch, as long as the
    row."""
    size = row.shape[0]
    top = largest(row)
    total = 0.0
    for s in range(size):
        total += math.exp(row[s] - top)
    log_z = top + math.log(total)
    if temperature < GREEDY_BELOW:  # the limit as the temperature goes to 0
        for s in range(size):
            scaled[s] = 0.0 if row[s] >= top else -np.inf
    else:
        for s in range(size):
            scaled[s] = row[s] / temperature
    k = top_k
    if 0 < k < size:
        threshold = np.sort(scaled)[size - k]
        for s in range(size):
            if scaled[s] < threshold:
                scaled[s] = -np.inf
    if top_p < 1.0:
        order = np.argsort(-scaled)
        best = scaled[order[0]]
        mass = 0.0
        for s in range(size):
            mass += math.exp(scaled[order[s]] - best)
        log_mass = math.log(mass)
        before = 0.0  # the mass of the symbols strictly likelier than the current group
        start = 0
        while start < size:
            value = scaled[order[start]]
            stop = start
            keep = before < top_p
            group = 0.0
            while stop < size and scaled[order[stop]] == value:
                group += math.exp(value - best - log_mass)
                stop += 1
            if not keep:
                for s in range(start, stop):
                    scaled[order[s]] = -np.inf
            before += group
            start = stop
    best = largest(scaled)
    running = 0.0
    for s in range(size):
        running += math.exp(scaled[s] - best)
        cumulative[s] = running
    draw = uniform * running
    symbol = 0
    for s in range(size):
        if cumulative[s] < draw:
            symbol += 1
    symbol = min(symbol, size - 1)
    return symbol, row[symbol] - log_z


@compiled
def _draw(logits, uniforms, temperature, top_k, top_p, symbols, log_probs):
    rows, size = logits.shape
    scaled = np.empty(size)
    cumulative = np.empty(size)
    for r in range(rows):
        symbols[r], log_probs[r] = _draw_row(logits[r], uniforms[r], temperature[r], top_k[r],
                                             top_p[r], scaled, cumulative)


class Draw(NamedTuple):
    """The serving engine's drawing rows (`covfefe.serving.engine`), one entry per row of the
    batch: what `draw_and_record` reads and writes. ``index``: the rows that draw this step;
    ``banned``: the symbols never drawn; ``uniforms[r, i]``: row ``r``'s uniform for its
    ``i``-th symbol; ``end``: the end symbol; ``limit``: the symbols a row may write;
    ``length``, ``history``, ``log_prob``: what it has written so far, and its
    log-probability; ``ending``: set when a row ends."""

    index: np.ndarray
    banned: np.ndarray
    uniforms: np.ndarray
    temperature: np.ndarray
    top_k: np.ndarray
    top_p: np.ndarray
    end: int
    limit: np.ndarray
    length: np.ndarray
    history: np.ndarray
    log_prob: np.ndarray
    ending: np.ndarray


@compiled
def draw_and_record(logits, index, draw, ids):
    """One step of the serving engine's drawing rows, in one call: each row ``r`` of ``index``
    (``draw.index``, or those of its rows still going) draws from ``logits[r]`` (any float
    type; ``draw.banned`` symbols set to -inf, in float64 as `draw_rows` takes them) with the
    uniform of its position (``draw.uniforms[r, draw.length[r]]``), as `draw_rows` does; the
    symbol is written into ``draw.history[r, draw.length[r]]`` and ``ids[r]``, its
    log-probability added to ``draw.log_prob[r]``, ``draw.length[r]`` counted on, and
    ``draw.ending[r]`` set where the symbol is ``draw.end`` or the row has reached
    ``draw.limit[r]``. Rows are independent, as in `_draw`."""
    size = logits.shape[1]
    row = np.empty(size)
    scaled = np.empty(size)
    cumulative = np.empty(size)
    for r in index:
        for s in range(size):
            row[s] = logits[r, s]
        for s in draw.banned:
            row[s] = -np.inf
        position = draw.length[r]
        symbol, symbol_log_prob = _draw_row(row, draw.uniforms[r, position],
                                            draw.temperature[r], draw.top_k[r], draw.top_p[r],
                                            scaled, cumulative)
        draw.history[r, position] = symbol
        ids[r] = symbol
        draw.log_prob[r] += symbol_log_prob
        draw.length[r] = position + 1
        draw.ending[r] = symbol == draw.end or position + 1 == draw.limit[r]


@compiled
def _target_log_probs(logits, targets, banned, out):
    """Write into ``out[r]`` the log-probability of ``targets[r]`` under row ``r`` of
    ``logits`` with the ``banned`` symbols set to -inf, normalised as `_draw_row` normalises
    (at temperature 1, top-k 0, top-p 1: what it draws from)."""
    rows, size = logits.shape
    row = np.empty(size)
    for r in range(rows):
        for s in range(size):
            row[s] = logits[r, s]
        for s in banned:
            row[s] = -np.inf
        top = largest(row)
        total = 0.0
        for s in range(size):
            total += math.exp(row[s] - top)
        out[r] = row[targets[r]] - (top + math.log(total))


def target_log_probs(logits: np.ndarray, targets: np.ndarray, banned: np.ndarray
                     ) -> np.ndarray:
    """Return the log-probability of each row's target symbol in the distribution the sampler
    draws from at temperature 1 and top-p 1 (``banned`` symbols excluded): what
    `covfefe evaluate` scores, by the same arithmetic as a draw's log-probability."""
    logits = np.ascontiguousarray(logits, dtype=np.float64)
    out = np.empty(logits.shape[0])
    _target_log_probs(logits, np.ascontiguousarray(targets, dtype=np.int64),
                      np.ascontiguousarray(banned, dtype=np.int64), out)
    return out


def draw_rows(logits: np.ndarray, uniforms: np.ndarray, temperature, top_k=0, top_p=1.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Draw one symbol per row of ``logits`` (log-probabilities up to a constant per row;
    -inf for a symbol that may not be written) from ``uniforms[i]`` in [0, 1), row ``i`` with
    its own temperature, top-k (0: all) and top-p (1: all), each a scalar or one per row.
    Returns the symbols and their log-probabilities under the untempered distribution."""
    logits = np.ascontiguousarray(logits, dtype=np.float64)
    rows = logits.shape[0]
    symbols = np.empty(rows, dtype=np.int64)
    log_probs = np.empty(rows)
    _draw(logits, _per_row(uniforms, rows, np.float64), _per_row(temperature, rows, np.float64),
          _per_row(top_k, rows, np.int64), _per_row(top_p, rows, np.float64), symbols, log_probs)
    return symbols, log_probs


def _per_row(value, rows: int, dtype) -> np.ndarray:
    """``value`` as one contiguous entry per row (a scalar is repeated)."""
    if np.ndim(value) == 0:
        return np.full(rows, value, dtype=dtype)
    return np.ascontiguousarray(value, dtype=dtype).reshape(rows)


def sample_rows(logits: np.ndarray, uniforms: np.ndarray, temperature, top_k=0,
                top_p=1.0) -> np.ndarray:
    """The symbols of `draw_rows` alone."""
    return draw_rows(logits, uniforms, temperature, top_k, top_p)[0]

"""The served model's step in one compiled call.

What the server steps is a stack of parts, each with the generator's step interface: the
network in 16-bit fixed point (`covfefe.inference.numpy_network`, LSTM layers), mixed with the
n-gram
table (`covfefe.lm.mixture.MixedModel`), under the lexicon (`covfefe.lm.lexicon.LexiconConstraint`).
Each part's arithmetic is already a compiled kernel, but going from one to the next through
Python (wrapper methods, argument checks, new arrays, numba's dispatch for each of a dozen
kernels) cost 50-60 us a step (`python bench/generate.py`: one row 152-162 us part by part,
102-106 in one call; 16 rows 885-1099 against 814-878), and under load more: each kernel call
gives up the GIL and must take it back from the request threads.

`FusedStep` calls the same kernels, in the same order on the same arrays, from one compiled
function (`_step`), so a step's numbers are those of the parts stepped one by one, bit for bit
(tested); the state keeps the stack's nested shape, so the engine's row bookkeeping and
`TweetGenerator` use it unchanged. For the serving engine, `FusedStep.step_and_draw` also
draws, and takes up to several steps in the one call (`covfefe.serving.engine.STEPS`). `fuse` gives
a
stack of that shape its `FusedStep` (`TweetGenerator.from_artifact` calls it); any other
(GRU layers, float32, no table or no lexicon) keeps stepping part by part.
"""

import numpy as np

from covfefe.compiled import compiled
from covfefe.inference.fixedpoint import COLUMNS, _sums, _to_float, lstm_layers
from covfefe.inference.numpy_network import NumpyNetwork
from covfefe.inference.parallel import Helper, count
from covfefe.inference.sampling import draw_and_record
from covfefe.lm.lexicon import LexiconConstraint, _advance_and_penalise
from covfefe.lm.mixture import MixedModel, _mix
from covfefe.lm.ngram import KneserNeyModel, _step_probs

# Rows from which the engine's step is split in two halves stepped side by side (with a
# helper thread): from about 4 rows a step costs about the same per row, so two halves of 2
# take about as long as 2 rows alone (bench/generate.py).
SPLIT_ROWS = 4
# The ``begun`` count of a `_steps_and_draw` call that no helper thread waits on (counted, never
# read: any thread may count it).
_UNWATCHED = np.zeros(1, dtype=np.int64)


@compiled
def _step(ids, table, layouts, unscales, biases, hs, cs, hs_out, cs_out, dense_layout,
          dense_unscale, dense_bias, keys, cumulative, bounds, discounts, children, orphan_low,
          orphan_start, history, ranges, history_out, ranges_out, weight, nodes, nodes_out,
          kinds, offsets, labels, targets, handle, may_end, penalty, end_costs):
    """One step of the stack (network, n-gram table, mixture, word penalties): return the scores;
    the new state goes into the ``_out`` arrays."""
    rows, vocab_size = ids.shape[0], dense_bias.shape[1]
    # First: lstm_layers raises IndexError for a symbol outside the vocabulary.
    top = lstm_layers(ids, table, layouts, unscales, biases, hs, cs, hs_out, cs_out)
    sums = np.empty((rows, dense_layout.shape[0] * COLUMNS), dtype=np.int32)
    _sums(top.view(np.int32), dense_layout, sums)
    logits = np.empty((rows, vocab_size), dtype=np.float32)
    _to_float(sums, dense_unscale, dense_bias, logits)
    probs = np.empty((rows, vocab_size))
    _step_probs(keys, cumulative, bounds, discounts, children, orphan_low, orphan_start,
                history, ranges, ids, history_out, ranges_out, probs)
    mixed = np.empty((rows, vocab_size))
    _mix(logits, probs, weight, mixed)
    penalised = np.empty_like(mixed)
    _advance_and_penalise(nodes, ids, kinds, offsets, labels, targets, handle, may_end, penalty,
                          end_costs, mixed, nodes_out, penalised)
    return penalised


@compiled
def _steps_and_draw(ids, table, layouts, unscales, biases, hs, cs, hs_out, cs_out,
                    dense_layout, dense_unscale, dense_bias, keys, cumulative, bounds, discounts,
                    children, orphan_low, orphan_start, history, ranges, history_out,
                    ranges_out, weight, nodes, nodes_out, kinds, offsets, labels, targets,
                    handle, may_end, penalty, end_costs, index, banned, uniforms, temperature,
                    top_k, top_p, end, limit, length, written, log_prob, ending, most, begun):
    """``most`` times: `_step`, then `covfefe.inference.sampling.draw_and_record` for the rows
    ``index`` (which writes each drawn symbol into ``ids``, the next step's input) that have
    not ended: a row that ends (``ending``) writes nothing more, its steps after that are
    thrown away; once every row of ``index`` has ended (with ``most`` above 1, when every row
    draws: all of them), the steps stop. The state and the ``_out`` arrays take turns holding
    the state. Return the steps taken and the state after them. ``begun[0]`` is counted at
    once: a `covfefe.inference.parallel.Helper` thread's signal that it has begun (and given up the
    GIL)."""
    count(begun)
    live = index
    steps = 0
    while steps < most:
        masked = _step(ids, table, layouts, unscales, biases, hs, cs, hs_out, cs_out,
                       dense_layout, dense_unscale, dense_bias, keys, cumulative, bounds,
                       discounts, children, orphan_low, orphan_start, history, ranges,
                       history_out, ranges_out, weight, nodes, nodes_out, kinds, offsets,
                       labels, targets, handle, may_end, penalty, end_costs)
        draw_and_record(masked, live, banned, uniforms, temperature, top_k, top_p, end, limit,
                        length, written, log_prob, ids, ending)
        hs, hs_out = hs_out, hs
        cs, cs_out = cs_out, cs
        history, history_out = history_out, history
        ranges, ranges_out = ranges_out, ranges
        nodes, nodes_out = nodes_out, nodes
        steps += 1
        if ending[live].any():
            live = live[~ending[live]]
            if live.size == 0:
                break
    return steps, hs, cs, history, ranges, nodes


class FusedStep:
    """``step(ids, state)`` of a `LexiconConstraint` over a `MixedModel` of a fixed-point
    LSTM `NumpyNetwork` and a `KneserNeyModel`, in one compiled call (see the module)."""

    def __init__(self, constraint):
        mixed = constraint.model
        network, ngram = mixed.network, mixed.ngram
        self._network = network._lstm  # the arguments of lstm_layers before the state
        dense = network._dense
        self._dense = (dense.layout, dense.unscale,
                       np.ascontiguousarray(np.atleast_2d(network.dense_bias), np.float32))
        self._ngram = (ngram.keys, ngram.cumulative, ngram.bounds, ngram.discounts,
                       *ngram._step_links())
        self._weight = float(mixed.weight)
        self._lexicon = constraint.tables

    def __call__(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        hs, cs, history, ranges, nodes = self._unpack(state)
        out = self._fresh(hs, cs, history, ranges, nodes)
        masked = _step(np.ascontiguousarray(ids, dtype=np.int64), *self._network, hs, cs,
                       out[0], out[1], *self._dense, *self._ngram, history, ranges, out[2],
                       out[3], self._weight, nodes, out[4], *self._lexicon)
        return masked, self._pack(*out)

    def step_and_draw(self, ids: np.ndarray, state: list, *draw, most: int = 1,
                      helper: Helper | None = None) -> tuple[int, list]:
        """Step, then draw as `covfefe.inference.sampling.draw_and_record` does with the arguments
        ``draw`` (``index`` to ``ending``; the symbols drawn go into ``ids``, the next step's
        input: int64, contiguous), up to ``most`` times in one call (the serving engine's
        step): a row that ends draws no more, and the steps stop once all have ended. Return
        the steps taken and the new state; the arrays of ``state`` are reused (their contents
        are lost). A row's ``length`` (in ``draw``) tells how far it went.

        With a ``helper`` (`covfefe.inference.parallel.Helper`) and at least `SPLIT_ROWS` rows, the
        two
        halves of the rows are stepped side by side, each in its own thread. Rows are
        independent, so each row's numbers are the same either way."""
        if ids.dtype != np.int64 or not ids.flags.c_contiguous:
            raise ValueError("step_and_draw writes the symbols drawn into ids: int64, contiguous")
        hs, cs, history, ranges, nodes = self._unpack(state)
        buffers = (hs, cs, history, ranges, nodes), self._fresh(hs, cs, history, ranges, nodes)
        rows = ids.shape[0]
        if helper is None or rows < SPLIT_ROWS:
            steps, *new = _steps_and_draw(*self._arguments(ids, buffers, draw, most), _UNWATCHED)
            return steps, self._pack(*new)
        halves = slice(0, rows // 2), slice(rows // 2, rows)
        first_half, second_half = (self._arguments(ids, buffers, draw, most, half)
                                   for half in halves)
        (first, *_), (second, *new) = helper.both(
            lambda: _steps_and_draw(*first_half, _UNWATCHED),
            lambda: _steps_and_draw(*second_half, helper.begun))
        # Each half's new state is in the first or second set of arrays, as its steps were
        # even or odd (they differ only where one half's rows all ended): bring the second
        # half's beside the first's.
        whole = buffers[first % 2]
        if first % 2 != second % 2:
            for target, leaf in zip(_leaves(whole), _leaves(new), strict=True):
                target[halves[1]] = leaf
        return max(first, second), self._pack(*whole)

    def _arguments(self, ids, buffers, draw, most, rows: slice | None = None) -> tuple:
        """The arguments of `_steps_and_draw` (but ``begun``): for every row, or for the rows
        ``rows`` alone (views of the same arrays)."""
        (hs, cs, history, ranges, nodes), out = buffers
        index, banned, *per_row = draw  # per_row: uniforms... ending, and the scalar ``end``
        if rows is not None:
            index = index[(index >= rows.start) & (index < rows.stop)] - rows.start
            per_row = [value if np.ndim(value) == 0 else value[rows] for value in per_row]
            ids, history, ranges, nodes = ids[rows], history[rows], ranges[rows], nodes[rows]
            hs, cs = tuple(h[rows] for h in hs), tuple(c[rows] for c in cs)
            out = (tuple(h[rows] for h in out[0]), tuple(c[rows] for c in out[1]),
                   *(array[rows] for array in out[2:]))
        return (ids, *self._network, hs, cs, out[0], out[1], *self._dense, *self._ngram, history,
                ranges, out[2], out[3], self._weight, nodes, out[4], *self._lexicon, index,
                banned, *per_row, most)

    @staticmethod
    def _unpack(state: list) -> tuple:
        (network_state, (history, ranges)), nodes = state
        return (tuple(np.ascontiguousarray(h) for h, _ in network_state),
                tuple(np.ascontiguousarray(c) for _, c in network_state),
                np.ascontiguousarray(history), np.ascontiguousarray(ranges),
                np.ascontiguousarray(nodes, dtype=np.int64))

    @staticmethod
    def _fresh(hs, cs, history, ranges, nodes) -> tuple:
        return (tuple(np.empty_like(h) for h in hs), tuple(np.empty_like(c) for c in cs),
                np.empty_like(history), np.empty_like(ranges), np.empty_like(nodes))

    @staticmethod
    def _pack(hs, cs, history, ranges, nodes) -> list:
        return [[list(zip(hs, cs, strict=True)), [history, ranges]], nodes]


def _leaves(arrays) -> list[np.ndarray]:
    """The arrays of a state as `FusedStep._unpack` gives it, in order."""
    hs, cs, *rest = arrays
    return [*hs, *cs, *rest]


def fuse(model):
    """Give ``model`` its step in one compiled call (``model.fused``, a `FusedStep`) when it
    is a `LexiconConstraint` over a `MixedModel` of a fixed-point LSTM `NumpyNetwork` and a
    `KneserNeyModel`; return it."""
    mixed = getattr(model, "model", None)
    if (isinstance(model, LexiconConstraint) and isinstance(mixed, MixedModel)
            and type(mixed.network) is NumpyNetwork and mixed.network._fused
            and isinstance(mixed.ngram, KneserNeyModel)):
        model.fused = FusedStep(model)
    return model

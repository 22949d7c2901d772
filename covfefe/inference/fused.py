"""The served model's step in one compiled call.

What the server steps is a stack of parts, each with the generator's step interface: the
network in 16-bit fixed point (`covfefe.inference.numpy_network`, LSTM layers), mixed with the
n-gram table (`covfefe.lm.mixture.MixedModel`), under the lexicon
(`covfefe.lm.lexicon.LexiconConstraint`). Each part's arithmetic is already a compiled kernel,
but going from one to the next through Python (wrapper methods, argument checks, new arrays,
numba's dispatch for each of a dozen kernels) cost 50-60 us a step (`python bench/generate.py`:
one row 152-162 us part by part, 102-106 in one call; 16 rows 885-1099 against 814-878), and
under load more: each kernel call gives up the GIL and must take it back from the request
threads.

`FusedStep` calls the same kernels, in the same order on the same arrays, from one compiled
function (`_step`), so a step's numbers are those of the parts stepped one by one, bit for bit
(tested); the state keeps the stack's nested shape, so the engine's row bookkeeping and
`TweetGenerator` use it unchanged. For the serving engine, `FusedStep.step_and_draw` also
draws, and takes up to several steps in the one call (`covfefe.serving.engine.STEPS`). `fuse`
gives a stack of that shape its `FusedStep` (`TweetGenerator.from_artifact` calls it); any
other (GRU layers, float32, no table or no lexicon) keeps stepping part by part.

The compiled functions take their arrays in named tuples (numba compiles them as it does plain
tuples): `Stack` for what the step reads, `State` for what it carries from one step to the
next, `covfefe.inference.sampling.Draw` for the rows' drawing.
"""

from typing import NamedTuple

import numpy as np

from covfefe.compiled import compiled
from covfefe.inference.fixedpoint import COLUMNS, LstmStack, lstm_layers, sums_into, to_float_into
from covfefe.inference.numpy_network import NumpyNetwork
from covfefe.inference.sampling import Draw, draw_and_record
from covfefe.lm.lexicon import LexiconConstraint, WordTables, advance_and_penalise
from covfefe.lm.mixture import MixedModel, mix_into
from covfefe.lm.ngram import KneserNeyModel, StepTable, step_probs_into


class Stack(NamedTuple):
    """What a step of the stack reads: the network's layers (`covfefe.inference.fixedpoint.
    LstmStack`) and its output layer, the n-gram table (`covfefe.lm.ngram.StepTable`), the
    network's weight in the mixture and the lexicon's (`covfefe.lm.lexicon.WordTables`)."""

    layers: LstmStack
    dense_layout: np.ndarray
    dense_unscale: np.ndarray
    dense_bias: np.ndarray
    table: StepTable
    weight: float
    lexicon: WordTables


class State(NamedTuple):
    """What a step carries to the next, one row per sequence: each LSTM layer's ``h`` and
    ``c``, the n-gram history and its ranges, and the lexicon's ``[node, characters written]``."""

    hs: tuple
    cs: tuple
    history: np.ndarray
    ranges: np.ndarray
    nodes: np.ndarray


@compiled
def _step(ids, stack, state, out):
    """One step of the stack (network, n-gram table, mixture, word penalties): return the scores;
    the new state goes into ``out`` (a `State` of arrays as large)."""
    rows, vocab_size = ids.shape[0], stack.dense_bias.shape[1]
    # First: lstm_layers raises IndexError for a symbol outside the vocabulary.
    top = lstm_layers(ids, stack.layers, state.hs, state.cs, out.hs, out.cs)
    sums = np.empty((rows, stack.dense_layout.shape[0] * COLUMNS), dtype=np.int32)
    sums_into(top.view(np.int32), stack.dense_layout, sums)
    logits = np.empty((rows, vocab_size), dtype=np.float32)
    to_float_into(sums, stack.dense_unscale, stack.dense_bias, logits)
    probs = np.empty((rows, vocab_size))
    step_probs_into(stack.table, state.history, state.ranges, ids, out.history, out.ranges,
                    probs)
    mixed = np.empty((rows, vocab_size))
    mix_into(logits, probs, stack.weight, mixed)
    penalised = np.empty_like(mixed)
    advance_and_penalise(state.nodes, ids, stack.lexicon, mixed, out.nodes, penalised)
    return penalised


@compiled
def _steps_and_draw(ids, stack, state, out, draw, most):
    """``most`` times: `_step`, then `covfefe.inference.sampling.draw_and_record` for the rows
    ``draw.index`` (which writes each drawn symbol into ``ids``, the next step's input) that
    have not ended: a row that ends (``draw.ending``) writes nothing more, its steps after that
    are thrown away; once every row of ``draw.index`` has ended (with ``most`` above 1, when
    every row draws: all of them), the steps stop. ``state`` and ``out`` take turns holding
    the state. Return the steps taken and the state after them."""
    live = draw.index
    steps = 0
    while steps < most:
        masked = _step(ids, stack, state, out)
        draw_and_record(masked, live, draw, ids)
        state, out = out, state
        steps += 1
        if draw.ending[live].any():
            live = live[~draw.ending[live]]
            if live.size == 0:
                break
    return steps, state


class FusedStep:
    """``step(ids, state)`` of a `LexiconConstraint` over a `MixedModel` of a fixed-point
    LSTM `NumpyNetwork` and a `KneserNeyModel`, in one compiled call (see the module)."""

    def __init__(self, constraint):
        mixed = constraint.model
        network, ngram = mixed.network, mixed.ngram
        dense = network.dense_matrix
        self.stack = Stack(network.lstm_stack, dense.layout, dense.unscale,
                           np.ascontiguousarray(np.atleast_2d(network.dense_bias), np.float32),
                           ngram.step_table(), float(mixed.weight), constraint.tables)

    def __call__(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        state = self._unpack(state)
        out = self._fresh(state)
        masked = _step(np.ascontiguousarray(ids, dtype=np.int64), self.stack, state, out)
        return masked, self._pack(out)

    def step_and_draw(self, ids: np.ndarray, state: list, draw: Draw,
                      most: int = 1) -> tuple[int, list]:
        """Step, then draw as `covfefe.inference.sampling.draw_and_record` does with ``draw``
        (the symbols drawn go into ``ids``, the next step's input: int64, contiguous), up to
        ``most`` times in one call (the serving engine's step): a row that ends draws no more,
        and the steps stop once all have ended. Return the steps taken and the new state; the
        arrays of ``state`` are reused (their contents are lost). A row's ``draw.length`` tells
        how far it went."""
        if ids.dtype != np.int64 or not ids.flags.c_contiguous:
            raise ValueError("step_and_draw writes the symbols drawn into ids: int64, contiguous")
        state = self._unpack(state)
        steps, new = _steps_and_draw(ids, self.stack, state, self._fresh(state), draw, most)
        return steps, self._pack(new)

    @staticmethod
    def _unpack(state: list) -> State:
        (network_state, (history, ranges)), nodes = state
        return State(tuple(np.ascontiguousarray(h) for h, _ in network_state),
                     tuple(np.ascontiguousarray(c) for _, c in network_state),
                     np.ascontiguousarray(history), np.ascontiguousarray(ranges),
                     np.ascontiguousarray(nodes, dtype=np.int64))

    @staticmethod
    def _fresh(state: State) -> State:
        return State(tuple(np.empty_like(h) for h in state.hs),
                     tuple(np.empty_like(c) for c in state.cs), np.empty_like(state.history),
                     np.empty_like(state.ranges), np.empty_like(state.nodes))

    @staticmethod
    def _pack(state: State) -> list:
        return [[list(zip(state.hs, state.cs, strict=True)), [state.history, state.ranges]],
                state.nodes]


def fuse(model):
    """Give ``model`` its step in one compiled call (``model.fused``, a `FusedStep`) when it
    is a `LexiconConstraint` over a `MixedModel` of a fixed-point LSTM `NumpyNetwork` and a
    `KneserNeyModel`; return it."""
    mixed = getattr(model, "model", None)
    if (isinstance(model, LexiconConstraint) and isinstance(mixed, MixedModel)
            and type(mixed.network) is NumpyNetwork and mixed.network.lstm_stack is not None
            and isinstance(mixed.ngram, KneserNeyModel)):
        model.fused = FusedStep(model)
    return model

"""The trained network's inference path in plain NumPy, `NumpyNetwork`: what generation runs on.

`covfefe.inference.artifact` writes its weights (``weights.npz``) beside the Keras model when it
exports
one, and `covfefe.inference.generate` runs it one character at a time; neither needs TensorFlow.
Its own
module, below both, so that the artifact and the generator do not import each other.
"""

import numpy as np

from covfefe.errors import UserError
from covfefe.inference.fixedpoint import FixedMatrix, LstmStack, lstm_layers, quantize
from covfefe.inference.rowwise import lstm_cell, matmul

PRECISIONS = ("int16", "float32")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # the same function, without overflow warnings


def _as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


class _Float32Matrix:
    """A weight matrix used as it is: float32 products in a fixed order
    (`covfefe.inference.rowwise`)."""

    def __init__(self, w: np.ndarray):
        self.w = np.ascontiguousarray(w, dtype=np.float32)

    def product(self, x: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        return matmul(x, self.w, start)


class NumpyNetwork:
    """The trained network's inference path in NumPy: embedding, recurrent cells, logits.

    ``precision="int16"`` (the default, what is served) multiplies the hidden states by the
    weights in 16-bit fixed point (`covfefe.inference.fixedpoint`): exact integer sums, 2-3x faster
    on a
    batch and half the bytes per step. ``"float32"`` keeps Keras's arithmetic
    (`covfefe.inference.rowwise`)
    and is the reference the tests compare with. Both give a row the same numbers alone and in
    any batch."""

    def __init__(self, embedding: np.ndarray, cells: list[tuple[str, list[np.ndarray]]],
                 dense: tuple[np.ndarray, np.ndarray], precision: str = "int16"):
        if precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, "
                            f"not {precision!r}")
        self.embedding = embedding
        self.cells = cells
        self.dense_kernel, self.dense_bias = dense
        self.precision = precision
        self._matrix = FixedMatrix if precision == "int16" else _Float32Matrix
        self._inputs = quantize if precision == "int16" else _as_float32
        self._plan = self._compile()
        self.dense_matrix = self._matrix(self.dense_kernel)  # a FixedMatrix in int16
        # In 16-bit fixed point, LSTM layers of an even width step in one compiled call
        # (`covfefe.inference.fixedpoint.lstm_layers`) over this `LstmStack`; None otherwise.
        steps_in_one_call = precision == "int16" and all(
            kind == "lstm" and weights[1].shape[0] % 2 == 0 for kind, weights in cells)
        self.lstm_stack = self._lstm_stack() if steps_in_one_call else None

    def _compile(self) -> list[tuple]:
        """Rearrange the weights for one step: the first cell's input projection becomes a
        table (one row per symbol, so embedding and kernel cost a lookup), and in the other
        LSTM cells the input and recurrent kernels are stacked so that one matrix product does
        both; fewer, larger products. Every product is row by row, exact in fixed point
        (covfefe.inference.fixedpoint) or in a fixed order in float32 (covfefe.inference.rowwise):
        a sequence's
        numbers depend neither on the other sequences of its batch nor on BLAS's threads."""
        plan = []
        matrix = self._matrix
        for index, (kind, (kernel, recurrent, bias)) in enumerate(self.cells):
            if kind == "lstm":
                if index == 0:
                    plan.append(("lstm", matmul(self.embedding, kernel, bias), matrix(recurrent),
                                 None))
                else:
                    plan.append(("lstm", None, matrix(np.vstack([kernel, recurrent])), bias))
            else:
                table = matmul(self.embedding, kernel, bias[0]) if index == 0 else None
                plan.append(("gru", table, (None if index == 0 else matrix(kernel),
                                            matrix(recurrent)), bias))
        return plan

    @classmethod
    def from_keras(cls, model, precision: str = "int16") -> "NumpyNetwork":
        """Copy the weights of a network built by `covfefe.training.model.build_model`."""
        cells = []
        for layer in model.layers:
            kind = type(layer).__name__.lower()
            if kind in ("lstm", "gru"):
                if kind == "gru" and not layer.reset_after:
                    raise UserError("GRU layers with reset_after=False are not supported")
                cells.append((kind, [np.asarray(w, dtype=np.float32)
                                     for w in layer.get_weights()]))
        embedding = np.asarray(model.get_layer("embedding").get_weights()[0], dtype=np.float32)
        kernel, bias = model.get_layer("logits").get_weights()
        return cls(embedding, cells, (np.asarray(kernel, np.float32), np.asarray(bias, np.float32)),
                   precision)

    def _lstm_stack(self) -> LstmStack:
        """The layers as `covfefe.inference.fixedpoint.lstm_layers` steps them."""
        plan = self._plan
        biases = tuple(np.ascontiguousarray(np.atleast_2d(
            np.zeros(plan[0][1].shape[1], np.float32) if bias is None else bias),
            dtype=np.float32) for _, _, _, bias in plan)
        return LstmStack(np.ascontiguousarray(plan[0][1], dtype=np.float32),
                         tuple(matrix.layout for _, _, matrix, _ in plan),
                         tuple(matrix.unscale for _, _, matrix, _ in plan), biases)

    def _lstm_step(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """`step` for LSTM layers in fixed point: the whole stack in one compiled call
        (`covfefe.inference.fixedpoint.lstm_layers`, which `covfefe.inference.fused` calls too),
        each layer one
        product and one pass that also quantizes its new ``h`` into the next product's inputs:
        the same numbers as the general path, with fewer passes and arrays."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)  # lstm_layers checks each symbol
        hs = tuple(np.ascontiguousarray(h, dtype=np.float32) for h, _ in state)
        cs = tuple(np.ascontiguousarray(c, dtype=np.float32) for _, c in state)
        hs_out, cs_out = tuple(np.empty_like(h) for h in hs), tuple(np.empty_like(c) for c in cs)
        top = lstm_layers(ids, self.lstm_stack, hs, cs, hs_out, cs_out)
        return (self.dense_matrix.product(top.view(np.int32), self.dense_bias),
                list(zip(hs_out, cs_out, strict=True)))

    def save(self, path) -> None:
        """Write the weights as one ``.npz`` file, which `load` reads without Keras."""
        arrays = {"embedding": self.embedding, "dense_kernel": self.dense_kernel,
                  "dense_bias": self.dense_bias,
                  "cells": np.array([kind for kind, _ in self.cells])}
        for index, (_, weights) in enumerate(self.cells):
            for number, weight in enumerate(weights):
                arrays[f"cell{index}_{number}"] = weight
        with open(path, "wb") as stream:
            np.savez(stream, **arrays)

    @classmethod
    def load(cls, path, precision: str = "int16") -> "NumpyNetwork":
        """Read weights written by `save`."""
        with np.load(path) as data:
            cells = []
            for index, kind in enumerate(data["cells"].tolist()):
                # LSTM and GRU layers both hold a kernel, a recurrent kernel and a bias.
                cells.append((kind, [data[f"cell{index}_{n}"] for n in range(3)]))
            return cls(data["embedding"], cells, (data["dense_kernel"], data["dense_bias"]),
                       precision)

    def initial_state(self, n: int) -> list[tuple[np.ndarray, ...]]:
        """Return the zero state of ``n`` sequences."""
        state = []
        for kind, weights in self.cells:
            units = weights[1].shape[0]
            zeros = np.zeros((n, units), dtype=np.float32)
            state.append((zeros, zeros.copy()) if kind == "lstm" else (zeros,))
        return state

    def step(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """Feed one symbol per sequence; return the next symbol's logits and the new state."""
        if self.lstm_stack is not None:
            return self._lstm_step(ids, state)
        x = None
        new_state = []
        for (kind, table, weights, bias), cell_state in zip(self._plan, state, strict=True):
            if kind == "lstm":
                h, c = cell_state
                # Row by row: a row's result must not depend on its batch.
                if table is not None:
                    z = weights.product(self._inputs(h), table[ids])
                else:
                    z = weights.product(self._inputs(np.concatenate([x, h], axis=-1)), bias)
                h, c = lstm_cell(z, c)  # compiled: gates i, f, g, o side by side
                new_state.append((h, c))
            else:
                kernel, recurrent = weights
                (h,) = cell_state
                x_in = (table[ids] if table is not None
                        else kernel.product(self._inputs(x), bias[0]))
                units = h.shape[-1]  # gates z, r, h side by side
                h_in = recurrent.product(self._inputs(h), bias[1])
                update_reset = _sigmoid(x_in[:, :2 * units] + h_in[:, :2 * units])
                z, r = update_reset[:, :units], update_reset[:, units:]
                h = z * h + (1 - z) * np.tanh(x_in[:, 2 * units:] + r * h_in[:, 2 * units:])
                new_state.append((h,))
            x = h
        return self.dense_matrix.product(self._inputs(x), self.dense_bias), new_state

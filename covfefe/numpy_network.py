"""The trained network's inference path in plain NumPy, `NumpyNetwork`: what generation runs on.

`covfefe.artifact` writes its weights (``weights.npz``) beside the Keras model when it exports
one, and `covfefe.generate` runs it one character at a time; neither needs TensorFlow. Its own
module, below both, so that the artifact and the generator do not import each other.
"""

import numpy as np

from covfefe.errors import UserError
from covfefe.rowwise import lstm_cell, matmul


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # the same function, without overflow warnings


class NumpyNetwork:
    """The trained network's inference path in NumPy: embedding, recurrent cells, logits."""

    def __init__(self, embedding: np.ndarray, cells: list[tuple[str, list[np.ndarray]]],
                 dense: tuple[np.ndarray, np.ndarray]):
        self.embedding = embedding
        self.cells = cells
        self.dense_kernel, self.dense_bias = dense
        self._plan = self._compile()

    def _compile(self) -> list[tuple]:
        """Rearrange the weights for one step: the first cell's input projection becomes a
        table (one row per symbol, so embedding and kernel cost a lookup), and in the other
        LSTM cells the input and recurrent kernels are stacked so that one matrix product does
        both. Same arithmetic as Keras; fewer, larger products. Every product is row by row
        in a fixed order (covfefe.rowwise): a sequence's numbers depend neither on the other
        sequences of its batch nor on how many threads BLAS has."""
        plan = []
        for index, (kind, (kernel, recurrent, bias)) in enumerate(self.cells):
            if kind == "lstm":
                if index == 0:
                    plan.append(("lstm", matmul(self.embedding, kernel, bias), recurrent, None))
                else:
                    plan.append(("lstm", None, np.vstack([kernel, recurrent]), bias))
            else:
                table = matmul(self.embedding, kernel, bias[0]) if index == 0 else None
                plan.append(("gru", table, (kernel, recurrent), bias))
        return plan

    @classmethod
    def from_keras(cls, model) -> "NumpyNetwork":
        """Copy the weights of a network built by `covfefe.model.build_model`."""
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
        return cls(embedding, cells, (np.asarray(kernel, np.float32), np.asarray(bias, np.float32)))

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
    def load(cls, path) -> "NumpyNetwork":
        """Read weights written by `save`."""
        with np.load(path) as data:
            cells = []
            for index, kind in enumerate(data["cells"].tolist()):
                # LSTM and GRU layers both hold a kernel, a recurrent kernel and a bias.
                cells.append((kind, [data[f"cell{index}_{n}"] for n in range(3)]))
            return cls(data["embedding"], cells, (data["dense_kernel"], data["dense_bias"]))

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
        x = None
        new_state = []
        for (kind, table, weights, bias), cell_state in zip(self._plan, state, strict=True):
            if kind == "lstm":
                h, c = cell_state
                # Row by row (covfefe.rowwise): a row's result must not depend on its batch.
                if table is not None:
                    z = matmul(h, weights, table[ids])
                else:
                    z = matmul(np.concatenate([x, h], axis=-1), weights, bias)
                h, c = lstm_cell(z, c)  # compiled: gates i, f, g, o side by side
                new_state.append((h, c))
            else:
                kernel, recurrent = weights
                (h,) = cell_state
                x_in = table[ids] if table is not None else matmul(x, kernel, bias[0])
                units = h.shape[-1]  # gates z, r, h side by side
                h_in = matmul(h, recurrent, bias[1])
                update_reset = _sigmoid(x_in[:, :2 * units] + h_in[:, :2 * units])
                z, r = update_reset[:, :units], update_reset[:, units:]
                h = z * h + (1 - z) * np.tanh(x_in[:, 2 * units:] + r * h_in[:, 2 * units:])
                new_state.append((h,))
            x = h
        return matmul(x, self.dense_kernel, self.dense_bias), new_state

"""16-bit fixed-point products (covfefe.inference.fixedpoint): exact sums, rows independent of the
batch,
no overflow at the extremes, and the precision the served network relies on."""

import numpy as np
import pytest

from covfefe.inference.fixedpoint import SCALE, FixedMatrix, quantize
from covfefe.inference.numpy_network import NumpyNetwork


def weights(depth: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.2, (depth, width)).astype(np.float32)


def states(rows: int, depth: int, seed: int = 1) -> np.ndarray:
    return np.tanh(np.random.default_rng(seed).normal(0, 1, (rows, depth))).astype(np.float32)


@pytest.mark.parametrize(("depth", "width"), [(768, 1536), (7, 21), (384, 86)])
def test_the_sums_are_the_exact_integer_sums(depth, width):
    w = weights(depth, width)
    matrix = FixedMatrix(w)
    x = quantize(states(11, depth))
    # What the layout holds, back as a plain matrix, and the inputs as plain integers.
    blocks, pairs, _ = matrix.layout.shape
    plain = (matrix.layout.reshape(blocks, pairs, 16, 2).transpose(1, 3, 0, 2)
             .reshape(pairs * 2, blocks * 16)[:depth, :width].astype(np.int64))
    inputs = x.view(np.int16)[:, :depth].astype(np.int64)
    exact = (inputs @ plain).astype(np.float32) * matrix.unscale
    np.testing.assert_array_equal(matrix.product(x), exact)


def test_a_row_gets_the_same_bits_alone_and_in_every_batch_size():
    matrix = FixedMatrix(weights(96, 48))
    x = quantize(states(9, 96))
    bias = np.linspace(-1, 1, 48, dtype=np.float32)
    together = matrix.product(x, bias)
    for rows in range(1, 10):  # blocks of four, two and one rows
        np.testing.assert_array_equal(matrix.product(x[:rows], bias), together[:rows])
    for row in range(9):
        np.testing.assert_array_equal(matrix.product(x[row:row + 1], bias), together[row:row + 1])


def test_the_largest_possible_sums_do_not_overflow():
    w = weights(768, 64)
    w[:, 0] = 3.0  # a column of large weights all of one sign
    w[:, 1] = -0.001  # and one of tiny ones
    matrix = FixedMatrix(w)
    # Every h at +-1 with the sign of its weight: each column's largest sum.
    for column in range(64):
        h = np.sign(w[:, column])[None, :].astype(np.float32)
        got = matrix.product(quantize(h))[0, column]
        exact = float(np.abs(w[:, column].astype(np.float64)).sum())
        assert got == pytest.approx(exact, rel=1e-3)


def test_products_are_within_what_the_rounding_allows():
    w = weights(768, 1536)
    h = states(16, 768)
    got = FixedMatrix(w).product(quantize(h))
    exact = h.astype(np.float64) @ w.astype(np.float64)
    error = np.abs(got - exact)
    # h is off by at most 0.5 / SCALE and each weight by half its column's unit.
    assert error.max() < 768 * (0.5 / SCALE) * np.abs(w).max() / 4
    assert np.sqrt((error ** 2).mean()) < 2e-3
    assert got.dtype == np.float32


def test_quantize_rounds_clips_and_pads_to_pairs():
    x = quantize(np.array([[0.5, -1.5, 1 / SCALE, 0.0, 0.3]], dtype=np.float32))
    assert x.dtype == np.int32 and x.shape == (1, 3)
    assert x.view(np.int16).tolist() == [[SCALE // 2, -SCALE, 1, 0, round(0.3 * SCALE), 0]]


def test_the_wrong_inputs_are_refused():
    matrix = FixedMatrix(weights(10, 16))
    with pytest.raises(ValueError, match="10 columns"):
        matrix.product(quantize(states(2, 12)))
    with pytest.raises(ValueError):
        matrix.product(states(2, 10))


def test_the_served_network_scores_like_the_float32_one(tiny_model):
    """On a trained model, 16-bit fixed point moves the log-probabilities very little."""
    from covfefe.lm.mixture import network_log_probs
    from covfefe.training.corpus import encode_tweets

    texts = ["Make America Great Again!", "The Fake News Media is working overtime today."]
    sequences = encode_tweets(texts, tiny_model.vocabulary, 280)
    served = NumpyNetwork.load(tiny_model.path / "weights.npz")
    reference = NumpyNetwork.load(tiny_model.path / "weights.npz", precision="float32")
    assert served.precision == "int16"
    a = network_log_probs(served, sequences)
    b = network_log_probs(reference, sequences)
    assert np.abs(a - b).max() < 1e-3
    assert abs(a.mean() - b.mean()) < 1e-4


def test_the_fused_lstm_step_gives_the_general_steps_numbers_bit_for_bit():
    """LSTM layers in fixed point take one pass per layer (product, gates, quantized h for the
    next layer); the general path (product, `lstm_cell`, `quantize`) is the reference."""
    rng = np.random.default_rng(3)
    units, vocab = 24, 30

    def lstm(inputs):
        return ("lstm", [rng.normal(0, 0.3, (inputs, 4 * units)).astype(np.float32),
                         rng.normal(0, 0.3, (units, 4 * units)).astype(np.float32),
                         rng.normal(0, 0.3, 4 * units).astype(np.float32)])

    parts = (rng.normal(0, 0.3, (vocab, 8)).astype(np.float32), [lstm(8), lstm(units)],
             (rng.normal(0, 0.3, (units, vocab)).astype(np.float32),
              rng.normal(0, 0.3, vocab).astype(np.float32)))
    fused, general = NumpyNetwork(*parts), NumpyNetwork(*parts)
    assert fused.lstm_stack is not None
    general.lstm_stack = None  # the general path: product, lstm_cell, quantize, layer by layer
    for rows in (1, 5):
        state_a, state_b = fused.initial_state(rows), general.initial_state(rows)
        for _ in range(12):
            ids = rng.integers(1, vocab, rows)
            logits_a, state_a = fused.step(ids, state_a)
            logits_b, state_b = general.step(ids, state_b)
            np.testing.assert_array_equal(logits_a, logits_b)
            for (h_a, c_a), (h_b, c_b) in zip(state_a, state_b, strict=True):
                np.testing.assert_array_equal(h_a, h_b)
                np.testing.assert_array_equal(c_a, c_b)

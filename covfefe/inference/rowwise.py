"""Matrix products whose rows do not depend on each other, bit for bit.

A BLAS ``x @ w`` sums each row's products in an order that depends on how many rows come
with it (OpenBLAS runs full blocks of rows through one kernel and the leftover rows through
others, and one row through a matrix-vector kernel), so the same row gives results a few units
in the last place apart alone and in a batch. Over a tweet's 140 recurrent steps that is
enough to change a drawn character now and then. The serving engine (`covfefe.serving.engine`) steps
the sequences of many requests together, and a request must get the same tweet there as
alone: these products fix the order. Every element is ``out + sum(x[k] * w[k])`` summed in
groups of eight ``k`` (a fixed tree within each group, the groups in order), with no fused
multiply-add, so a row's result is a function of that row and ``w`` alone, whatever the batch.

The kernel is compiled with numba: four rows at a time share each loaded row of ``w`` (as a
BLAS kernel would), and the products vectorise over the output columns.

`lstm_cell` is the rest of an LSTM step, compiled too: NumPy's ufuncs cost more than the
products themselves at small batches (each a pass over memory and a temporary). Its tanh is a
rational approximation (Eigen's and XLA's, within 4e-7 of the true value) built of only
multiplications, additions and one division, so it vectorises; the sigmoid is
``(tanh(x / 2) + 1) / 2``. Element by element, so rows stay independent here as well.
"""

import numpy as np

from covfefe.compiled import compiled

GROUP = 8  # products summed as one fixed tree before they are added to the total


@compiled
def _accumulate(x, w, out):
    """Add ``x @ w`` to ``out`` in place, row by row in a fixed order (see the module)."""
    rows, depth = x.shape
    width = w.shape[1]
    whole = depth - depth % 8
    i = 0
    while i + 4 <= rows:  # four rows share each loaded row of w
        o0, o1, o2, o3 = out[i], out[i + 1], out[i + 2], out[i + 3]
        for k in range(0, whole, 8):
            w0, w1, w2, w3 = w[k], w[k + 1], w[k + 2], w[k + 3]
            w4, w5, w6, w7 = w[k + 4], w[k + 5], w[k + 6], w[k + 7]
            a0, a1, a2, a3, a4, a5, a6, a7 = x[i, k:k + 8]
            b0, b1, b2, b3, b4, b5, b6, b7 = x[i + 1, k:k + 8]
            c0, c1, c2, c3, c4, c5, c6, c7 = x[i + 2, k:k + 8]
            d0, d1, d2, d3, d4, d5, d6, d7 = x[i + 3, k:k + 8]
            for j in range(width):
                v0, v1, v2, v3 = w0[j], w1[j], w2[j], w3[j]
                v4, v5, v6, v7 = w4[j], w5[j], w6[j], w7[j]
                o0[j] += (((a0 * v0 + a1 * v1) + (a2 * v2 + a3 * v3))
                          + ((a4 * v4 + a5 * v5) + (a6 * v6 + a7 * v7)))
                o1[j] += (((b0 * v0 + b1 * v1) + (b2 * v2 + b3 * v3))
                          + ((b4 * v4 + b5 * v5) + (b6 * v6 + b7 * v7)))
                o2[j] += (((c0 * v0 + c1 * v1) + (c2 * v2 + c3 * v3))
                          + ((c4 * v4 + c5 * v5) + (c6 * v6 + c7 * v7)))
                o3[j] += (((d0 * v0 + d1 * v1) + (d2 * v2 + d3 * v3))
                          + ((d4 * v4 + d5 * v5) + (d6 * v6 + d7 * v7)))
        i += 4
    first_single = i
    for i in range(first_single, rows):  # the last rows, one at a time: the same sums
        o0 = out[i]
        for k in range(0, whole, 8):
            w0, w1, w2, w3 = w[k], w[k + 1], w[k + 2], w[k + 3]
            w4, w5, w6, w7 = w[k + 4], w[k + 5], w[k + 6], w[k + 7]
            a0, a1, a2, a3, a4, a5, a6, a7 = x[i, k:k + 8]
            for j in range(width):
                o0[j] += (((a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j]))
                          + ((a4 * w4[j] + a5 * w5[j]) + (a6 * w6[j] + a7 * w7[j])))
    for i in range(rows):  # the depth beyond a multiple of eight, one product at a time
        o0 = out[i]
        for k in range(whole, depth):
            a0 = x[i, k]
            w0 = w[k]
            for j in range(width):
                o0[j] += a0 * w0[j]


def matmul(x: np.ndarray, w: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Return ``start + x @ w`` (float32) with each row independent of the others, bit for bit.
    ``start`` is one row (broadcast, e.g. a bias) or one row per row of ``x``; None is zero."""
    out = np.empty((x.shape[0], w.shape[1]), dtype=np.float32)  # C order, as the kernel's
    out[...] = 0.0 if start is None else start
    _accumulate(np.ascontiguousarray(x, dtype=np.float32),
                np.ascontiguousarray(w, dtype=np.float32), out)
    return out


@compiled(inline=True)
def _tanh(a):
    """tanh of a float32 as a rational function of it (clamped where tanh is 1 in float32)."""
    limit = np.float32(7.90531110763549805)
    x = min(max(a, -limit), limit)
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return a if abs(a) < np.float32(0.0004) else x * p / q


@compiled(inline=True)
def lstm_unit(zi, zf, zg, zo, c):
    """One LSTM unit from its four gate pre-activations and cell state: the new ``(h, c)``,
    for a kernel to call (float32 throughout)."""
    half, one = np.float32(0.5), np.float32(1.0)
    i = half * (_tanh(half * zi) + one)
    f = half * (_tanh(half * zf) + one)
    g = _tanh(zg)
    o = half * (_tanh(half * zo) + one)
    new = f * c + i * g
    return o * _tanh(new), new


@compiled
def _lstm_cell(z, c, h_out, c_out):
    rows, units = c.shape
    for r in range(rows):
        zr, cr, h_row, c_row = z[r], c[r], h_out[r], c_out[r]
        for j in range(units):
            h_row[j], c_row[j] = lstm_unit(zr[j], zr[units + j], zr[2 * units + j],
                                           zr[3 * units + j], cr[j])


def lstm_cell(z: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the new ``(h, c)`` of an LSTM from its gate pre-activations ``z`` (i, f, g, o
    side by side, as Keras orders them) and its cell state ``c`` (float32, one row each)."""
    h_out = np.empty_like(c, dtype=np.float32)
    c_out = np.empty_like(h_out)
    _lstm_cell(np.ascontiguousarray(z, dtype=np.float32),
               np.ascontiguousarray(c, dtype=np.float32), h_out, c_out)
    return h_out, c_out

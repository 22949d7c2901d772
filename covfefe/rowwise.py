"""Matrix products whose rows do not depend on each other, bit for bit.

A BLAS ``x @ w`` sums each row's products in an order that depends on how many rows come
with it (OpenBLAS runs full blocks of rows through one kernel and the leftover rows through
others, and one row through a matrix-vector kernel), so the same row gives results a few units
in the last place apart alone and in a batch. Over a tweet's 140 recurrent steps that is
enough to change a drawn character now and then. The serving engine (`covfefe.engine`) steps
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

ROWS = 4  # rows per pass of the kernel (a batch's last two or three are padded to four)
COLUMNS = 12  # output columns per pass of the one-row kernel; weights are padded to these


@compiled(fastmath={"reassoc", "nsz", "contract"})
def _accumulate(x, wt, out):
    """Add ``x @ wt.T`` to ``out`` in place, four rows and three columns at a time (see the
    module); ``x`` has a multiple of four rows."""
    rows, depth = x.shape
    width = wt.shape[0]
    wide = width - width % 3
    for i in range(0, rows, 4):
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        for j in range(0, wide, 3):
            w0, w1, w2 = wt[j], wt[j + 1], wt[j + 2]
            s00 = s01 = s02 = s10 = s11 = s12 = np.float32(0.0)
            s20 = s21 = s22 = s30 = s31 = s32 = np.float32(0.0)
            for k in range(depth):
                s00 += x0[k] * w0[k]
                s01 += x0[k] * w1[k]
                s02 += x0[k] * w2[k]
                s10 += x1[k] * w0[k]
                s11 += x1[k] * w1[k]
                s12 += x1[k] * w2[k]
                s20 += x2[k] * w0[k]
                s21 += x2[k] * w1[k]
                s22 += x2[k] * w2[k]
                s30 += x3[k] * w0[k]
                s31 += x3[k] * w1[k]
                s32 += x3[k] * w2[k]
            out[i, j] += s00
            out[i, j + 1] += s01
            out[i, j + 2] += s02
            out[i + 1, j] += s10
            out[i + 1, j + 1] += s11
            out[i + 1, j + 2] += s12
            out[i + 2, j] += s20
            out[i + 2, j + 1] += s21
            out[i + 2, j + 2] += s22
            out[i + 3, j] += s30
            out[i + 3, j + 1] += s31
            out[i + 3, j + 2] += s32
        for j in range(wide, width):  # the last columns, one at a time
            w0 = wt[j]
            s00 = s10 = s20 = s30 = np.float32(0.0)
            for k in range(depth):
                s00 += x0[k] * w0[k]
                s10 += x1[k] * w0[k]
                s20 += x2[k] * w0[k]
                s30 += x3[k] * w0[k]
            out[i, j] += s00
            out[i + 1, j] += s10
            out[i + 2, j] += s20
            out[i + 3, j] += s30


@compiled(fastmath={"reassoc", "nsz", "contract"})
def _accumulate_row(x0, wt, out):
    """Add ``wt @ x0`` to the row ``out``, twelve columns at a time: the same sum per element
    as `_accumulate` (twelve running sums in the loop, as there), for a row alone."""
    depth = x0.shape[0]
    width = wt.shape[0]
    for j in range(0, width, 12):
        w0, w1, w2, w3, w4, w5 = wt[j], wt[j + 1], wt[j + 2], wt[j + 3], wt[j + 4], wt[j + 5]
        w6, w7, w8, w9 = wt[j + 6], wt[j + 7], wt[j + 8], wt[j + 9]
        w10, w11 = wt[j + 10], wt[j + 11]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = s9 = s10 = s11 = np.float32(0.0)
        for k in range(depth):
            a = x0[k]
            s0 += a * w0[k]
            s1 += a * w1[k]
            s2 += a * w2[k]
            s3 += a * w3[k]
            s4 += a * w4[k]
            s5 += a * w5[k]
            s6 += a * w6[k]
            s7 += a * w7[k]
            s8 += a * w8[k]
            s9 += a * w9[k]
            s10 += a * w10[k]
            s11 += a * w11[k]
        out[j] += s0
        out[j + 1] += s1
        out[j + 2] += s2
        out[j + 3] += s3
        out[j + 4] += s4
        out[j + 5] += s5
        out[j + 6] += s6
        out[j + 7] += s7
        out[j + 8] += s8
        out[j + 9] += s9
        out[j + 10] += s10
        out[j + 11] += s11


class Weights:
    """A weight matrix ``w`` (``[depth, width]``) as `matmul` reads it, made once when a
    network is loaded: transposed (each output column's weights side by side), with columns of
    zeros up to a multiple of twelve (so both kernels run whole passes)."""

    def __init__(self, w: np.ndarray):
        self.shape = w.shape
        depth, width = w.shape
        self.transposed = np.zeros((-(-width // COLUMNS) * COLUMNS, depth), dtype=np.float32)
        self.transposed[:width] = np.asarray(w, dtype=np.float32).T


def matmul(x: np.ndarray, w, start: np.ndarray | None = None) -> np.ndarray:
    """Return ``start + x @ w`` (float32, C order) with each row independent of the others,
    bit for bit. ``w`` is a matrix or its `Weights`; ``start`` is one row (broadcast, e.g. a
    bias) or one row per row of ``x``; None is zero."""
    if not isinstance(w, Weights):
        w = Weights(w)
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows = x.shape[0]
    depth, width = w.shape
    columns = w.transposed.shape[0]
    whole = rows - rows % ROWS  # rows in passes of four
    tail = rows - whole
    out = np.zeros((rows if tail < 2 else whole + ROWS, columns), dtype=np.float32)
    if start is not None:
        out[:rows, :width] = start
    if whole:
        _accumulate(x[:whole], w.transposed, out[:whole])
    if tail == 1:  # a row alone (or the last one): its own kernel, the same sums
        _accumulate_row(x[whole], w.transposed, out[whole])
    elif tail:  # two or three: rows of zeros make up a pass
        last = np.zeros((ROWS, depth), dtype=np.float32)
        last[:tail] = x[whole:]
        _accumulate(last, w.transposed, out[whole:])
    out = out[:rows, :width]
    return out if columns == width else np.ascontiguousarray(out)


@compiled
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


@compiled
def _lstm_cell(z, c, h_out, c_out):
    rows, units = c.shape
    half, one = np.float32(0.5), np.float32(1.0)
    for r in range(rows):
        zr, cr, h_row, c_row = z[r], c[r], h_out[r], c_out[r]
        for j in range(units):
            i = half * (_tanh(half * zr[j]) + one)
            f = half * (_tanh(half * zr[units + j]) + one)
            g = _tanh(zr[2 * units + j])
            o = half * (_tanh(half * zr[3 * units + j]) + one)
            new = f * cr[j] + i * g
            c_row[j] = new
            h_row[j] = o * _tanh(new)


def lstm_cell(z: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the new ``(h, c)`` of an LSTM from its gate pre-activations ``z`` (i, f, g, o
    side by side, as Keras orders them) and its cell state ``c`` (float32, one row each)."""
    h_out = np.empty_like(c, dtype=np.float32)
    c_out = np.empty_like(h_out)
    _lstm_cell(np.ascontiguousarray(z, dtype=np.float32),
               np.ascontiguousarray(c, dtype=np.float32), h_out, c_out)
    return h_out, c_out

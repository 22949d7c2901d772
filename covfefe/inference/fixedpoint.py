"""Matrix products in 16-bit fixed point: exact integer sums, so rows never depend on the batch.

The network's recurrent products take the hidden state ``h`` of an LSTM or GRU, which lies in
(-1, 1). Here ``h`` becomes ``round(h * SCALE)`` as a 16-bit integer and each column ``j`` of
the weights becomes ``round(w[:, j] * s[j])``, with ``s[j]`` as large as both fit 16 bits and
the column's largest possible sum fits 32 bits. The products are then summed in 32-bit integers,
where every order gives the same answer: a row's result is the same alone, in any batch, with
any kernel and on any processor (no care for summation order is needed, unlike
`covfefe.inference.rowwise`'s float products). ``start + total / (SCALE * s[j])`` brings it back to
float32.

The kernel multiplies pairs of 16-bit numbers and adds each pair's two products into a 32-bit
lane: x86's ``pmaddwd`` (AVX2's ``vpmaddwd``, 16 products per instruction against 8 for a
float32 multiply-add), which LLVM picks for the pattern written below in plain vector IR (other
processors get their own instructions for the same integers). Four rows share each loaded
block of 16 columns, whose sums stay in registers for the whole depth. The weights are stored
in that order: for each block of 16 columns, each pair of rows of ``w``, the 16 columns' two
weights side by side. On the 2-core machine this runs 2.5-3x faster than the float32 kernel on
16 rows, and a single row reads half the bytes.

Why vector IR rather than plain numba (tried for issue 28, bit-identical results each time):
numba 0.68 runs LLVM's loop vectorizer but not its SLP vectorizer (``NUMBA_SLP_VECTORIZE``
is 0), so sums kept in registers across the depth, as here, cannot be written in Python; the
loop vectorizer re-associates ``sum += a0 * w0 + a1 * w1`` into plain 32-bit multiplies
(``vpmulld``), or, summing along the depth, uses half-width ``vpmaddwd``. The best plain
kernels took 1.3-1.4x this one's time for one row and 1.6-9.5x for 4 to 16 rows (a busy
machine; bench/README.md), and these products are most of a batch's step. No library found
does an exact int16 product: NumPy's integer ``matmul`` has no BLAS (300x slower), float32
is not exact and float64 reads 4x the bytes.

Precision, with ``SCALE = 2**12``: ``h`` to within 1.2e-4, each weight to within half a unit of
its column's scale (a relative 1e-4 to 1e-3 for typical weights). The bundled network's
validation bits per character move by 2e-6 (1.721141 in float32, 1.721139; see
models/EXPERIMENTS.md).
"""

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from covfefe.compiled import compiled
from covfefe.inference.rowwise import lstm_unit

SCALE = 4096  # h (|h| < 1) as round(h * SCALE): 13 bits with the sign
COLUMNS = 16  # columns per block: two vectors of eight 32-bit sums
LIMIT = 2**31 - 1

_I16, _I32 = ir.IntType(16), ir.IntType(32)
_PAIRS, _SUMS = ir.VectorType(_I16, 16), ir.VectorType(_I32, 8)


def _multiply_add_pairs(builder, a, b):
    """``a[2i] * b[2i] + a[2i+1] * b[2i+1]`` in 32 bits, for 16 lanes of 16 bits: the pattern
    LLVM turns into one ``vpmaddwd`` (or ``pmaddwd``, or another processor's equivalent)."""
    wide = ir.VectorType(_I32, 16)
    products = builder.mul(builder.sext(a, wide), builder.sext(b, wide))
    even = builder.shuffle_vector(products, products, ir.Constant(_SUMS, list(range(0, 16, 2))))
    odd = builder.shuffle_vector(products, products, ir.Constant(_SUMS, list(range(1, 16, 2))))
    return builder.add(even, odd)


def _block_kernel(rows: int):
    """An intrinsic: the sums of ``rows`` rows of ``x`` (from row ``i``) with block ``b`` of
    ``w``, written into ``out[i:i+rows, 16b:16b+16]``. ``x`` holds each row's pairs of 16-bit
    inputs as 32-bit numbers, ``(rows, depth / 2)``; ``w`` is ``(blocks, depth / 2, 32)``."""

    @intrinsic
    def block(typingctx, out, i, x, w, b):
        def codegen(context, builder, signature, args):
            out_array = context.make_array(signature.args[0])(context, builder, args[0])
            x_array = context.make_array(signature.args[2])(context, builder, args[2])
            w_array = context.make_array(signature.args[3])(context, builder, args[3])
            first, index = args[1], args[4]
            width = cgutils.unpack_tuple(builder, out_array.shape, 2)[1]
            pairs = cgutils.unpack_tuple(builder, x_array.shape, 2)[1]
            number = width.type

            def constant(value):
                return ir.Constant(number, value)

            weights = builder.gep(w_array.data, [builder.mul(index,
                                                             builder.mul(pairs, constant(32)))])
            sums = [[cgutils.alloca_once(builder, _SUMS) for _ in range(2)] for _ in range(rows)]
            for row in sums:
                for cell in row:
                    builder.store(ir.Constant(_SUMS, [0] * 8), cell)
            with cgutils.for_range(builder, pairs) as loop:
                k = loop.index
                blocks = [builder.load(builder.bitcast(
                    builder.gep(weights, [builder.add(builder.mul(k, constant(32)),
                                                      constant(16 * half))]),
                    _PAIRS.as_pointer()), align=2) for half in range(2)]
                for r in range(rows):
                    offset = builder.add(builder.mul(builder.add(first, constant(r)), pairs), k)
                    pair = builder.load(builder.gep(x_array.data, [offset]))
                    spread = builder.insert_element(ir.Constant(_SUMS, None), pair,
                                                    ir.Constant(_I32, 0))
                    spread = builder.bitcast(
                        builder.shuffle_vector(spread, spread, ir.Constant(_SUMS, [0] * 8)),
                        _PAIRS)
                    for half in range(2):
                        cell = sums[r][half]
                        builder.store(builder.add(builder.load(cell), _multiply_add_pairs(
                            builder, blocks[half], spread)), cell)
            column = builder.mul(index, constant(COLUMNS))
            for r in range(rows):
                for half in range(2):
                    offset = builder.add(builder.mul(builder.add(first, constant(r)), width),
                                         builder.add(column, constant(8 * half)))
                    target = builder.bitcast(builder.gep(out_array.data, [offset]),
                                             _SUMS.as_pointer())
                    builder.store(builder.load(sums[r][half]), target, align=4)
            return context.get_dummy_value()

        return types.void(out, i, x, w, b), codegen

    return block


_block4, _block2, _block1 = _block_kernel(4), _block_kernel(2), _block_kernel(1)


@compiled
def sums_into(x, w, out):
    """``out = x @ w`` in 32-bit integers, for ``x`` from `quantize` (pairs of 16-bit inputs
    as 32-bit numbers) and ``w`` a `FixedMatrix.layout`; ``out`` has ``COLUMNS`` columns per
    block of ``w`` (the layouts of `_block_kernel`)."""
    rows = x.shape[0]
    for b in range(w.shape[0]):
        i = 0
        while i + 4 <= rows:
            _block4(out, i, x, w, b)
            i += 4
        if i + 2 <= rows:
            _block2(out, i, x, w, b)
            i += 2
        if i < rows:
            _block1(out, i, x, w, b)


@compiled
def to_float_into(sums, unscale, start, out):
    """``out = start + sums * unscale`` column by column (``start``: one row, or one per row)."""
    rows, width = out.shape
    shared = start.shape[0] == 1
    for r in range(rows):
        base = start[0] if shared else start[r]
        for j in range(width):
            out[r, j] = base[j] + np.float32(sums[r, j]) * unscale[j]


@compiled(inline=True)
def _fixed(h):
    """``h`` (clipped to [-1, 1]) as ``round(h * SCALE)``, a 16-bit integer."""
    one = np.float32(1.0)
    return np.int16(np.rint(min(max(h, -one), one) * np.float32(SCALE)))


@compiled
def quantize_into(h, out):
    """Write ``h`` (float32 rows) into ``out`` (int16, as wide) as 16-bit fixed point."""
    rows, width = h.shape
    for r in range(rows):
        for j in range(width):
            out[r, j] = _fixed(h[r, j])


@compiled
def _lstm_from_sums(sums, unscale, start, c, h_out, c_out, q_out):
    """An LSTM step from its products' integer sums: the gates ``start + sums * unscale`` (i,
    f, g, o side by side, as `to_float_into` computes them), the new ``c`` and ``h`` (as
    `covfefe.inference.rowwise.lstm_cell` computes them), and ``h`` quantized into ``q_out`` for
    the next
    product. One pass instead of three."""
    rows, units = c.shape
    shared = start.shape[0] == 1
    for r in range(rows):
        base = start[0] if shared else start[r]
        total, cr, h_row, c_row, q_row = sums[r], c[r], h_out[r], c_out[r], q_out[r]
        for j in range(units):
            zi = base[j] + np.float32(total[j]) * unscale[j]
            zf = base[units + j] + np.float32(total[units + j]) * unscale[units + j]
            zg = base[2 * units + j] + np.float32(total[2 * units + j]) * unscale[2 * units + j]
            zo = base[3 * units + j] + np.float32(total[3 * units + j]) * unscale[3 * units + j]
            h, c_row[j] = lstm_unit(zi, zf, zg, zo, cr[j])
            h_row[j] = h
            q_row[j] = _fixed(h)


class LstmStack(NamedTuple):
    """A stack of LSTM layers in fixed point, as `lstm_layers` steps it: the first layer's
    input projection as a table (one row per symbol), and per layer its product's weights
    (the kernels stacked: `FixedMatrix.layout`), `FixedMatrix.unscale` and bias (one row; zeros
    for the first, whose bias is in the table). Tuples of one type each: numba compiles the
    loop over the layers once."""

    table: np.ndarray
    layouts: tuple
    unscales: tuple
    biases: tuple


@compiled
def lstm_layers(ids, layers, hs, cs, hs_out, cs_out):
    """A stack of LSTM layers (an `LstmStack`), one symbol per row (``ids``: each below
    ``len(layers.table)``, else IndexError): the first layer's input projection is
    ``layers.table[ids]``, each other layer's input is the layer below's new ``h``, and each
    layer is one product and one `_lstm_from_sums` pass. Write each layer's new ``h`` and ``c``
    into ``hs_out`` and ``cs_out``; return the last layer's ``h`` quantized (int16)."""
    table, layouts, unscales, biases = layers
    rows = ids.shape[0]
    below = np.empty((rows, 0), dtype=np.int16)
    for layer in range(len(layouts)):
        h, c = hs[layer], cs[layer]
        units = h.shape[1]
        if layer == 0:
            inputs = np.empty((rows, units), dtype=np.int16)
            quantize_into(h, inputs)
            start = np.empty((rows, table.shape[1]), dtype=np.float32)
            for row in range(rows):  # compiled code checks no index: the look-up would crash
                if not 0 <= ids[row] < table.shape[0]:
                    raise IndexError("a symbol outside the vocabulary")
                start[row] = table[ids[row]]
        else:
            width = below.shape[1]
            inputs = np.empty((rows, width + units), dtype=np.int16)
            inputs[:, :width] = below
            quantize_into(h, inputs[:, width:])
            start = biases[layer]
        layout = layouts[layer]
        sums = np.empty((rows, layout.shape[0] * COLUMNS), dtype=np.int32)
        sums_into(inputs.view(np.int32), layout, sums)
        below = np.empty((rows, units), dtype=np.int16)
        _lstm_from_sums(sums, unscales[layer], start, c, hs_out[layer], cs_out[layer], below)
    return below


def quantize(h: np.ndarray) -> np.ndarray:
    """``h`` (in [-1, 1]) as 16-bit fixed point, ``round(h * SCALE)``, an even number of
    columns (a zero column added if odd), viewed as 32-bit pairs for `FixedMatrix.product`."""
    h = np.ascontiguousarray(h, dtype=np.float32)
    rows, width = h.shape
    out = np.zeros((rows, width + width % 2), dtype=np.int16)
    quantize_into(h, out[:, :width] if width % 2 else out)
    return out.view(np.int32)


class FixedMatrix:
    """A float32 weight matrix ``(depth, width)`` for inputs in [-1, 1], in 16-bit fixed point
    with a scale per column (see the module); `product` is ``start + x @ w``."""

    def __init__(self, w: np.ndarray):
        w = np.asarray(w, dtype=np.float64)
        depth, width = w.shape
        largest = np.abs(w).max(axis=0)
        total = np.abs(w).sum(axis=0)
        # As large as 16 bits allow, and as the largest possible sum, with h at +-SCALE and
        # each weight rounded up by half a unit, allows in 32 bits.
        scale = np.minimum(32767 / np.maximum(largest, 1e-30),
                           (LIMIT / SCALE - depth / 2) / np.maximum(total, 1e-30))
        quantized = np.rint(w * scale)
        assert (np.abs(quantized).sum(axis=0) * SCALE <= LIMIT).all()
        assert (np.abs(quantized) <= 32767).all()
        self.depth, self.width = depth, width
        blocks = -(-width // COLUMNS)
        padded = np.zeros((depth + depth % 2, blocks * COLUMNS), dtype=np.int16)
        padded[:depth, :width] = quantized
        # layout[b, p, 2c + e] = padded[2p + e, 16b + c]
        self.layout = np.ascontiguousarray(
            padded.reshape(-1, 2, blocks, COLUMNS).transpose(2, 0, 3, 1)
            .reshape(blocks, -1, 2 * COLUMNS))
        self.unscale = (1.0 / (SCALE * scale)).astype(np.float32)

    def sums(self, x: np.ndarray) -> np.ndarray:
        """The integer sums ``x @ w`` (int32, padded to whole blocks of columns) for inputs from
        `quantize`."""
        if x.ndim != 2 or x.shape[1] != self.layout.shape[1] or x.dtype != np.int32:
            raise ValueError(f"expected quantized inputs of {self.depth} columns")
        sums = np.empty((x.shape[0], self.layout.shape[0] * COLUMNS), dtype=np.int32)
        sums_into(np.ascontiguousarray(x), self.layout, sums)
        return sums

    def product(self, x: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """Return ``start + x @ w`` as float32 ``(rows, width)``, where ``x`` comes from
        `quantize` (``start``: one row, one row per row of ``x``, or None for zero)."""
        rows = x.shape[0]
        sums = self.sums(x)
        if start is None:
            start = np.zeros((1, self.width), dtype=np.float32)
        start = np.ascontiguousarray(np.atleast_2d(start), dtype=np.float32)
        out = np.empty((rows, self.width), dtype=np.float32)
        to_float_into(sums, self.unscale, start, out)
        return out

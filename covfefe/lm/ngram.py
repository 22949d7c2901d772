"""The n-gram side: an interpolated Kneser-Ney character model (what Markov tweet bots use).

It reads the same id sequences as the network (``[END] + ids + [END]`` per tweet, see
`covfefe.training.corpus.encode_tweets`), with the start of each tweet padded by ``order - 1`` END
symbols, so it scores exactly the same characters and the two can be compared, or mixed
(`covfefe.lm.mixture`).

Counting and scoring are vectorised with NumPy: every n-gram is one int64 key (its ids in base
``vocab_size``), counted with ``np.unique``. A level (one order) keeps only its sorted keys and
the running total of their counts: the n-grams that continue a context ``c`` are the keys in
``[c * base, (c + 1) * base)``, found with two ``np.searchsorted``, so the context's total and
its number of distinct next characters are differences, not tables of their own. The highest
order uses raw counts; lower orders use continuation counts (how many distinct characters
precede the n-gram), with one absolute discount per order, ``D = n1 / (n1 + 2 n2)``
(Chen & Goodman 1998, interpolated Kneser-Ney). The lowest level is uniform over the vocabulary,
so every character has a probability above zero.

The model can also generate: `initial_state` and `step` make it a drop-in for the network in
`covfefe.inference.generate.TweetGenerator`. Generation gives every next symbol of every row at
each step,
so it is compiled (numba), each row on its own (its result does not depend on the rest of the
batch, bit for bit), with the scoring's arithmetic (to rounding): for each order from the
highest down, the back-off weight ``D * distinct / total`` of its context (1 where the
context is unseen) multiplies into the weight of the orders below; then each order's
``max(count - D, 0) / total`` times its weight is added into the row, lowest order first, and
the uniform share (every order's back-off weight multiplied, over the vocabulary size) last.
A row's state is its last ``order - 1`` symbols and, for each order, where its context's
continuations lie in the keys: the next context of order k + 1 is the current context of order
k followed by the new symbol, so the step finds it among those few continuations and follows a
link to its own rather than searching all the keys (`next_probs`, from a history alone,
searches). The links take 4 bytes per n-gram below the highest order (12 MB for the bundled
9-gram table), made when generation starts (`initial_state`).
`save` writes it compactly (a 9-gram table of the archive, 4.5 million n-grams, takes about
4 MB): the keys of order k are stored as the index of their context among the keys of order
k - 1 (small steps, mostly 0 or 1) plus the last symbol, and the counts as bytes, then LZMA.
"""

import io
import lzma
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from covfefe.compiled import compiled
from covfefe.errors import UserError
from covfefe.text import END_ID

NGRAM_FORMAT_VERSION = 1


def _windows(sequences: list[np.ndarray], order: int, *, score_first: bool
             ) -> tuple[np.ndarray, np.ndarray]:
    """Return the padded ids and the positions of the targets: each tweet's characters (from
    its second one unless ``score_first``) and its END."""
    pad = np.full(order - 1, END_ID, dtype=np.int64)
    skip = order - 1 + (0 if score_first else 1)
    parts, targets, offset = [], [], 0
    for sequence in sequences:
        padded = np.concatenate([pad, np.asarray(sequence[1:], dtype=np.int64)])
        parts.append(padded)
        targets.append(np.arange(offset + skip, offset + len(padded)))
        offset += len(padded)
    return np.concatenate(parts), np.concatenate(targets)


def _keys(ids: np.ndarray, positions: np.ndarray, length: int, base: int) -> np.ndarray:
    """Return the int64 key of the ``length``-gram ending at each position."""
    keys = np.zeros(len(positions), dtype=np.int64)
    for back in range(length - 1, -1, -1):
        keys = keys * base + ids[positions - back]
    return keys


def _discount(counts: np.ndarray) -> float:
    # Without singletons (a tiny or repeated corpus) the estimate would be 0, and unseen
    # characters impossible: take 0.5 then.
    n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
    return float(n1 / (n1 + 2 * n2)) if n1 else 0.5


def _levels_below(keys: np.ndarray, counts: np.ndarray, order: int, base: int
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every order's (keys, counts), lowest first, from the highest order's keys and counts:
    a lower order's count of an n-gram is its continuation count, the number of distinct
    n-grams one order up that end with it."""
    levels = [(keys, counts)]
    for length in range(order - 1, 0, -1):
        keys, counts = np.unique(keys % base**length, return_counts=True)
        levels.append((keys, counts))
    return levels[::-1]


def _rebase(keys: np.ndarray, length: int, base: int, new_base: int) -> np.ndarray:
    """The keys of ``length``-grams written in ``base``, rewritten in ``new_base``."""
    rebased = np.zeros_like(keys)
    rest = keys.copy()
    for position in range(length):
        rebased += (rest % base) * np.int64(new_base) ** position
        rest //= base
    return rebased


LEVEL_SHIFT = 58  # a key of order k is stored as (k << LEVEL_SHIFT) | its ids in base vocab
_UNTAG = np.int64((1 << LEVEL_SHIFT) - 1)


class KneserNeyModel:
    """An interpolated Kneser-Ney character n-gram model of a given order over id sequences.

    All orders live in one sorted int64 array, each key tagged with its order in the top bits,
    beside the running total of the counts: one ``np.searchsorted`` finds, for every order at
    once, the n-grams that continue a context, and the interpolation of the orders is a
    weighted sum (the weight of order k is the product of the back-off weights above it), the
    same arithmetic for scoring (`log_probs`) and generating (`next_probs`, `step`, compiled).
    """

    def __init__(self, order: int, vocab_size: int):
        if not isinstance(order, int) or order < 1:
            raise UserError(f"the n-gram order must be a positive whole number, not {order!r}")
        if order * math.log2(vocab_size) >= LEVEL_SHIFT:
            raise UserError(f"order {order} is too high for a vocabulary of {vocab_size}: "
                            f"its n-gram keys would not fit {LEVEL_SHIFT} bits")
        self.order = order
        self.vocab_size = vocab_size
        self.keys = np.zeros(0, dtype=np.int64)  # every order's sorted keys, order-tagged
        self.cumulative = np.zeros(1, dtype=np.int64)  # counts of keys[:i] summed, at i
        self.discounts = np.zeros(0)  # one per order, lowest first
        self.bounds = np.zeros(order + 1, dtype=np.int64)  # keys of order k: bounds[k-1:k+1]
        self._links = None  # what generation steps follow, built on first use (`step_links`)

    @property
    def name(self) -> str:
        return f"kneser-ney-{self.order}gram"

    @property
    def ngrams(self) -> int:
        """The number of distinct n-grams of all orders that the model holds."""
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        """The memory its arrays take."""
        return self.keys.nbytes + self.cumulative.nbytes

    def fit(self, sequences: list[np.ndarray]) -> "KneserNeyModel":
        """Count the n-grams of every order up to ``order`` in the training sequences."""
        ids, positions = _windows(sequences, self.order, score_first=True)
        base = self.vocab_size
        keys, counts = np.unique(_keys(ids, positions, self.order, base), return_counts=True)
        self._set_levels(_levels_below(keys, counts, self.order, base))
        return self

    def update(self, sequences: list[np.ndarray], vocab_size: int | None = None
               ) -> "KneserNeyModel":
        """Return the model counted on its tweets and ``sequences`` too, as `fit` on both
        would, without the old tweets: the highest order's counts add up, and every lower
        order's continuation counts follow from the highest order's distinct n-grams (each
        tweet's start is padded, so every shorter n-gram ends some n-gram of the highest
        order). ``vocab_size`` (at least the current one) makes room for symbols appended to
        the vocabulary: the keys are rewritten in the new base, ids unchanged."""
        self._check_fitted()
        vocab_size = vocab_size or self.vocab_size
        if vocab_size < self.vocab_size:
            raise UserError(f"the vocabulary cannot shrink ({self.vocab_size} to {vocab_size})")
        updated = KneserNeyModel(self.order, vocab_size)
        keys, counts = self.level(self.order)
        if vocab_size != self.vocab_size:
            keys = _rebase(keys, self.order, self.vocab_size, vocab_size)
        ids, positions = _windows(sequences, self.order, score_first=True)
        new_keys, new_counts = np.unique(_keys(ids, positions, self.order, vocab_size),
                                         return_counts=True)
        keys, inverse = np.unique(np.concatenate([keys, new_keys]), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([counts, new_counts]),
                             minlength=len(keys)).astype(np.int64)
        updated._set_levels(_levels_below(keys, counts, self.order, vocab_size))
        return updated

    def _set_levels(self, levels: list[tuple[np.ndarray, np.ndarray]],
                    discounts: list[float] | None = None) -> None:
        """Keep the (keys, counts) of each order, lowest first, in the combined arrays."""
        self.keys = np.concatenate([
            keys.astype(np.int64) | np.int64(length << LEVEL_SHIFT)
            for length, (keys, _) in enumerate(levels, start=1)])
        counts = np.concatenate([counts for _, counts in levels]).astype(np.int64)
        cumulative = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=cumulative[1:])
        self.cumulative = cumulative.astype(np.uint32 if cumulative[-1] < 2**32 else np.int64)
        self.discounts = np.array(discounts if discounts is not None
                                  else [_discount(counts) for _, counts in levels])
        self.bounds = np.concatenate([[0], np.cumsum([len(keys) for keys, _ in levels])])
        self._links = None

    def level(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the (keys, counts) of the n-grams of one order (copies, untagged)."""
        start, stop = self.bounds[length - 1], self.bounds[length]
        keys = self.keys[start:stop] & _UNTAG
        return keys, np.diff(self.cumulative[start:stop + 1].astype(np.int64))

    def _check_fitted(self) -> None:
        if not len(self.keys):
            raise RuntimeError("fit the model before scoring")

    def _contexts(self, contexts: np.ndarray):
        """For contexts ``[rows, order]`` (column k - 1: the context of order k, untagged),
        return the first index of their continuations, how many there are, the back-off
        weight of each order and its normaliser (the context's total count; 1 if unseen)."""
        tags = np.arange(1, self.order + 1, dtype=np.int64) << LEVEL_SHIFT
        low = tags + contexts * self.vocab_size
        start = np.searchsorted(self.keys, low)
        stop = np.searchsorted(self.keys, low + self.vocab_size)
        sizes = stop - start
        totals = (self.cumulative[stop].astype(np.float64)
                  - self.cumulative[start].astype(np.float64))
        seen = sizes > 0
        totals = np.where(seen, totals, 1.0)
        backoff = np.where(seen, self.discounts * sizes / totals, 1.0)
        return start, sizes, backoff, totals

    def _interpolate(self, discounted: np.ndarray, backoff: np.ndarray) -> np.ndarray:
        """Return the interpolated probability from each order's discounted share
        (``[rows, order, ...]``) and back-off weight (``[rows, order]``): order k's share
        counts times the product of the back-off weights of the orders above it, and the
        uniform distribution times all of them."""
        above = np.cumprod(backoff[:, ::-1], axis=1)[:, ::-1]  # product of orders >= k
        weights = np.concatenate([above[:, 1:], np.ones((len(backoff), 1))], axis=1)
        weights = weights.reshape(weights.shape + (1,) * (discounted.ndim - 2))
        return (weights * discounted).sum(axis=1) + above[:, :1].reshape(
            (-1,) + (1,) * (discounted.ndim - 2)) / self.vocab_size

    def longest_context(self, sequences: list[np.ndarray]) -> np.ndarray:
        """The longest context (0 to ``order - 1`` characters) the table has seen before each
        target of ``sequences`` (the targets `log_probs` scores, in its order)."""
        self._check_fitted()
        ids, positions = _windows(sequences, self.order, score_first=False)
        seen = np.zeros(len(positions), dtype=int)
        for length in range(2, self.order + 1):
            contexts = _keys(ids, positions - 1, length - 1, self.vocab_size)
            low = (np.int64(length) << LEVEL_SHIFT) + contexts * self.vocab_size
            found = (np.searchsorted(self.keys, low + self.vocab_size)
                     > np.searchsorted(self.keys, low))
            seen = np.where(found, length - 1, seen)
        return seen

    def log_probs(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Return the natural-log probability of every target (each tweet's chars after the
        first, then its END), in order."""
        self._check_fitted()
        ids, positions = _windows(sequences, self.order, score_first=False)
        base = self.vocab_size
        keys = np.stack([_keys(ids, positions, length, base)
                         for length in range(1, self.order + 1)], axis=1)
        start, sizes, backoff, totals = self._contexts(keys // base)
        index = np.searchsorted(self.keys, keys | (np.arange(1, self.order + 1, dtype=np.int64)
                                                   << LEVEL_SHIFT))
        index = np.minimum(index, len(self.keys) - 1)
        found = (index < start + sizes) & (
            (self.keys[index] & _UNTAG) == keys)
        counts = np.where(found, self.cumulative[index + 1].astype(np.float64)
                          - self.cumulative[index].astype(np.float64), 0.0)
        discounted = np.maximum(counts - self.discounts, 0.0) / totals
        return np.log(self._interpolate(discounted, backoff))

    # Generation: the same probabilities, for every next symbol of a batch of histories.

    def initial_state(self, n: int) -> list[np.ndarray]:
        """Return the state of ``n`` new tweets: the history (``order - 1`` END symbols each,
        the padding) and where its contexts' continuations lie in the keys."""
        self.step_links()  # built now rather than in a step
        history = np.full((n, self.order - 1), END_ID, dtype=np.int64)
        ranges = np.empty((n, 2 * self.order), dtype=np.int64)
        _search_ranges(self.keys, self.bounds, self.vocab_size, history, ranges)
        return [history, ranges]

    def step(self, ids: np.ndarray, state: list[np.ndarray]
             ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Feed one symbol per row; return the log-probability of every next symbol and the new
        state (the same interface as `covfefe.inference.generate.NumpyNetwork.step`)."""
        probs, state = self.step_probs(ids, state)
        return np.log(probs), state

    def step_probs(self, ids: np.ndarray, state: list[np.ndarray]
                   ) -> tuple[np.ndarray, list[np.ndarray]]:
        """`step`, with probabilities rather than their logarithms (for `covfefe.lm.mixture`)."""
        history, ranges = state
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        history = np.ascontiguousarray(history, dtype=np.int64)
        probs = np.empty((len(history), self.vocab_size))
        new_history, new_ranges = np.empty_like(history), np.empty_like(ranges)
        step_probs_into(self.step_table(), history, np.ascontiguousarray(ranges), ids,
                        new_history, new_ranges, probs)
        return probs, [new_history, new_ranges]

    def next_probs(self, history: np.ndarray) -> np.ndarray:
        """Return the probability of each next symbol ``[rows, vocab]`` after each row of the
        last ``order - 1`` symbols (the padded history, oldest first)."""
        self._check_fitted()
        history = np.ascontiguousarray(history, dtype=np.int64)
        ranges = np.empty((len(history), 2 * self.order), dtype=np.int64)
        _search_ranges(self.keys, self.bounds, self.vocab_size, history, ranges)
        probs = np.empty((len(history), self.vocab_size))
        _fill(self.keys, self.cumulative, self.discounts, ranges, probs)
        return probs

    def step_table(self) -> "StepTable":
        """The arrays a compiled step reads (`step_probs_into`)."""
        return StepTable(self.keys, self.cumulative, self.bounds, self.discounts,
                         *self.step_links())

    def step_links(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (built on first use) what a step follows from a context to the next one
        instead of searching the keys: for each n-gram of every order but the highest, the
        first of the n-grams of the order above that continue it (``children``, indexed like
        the keys); and the few contexts that have continuations but are no n-gram of the order
        below (only the padding at a tweet's start: ``orphan_low``, the smallest key of each
        one's continuations, sorted, and ``orphan_start``, where they begin)."""
        self._check_fitted()
        if self._links is None:
            bounds = self.bounds
            children = np.empty(bounds[-2], dtype=np.int32 if bounds[-1] < 2**31 else np.int64)
            orphaned = np.zeros(len(self.keys), dtype=bool)
            _link_levels(self.keys, bounds, self.vocab_size, children, orphaned)
            # An orphan context's continuations follow each other: find the first of each.
            index = np.flatnonzero(orphaned)
            lows = self.keys[index] - (self.keys[index] & _UNTAG) % self.vocab_size
            orphan_low, first = np.unique(lows, return_index=True)
            self._links = (children, orphan_low, index[first])
        return self._links

    # Storage.

    def save(self, path: str | os.PathLike) -> None:
        """Write the model compactly (see the module docstring); `load` reads it back."""
        self._check_fitted()
        arrays = {"format_version": np.array(NGRAM_FORMAT_VERSION),
                  "order": np.array(self.order), "vocab_size": np.array(self.vocab_size),
                  "discounts": self.discounts}
        previous = None
        for length in range(1, self.order + 1):
            keys, counts = self.level(length)
            arrays[f"symbols{length}"] = (keys % self.vocab_size).astype(np.uint8)
            if previous is not None:
                contexts = keys // self.vocab_size
                parent = np.searchsorted(previous, contexts)
                found = previous[np.minimum(parent, len(previous) - 1)] == contexts
                # A context that is not an n-gram of the order below (rare: the start of a cut
                # tweet) keeps its whole key.
                arrays[f"missing{length}"] = np.flatnonzero(~found).astype(np.uint32)
                arrays[f"missing_keys{length}"] = keys[~found]
                _put_small(arrays, f"steps{length}", np.diff(parent, prepend=0))
            _put_small(arrays, f"counts{length}", counts)
            previous = keys
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        Path(path).write_bytes(lzma.compress(buffer.getvalue(), preset=6))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KneserNeyModel":
        """Read a model written by `save`; UserError if the file is not one."""
        try:
            data = np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes())))
            version = int(data["format_version"])
        except (OSError, lzma.LZMAError, ValueError, KeyError, EOFError) as error:
            raise UserError(f"n-gram table {path} cannot be read ({error})") from None
        if version != NGRAM_FORMAT_VERSION:
            raise UserError(f"n-gram table {path} has format version {version}")
        model = cls(int(data["order"]), int(data["vocab_size"]))
        base, previous, levels = model.vocab_size, None, []
        for length in range(1, model.order + 1):
            symbols = data[f"symbols{length}"].astype(np.int64)
            if previous is None:
                keys = symbols
            else:
                parent = np.cumsum(_get_small(data, f"steps{length}"))
                keys = previous[np.minimum(parent, len(previous) - 1)] * base + symbols
                keys[data[f"missing{length}"]] = data[f"missing_keys{length}"]
            levels.append((keys, _get_small(data, f"counts{length}")))
            previous = keys
        model._set_levels(levels, data["discounts"].tolist())
        return model


@compiled
def _first_at_or_above(array, first, stop, value):
    """Return the first index in ``array[first:stop]`` (sorted) whose value is at least
    ``value``, ``stop`` if none is."""
    while first < stop:
        middle = (first + stop) >> 1
        if array[middle] < value:
            first = middle + 1
        else:
            stop = middle
    return first


@compiled
def _context_low(history, k, base, context):
    """Return the context of order k + 1 (the last k symbols of ``history``) from that of
    order k, and the smallest key its continuations can have."""
    if k:
        context += history[len(history) - k] * base ** (k - 1)
    return context, ((k + 1) << LEVEL_SHIFT) + context * base


@compiled
def _link_levels(keys, bounds, base, children, orphaned):
    """Write into ``children[j]``, for each key of every order but the highest, the index of
    the first key of the order above that continues it; mark in ``orphaned`` the keys whose
    context is no key of the order below. One merge of each pair of sorted levels: a key of
    order k + 1 continues the key ``c`` of order k when its ids lie in
    ``[c * base, (c + 1) * base)``."""
    for k in range(1, len(bounds) - 1):
        index, stop = bounds[k], bounds[k + 1]
        tag, below_tag = (k + 1) << LEVEL_SHIFT, k << LEVEL_SHIFT
        for j in range(bounds[k - 1], bounds[k]):
            low = (keys[j] - below_tag) * base  # its continuations' ids begin here
            while index < stop and keys[index] - tag < low:
                # Past the previous key's continuations, before this one's: an orphan.
                orphaned[index] = True
                index += 1
            children[j] = index
            while index < stop and keys[index] - tag < low + base:
                index += 1
        orphaned[index:stop] = True


@compiled
def _search_ranges(keys, bounds, base, history, ranges):
    """Write into ``ranges[row]`` where the continuations of each context of ``history[row]``
    lie in the keys: their first index for each order, lowest first, then their end."""
    order = len(bounds) - 1
    for row in range(len(history)):
        context = 0
        for k in range(order):
            context, low = _context_low(history[row], k, base, context)
            first = _first_at_or_above(keys, bounds[k], bounds[k + 1], low)
            ranges[row, k] = first
            ranges[row, order + k] = _first_at_or_above(keys, first, min(first + base,
                                                                          bounds[k + 1]),
                                                        low + base)


class StepTable(NamedTuple):
    """What a compiled step reads of a `KneserNeyModel`: its sorted ``keys``, ``cumulative``
    counts, level ``bounds`` and ``discounts``, and the links of `KneserNeyModel.step_links`
    (``children``, ``orphan_low``, ``orphan_start``)."""

    keys: np.ndarray
    cumulative: np.ndarray
    bounds: np.ndarray
    discounts: np.ndarray
    children: np.ndarray
    orphan_low: np.ndarray
    orphan_start: np.ndarray


@compiled
def step_probs_into(table, history, ranges, ids, new_history, new_ranges, out):
    """Append ``ids[row]`` to each ``history[row]``, dropping its oldest symbol, into
    ``new_history``; write where the new contexts' continuations lie into ``new_ranges`` and
    the probabilities after them into ``out`` (``table``: a `StepTable`). No search of the
    keys: the new context of order k + 1 is the old context of order k followed by the
    symbol, one of that context's continuations (found among the few in ``ranges``), and its
    own continuations begin at its ``children`` entry."""
    keys, cumulative, bounds, discounts = (table.keys, table.cumulative, table.bounds,
                                           table.discounts)
    children, orphan_low, orphan_start = table.children, table.orphan_low, table.orphan_start
    order, base = len(discounts), out.shape[1]
    width = history.shape[1]
    for row in range(len(history)):
        if width:
            new_history[row, :width - 1] = history[row, 1:]
            new_history[row, width - 1] = ids[row]
        context = 0
        for k in range(order):
            context, low = _context_low(new_history[row], k, base, context)
            if k == 0:
                first = bounds[0]
            else:
                key = (k << LEVEL_SHIFT) + context  # the context, as an n-gram of order k
                index = _first_at_or_above(keys, ranges[row, k - 1], ranges[row, order + k - 1],
                                           key)
                if index < ranges[row, order + k - 1] and keys[index] == key:
                    first = children[index]
                else:
                    orphan = _first_at_or_above(orphan_low, 0, len(orphan_low), low)
                    if orphan < len(orphan_low) and orphan_low[orphan] == low:
                        first = orphan_start[orphan]
                    else:
                        first = bounds[k + 1]  # an unseen context: no continuations
            end = first
            while end < bounds[k + 1] and keys[end] < low + base:
                end += 1
            new_ranges[row, k], new_ranges[row, order + k] = first, end
    _fill(keys, cumulative, discounts, new_ranges, out)


@compiled
def _fill(keys, cumulative, discounts, ranges, out):
    """Write into ``out[row]`` the probability of each next symbol, given where the
    continuations of the row's contexts lie (``ranges[row]``, as `_search_ranges` writes it),
    as `KneserNeyModel.log_probs` computes it: order k's discounted counts times the back-off
    weights of the orders above it, lowest order first, then the uniform share."""
    order, base = len(discounts), out.shape[1]
    weight, total = np.empty(order), np.empty(order)
    for row in range(len(ranges)):
        start, stop = ranges[row, :order], ranges[row, order:]
        weight[order - 1], uniform = 1.0, 0.0
        for k in range(order - 1, -1, -1):
            size = stop[k] - start[k]
            if size:
                total[k] = np.float64(cumulative[stop[k]]) - np.float64(cumulative[start[k]])
                backoff = discounts[k] * size / total[k]
            else:
                total[k], backoff = 1.0, 1.0
            if k:
                weight[k - 1] = weight[k] * backoff
            else:
                uniform = weight[0] * backoff / base
        row_out = out[row]
        row_out[:] = 0.0
        for k in range(order):
            if stop[k] == start[k]:
                continue
            # The continuations share their context: the symbol is the key less the smallest.
            low = keys[start[k]] - (keys[start[k]] - ((k + 1) << LEVEL_SHIFT)) % base
            for index in range(start[k], stop[k]):
                count = np.float64(cumulative[index + 1]) - np.float64(cumulative[index])
                row_out[keys[index] - low] += weight[k] * (
                    max(count - discounts[k], 0.0) / total[k])
        for symbol in range(base):
            row_out[symbol] += uniform


def _put_small(arrays: dict, name: str, values: np.ndarray) -> None:
    """Store non-negative integers as bytes, with the few of 255 or more apart."""
    arrays[name] = np.minimum(values, 255).astype(np.uint8)
    arrays[name + "_large"] = values[values >= 255].astype(np.int64)


def _get_small(data, name: str) -> np.ndarray:
    values = data[name].astype(np.int64)
    values[values == 255] = data[name + "_large"]
    return values

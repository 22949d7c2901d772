"""The baseline: an interpolated Kneser-Ney character n-gram model (what Markov tweet bots use).

It reads the same id sequences as the network (``[END] + ids + [END]`` per tweet, see
`covfefe.corpus.encode_tweets`), with the start of each tweet padded by ``order - 1`` END
symbols, so it scores exactly the same characters and the two can be compared.

Counting and scoring are vectorised with NumPy: every n-gram is one int64 key (its ids in base
``vocab_size``), counted with ``np.unique`` and looked up with ``np.searchsorted``. The highest
order uses raw counts; lower orders use continuation counts (how many distinct characters
precede the n-gram), with one absolute discount per order, ``D = n1 / (n1 + 2 n2)``
(Chen & Goodman 1998, interpolated Kneser-Ney). The lowest level is uniform over the vocabulary,
so every character has a probability above zero.
"""

import math
from dataclasses import dataclass

import numpy as np

from covfefe.errors import UserError
from covfefe.text import END_ID


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


@dataclass
class _Level:
    """The counts of one order: n-gram keys, their counts, and per context the totals."""

    keys: np.ndarray  # sorted n-gram keys
    counts: np.ndarray  # count (raw or continuation) of each key
    contexts: np.ndarray  # sorted context keys (key // base)
    context_totals: np.ndarray  # sum of counts per context
    context_types: np.ndarray  # number of distinct next characters per context
    discount: float

    @classmethod
    def build(cls, keys: np.ndarray, counts: np.ndarray, base: int) -> "_Level":
        n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
        discount = float(n1 / (n1 + 2 * n2)) if n1 + n2 else 0.5
        context_of = keys // base
        contexts, starts = np.unique(context_of, return_index=True)
        totals = np.add.reduceat(counts, starts) if len(keys) else counts
        types = np.diff(np.append(starts, len(keys)))
        return cls(keys, counts, contexts, totals, types, discount)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Return the value for each wanted key, 0 where the key is absent."""
    if len(sorted_keys) == 0:
        return np.zeros(len(wanted), dtype=values.dtype)
    index = np.minimum(np.searchsorted(sorted_keys, wanted), len(sorted_keys) - 1)
    return np.where(sorted_keys[index] == wanted, values[index], 0)


class KneserNeyModel:
    """An interpolated Kneser-Ney character n-gram model of a given order over id sequences."""

    def __init__(self, order: int, vocab_size: int):
        if not isinstance(order, int) or order < 1:
            raise UserError(f"the n-gram order must be a positive whole number, not {order!r}")
        if order * math.log2(vocab_size) >= 63:
            raise UserError(f"order {order} is too high for a vocabulary of {vocab_size}: "
                            "its n-gram keys would not fit 64 bits")
        self.order = order
        self.vocab_size = vocab_size
        self.levels: list[_Level] = []

    @property
    def name(self) -> str:
        return f"kneser-ney-{self.order}gram"

    def fit(self, sequences: list[np.ndarray]) -> "KneserNeyModel":
        """Count the n-grams of every order up to ``order`` in the training sequences."""
        ids, positions = _windows(sequences, self.order, score_first=True)
        base = self.vocab_size
        top_keys, top_counts = np.unique(_keys(ids, positions, self.order, base),
                                         return_counts=True)
        levels = [_Level.build(top_keys, top_counts, base)]
        higher = top_keys
        for length in range(self.order - 1, 0, -1):
            # Continuation count of a k-gram: distinct (k+1)-grams that end with it.
            suffixes = higher % base**length
            keys, counts = np.unique(suffixes, return_counts=True)
            levels.append(_Level.build(keys, counts, base))
            higher = keys
        self.levels = levels[::-1]  # levels[k - 1] holds the k-grams
        return self

    def log_probs(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Return the natural-log probability of every target (each tweet's chars after the
        first, then its END), in order."""
        if not self.levels:
            raise RuntimeError("fit the model before scoring")
        ids, positions = _windows(sequences, self.order, score_first=False)
        base = self.vocab_size
        probability = np.full(len(positions), 1.0 / base)
        for length, level in enumerate(self.levels, start=1):
            keys = _keys(ids, positions, length, base)
            contexts = keys // base
            totals = _lookup(level.contexts, level.context_totals, contexts).astype(np.float64)
            types = _lookup(level.contexts, level.context_types, contexts).astype(np.float64)
            counts = _lookup(level.keys, level.counts, keys).astype(np.float64)
            seen = totals > 0
            safe = np.where(seen, totals, 1.0)
            interpolated = (np.maximum(counts - level.discount, 0.0) / safe
                            + level.discount * types / safe * probability)
            probability = np.where(seen, interpolated, probability)
        return np.log(probability)

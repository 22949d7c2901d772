"""The network and the n-gram table mixed: ``p = w p_network + (1 - w) p_ngram``, per character.

The network generalises (spelling, grammar, style) and the Kneser-Ney table remembers long exact
phrases that the network does not; their linear mixture predicts held-out tweets better than
either (see models/EXPERIMENTS.md). One weight ``w`` is fitted by maximum likelihood (EM) on
tweets that neither model's counts include: the last ``holdout`` training tweets before the
network's fine-tuning window, scored by a table counted without them. The table that ships is
then counted on every training tweet.

Scoring (`covfefe.evaluation.evaluate`) mixes log-probabilities: `mix_log_probs` is
``logaddexp(log w + log p_network, log(1 - w) + log p_ngram)``. Generating (`MixedModel`, a
drop-in for the network in `covfefe.inference.generate.TweetGenerator`) mixes every next symbol of
every
row at each step, so it does the same sum without the round trip through logarithms:
`mix_logits` takes the network's logits and the table's probabilities and computes, per row and
in one compiled pass, ``log(w exp(z - m) / sum(exp(z - m)) + (1 - w) p_ngram)`` (``m`` the row's
largest logit, in float64). Both are the same mixture to rounding (a few 1e-15), so a tweet gets
the same probability from both (a test checks it).
"""

import math
from collections.abc import Sequence

import numpy as np

from covfefe.compiled import compiled, largest
from covfefe.errors import UserError
from covfefe.text import PAD_ID


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Return log-probabilities from logits along the last axis (in float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def mix_log_probs(network: np.ndarray, ngram: np.ndarray, weight: float) -> np.ndarray:
    """Return ``log(w exp(network) + (1 - w) exp(ngram))`` of two log-probability arrays."""
    return np.logaddexp(math.log(weight) + network, math.log1p(-weight) + ngram)


@compiled
def mix_into(logits, ngram, weight, out):
    """Write ``log(weight softmax(logits[row]) + (1 - weight) ngram[row])`` into ``out[row]``,
    each row on its own."""
    rows, size = logits.shape
    shares = np.empty(size)
    for row in range(rows):
        top = np.float64(largest(logits[row]))
        total = 0.0
        for symbol in range(size):
            shares[symbol] = np.exp(np.float64(logits[row, symbol]) - top)
            total += shares[symbol]
        scale = weight / total
        for symbol in range(size):
            out[row, symbol] = np.log(scale * shares[symbol]
                                      + (1.0 - weight) * ngram[row, symbol])


def mix_logits(logits: np.ndarray, ngram_probs: np.ndarray, weight: float) -> np.ndarray:
    """Return ``log(w softmax(logits) + (1 - w) ngram_probs)`` row by row (float64): what
    ``mix_log_probs(log_softmax(logits), log(ngram_probs), w)`` gives, in one pass."""
    logits = np.ascontiguousarray(logits)
    ngram_probs = np.ascontiguousarray(ngram_probs, dtype=np.float64)
    if logits.shape != ngram_probs.shape or logits.ndim != 2:
        raise ValueError(f"the network's logits {logits.shape} and the table's probabilities "
                         f"{ngram_probs.shape} must be the same [rows, symbols]")
    out = np.empty(ngram_probs.shape)
    mix_into(logits, ngram_probs, float(weight), out)
    return out


def fit_weight(network: np.ndarray, ngram: np.ndarray, iterations: int = 200) -> float:
    """Return the weight of the network that maximises the mixture's likelihood of the targets
    whose log-probabilities under each model are given (EM for a two-part mixture)."""
    if len(network) == 0:
        raise UserError("there are no characters to fit the mixture weight on")
    difference = np.asarray(ngram, np.float64) - np.asarray(network, np.float64)
    weight = 0.5
    for _ in range(iterations):
        # Each target's responsibility of the network: w p_a / (w p_a + (1 - w) p_b).
        share = 1.0 / (1.0 + (1.0 - weight) / weight * np.exp(np.clip(difference, -700, 700)))
        new = float(share.mean())
        if abs(new - weight) < 1e-7:
            break
        weight = new
    return min(max(weight, 1e-4), 1 - 1e-4)


def network_log_probs(network, sequences: Sequence[np.ndarray], batch_size: int = 256,
                      progress: bool = False) -> np.ndarray:
    """Return the network's log-probability of every target (each tweet's characters after the
    first, then its END), in order, by stepping a `NumpyNetwork` through batches of tweets."""
    from tqdm.auto import tqdm

    parts = []
    for start in tqdm(range(0, len(sequences), batch_size), desc="scoring held-out tweets",
                      unit="batch", disable=not progress):
        chunk = sequences[start:start + batch_size]
        width = max(len(sequence) for sequence in chunk)
        ids = np.full((len(chunk), width), PAD_ID, dtype=np.int64)
        for row, sequence in enumerate(chunk):
            ids[row, :len(sequence)] = sequence
        state = network.initial_state(len(chunk))
        scores = np.zeros((len(chunk), width))
        rows = np.arange(len(chunk))
        for position in range(width - 1):
            logits, state = network.step(ids[:, position], state)
            scores[:, position + 1] = log_softmax(logits)[rows, ids[:, position + 1]]
        parts += [scores[row, 2:len(sequence)] for row, sequence in enumerate(chunk)]
    return np.concatenate(parts) if parts else np.zeros(0)


class MixedModel:
    """The network and the n-gram model stepped together; each step returns the mixture's
    log-probabilities (the interface of `covfefe.inference.generate.NumpyNetwork`: ``initial_state``
    and ``step``; the state is ``[network state, n-gram state]``)."""

    def __init__(self, network, ngram, weight: float):
        if not 0 < weight < 1:
            raise UserError(f"the mixture weight must be between 0 and 1, not {weight!r}")
        self.network = network
        self.ngram = ngram
        self.weight = weight

    def initial_state(self, n: int) -> list:
        return [self.network.initial_state(n), self.ngram.initial_state(n)]

    def step(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        logits, network_state = self.network.step(ids, state[0])
        ngram_probs, ngram_state = self.ngram.step_probs(ids, state[1])
        return mix_logits(logits, ngram_probs, self.weight), [network_state, ngram_state]


def fit_mixture(network, train: Sequence[np.ndarray], holdout: np.ndarray, order: int,
                vocab_size: int, progress: bool = False) -> tuple[object, float, dict]:
    """Fit the mixture of ``network`` with a Kneser-Ney model of ``order``.

    ``train`` holds the encoded training tweets and ``holdout`` the indices of those to fit the
    weight on. Returns the n-gram model counted on every training tweet, the weight, and a
    report (characters fitted on, bits/char of each part and of the mixture there).
    """
    from covfefe.lm.ngram import KneserNeyModel

    holdout = np.asarray(holdout, dtype=np.int64)
    if len(holdout) == 0 or len(holdout) >= len(train):
        raise UserError(f"the mixture needs between 1 and {len(train) - 1} held-out tweets, "
                        f"not {len(holdout)}")
    kept = np.ones(len(train), dtype=bool)
    kept[holdout] = False
    held = [train[i] for i in holdout]
    without = KneserNeyModel(order, vocab_size).fit([train[i] for i in np.flatnonzero(kept)])
    ngram_scores = without.log_probs(held)
    del without
    network_scores = network_log_probs(network, held, progress=progress)
    weight = fit_weight(network_scores, ngram_scores)
    mixed = mix_log_probs(network_scores, ngram_scores, weight)
    ln2 = math.log(2)
    report = {"holdout_tweets": len(held), "holdout_chars": len(mixed),
              "holdout_bits_per_char": {
                  "network": round(float(-network_scores.mean() / ln2), 4),
                  "ngram": round(float(-ngram_scores.mean() / ln2), 4),
                  "mixture": round(float(-mixed.mean() / ln2), 4)}}
    return KneserNeyModel(order, vocab_size).fit(list(train)), weight, report

"""Scoring: bits per character of a model (or of an n-gram table) on a set of tweets.

Bits per character of a tweet set: for each tweet, every character after the first plus the
end-of-tweet symbol, each given all the preceding characters of that tweet; the total of
``-log2 p`` divided by the number of characters scored. Characters outside the vocabulary are
scored as the unknown symbol. The first character is left out because it is predicted from
nothing, which measures how tweets begin rather than how well the model writes.

Training scores its best epoch with these functions; `covfefe.evaluation` builds the reports
and commands on them.
"""


import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from covfefe.errors import UserError
from covfefe.lm.mixture import log_softmax, mix_log_probs
from covfefe.text import MAX_TWEET_CHARS, Vocabulary
from covfefe.training.corpus import Corpus, SequenceBatches, encode_tweets

LN2 = math.log(2)
DEFAULT_BASELINE_ORDERS = (5, 7, 9)


@dataclass
class Evaluation:
    """Per-tweet scores of one model on one tweet set."""

    texts: list[str]
    nats: np.ndarray  # -ln p summed over each tweet's scored characters
    chars: np.ndarray  # characters scored per tweet (its length: chars 2..n plus END)
    parts: dict = field(default_factory=dict)  # a mixture's parts alone: name -> nats per tweet

    def part(self, name: str) -> "Evaluation":
        """Return the evaluation of one part of a mixture alone ("network" or "ngram")."""
        return Evaluation(self.texts, self.parts[name], self.chars)

    @property
    def bits_per_char(self) -> float:
        return float(self.nats.sum() / max(int(self.chars.sum()), 1) / LN2)

    def summary(self) -> str:
        return (f"bits_per_char={self.bits_per_char:.4f} chars={int(self.chars.sum())} "
                f"tweets={len(self.texts)}")

    def per_tweet(self) -> pd.DataFrame:
        """Return one row per tweet: text, characters scored, bits per character."""
        return pd.DataFrame({"text": self.texts, "chars": self.chars,
                             "bits_per_char": self.nats / np.maximum(self.chars, 1) / LN2})


def _per_tweet(sequences: list[np.ndarray], target_nats: np.ndarray) -> np.ndarray:
    """Sum per-target nats (all tweets' scored targets, in order) into per-tweet totals."""
    counts = np.array([len(s) - 2 for s in sequences])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(target_nats, starts) if len(target_nats) else np.zeros(0)


def batch_targets(model, batches: SequenceBatches):
    """For each batch of ``batches`` (in order, unshuffled): its row indices, the network's
    natural-log probability of each target, and the targets' weights (0 on padding and the
    first character, which is given)."""
    for batch in batches.batch_indices(0):
        inputs, targets, weights = batches.pad(batch)
        log_probs = log_softmax(np.asarray(model(inputs, training=False)))
        yield batch, np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0], weights


def target_log_probs(model, vocabulary: Vocabulary, texts: Sequence[str],
                     max_chars: int = MAX_TWEET_CHARS) -> np.ndarray:
    """The network's natural-log probability of every scored target of ``texts``, tweet after
    tweet (the order `covfefe.lm.ngram.KneserNeyModel.log_probs` gives the table's in)."""
    sequences = encode_tweets(list(texts), vocabulary, max_chars)
    found = {}
    for batch, target, weights in batch_targets(
            model, SequenceBatches(sequences, 64, shuffle=False, score_first=False)):
        for row, index in enumerate(batch):
            found[int(index)] = target[row][weights[row] > 0]
    return np.concatenate([found[i] for i in range(len(sequences))])


def score_model(model, vocabulary: Vocabulary, texts: Sequence[str], *,
                batch_size: int = 64, max_chars: int = MAX_TWEET_CHARS,
                progress: bool = False, ngram=None, weight: float | None = None
                ) -> Evaluation:
    """Score each text exactly as given with a Keras network of this vocabulary, mixed with an
    n-gram model when one is given (``weight``: the network's share, `covfefe.lm.mixture`)."""
    texts = [text for text in texts if text]
    if not texts:
        raise UserError("there are no (non-empty) tweets to evaluate")
    sequences = encode_tweets(texts, vocabulary, max_chars)
    batches = SequenceBatches(sequences, batch_size, shuffle=False, score_first=False)
    nats = np.zeros(len(texts))
    chars = np.zeros(len(texts), dtype=np.int64)
    parts = {"network": np.zeros(len(texts)), "ngram": np.zeros(len(texts))} if ngram else {}
    from tqdm.auto import tqdm

    for batch, target, weights in tqdm(batch_targets(model, batches), desc="scoring",
                                       unit="batch", total=len(batches),
                                       disable=not progress):
        if ngram is not None:  # the same targets: positions 1 .. len - 2 of each row
            ngram_target = np.zeros_like(target)
            ngram_target[weights > 0] = ngram.log_probs([sequences[i] for i in batch])
            parts["network"][batch] = -(target * weights).sum(axis=1)
            parts["ngram"][batch] = -(ngram_target * weights).sum(axis=1)
            target = mix_log_probs(target, ngram_target, weight)
        nats[batch] = -(target * weights).sum(axis=1)
        chars[batch] = weights.sum(axis=1).astype(np.int64)
    return Evaluation(texts, nats, chars, parts)


def score_artifact(artifact, texts: Sequence[str], *, progress: bool = False) -> Evaluation:
    """Score texts with a model artifact as it generates: its network, mixed with its n-gram
    table when it has one (the parts alone in ``parts``)."""
    mixture = artifact.mixture
    return score_model(artifact.load_model(), artifact.vocabulary, texts,
                       max_chars=artifact.metadata.get("model", {}).get("max_chars",
                                                                        MAX_TWEET_CHARS),
                       progress=progress, ngram=artifact.ngram_model() if mixture else None,
                       weight=mixture["network_weight"] if mixture else None)


def score_ngram(ngram, vocabulary: Vocabulary, texts: Sequence[str], *,
                max_chars: int = MAX_TWEET_CHARS) -> Evaluation:
    """Score each text exactly as given with a fitted `covfefe.lm.ngram.KneserNeyModel`."""
    texts = [text for text in texts if text]
    if not texts:
        raise UserError("there are no (non-empty) tweets to evaluate")
    sequences = encode_tweets(texts, vocabulary, max_chars)
    target_nats = -ngram.log_probs(sequences)
    return Evaluation(texts, _per_tweet(sequences, target_nats),
                      np.array([len(s) - 2 for s in sequences], dtype=np.int64))


def ngram_baselines(corpus: Corpus, vocabulary: Vocabulary,
                    orders: Sequence[int] = DEFAULT_BASELINE_ORDERS,
                    max_chars: int = MAX_TWEET_CHARS) -> pd.DataFrame:
    """Fit a Kneser-Ney model of each order on the training tweets; score the validation ones.

    Returns one row per order (order, name, validation bits/char), best first.
    """
    from covfefe.lm.ngram import KneserNeyModel

    train = encode_tweets(corpus.train["text"], vocabulary, max_chars)
    rows = []
    for order in orders:
        ngram = KneserNeyModel(order, len(vocabulary)).fit(train)
        evaluation = score_ngram(ngram, vocabulary, corpus.validation["text"],
                                 max_chars=max_chars)
        rows.append({"order": order, "name": ngram.name,
                     "validation_bits_per_char": evaluation.bits_per_char})
    return pd.DataFrame(rows).sort_values("validation_bits_per_char").reset_index(drop=True)

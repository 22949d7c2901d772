"""The training corpus: cleaned tweets split by time, encoded as id sequences, and batched.

Every tweet becomes one sequence ``[END] + ids(text) + [END]``; the network reads it without its
last id and predicts it without its first, so every character is a target (no windows, no
one-hot): memory grows with the corpus only. Batches group tweets of similar length (padding
rounded up to a multiple of `PAD_MULTIPLE`, so that only a few shapes are ever compiled) and
come as NumPy arrays, so the same batches feed TensorFlow through `tf.data` or JAX directly.
"""

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from covfefe.data.clean import clean_tweet
from covfefe.errors import UserError
from covfefe.text import END_ID, MAX_TWEET_CHARS, PAD_ID, Vocabulary

PAD_MULTIPLE = 32
POOL_BATCHES = 64  # batches' worth of tweets sorted by length together (more: less padding)


@dataclass
class Corpus:
    """Cleaned tweets in time order, split into training and (most recent) validation tweets."""

    train: pd.DataFrame  # columns: id, created_at, text (cleaned)
    validation: pd.DataFrame

    @classmethod
    def from_tweets(cls, tweets: pd.DataFrame, validation_fraction: float = 0.05) -> "Corpus":
        """Clean the tweets, drop the empty ones, keep the latest ``validation_fraction`` apart."""
        if not 0 < validation_fraction < 1:
            raise UserError(
                f"validation_fraction must be between 0 and 1, not {validation_fraction!r}"
            )
        frame = cls.clean(tweets)
        n_validation = math.ceil(len(frame) * validation_fraction)
        if len(frame) - n_validation < 1:
            raise UserError(f"only {len(frame)} non-empty tweets: too few to train on")
        return cls(frame.iloc[:-n_validation].reset_index(drop=True),
                   frame.iloc[-n_validation:].reset_index(drop=True))

    @staticmethod
    def clean(tweets: pd.DataFrame) -> pd.DataFrame:
        """Return the non-empty cleaned tweets (id, created_at, text) in time order."""
        frame = pd.DataFrame({
            "id": tweets["id"].astype("int64"),
            "created_at": tweets["created_at"],
            "text": tweets["text"].astype(str).map(clean_tweet),
        })
        frame = frame[frame["text"] != ""].sort_values(["created_at", "id"], kind="stable")
        return frame.reset_index(drop=True)

    @property
    def validation_since(self) -> pd.Timestamp:
        """The time of the first validation tweet: everything from then on is held out."""
        return self.validation["created_at"].iloc[0]

    def fingerprint(self) -> dict:
        """Describe the data exactly: counts, date ranges and a hash of every id and text."""
        digest = hashlib.sha256()
        for frame in (self.train, self.validation):
            for tweet_id, text in zip(frame["id"], frame["text"], strict=True):
                digest.update(f"{tweet_id}\t{text}\n".encode())
        everything = pd.concat([self.train, self.validation])
        return {
            "tweets": len(everything),
            "train_tweets": len(self.train),
            "validation_tweets": len(self.validation),
            "train_chars": int(self.train["text"].str.len().sum()),
            "validation_chars": int(self.validation["text"].str.len().sum()),
            "first_tweet": everything["created_at"].min().isoformat(),
            "last_tweet": everything["created_at"].max().isoformat(),
            "validation_since": self.validation_since.isoformat(),
            "sha256": digest.hexdigest(),
        }


def encode_tweets(texts: Sequence[str], vocabulary: Vocabulary,
                  max_chars: int = MAX_TWEET_CHARS) -> list[np.ndarray]:
    """Return ``[END] + ids + [END]`` for each text; a text over ``max_chars`` is cut, no END."""
    sequences = []
    for text in texts:
        body = vocabulary.encode(text[:max_chars])
        tail = [END_ID] if len(text) <= max_chars else []
        sequences.append(np.concatenate([[END_ID], body, tail]).astype(np.int32))
    return sequences


class SequenceBatches:
    """Padded batches ``(inputs, targets, weights)`` of id sequences, one epoch per iteration.

    ``weights`` is 1 for each real target and 0 for padding. With ``score_first=False`` the
    first target of each tweet (its first character, predicted from nothing) weighs 0 too: that
    is how bits per character are defined for evaluation. Training shuffles with a seed that
    changes every epoch (``epoch`` counts iterations and can be set to resume); evaluation keeps
    the original order when ``shuffle=False``.

    ``fixed_width=True`` pads every batch to the same width. Keras averages a weighted metric
    per batch over the time axis first, so its epoch figure is the exact mean per character
    only when all batches are equally wide: validation batches use it.
    """

    def __init__(self, sequences: list[np.ndarray], batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, score_first: bool = True, fixed_width: bool = False):
        if batch_size < 1:
            raise UserError(f"batch_size must be a positive whole number, not {batch_size!r}")
        if not sequences:
            raise UserError("there are no tweets to batch")
        self.sequences = sequences
        self.lengths = np.fromiter((len(s) - 1 for s in sequences), dtype=np.int64,
                                   count=len(sequences))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.score_first = score_first
        self.fixed_width = fixed_width
        self.epoch = 0

    def __len__(self) -> int:
        pool = self.batch_size * POOL_BATCHES
        full, rest = divmod(len(self.sequences), pool)
        return full * POOL_BATCHES + math.ceil(rest / self.batch_size)

    @property
    def targets(self) -> int:
        """The number of weighted targets in one epoch (characters scored)."""
        return int(self.lengths.sum()) - (0 if self.score_first else len(self.sequences))

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """Return the tweet indices of each batch of an epoch, in the order they are served."""
        order = np.arange(len(self.sequences))
        if not self.shuffle:
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(order)
        batches = []
        pool = self.batch_size * POOL_BATCHES
        for start in range(0, len(order), pool):
            members = order[start:start + pool]
            members = members[np.argsort(self.lengths[members], kind="stable")]
            batches += [members[i:i + self.batch_size]
                        for i in range(0, len(members), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def pad(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return padded ``(inputs, targets, weights)`` for the tweets at ``indices``."""
        width = int((self.lengths if self.fixed_width else self.lengths[indices]).max())
        width = PAD_MULTIPLE * math.ceil(width / PAD_MULTIPLE)
        inputs = np.full((len(indices), width), PAD_ID, dtype=np.int32)
        targets = np.full((len(indices), width), PAD_ID, dtype=np.int32)
        for row, index in enumerate(indices):
            sequence = self.sequences[index]
            inputs[row, :len(sequence) - 1] = sequence[:-1]
            targets[row, :len(sequence) - 1] = sequence[1:]
        weights = (targets != PAD_ID).astype(np.float32)
        if not self.score_first:
            weights[:, 0] = 0.0
        return inputs, targets, weights

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        for indices in self.batch_indices(epoch):
            yield self.pad(indices)

    def to_tf_dataset(self):
        """Return a `tf.data.Dataset` over the batches, prefetched, one epoch per iteration."""
        import tensorflow as tf

        spec = tf.TensorSpec(shape=(None, None), dtype=tf.int32)
        dataset = tf.data.Dataset.from_generator(
            self.__iter__,
            output_signature=(spec, spec, tf.TensorSpec(shape=(None, None), dtype=tf.float32)),
        )
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(
            tf.data.AUTOTUNE
        )

"""Novelty: how much of a generated tweet is copied from the tweets the model learned from.

The index ships inside the model artifact in a compact derived form, not the tweets' text: the
sorted 32-bit hashes of every ``SHINGLE``-character substring (shingle) of the training tweets,
stored as compressed differences. A text's longest shared run is the longest chain of its
consecutive shingles found in the index, plus ``SHINGLE - 1``; runs shorter than one shingle
count as 0. The chain can in principle join pieces of different tweets, so it is an upper
bound on the longest substring shared with a single tweet; with 12-character shingles that
rarely matters. A hash collision makes a false match with a chance of about one in a thousand
per shingle, which cannot make a long run on its own.
"""

import os
from pathlib import Path

import numpy as np

from covfefe.errors import UserError

SHINGLE = 12
FORMAT_VERSION = 1
_MULTIPLIER = np.uint64(0x100000001B3)  # the 64-bit FNV prime: odd, so no bit is lost
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def shingle_hashes(text: str, size: int = SHINGLE) -> np.ndarray:
    """Return the 32-bit hash of every ``size``-character substring of ``text``, in order."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < size:
        return np.zeros(0, dtype=np.uint32)
    with np.errstate(over="ignore"):  # the arithmetic is meant to wrap around 2**64
        hashes = np.zeros(len(codes) - size + 1, dtype=np.uint64)
        for offset in range(size):
            hashes = (hashes * _MULTIPLIER + codes[offset:len(codes) - size + 1 + offset]
                      + np.uint64(offset + 1)) & _MASK
        # MurmurHash3's finaliser: every input bit reaches the 32 bits kept.
        for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
            hashes ^= hashes >> np.uint64(33)
            hashes = (hashes * np.uint64(multiplier)) & _MASK
        hashes ^= hashes >> np.uint64(33)
    return (hashes >> np.uint64(32)).astype(np.uint32)


class NoveltyIndex:
    """The set of shingle hashes of a tweet collection, queried for a text's longest shared run."""

    def __init__(self, hashes: np.ndarray, size: int = SHINGLE, tweets: int = 0):
        self.hashes = np.unique(np.asarray(hashes, dtype=np.uint32))
        self.size = size
        self.tweets = tweets

    @classmethod
    def build(cls, texts, size: int = SHINGLE) -> "NoveltyIndex":
        """Index every shingle of every text."""
        texts = list(texts)
        parts = [shingle_hashes(text, size) for text in texts]
        return cls(np.concatenate(parts) if parts else np.zeros(0, np.uint32), size, len(texts))

    def __len__(self) -> int:
        return len(self.hashes)

    def matches(self, text: str) -> np.ndarray:
        """Return, for each shingle of ``text``, whether the index holds it."""
        hashes = shingle_hashes(text, self.size)
        if len(self.hashes) == 0 or len(hashes) == 0:
            return np.zeros(len(hashes), dtype=bool)
        positions = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        return self.hashes[positions] == hashes

    def longest_shared(self, text: str) -> int:
        """Return the length of the longest run of ``text`` found in the indexed tweets (0 when
        no run reaches one shingle)."""
        found = self.matches(text)
        if not found.any():
            return 0
        # Longest stretch of consecutive True values.
        edges = np.diff(np.concatenate([[0], found.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        return int((ends - starts).max()) + self.size - 1

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index as compressed NumPy arrays (sorted hashes as differences)."""
        path = Path(path)
        differences = np.diff(self.hashes, prepend=np.uint32(0)).astype(np.uint32)
        with path.open("wb") as stream:
            np.savez_compressed(stream, differences=differences,
                                meta=np.array([FORMAT_VERSION, self.size, self.tweets]))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NoveltyIndex":
        """Read an index written by `save`; UserError if it is not one."""
        try:
            with np.load(path) as data:
                version, size, tweets = (int(v) for v in data["meta"])
                differences = data["differences"]
        except (OSError, KeyError, ValueError) as error:
            raise UserError(f"novelty index {path} cannot be read ({error})") from None
        if version != FORMAT_VERSION:
            raise UserError(f"novelty index {path} has format version {version}")
        index = cls.__new__(cls)
        index.hashes = np.cumsum(differences, dtype=np.uint32)
        index.size, index.tweets = size, tweets
        return index


NEAR_COPY_FRACTION = 0.6  # of the whole tweet
NEAR_COPY_MIN = 30  # characters: shorter shared runs are common phrases, not copies


def is_near_copy(longest_shared: int | None, text: str) -> bool:
    """Return True when a tweet is (nearly) a verbatim copy: its longest run shared with a
    training tweet is the whole tweet, or at least ``NEAR_COPY_MIN`` characters and
    ``NEAR_COPY_FRACTION`` of it. (A short tweet the archive holds word for word, such as
    "Make America Great Again!", is a copy; a short common phrase inside a longer one is not.)"""
    if not longest_shared:
        return False
    if longest_shared >= len(text.strip()):
        return True
    return longest_shared >= max(NEAR_COPY_MIN, NEAR_COPY_FRACTION * len(text))

"""The character vocabulary: built from the data, saved with anything built from it.

Ids 0-2 are reserved: padding, the end-of-tweet symbol (so that generation knows when a tweet
ends) and the unknown symbol (every character seen fewer than ``min_count`` times, or never).
The other ids go to characters by falling frequency, ties by code point, so that the same
texts always give the same vocabulary.
"""

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from covfefe import config
from covfefe.errors import UserError

PAD, END, UNK = "<pad>", "<end>", "<unk>"
SPECIALS = (PAD, END, UNK)
PAD_ID, END_ID, UNK_ID = range(len(SPECIALS))
UNK_CHAR = "\ufffd"  # how an unknown symbol is shown when ids are decoded

MAX_TWEET_CHARS = 280  # the longest tweet X allows, and so the longest we train on or write

FORMAT = "covfefe-vocabulary"
FORMAT_VERSION = 1


class Vocabulary:
    """Maps characters to integer ids and back."""

    def __init__(self, chars: Iterable[str], counts: dict[str, int] | None = None,
                 min_count: int = 1):
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("vocabulary characters must be distinct single characters")
        self.counts = dict(counts or {})
        self.min_count = min_count
        self._ids = {char: index for index, char in enumerate(self.chars, len(SPECIALS))}

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = config.VOCAB_MIN_COUNT):
        """Build the vocabulary of the characters seen at least ``min_count`` times."""
        counts = Counter()
        for text in texts:
            counts.update(text)
        return cls.from_counts(counts, min_count)

    @classmethod
    def from_counts(cls, counts: dict[str, int], min_count: int = config.VOCAB_MIN_COUNT):
        """Build the vocabulary from character counts already made (see `from_texts`)."""
        kept = sorted((c for c, n in counts.items() if n >= min_count),
                      key=lambda c: (-counts[c], ord(c)))
        return cls(kept, {c: counts[c] for c in kept}, min_count)

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.chars == other.chars

    def __contains__(self, char: str) -> bool:
        return char in self._ids

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} symbols, min_count={self.min_count})"

    def encode(self, text: str, end: bool = False) -> np.ndarray:
        """Return the ids of a text (unknown characters as ``UNK_ID``), ``END_ID`` last if asked."""
        ids = [self._ids.get(char, UNK_ID) for char in text]
        if end:
            ids.append(END_ID)
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        """Return the text of ids, stopping at the end symbol and skipping padding."""
        out = []
        for index in ids:
            index = int(index)
            if index == END_ID:
                break
            if index == PAD_ID:
                continue
            out.append(self.chars[index - len(SPECIALS)] if index >= len(SPECIALS) else UNK_CHAR)
        return "".join(out)

    def unknown(self, text: str) -> list[str]:
        """Return the distinct characters of a text that the vocabulary does not hold."""
        return sorted({char for char in text if char not in self._ids})

    def to_dict(self) -> dict:
        """Return the JSON-serialisable form that `save` writes."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "specials": list(SPECIALS),
            "min_count": self.min_count,
            "chars": self.chars,
            "counts": [self.counts.get(c, 0) for c in self.chars],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the vocabulary as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n",
                        encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read a vocabulary written by `save`, refusing anything else with a clear error."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"vocabulary file {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"vocabulary file {path} is not valid JSON ({error})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{path} is not a covfefe vocabulary file")
        if data.get("version") != FORMAT_VERSION or data.get("specials") != list(SPECIALS):
            raise UserError(f"vocabulary file {path} has an unsupported version or symbols")
        chars, counts = data["chars"], data["counts"]
        return cls(chars, dict(zip(chars, counts, strict=True)), data["min_count"])

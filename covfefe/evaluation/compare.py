"""Champion against challenger on the future: paired scores, a bootstrap interval, a decision.

Both models score the same tweets, newer than anything either learned from, one tweet at a
time (bits per character as `covfefe.training.scoring` defines them, of what each serves).
The figure is the difference of their bits/char, champion minus challenger (above zero: the
challenger predicts the future better). Its uncertainty comes from the tweets: resampling the
tweets with replacement (a paired bootstrap: each resample keeps a tweet's two scores
together) gives the interval. The challenger is promoted only when it is better and the
interval excludes zero.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np

from covfefe.errors import UserError
from covfefe.training.scoring import score_artifact

LN2 = math.log(2)
RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass
class Comparison:
    """The scores of two models on the same tweets and what they decide."""

    champion: str  # versions
    challenger: str
    tweets: int
    chars: int
    champion_bits_per_char: float
    challenger_bits_per_char: float
    difference: float  # champion minus challenger, bits/char (above 0: the challenger is better)
    interval: tuple[float, float]  # the difference's bootstrap interval
    confidence: float
    wins: int  # tweets the challenger scores better than the champion

    @property
    def relative(self) -> float:
        """The difference as a share of the champion's bits/char."""
        return self.difference / self.champion_bits_per_char

    @property
    def promote(self) -> bool:
        return self.difference > 0 and self.interval[0] > 0

    @property
    def decision(self) -> str:
        if self.promote:
            return "promote: the challenger is better and the interval excludes zero"
        if self.difference <= 0:
            return "keep the champion: the challenger is not better"
        return "keep the champion: the challenger is better, but the interval includes zero"

    def summary(self) -> str:
        low, high = self.interval
        return (f"champion {self.champion}: {self.champion_bits_per_char:.4f} bits/char; "
                f"challenger {self.challenger}: {self.challenger_bits_per_char:.4f} "
                f"on {self.tweets} future tweets ({self.chars} characters)\n"
                f"difference {self.difference:+.4f} bits/char ({self.relative:+.2%} of the "
                f"champion's), {self.confidence:.0%} interval [{low:+.4f}, {high:+.4f}]; the "
                f"challenger wins {self.wins} of {self.tweets} tweets\n"
                f"decision: {self.decision}")

    def as_dict(self) -> dict:
        return {**asdict(self), "interval": list(self.interval), "relative": self.relative,
                "promote": self.promote, "decision": self.decision}


def paired_bootstrap(champion_nats: np.ndarray, challenger_nats: np.ndarray,
                     chars: np.ndarray, *, resamples: int = RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """The percentile interval of (champion - challenger) bits/char over tweet resamples."""
    champion_nats, challenger_nats = np.asarray(champion_nats), np.asarray(challenger_nats)
    chars = np.asarray(chars, dtype=np.float64)
    rng = np.random.default_rng(seed)
    differences = np.empty(resamples)
    for start in range(0, resamples, 256):  # 256 resamples at a time: bounded memory
        count = min(256, resamples - start)
        rows = rng.integers(0, len(chars), size=(count, len(chars)))
        differences[start:start + count] = (
            (champion_nats[rows].sum(axis=1) - challenger_nats[rows].sum(axis=1))
            / chars[rows].sum(axis=1) / LN2)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return float(low), float(high)


def compare_scores(champion, challenger, *, champion_version: str = "champion",
                   challenger_version: str = "challenger", resamples: int = RESAMPLES,
                   confidence: float = CONFIDENCE, seed: int = 0) -> Comparison:
    """Compare two `covfefe.training.scoring.Evaluation` of the same tweets."""
    if list(champion.texts) != list(challenger.texts):
        raise UserError("the two models were scored on different tweets")
    if not np.array_equal(champion.chars, challenger.chars):
        raise UserError("the two models scored different characters of the same tweets")
    low, high = paired_bootstrap(champion.nats, challenger.nats, champion.chars,
                                 resamples=resamples, confidence=confidence, seed=seed)
    return Comparison(
        champion_version, challenger_version, len(champion.texts), int(champion.chars.sum()),
        champion.bits_per_char, challenger.bits_per_char,
        champion.bits_per_char - challenger.bits_per_char, (low, high), confidence,
        int(np.sum(challenger.nats / champion.chars < champion.nats / champion.chars)))


def compare(champion, challenger, texts, *, progress: bool = False, **options) -> Comparison:
    """Score ``texts`` with two model artifacts as each serves them, and compare."""
    texts = [text for text in texts if text]
    if not texts:
        raise UserError("there are no (non-empty) tweets to compare the models on")
    return compare_scores(score_artifact(champion, texts, progress=progress),
                          score_artifact(challenger, texts, progress=progress),
                          champion_version=champion.version,
                          challenger_version=challenger.version, **options)

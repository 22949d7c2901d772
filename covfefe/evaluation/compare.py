"""Champion against challenger on the future: paired scores, a bootstrap interval, a decision.

Both models score the same tweets, newer than anything either learned from, one tweet at a
time (bits per character as `covfefe.training.scoring` defines them, of exactly what each
serves: network, table and word constraint, as `covfefe evaluate` reports).
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
from covfefe.text import MAX_TWEET_CHARS

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
    left_out: int = 0  # tweets one of the models cannot write (a character outside its vocabulary)
    samples: dict | None = None  # {"champion": SampleQuality, "challenger": ...}, or None

    @property
    def sample_faults(self) -> list[str]:
        """The sample figures in which the challenger is out of bounds and worse than the
        champion (see the module docstring)."""
        from covfefe.evaluation.quality import MAX_NEAR_COPY_SHARE, MAX_NON_WORD_SHARE

        if not self.samples:
            return []
        champion, challenger = self.samples["champion"], self.samples["challenger"]
        return [name for name, bound in (("non_word_share", MAX_NON_WORD_SHARE),
                                         ("near_copy_share", MAX_NEAR_COPY_SHARE))
                if getattr(challenger, name) > max(bound, getattr(champion, name))]

    @property
    def relative(self) -> float:
        """The difference as a share of the champion's bits/char."""
        return self.difference / self.champion_bits_per_char

    @property
    def promote(self) -> bool:
        return self.difference > 0 and self.interval[0] > 0 and not self.sample_faults

    @property
    def decision(self) -> str:
        if self.promote:
            return "promote: the challenger is better and the interval excludes zero"
        if self.sample_faults:
            return ("keep the champion: the challenger's samples have too many "
                    + " and ".join(name.removesuffix("_share").replace("_", "-") + "s"
                                   for name in self.sample_faults))
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
                f"challenger wins {self.wins} of {self.tweets} tweets"
                + (f" ({self.left_out} left out: a character one model never writes)"
                   if self.left_out else "") + "\n"
                + "".join(figures.line(f"{role} {self.version(role)}") + "\n"
                          for role, figures in (self.samples or {}).items())
                + f"decision: {self.decision}")

    def version(self, role: str) -> str:
        return self.champion if role == "champion" else self.challenger

    def as_dict(self) -> dict:
        return {**asdict(self), "interval": list(self.interval), "relative": self.relative,
                "samples": {role: figures.as_dict()
                            for role, figures in (self.samples or {}).items()} or None,
                "sample_faults": self.sample_faults, "promote": self.promote,
                "decision": self.decision}


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


def sample_figures(generators: dict, artifacts: dict, samples: int, seed: int = 0,
                   known_words: set[str] | None = None) -> dict:
    """Each generator's `covfefe.evaluation.quality.SampleQuality` at its artifact's default
    settings, with the same prefixes and seeds. A word is known when it is in ``known_words``
    (the tweets both learned from), else in the challenger's word list (the champion's and the
    new tweets'); near copies are of the challenger's novelty index (the same for both). Empty
    when the artifacts have no novelty index, or neither known words nor a word list."""
    from covfefe.evaluation.quality import dictionary_words, sample_quality

    novelty = artifacts["challenger"].novelty_index() or artifacts["champion"].novelty_index()
    if known_words is None:
        lexicon = artifacts["challenger"].lexicon() or artifacts["champion"].lexicon()
        known_words = None if lexicon is None else {word.lower() for word in lexicon.words}
    if known_words is None or novelty is None:
        return {}
    known, dictionary = known_words, dictionary_words()
    figures = {}
    for role, generator in generators.items():
        defaults = artifacts[role].metadata.get("defaults", {})
        figures[role] = sample_quality(generator, known, novelty, samples=samples, seed=seed,
                                       dictionary=dictionary,
                                       temperature=defaults.get("temperature", 1.0),
                                       top_p=defaults.get("top_p", 1.0))
    return figures


def compare(champion, challenger, texts, *, progress: bool = False, samples: int = 0,
            known_words: set[str] | None = None, **options) -> Comparison:
    """Score ``texts`` with two model artifacts as each serves them (the distribution its
    generator draws from at temperature 1, top-p 1: `covfefe.evaluation.evaluate.score_served`)
    and compare. A tweet holding a character one of them never writes (outside its
    vocabulary: probability 0 as served) is left out of both; `Comparison.left_out` counts
    them. With ``samples``, both also write that many tweets, whose figures guard the
    promotion (`sample_figures`; none without a word list and a novelty index)."""
    from covfefe.evaluation.evaluate import score_served, writable
    from covfefe.inference.generate import TweetGenerator

    if not isinstance(samples, int) or samples < 0:
        raise UserError(f"samples must be a whole number of 0 or more, not {samples!r}")
    texts = [text for text in texts if text]
    generators = [TweetGenerator.from_artifact(artifact) for artifact in (champion, challenger)]
    both = [text for text in texts
            if all(writable([text], generator.vocabulary) for generator in generators)]
    if not both:
        raise UserError("there are no (non-empty) tweets both models can write to compare "
                        "them on")
    scores = [score_served(generator, both,
                           artifact.metadata.get("model", {}).get("max_chars", MAX_TWEET_CHARS),
                           progress)
              for generator, artifact in zip(generators, (champion, challenger), strict=True)]
    comparison = compare_scores(*scores, champion_version=champion.version,
                                challenger_version=challenger.version, **options)
    comparison.left_out = len(texts) - len(both)
    if samples:
        comparison.samples = sample_figures(
            dict(zip(("champion", "challenger"), generators, strict=True)),
            {"champion": champion, "challenger": challenger}, samples,
            options.get("seed", 0), known_words) or None
    return comparison

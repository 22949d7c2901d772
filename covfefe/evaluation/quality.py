"""Sample quality: what a reader sees in generated tweets, measured.

For a fixed set of prefixes and seeds, a generator writes ``samples`` tweets; the figures are:

- ``non_word_share``: of the words it wrote (runs of letters with inner apostrophes, outside
  handles, compared case-insensitively), the share that are in neither the training tweets nor a
  general English dictionary (`DICTIONARY`, Debian's ``wamerican-large``): "understanded" is
  one, "coronavirus" is not. The generator never reads the dictionary, so this is a measure
  its decoding cannot make true by construction; real tweets have non-words too (names,
  coinages), and their own share stands beside the samples' (`text_figures`).
- ``real_word_share``: the share of those words that occur in the training tweets (what the
  word constraint prefers: a new word, real or not, lowers it).
- ``near_copy_share``: the share of tweets holding a run of ``NEAR_COPY_RUN`` characters or
  more from one training tweet (the artifact's novelty index knows the runs).
- ``mean_length`` and ``at_limit_share``: characters per tweet (as shown: a word the limit cut
  is replaced by "…"), and the share that did not end by themselves but ran into the
  280-character limit.

The samples are the model's own draws: the fresh draws that replace a near copy or an empty
tweet for a user (`covfefe.inference.generate.with_fresh_draws`) are not taken here.

The same figures for any generator (the network, the mixture, the n-gram table alone: each
is a `covfefe.inference.generate.TweetGenerator`), so they stand side by side; `sweep` runs them
over
temperatures and nucleus sizes, and `choose_defaults` picks the settings a user gets.
"""

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from covfefe.errors import UserError
from covfefe.lm.lexicon import words
from covfefe.text import MAX_TWEET_CHARS

# A general English word list the generator does not use: Debian's wamerican-large (installed
# by .ci/apt-packages.txt; `apt-get install wamerican-large`), or the file in
# $COVFEFE_DICTIONARY.
DICTIONARY = Path(os.environ.get("COVFEFE_DICTIONARY", "/usr/share/dict/american-english-large"))
MAX_NON_WORD_SHARE = 0.015  # what the chosen defaults may write at most

NEAR_COPY_RUN = 40  # characters in a row from one training tweet
MAX_NEAR_COPY_SHARE = 0.02  # what the chosen defaults may copy at most
PREFIXES = ("", "The ", "I will ", "Crooked Hillary ", "Make America ", "The Fake News ",
            "Democrats ", "Thank you ", "China ", "Great ")


@dataclass
class SampleQuality:
    """The figures of one set of samples (see the module docstring)."""

    samples: int
    temperature: float
    top_p: float
    non_word_share: float
    real_word_share: float
    near_copy_share: float
    mean_length: float
    at_limit_share: float
    words: int
    decoding: dict | None = None  # the word constraint's costs, None without one
    lengths: list[int] = field(default_factory=list, repr=False)  # of each tweet

    def as_dict(self) -> dict:
        return {key: round(value, 4) if isinstance(value, float) else value
                for key, value in asdict(self).items() if key != "lengths"}

    def line(self, name: str) -> str:
        """The figures as one report line, ``samples NAME (setting): non_words=0.98% ...``, as
        `covfefe evaluate --samples` and `covfefe compare` print them (name=value pairs, which
        the CLI also logs to MLflow)."""
        return (f"samples {name} ({self.describe()}): "
                f"non_words={self.non_word_share:.2%} real_words={self.real_word_share:.2%} "
                f"near_copies={self.near_copy_share:.2%} mean_length={self.mean_length:.1f} "
                f"at_limit={self.at_limit_share:.2%} tweets={self.samples}")

    def describe(self) -> str:
        """The setting, in words: temperature, top-p and the word constraint's costs."""
        text = f"temperature {self.temperature:g}, top_p {self.top_p:g}"
        if self.decoding is not None:
            end = self.decoding.get("end") or {}
            text += f", word penalty {self.decoding['word_penalty']:g}"
            text += (", end " + " ".join(f"{k}={v:g}" for k, v in end.items()) if end
                     else ", no end calibration")
        return text


def dictionary_words(path: str | os.PathLike = DICTIONARY) -> set[str]:
    """Return the words of a general English word list (one per line), lower-cased."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise UserError(f"the English word list {path} does not exist: install it "
                        "(apt-get install wamerican-large) or name another in "
                        "$COVFEFE_DICTIONARY") from None
    return {line.strip().lower() for line in lines if line.strip()}


def non_word_share(texts: Iterable[str], known_words: set[str], dictionary: set[str]
                   ) -> tuple[float, int]:
    """Return the share of the words of ``texts`` in neither ``known_words`` (the training
    tweets') nor ``dictionary``, and how many words there were."""
    written = [word for text in texts for word in words(text)]
    unknown = sum(word not in known_words and word not in dictionary for word in written)
    return unknown / max(len(written), 1), len(written)


def sample_quality(generator, known_words: set[str], novelty, *, samples: int = 200,
                   temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                   prefixes: Sequence[str] = PREFIXES,
                   dictionary: set[str] | None = None) -> SampleQuality:
    """Generate ``samples`` tweets (an equal share per prefix, seeded) and measure them (the
    words against ``dictionary`` too: `dictionary_words` when None)."""
    dictionary = dictionary_words() if dictionary is None else dictionary
    per_prefix = max(1, samples // len(prefixes))
    written, known, copies, lengths, at_limit = 0, 0, 0, [], 0
    completions = []
    # One BLAS thread: the products of a few rows are far slower spread over busy cores (the
    # serving workers do the same, serve.init_app).
    with threadpool_limits(1):
        for number, prefix in enumerate(prefixes):
            # The model's own draws: no near copy or empty tweet replaced by a fresh one.
            completions += generator.complete(prefix, temperature=temperature, top_p=top_p,
                                              n=per_prefix, seed=seed + number,
                                              fresh_draws=False)
    for completion in completions:
        generated = words(completion.generated)
        written += len(generated)
        known += sum(word in known_words for word in generated)
        copies += novelty.longest_shared(completion.text) >= NEAR_COPY_RUN
        lengths.append(len(completion.text))
        at_limit += not completion.finished  # ran into the limit (a cut word is marked)
    total = len(lengths)
    non_words, _ = non_word_share((c.generated for c in completions), known_words, dictionary)
    return SampleQuality(total, temperature, top_p, non_words, known / max(written, 1),
                         copies / total, float(np.mean(lengths)), at_limit / total, written,
                         getattr(generator, "decoding", None), lengths)


def text_figures(texts: Sequence[str], known_words: set[str] | None = None,
                 dictionary: set[str] | None = None) -> dict:
    """Return the length figures of real tweets (for the samples to be compared with), and
    their own non-word share when ``known_words`` are given."""
    lengths = np.array([len(text) for text in texts])
    figures = {"tweets": len(lengths), "mean_length": round(float(lengths.mean()), 1),
               "at_limit_share": round(float((lengths >= MAX_TWEET_CHARS).mean()), 4)}
    if known_words is not None:
        dictionary = dictionary_words() if dictionary is None else dictionary
        figures["non_word_share"] = round(non_word_share(texts, known_words, dictionary)[0], 4)
    return figures


def sweep(generator, known_words: set[str], novelty, *, temperatures: Sequence[float],
          top_ps: Sequence[float] = (1.0,), decodings: Sequence[dict] = (), samples: int = 200,
          seed: int = 0, progress: bool = False,
          dictionary: set[str] | None = None) -> list[SampleQuality]:
    """Return the sample figures at every temperature, nucleus size and word-constraint costs
    given (``decodings``: ``{"word_penalty": nats, "end": end_costs' arguments}``; ignored by
    a generator without a word constraint)."""
    from tqdm.auto import tqdm

    dictionary = dictionary_words() if dictionary is None else dictionary
    generators = [generator]
    if decodings and getattr(generator, "decoding", None) is not None:
        generators = [generator.with_costs(d["word_penalty"], d.get("end")) for d in decodings]
    settings = [(g, t, p) for g in generators for p in top_ps for t in temperatures]
    return [sample_quality(g, known_words, novelty, samples=samples, temperature=t, top_p=p,
                           seed=seed, dictionary=dictionary)
            for g, t, p in tqdm(settings, desc="sampling", unit="setting",
                                disable=not progress)]


def choose_defaults(results: Sequence[SampleQuality], *, max_at_limit: float = 1.0,
                    max_near_copies: float = MAX_NEAR_COPY_SHARE,
                    max_non_words: float = MAX_NON_WORD_SHARE,
                    length: float | None = None, length_tolerance: float = 0.1
                    ) -> SampleQuality:
    """Return the setting with the fewest non-words among those that write at most
    ``max_non_words`` of them, copy at most ``max_near_copies`` of their tweets, cut at most
    ``max_at_limit`` at 280 characters and, given the real tweets' mean ``length``, are as long
    on average within ``length_tolerance`` (a share of it). Shares within half a percentage
    point count as a tie (a few hundred samples cannot tell them apart), broken by the mean
    length closest to the real one, then the lowest temperature, then the widest nucleus.
    Where no setting meets every bound, the best of all by the same order."""
    def fits(r: SampleQuality) -> bool:
        return (r.non_word_share <= max_non_words and r.near_copy_share <= max_near_copies
                and r.at_limit_share <= max_at_limit
                and (length is None or abs(r.mean_length - length) <= length_tolerance * length))

    allowed = [r for r in results if fits(r)] or list(results)
    return min(allowed, key=lambda r: (round(r.non_word_share * 200),
                                       abs(r.mean_length - (length or r.mean_length)),
                                       r.temperature, -r.top_p))


def generators_to_compare(artifact, history: Sequence[str], order: int = 9) -> dict:
    """Return the model's generator (as served: mixture, lexicon) and an n-gram table's alone
    (the model's own table, else one of ``order`` counted on ``history``), by name."""
    from covfefe.inference.generate import TweetGenerator
    from covfefe.lm.ngram import KneserNeyModel
    from covfefe.training.corpus import encode_tweets

    table = artifact.ngram_model()
    if table is None:
        table = KneserNeyModel(order, len(artifact.vocabulary)).fit(
            encode_tweets(history, artifact.vocabulary))
    return {"model": TweetGenerator.from_artifact(artifact),
            f"{table.name} alone": TweetGenerator(table, artifact.vocabulary)}

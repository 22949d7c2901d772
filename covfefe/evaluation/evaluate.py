"""Evaluation: the `covfefe evaluate` and `covfefe mix` commands and the reports on scores.

Bits per character of a tweet set: for each tweet, every character after the first plus the
end-of-tweet symbol, each given all the preceding characters of that tweet; the total of
``-log2 p`` divided by the number of characters scored. Characters outside the vocabulary are
scored as the unknown symbol. The first character is left out because it is predicted from
nothing, which measures how tweets begin rather than how well the model writes.
"""

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covfefe.data.clean import clean_tweet
from covfefe.data.schema import as_utc, select_period
from covfefe.data.store import load_dataset
from covfefe.errors import UserError
from covfefe.lm.mixture import mix_log_probs
from covfefe.text import MAX_TWEET_CHARS
from covfefe.training.corpus import Corpus, encode_tweets
from covfefe.training.scoring import (
    LN2,
    Evaluation,
    score_artifact,
    score_ngram,
)


def read_text_file(path: str | os.PathLike, *, clean: bool = False) -> list[str]:
    """Return the tweets of a one-tweet-per-line UTF-8 file, exactly as written (empty lines
    are skipped), or with ``clean`` as training cleans tweets (`covfefe.data.clean.clean_tweet`:
    entities, curly quotes, URLs, emoji; those left empty are skipped)."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"text file {path} does not exist") from None
    except UnicodeDecodeError as error:
        raise UserError(f"text file {path} is not UTF-8 ({error})") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a text file") from None
    lines = [line for line in content.splitlines() if line]
    if clean:
        lines = [text for text in map(clean_tweet, lines) if text]
    if not lines:
        raise UserError(f"text file {path} holds no tweets (one per line)")
    return lines


def sample_per_period(tweets: pd.DataFrame, n: int, freq: str = "Y", seed: int = 0
                      ) -> pd.DataFrame:
    """Return at most ``n`` tweets of each period (all of a smaller one), in time order."""
    shuffled = tweets.iloc[np.random.default_rng(seed).permutation(len(tweets))]
    period = shuffled["created_at"].dt.tz_localize(None).dt.to_period(freq)
    picked = shuffled.groupby(period).head(n)
    return picked.sort_values("created_at").reset_index(drop=True)


def by_period(tweets: pd.DataFrame, evaluation: Evaluation, freq: str = "Y") -> pd.DataFrame:
    """Return bits/char per period (``Y``: year, ``Q``: quarter) of tweets scored in order."""
    frame = pd.DataFrame({
        "period": tweets["created_at"].dt.tz_localize(None).dt.to_period(freq).astype(str),
        "nats": evaluation.nats, "chars": evaluation.chars,
    })
    grouped = frame.groupby("period").agg(tweets=("chars", "size"), chars=("chars", "sum"),
                                          nats=("nats", "sum"))
    grouped["bits_per_char"] = grouped["nats"] / grouped["chars"] / LN2
    return grouped.drop(columns="nats")


def by_length(evaluation: Evaluation, bins: Sequence[int] = (0, 40, 80, 120, 160, 200, 240, 281)
              ) -> pd.DataFrame:
    """Return bits/char by tweet length (characters), in bins."""
    lengths = np.array([len(text) for text in evaluation.texts])
    frame = pd.DataFrame({"length": pd.cut(lengths, list(bins), right=False),
                          "nats": evaluation.nats, "chars": evaluation.chars})
    grouped = frame.groupby("length", observed=True).agg(
        tweets=("chars", "size"), chars=("chars", "sum"), nats=("nats", "sum"))
    grouped["bits_per_char"] = grouped["nats"] / grouped["chars"] / LN2
    grouped.index = grouped.index.astype(str)
    return grouped.drop(columns="nats")


def tweets_to_score(archive: str | None, dataset: str | None) -> pd.DataFrame:
    """Return the tweets of an archive (selected as collection does) or of a dataset."""
    if archive is not None:
        from covfefe.data.archive import TweetArchive
        from covfefe.data.collect import select_tweets

        tweets, _ = select_tweets(TweetArchive(archive or None, progress=False).read())
        return tweets
    return load_dataset(dataset)


def split_like_model(metadata: dict, tweets: pd.DataFrame
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the cleaned tweets before a model's validation period and those in it.

    On the data the model trained on (same fingerprint), this is the model's own split, exactly;
    on other data, the tweets before and from the validation period's first second.
    """
    training = metadata.get("training", {})
    selected = select_period(tweets, training.get("since"), training.get("until"))
    corpus = Corpus.from_tweets(selected, training.get("validation_fraction", 0.05))
    if corpus.fingerprint()["sha256"] == metadata["data"]["sha256"]:
        return corpus.train, corpus.validation
    everything = Corpus.clean(tweets)
    since = pd.Timestamp(metadata["data"]["validation_since"])
    return everything[everything["created_at"] < since], everything[everything["created_at"]
                                                                    >= since]


def evaluate_command(*, model: str | None = None, text: str | None = None, clean: bool = False,
                     archive: str | None = None, dataset: str | None = None, since=None,
                     until=None, everything: bool = False, baseline_order: int | None = None,
                     samples: int | None = None, temperature: float | None = None,
                     top_p: float | None = None, sweep: bool = False,
                     save_defaults: bool = False, progress: bool = True) -> str:
    """Run ``covfefe evaluate`` and return what it prints (see the CLI's help)."""
    if clean and text is None:
        raise UserError("--clean cleans the lines of --text: tweets from the dataset or an "
                        "archive are cleaned already")
    if samples is not None:
        return sample_command(model=model, archive=archive, dataset=dataset, samples=samples,
                              temperature=temperature, top_p=top_p, sweep=sweep,
                              save_defaults=save_defaults, baseline_order=baseline_order,
                              progress=progress)
    from covfefe import config
    from covfefe.inference.artifact import load_artifact

    artifact = load_artifact(config.resolve(model) if model else config.model_dir())
    max_chars = artifact.metadata.get("model", {}).get("max_chars", MAX_TWEET_CHARS)
    validation_since = pd.Timestamp(artifact.metadata["data"]["validation_since"])
    lines = [f"model {artifact.name} {artifact.version} ({artifact.path})"]
    if text is not None:
        texts = read_text_file(text, clean=clean)
        lines.append(f"tweets: {text}, {len(texts)} lines "
                     + ("cleaned as for training" if clean else "scored as written"))
        if not clean and len(writable(texts, artifact.vocabulary)) < len(texts):
            lines.append("some lines hold characters the model never writes: raw tweets? "
                         "--clean cleans them as training does")
    elif since is None and until is None and not everything:
        _, held_out = split_like_model(artifact.metadata, tweets_to_score(archive, dataset))
        texts = list(held_out["text"])
        lines.append(f"tweets: {'archive' if archive is not None else 'dataset'}, cleaned, the "
                     f"model's validation period (from {validation_since.date()})")
    else:
        tweets = Corpus.clean(tweets_to_score(archive, dataset))
        since, until = as_utc(since), as_utc(until)
        tweets = select_period(tweets, since, until)
        texts = list(tweets["text"])
        lines.append(f"tweets: {'archive' if archive is not None else 'dataset'}, cleaned, "
                     f"from {since.date() if since is not None else 'the first'} "
                     f"to {until.date() if until is not None else 'the last'}")
    lines += served_lines(artifact, texts, progress=progress)
    if baseline_order is not None:
        from covfefe.lm.ngram import KneserNeyModel

        history, _ = split_like_model(artifact.metadata, tweets_to_score(archive, dataset))
        ngram = KneserNeyModel(baseline_order, len(artifact.vocabulary)).fit(
            encode_tweets(history["text"], artifact.vocabulary, max_chars))
        baseline = score_ngram(ngram, artifact.vocabulary, texts, max_chars=max_chars)
        lines.append(f"baseline {ngram.name} (fitted on {len(history)} tweets before "
                     f"{validation_since.date()}): {baseline.summary()}")
    return "\n".join(lines)


def writable(texts: Sequence[str], vocabulary) -> list[str]:
    """Return the texts generation can write: those without a character outside the
    vocabulary (the unknown symbol, which it never writes: probability 0 as served)."""
    return [text for text in texts if not vocabulary.unknown(text)]


def score_served(generator, texts: Sequence[str], max_chars: int = MAX_TWEET_CHARS,
                 progress: bool = False) -> Evaluation:
    """Score texts with exactly what ``generator`` (a `TweetGenerator`) draws from at
    temperature 1 and top-p 1 (`TweetGenerator.log_probs`)."""
    sequences = encode_tweets(texts, generator.vocabulary, max_chars)
    scores = generator.log_probs(sequences, progress=progress)
    return Evaluation(list(texts), np.array([-float(score.sum()) for score in scores]),
                      np.array([len(score) for score in scores], dtype=np.int64))


def served_lines(artifact, texts: Sequence[str], progress: bool = False) -> list[str]:
    """The lines of ``covfefe evaluate``'s scores: first the served distribution (what the
    generator draws from at temperature 1, top-p 1), then its parts alone."""
    from covfefe.inference.generate import TweetGenerator

    texts = [text for text in texts if text]
    if not texts:
        raise UserError("there are no (non-empty) tweets to evaluate")
    max_chars = artifact.metadata.get("model", {}).get("max_chars", MAX_TWEET_CHARS)
    generator = TweetGenerator.from_artifact(artifact)
    # A character outside the vocabulary is the unknown symbol, which generation never
    # writes: such a tweet has probability 0 as served, and is scored by the parts alone.
    can_write = writable(texts, generator.vocabulary)
    lines = []
    if can_write:
        served = score_served(generator, can_write, max_chars, progress)
        mixture, lexicon = artifact.mixture, artifact.metadata.get("lexicon")
        parts = [f"the network mixed with its {mixture['ngram_name']} table, weight "
                 f"{mixture['network_weight']:.3f}" if mixture else "the network"]
        if generator.decoding is not None:
            end = generator.decoding["end"]
            parts.append(f"leaving the {lexicon['words']:,} word forms of its lexicon costs "
                         f"{generator.decoding['word_penalty']:g} nats")
            if end:
                parts.append(f"ending costs {end.get('penalty', 0):g} nats below "
                             f"{end.get('below', 0)} characters, {-end.get('bonus', 0):g} from "
                             f"{end.get('bonus_from', MAX_TWEET_CHARS)}")
        lines.append(f"{served.summary()} (served: what generation draws from at temperature "
                     f"1 and top-p 1: {', '.join(parts)}; renormalised)")
    if len(can_write) < len(texts):
        lines.append(f"{len(texts) - len(can_write)} tweets hold characters outside the "
                     "vocabulary, which generation never writes: probability 0 as served, "
                     "left out above")
    evaluation = score_artifact(artifact, texts, progress=progress)
    if artifact.mixture:
        lines.append(f"part, the mixture without the word penalty: {evaluation.summary()}")
        lines.append(f"part, network alone: {evaluation.part('network').summary()}")
        lines.append(f"part, its n-gram table alone: {evaluation.part('ngram').summary()}")
    else:
        lines.append(f"part, network alone: {evaluation.summary()}")
    return lines


def mixture_holdout(metadata: dict, train: pd.DataFrame, holdout: int) -> np.ndarray:
    """Return the indices of the training tweets to fit a mixture weight on: the last
    ``holdout`` before the network's fine-tuning window (which it trained on most), or the
    last ``holdout`` training tweets when it had none."""
    since = metadata.get("training", {}).get("finetune_since")
    candidates = np.arange(len(train))
    if since and metadata.get("training", {}).get("finetune_epochs"):
        candidates = candidates[(train["created_at"] < as_utc(since)).to_numpy()]
    if not 0 < holdout < len(candidates):
        raise UserError(f"holdout must be between 1 and {len(candidates) - 1} tweets, "
                        f"not {holdout}")
    return candidates[-holdout:]


def mix_command(*, model: str | None = None, order: int = 9, holdout: int = 1500,
                output: str | None = None, archive: str | None = None,
                dataset: str | None = None, progress: bool = True) -> str:
    """Run ``covfefe mix``: add a Kneser-Ney table of ``order`` to a model, mixed with its
    network by a weight fitted on held-out training tweets (`covfefe.lm.mixture`)."""
    from covfefe import config
    from covfefe.inference.artifact import NUMPY_WEIGHTS, add_mixture, load_artifact
    from covfefe.inference.numpy_network import NumpyNetwork
    from covfefe.lm.lexicon import Lexicon
    from covfefe.lm.mixture import fit_mixture, network_log_probs

    started = time.monotonic()
    artifact = load_artifact(config.resolve(model) if model else config.model_dir())
    max_chars = artifact.metadata.get("model", {}).get("max_chars", MAX_TWEET_CHARS)
    train, validation = split_like_model(artifact.metadata, tweets_to_score(archive, dataset))
    held = mixture_holdout(artifact.metadata, train, holdout)
    network = (NumpyNetwork.load(artifact.path / NUMPY_WEIGHTS)
               if NUMPY_WEIGHTS in artifact.metadata["files"]
               else NumpyNetwork.from_keras(artifact.load_model()))
    ngram, weight, report = fit_mixture(
        network, encode_tweets(train["text"], artifact.vocabulary, max_chars), held, order,
        len(artifact.vocabulary), progress=progress)
    report["holdout_period"] = [train["created_at"].iloc[held[0]].isoformat(),
                                train["created_at"].iloc[held[-1]].isoformat()]
    # The model's validation figure becomes the mixture's (what it now generates with).
    sequences = encode_tweets(validation["text"], artifact.vocabulary, max_chars)
    mixed_nats = -mix_log_probs(network_log_probs(network, sequences, progress=progress),
                                ngram.log_probs(sequences), weight)
    metrics = {**artifact.metrics,
               "validation_bits_per_char": round(float(mixed_nats.mean() / LN2), 4),
               "network_validation_bits_per_char": artifact.metrics.get(
                   "network_validation_bits_per_char",
                   artifact.metrics.get("validation_bits_per_char"))}
    lexicon = Lexicon.from_texts(train["text"])
    mixed = add_mixture(artifact, ngram, weight, report, lexicon,
                        config.resolve(output) if output else None, metrics=metrics)
    bits = report["holdout_bits_per_char"]
    return (f"model {mixed.name} {mixed.version} ({mixed.path}): the network mixed with a "
            f"{ngram.name} table ({ngram.ngrams:,} n-grams, "
            f"{mixed.metadata['files']['ngram.npz.xz']['bytes'] / 1e6:.1f} MB), network weight "
            f"{weight:.3f}, fitted on {report['holdout_tweets']} held-out training tweets "
            f"({report['holdout_period'][0][:10]} to {report['holdout_period'][1][:10]}): "
            f"network {bits['network']:.4f}, table {bits['ngram']:.4f}, mixture "
            f"{bits['mixture']:.4f} bits/char there; a lexicon of {len(lexicon):,} word forms; "
            f"{time.monotonic() - started:.0f} s")


SWEEP_TEMPERATURES = (0.9, 1.0, 1.1)
SWEEP_TOP_PS = (1.0,)
# The word constraint's costs swept (`covfefe.lm.lexicon`): the word penalty about the
# validation optimum and above it; no end calibration, and two that make tweets longer.
LONGER = {"penalty": 2.0, "below": 180, "bonus": 4.0, "bonus_from": 260}
SLIGHTLY_LONGER = {"penalty": 1.5, "below": 200, "bonus": 1.5, "bonus_from": 250}
SWEEP_DECODINGS = tuple({"word_penalty": penalty, "end": end}
                        for end in ({}, SLIGHTLY_LONGER, LONGER) for penalty in (2.5, 4.0))


def sample_command(*, model: str | None = None, archive: str | None = None,
                   dataset: str | None = None, samples: int = 200,
                   temperature: float | None = None, top_p: float | None = None,
                   sweep: bool = False, save_defaults: bool = False,
                   baseline_order: int | None = None, progress: bool = True) -> str:
    """Run ``covfefe evaluate --samples N``: the sample figures (`covfefe.evaluation.quality`) of
    the model and of an n-gram table alone (the model's own, else one of ``baseline_order``), at
    the model's default settings, the given ones, or over a sweep (temperatures and the word
    constraint's costs) whose best setting can be saved as the model's defaults."""
    from covfefe import config
    from covfefe.evaluation.quality import (
        choose_defaults,
        dictionary_words,
        generators_to_compare,
        sample_quality,
        text_figures,
    )
    from covfefe.inference.artifact import load_artifact, update_metadata
    from covfefe.lm.lexicon import words_of

    if samples < 1:
        raise UserError(f"samples must be a positive whole number, not {samples}")
    if save_defaults and not sweep:
        raise UserError("--save-defaults needs --sweep: defaults are chosen over a sweep")
    artifact = load_artifact(config.resolve(model) if model else config.model_dir())
    novelty = artifact.novelty_index()
    if novelty is None:
        raise UserError(f"model artifact {artifact.path} has no novelty index: near copies "
                        "cannot be counted")
    train, validation = split_like_model(artifact.metadata, tweets_to_score(archive, dataset))
    known, dictionary = words_of(train["text"]), dictionary_words()
    generators = generators_to_compare(artifact, list(train["text"]), baseline_order or 9)
    table = next(name for name in generators if name != "model")
    defaults = artifact.metadata.get("defaults", {})
    real = text_figures(list(validation["text"]), known, dictionary)
    lines = [f"model {artifact.name} {artifact.version} ({artifact.path})",
             "validation tweets: " + " ".join(f"{k}={v}" for k, v in real.items())]
    if not sweep:
        settings = {"temperature": temperature or defaults.get("temperature", 1.0),
                    "top_p": top_p or defaults.get("top_p", 1.0)}
        for name, generator in generators.items():
            lines.append(sample_quality(generator, known, novelty, samples=samples,
                                        dictionary=dictionary, **settings).line(name))
        return "\n".join(lines)
    from covfefe.evaluation.quality import sweep as run_sweep

    chosen, settings = {}, {}
    bounds = {"max_at_limit": 2 * real["at_limit_share"], "length": real["mean_length"]}
    for name, generator in generators.items():
        results = run_sweep(generator, known, novelty, temperatures=SWEEP_TEMPERATURES,
                            top_ps=SWEEP_TOP_PS, decodings=SWEEP_DECODINGS, samples=samples,
                            progress=progress, dictionary=dictionary)
        lines += [figures.line(name) for figures in results]
        chosen[name], settings[name] = choose_defaults(results, **bounds), len(results)
        lines.append(chosen[name].line(f"{name}, best"))
    if save_defaults:
        best = chosen["model"]
        changes = {
            "defaults": {"temperature": best.temperature, "top_p": best.top_p},
            "samples": {"chosen_by": "fewest non-words (to 0.5%; ties: the mean length closest "
                                     "to the validation tweets', then the coolest) with at "
                                     "most 1.5% non-words, 2% near copies, twice the "
                                     "validation tweets' share cut at 280 and a mean length "
                                     "within 10% of theirs, over "
                                     f"{settings['model']} settings",
                        "model": best.as_dict(),
                        "ngram": {"name": table.removesuffix(" alone"),
                                  **chosen[table].as_dict()},
                        "validation": real}}
        if best.decoding is not None:
            changes["decoding"] = best.decoding
        updated = update_metadata(artifact, changes)
        lines.append(f"saved the defaults {best.describe()} in {updated.path} (version "
                     f"{updated.version})")
    return "\n".join(lines)

"""Evaluation: bits per character of a model (or of the n-gram baseline) on a set of tweets.

Bits per character of a tweet set: for each tweet, every character after the first plus the
end-of-tweet symbol, each given all the preceding characters of that tweet; the total of
``-log2 p`` divided by the number of characters scored. Characters outside the vocabulary are
scored as the unknown symbol. The first character is left out because it is predicted from
nothing, which measures how tweets begin rather than how well the model writes.
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covfefe.corpus import Corpus, SequenceBatches, encode_tweets
from covfefe.data.schema import as_utc, select_period
from covfefe.data.store import load_dataset
from covfefe.errors import UserError
from covfefe.text import MAX_TWEET_CHARS, Vocabulary

LN2 = math.log(2)
DEFAULT_BASELINE_ORDERS = (5, 7, 9)


@dataclass
class Evaluation:
    """Per-tweet scores of one model on one tweet set."""

    texts: list[str]
    nats: np.ndarray  # -ln p summed over each tweet's scored characters
    chars: np.ndarray  # characters scored per tweet (its length: chars 2..n plus END)

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


def score_model(model, vocabulary: Vocabulary, texts: Sequence[str], *,
                batch_size: int = 64, max_chars: int = MAX_TWEET_CHARS,
                progress: bool = False) -> Evaluation:
    """Score each text exactly as given with a Keras network of this vocabulary."""
    texts = [text for text in texts if text]
    if not texts:
        raise UserError("there are no (non-empty) tweets to evaluate")
    sequences = encode_tweets(texts, vocabulary, max_chars)
    batches = SequenceBatches(sequences, batch_size, shuffle=False, score_first=False)
    nats = np.zeros(len(texts))
    chars = np.zeros(len(texts), dtype=np.int64)
    from tqdm.auto import tqdm

    indices = batches.batch_indices(0)
    for batch in tqdm(indices, desc="scoring", unit="batch", disable=not progress):
        inputs, targets, weights = batches.pad(batch)
        logits = np.asarray(model(inputs, training=False), dtype=np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits).sum(axis=-1))
        target_logit = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        nats[batch] = ((log_z - target_logit) * weights).sum(axis=1)
        chars[batch] = weights.sum(axis=1).astype(np.int64)
    return Evaluation(texts, nats, chars)


def score_ngram(ngram, vocabulary: Vocabulary, texts: Sequence[str], *,
                max_chars: int = MAX_TWEET_CHARS) -> Evaluation:
    """Score each text exactly as given with a fitted `covfefe.ngram.KneserNeyModel`."""
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
    from covfefe.ngram import KneserNeyModel

    train = encode_tweets(corpus.train["text"], vocabulary, max_chars)
    rows = []
    for order in orders:
        ngram = KneserNeyModel(order, len(vocabulary)).fit(train)
        evaluation = score_ngram(ngram, vocabulary, corpus.validation["text"],
                                 max_chars=max_chars)
        rows.append({"order": order, "name": ngram.name,
                     "validation_bits_per_char": evaluation.bits_per_char})
    return pd.DataFrame(rows).sort_values("validation_bits_per_char").reset_index(drop=True)


def read_text_file(path: str | os.PathLike) -> list[str]:
    """Return the tweets of a one-tweet-per-line UTF-8 file, exactly as written (empty lines
    are skipped; nothing is cleaned)."""
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


def _tweets_to_score(archive: str | None, dataset: str | None) -> pd.DataFrame:
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


def evaluate_command(*, model: str | None = None, text: str | None = None,
                     archive: str | None = None, dataset: str | None = None, since=None,
                     until=None, everything: bool = False, baseline_order: int | None = None,
                     progress: bool = True) -> str:
    """Run ``covfefe evaluate`` and return what it prints (see the CLI's help)."""
    from covfefe import config
    from covfefe.artifact import load_artifact

    artifact = load_artifact(config.resolve(model) if model else config.model_dir())
    max_chars = artifact.metadata.get("model", {}).get("max_chars", MAX_TWEET_CHARS)
    validation_since = pd.Timestamp(artifact.metadata["data"]["validation_since"])
    lines = [f"model {artifact.name} {artifact.version} ({artifact.path})"]
    if text is not None:
        texts = read_text_file(text)
        lines.append(f"tweets: {text}, {len(texts)} lines scored as written")
    elif since is None and until is None and not everything:
        _, held_out = split_like_model(artifact.metadata, _tweets_to_score(archive, dataset))
        texts = list(held_out["text"])
        lines.append(f"tweets: {'archive' if archive is not None else 'dataset'}, cleaned, the "
                     f"model's validation period (from {validation_since.date()})")
    else:
        tweets = Corpus.clean(_tweets_to_score(archive, dataset))
        since, until = as_utc(since), as_utc(until)
        tweets = select_period(tweets, since, until)
        texts = list(tweets["text"])
        lines.append(f"tweets: {'archive' if archive is not None else 'dataset'}, cleaned, "
                     f"from {since.date() if since is not None else 'the first'} "
                     f"to {until.date() if until is not None else 'the last'}")
    evaluation = score_model(artifact.load_model(), artifact.vocabulary, texts,
                             max_chars=max_chars, progress=progress)
    lines.append(evaluation.summary())
    if baseline_order is not None:
        from covfefe.ngram import KneserNeyModel

        history, _ = split_like_model(artifact.metadata, load_dataset(dataset))
        ngram = KneserNeyModel(baseline_order, len(artifact.vocabulary)).fit(
            encode_tweets(history["text"], artifact.vocabulary, max_chars))
        baseline = score_ngram(ngram, artifact.vocabulary, texts, max_chars=max_chars)
        lines.append(f"baseline {ngram.name} (fitted on {len(history)} tweets before "
                     f"{validation_since.date()}): {baseline.summary()}")
    return "\n".join(lines)

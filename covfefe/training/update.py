"""Updating a model with new tweets: from the champion artifact, a challenger in minutes.

The champion has seen the tweets before its ``seen_until`` time (a trained model: its
validation split's start; an updated one: where its future held-out tweets began). The
tweets of the dataset from then on are the new ones, split in time order::

    new tweets:  | learn                                  | fit        | future      |
                   the network fine-tunes on these,         the weight   both models are
                   the table counts them                    is refit     scored on these
                                                            here         (never learned)

- **Vocabulary**: a character new to the model with at least ``min_char_count`` uses gets an id
  of its own, appended (every old id keeps its meaning); its embedding row and output column
  start as the unknown symbol's. The n-gram table's keys limit how many fit (`table_capacity`).
- **Table**: the champion's n-gram counts plus the learn tweets' (`KneserNeyModel.update`,
  exact, no recount of the old tweets), then plus the fit tweets once the weight is fitted.
- **Network**: fine-tuned from the champion's weights on the learn tweets and a replay sample of
  older tweets (``replay`` per new tweet) against forgetting; every epoch is checkpointed in the
  run folder, so an interrupted update resumes where it stopped.
- **Mixture weight**: refit on the fit tweets, which neither the network nor the table (at
  that point) has seen, as `covfefe mix` fits it.
- **Word list and near-copy index**: grow with the learn and fit tweets' words and shingles.

`step_effects` scores, on the future tweets, the champion and each step added in turn, so the
record says what each step gained. The champion against challenger decision is
`covfefe.evaluation.compare`.
"""

import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covfefe import config as settings
from covfefe.backend import import_keras
from covfefe.errors import UserError
from covfefe.files import read_json, write_json
from covfefe.inference.artifact import (
    ModelArtifact,
    add_mixture,
    load_artifact,
    new_version,
    save_artifact,
)
from covfefe.lm.lexicon import words_of
from covfefe.lm.mixture import fit_weight, mix_log_probs
from covfefe.lm.ngram import LEVEL_SHIFT, KneserNeyModel
from covfefe.lm.novelty import NoveltyIndex, shingle_hashes
from covfefe.text import MAX_TWEET_CHARS, UNK_ID, Vocabulary
from covfefe.training.corpus import Corpus, SequenceBatches, encode_tweets
from covfefe.training.model import ModelConfig, build_model, compile_model
from covfefe.training.scoring import LN2, score_model, target_log_probs
from covfefe.training.train_config import UpdateConfig

MIN_NEW_TWEETS = 10
# How many times the table may count each new tweet: the archive's tweets once, the newest
# tweets more (the world moved on), chosen on the fit tweets (1.5442 at 1, 1.5403 at 3 on the
# archive's last weeks, table and network updated: about a tenth of the update's gain).
RECENCY_CHOICES = (1, 2, 3, 4)  # fewer new tweets than this: nothing to learn from, or to judge by


@dataclass
class NewTweets:
    """The champion's new tweets, split in time order (each: id, created_at, text)."""

    seen_until: pd.Timestamp  # the champion had seen the tweets before this time
    learn: pd.DataFrame
    fit: pd.DataFrame
    future: pd.DataFrame
    older: pd.DataFrame  # the tweets the champion had seen (the replay is drawn from them)

    def summary(self) -> dict:
        def period(frame):
            return [frame["created_at"].min().isoformat(), frame["created_at"].max().isoformat()]

        return {"seen_until": self.seen_until.isoformat(),
                **{f"{name}_tweets": len(getattr(self, name))
                   for name in ("learn", "fit", "future")},
                **{f"{name}_period": period(getattr(self, name))
                   for name in ("learn", "fit", "future")}}


@dataclass
class UpdateResult:
    """What an update produced and measured."""

    challenger: ModelArtifact
    champion: ModelArtifact
    tweets: NewTweets
    new_chars: list[str]
    new_words: int
    history: list[dict]  # one row per fine-tuning epoch
    steps: pd.DataFrame  # step_effects on the future tweets
    seconds: float
    run_dir: Path
    timings: dict = field(default_factory=dict)

    def summary(self) -> str:
        steps = self.steps
        lines = [f"challenger {self.challenger.version} -> {self.challenger.path} "
                 f"(from champion {self.champion.version}, {self.seconds / 60:.1f} min)",
                 f"new tweets: {len(self.tweets.learn)} learned, {len(self.tweets.fit)} to fit "
                 f"the weight, {len(self.tweets.future)} held out as the future (from "
                 f"{self.tweets.future['created_at'].min():%Y-%m-%d %H:%M})",
                 f"new characters: {''.join(self.new_chars) or 'none'}; new words: "
                 f"{self.new_words}"]
        lines += [f"  {row.step:<34} {row.bits_per_char:.4f} bits/char on the future "
                  f"({row.gain_share:+.0%} of the gain)" for row in steps.itertuples()]
        return "\n".join(lines)


def seen_until(metadata: dict) -> pd.Timestamp:
    """The time before which a model has seen the tweets: an updated model's record, else
    the start of its training run's validation split."""
    value = (metadata.get("update") or {}).get("seen_until") or (
        metadata.get("data") or {}).get("validation_since")
    if not value:
        raise UserError("the champion's metadata says neither which tweets it was trained on "
                        "(data.validation_since) nor which it was updated with")
    return pd.Timestamp(value)


def split_new_tweets(tweets: pd.DataFrame, since: pd.Timestamp, update_config: UpdateConfig
                     ) -> NewTweets:
    """Clean the dataset's tweets and split those from ``since`` on (see the module doc)."""
    frame = Corpus.clean(tweets)
    if update_config.until:
        frame = frame[frame["created_at"] < pd.Timestamp(update_config.until, tz="UTC")]
    older = frame[frame["created_at"] < since].reset_index(drop=True)
    new = frame[frame["created_at"] >= since].reset_index(drop=True)
    if len(new) < MIN_NEW_TWEETS:
        last = frame["created_at"].max() if len(frame) else None
        raise UserError(f"only {len(new)} tweets since {since:%Y-%m-%d %H:%M} (the champion's "
                        f"data ends there; the dataset's newest is {last}): collect at least "
                        f"{MIN_NEW_TWEETS} newer tweets first (covfefe collect)")
    n_future = max(1, round(len(new) * update_config.future_fraction))
    rest = len(new) - n_future
    n_fit = max(1, round(rest * update_config.fit_fraction))
    n_learn = rest - n_fit
    if n_learn < 1:
        raise UserError(f"{len(new)} new tweets are too few to split into learn, fit and "
                        "future parts")
    return NewTweets(since, new.iloc[:n_learn].reset_index(drop=True),
                     new.iloc[n_learn:rest].reset_index(drop=True),
                     new.iloc[rest:].reset_index(drop=True), older)


def table_capacity(order: int) -> int:
    """The largest vocabulary an n-gram table of ``order`` can key (its ids in base
    vocabulary size must fit `LEVEL_SHIFT` bits)."""
    size = int(2 ** (LEVEL_SHIFT / order))
    while order * math.log2(size) >= LEVEL_SHIFT:
        size -= 1
    return size


def grow_vocabulary(vocabulary: Vocabulary, texts, min_count: int, capacity: int
                    ) -> tuple[Vocabulary, list[str]]:
    """The vocabulary with the new characters of ``texts`` used at least ``min_count`` times
    appended, most used first, as many as ``capacity`` symbols in all allows."""
    counts = Counter(char for text in texts for char in text if char not in vocabulary)
    new = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    new = new[:max(0, capacity - len(vocabulary))]
    grown = Vocabulary(vocabulary.chars + new, {**vocabulary.counts,
                                                **{c: counts[c] for c in new}},
                       vocabulary.min_count)
    return grown, new


def widen_network(model, vocab_size: int):
    """The network with room for symbols appended to the vocabulary: a new symbol's embedding
    row and output column (weights and bias) start as the unknown symbol's."""
    old_size = model.get_layer("embedding").input_dim
    if vocab_size == old_size:
        return model
    config = ModelConfig.from_dict(_architecture(model))
    wide = build_model(config, vocab_size)
    added = vocab_size - old_size
    for layer in model.layers:
        weights = layer.get_weights()
        if layer.name == "embedding":
            weights = [np.concatenate([weights[0], np.repeat(weights[0][UNK_ID:UNK_ID + 1],
                                                             added, axis=0)])]
        elif layer.name == "logits":
            kernel, bias = weights
            weights = [np.concatenate([kernel, np.repeat(kernel[:, UNK_ID:UNK_ID + 1], added,
                                                         axis=1)], axis=1),
                       np.concatenate([bias, np.repeat(bias[UNK_ID:UNK_ID + 1], added)])]
        if weights:
            wide.get_layer(layer.name).set_weights(weights)
    return wide


def _architecture(model) -> dict:
    """The `ModelConfig` fields of a network built by `build_model`, read from its layers."""
    recurrent = [layer for layer in model.layers if layer.name.startswith(("lstm_", "gru_"))]
    dropout = model.get_layer("embedding_dropout").rate
    return {"cell": recurrent[0].name.split("_")[0], "layers": len(recurrent),
            "units": recurrent[0].units, "embedding_dim": model.get_layer("embedding").output_dim,
            "dropout": dropout}


def _replay_sample(older: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` of the older tweets, drawn at random without replacement (all if fewer)."""
    if n <= 0 or older.empty:
        return older.iloc[:0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(older), size=min(n, len(older)), replace=False))
    return older.iloc[rows]


def fine_tune(model, vocabulary: Vocabulary, train_texts, validation_texts,
              update_config: UpdateConfig, run_dir: Path, max_chars: int,
              progress: bool = True) -> tuple[object, list[dict]]:
    """Fine-tune ``model`` (resuming from the run folder's last epoch if there is one) and
    return the epoch with the lowest bits/char on ``validation_texts``, and the history."""
    keras = import_keras()
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "fine_tune.json"
    state = read_json(state_path) or {"epochs_done": 0, "history": [], "best_epoch": 0}
    if state["epochs_done"]:
        model = keras.saving.load_model(checkpoints / "last.keras")
    else:
        model = compile_model(model, update_config.learning_rate)
        baseline = score_model(model, vocabulary, validation_texts, max_chars=max_chars)
        state["history"].append({"epoch": 0, "fit_bits_per_char": baseline.bits_per_char})
        model.save(checkpoints / "best.keras")
    batches = SequenceBatches(encode_tweets(list(train_texts), vocabulary, max_chars),
                              update_config.batch_size, seed=update_config.seed)
    for epoch in range(state["epochs_done"], update_config.epochs):
        keras.utils.set_random_seed(update_config.seed + epoch)
        batches.epoch = epoch
        started = time.monotonic()
        logs = model.fit(batches.to_tf_dataset(), epochs=1, shuffle=False, verbose=0).history
        scored = score_model(model, vocabulary, validation_texts, max_chars=max_chars)
        row = {"epoch": epoch + 1, "train_bits_per_char": float(logs["xent"][-1]) / LN2,
               "fit_bits_per_char": scored.bits_per_char,
               "seconds": round(time.monotonic() - started, 1)}
        state["history"].append(row)
        if progress:
            print(f"fine-tuning epoch {epoch + 1}/{update_config.epochs}: train "
                  f"{row['train_bits_per_char']:.4f}, fit tweets {row['fit_bits_per_char']:.4f}"
                  f" bits/char ({row['seconds']:.0f} s)", flush=True)
        best = min(state["history"], key=lambda r: r["fit_bits_per_char"])
        if best["epoch"] == epoch + 1:
            _save_atomically(model, checkpoints / "best.keras")
        _save_atomically(model, checkpoints / "last.keras")
        state.update(epochs_done=epoch + 1, best_epoch=best["epoch"])
        write_json(state_path, state)
    best_model = keras.saving.load_model(checkpoints / "best.keras", compile=False)
    return best_model, state["history"]


def _save_atomically(model, path: Path) -> None:
    temporary = path.with_name(f".tmp-{path.name}")
    model.save(temporary)
    os.replace(temporary, path)


def step_effects(steps: dict, texts, max_chars: int) -> pd.DataFrame:
    """Score ``texts`` with the champion and each (network, table, weight, vocabulary) of
    ``steps`` (name -> tuple, each adding one change to the one before); return bits/char and
    each step's share of the whole gain."""
    rows = []
    for name, (network, table, weight, vocabulary) in steps.items():
        evaluation = score_model(network, vocabulary, texts, max_chars=max_chars, ngram=table,
                                 weight=weight if table is not None else None)
        rows.append({"step": name, "bits_per_char": evaluation.bits_per_char,
                     "network_bits_per_char": evaluation.part("network").bits_per_char
                     if table is not None else evaluation.bits_per_char})
    frame = pd.DataFrame(rows)
    gain = frame["bits_per_char"].iloc[0] - frame["bits_per_char"].iloc[-1]
    frame["gain_share"] = (-frame["bits_per_char"].diff().fillna(0.0) / gain
                           if gain else 0.0)
    return frame


def _network(artifact: ModelArtifact):
    """A fresh copy of an artifact's network (the artifact's own copy stays untouched)."""
    keras = import_keras()
    return keras.saving.load_model(artifact.path / "model.keras", compile=False)


def update(update_config: UpdateConfig, tweets: pd.DataFrame | None = None, *,
           progress: bool = True) -> UpdateResult:
    """Build the challenger from the champion and the new tweets (see the module doc)."""
    from covfefe.data.store import load_dataset

    started = time.monotonic()
    timings = {}
    champion = load_artifact(settings.resolve(update_config.model) if update_config.model
                             else settings.model_dir())
    max_chars = champion.metadata.get("model", {}).get("max_chars", MAX_TWEET_CHARS)
    if tweets is None:
        tweets = load_dataset(update_config.dataset or None)
    new = split_new_tweets(tweets, seen_until(champion.metadata), update_config)
    run_dir = settings.resolve(update_config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run(run_dir, update_config, champion, new)
    learned_texts = list(new.learn["text"]) + list(new.fit["text"])

    # Vocabulary and the table's first count (before the fit tweets).
    champion_table = champion.ngram_model()  # read once: the LZMA table takes seconds
    table = champion_table
    order = table.order if table is not None else update_config.order
    vocabulary, new_chars = grow_vocabulary(champion.vocabulary, learned_texts,
                                            update_config.min_char_count, table_capacity(order))
    learn = encode_tweets(new.learn["text"], vocabulary, max_chars)
    fit = encode_tweets(new.fit["text"], vocabulary, max_chars)
    mark = time.monotonic()
    if table is None:
        table = KneserNeyModel(order, len(vocabulary)).fit(
            encode_tweets(new.older["text"], vocabulary, max_chars))
    repeats = [update_config.recency] if update_config.recency else list(RECENCY_CHOICES)
    learned_tables = {k: table.update(learn * k, len(vocabulary)) for k in repeats}
    timings["table_seconds"] = round(time.monotonic() - mark, 1)

    # The network, fine-tuned on the learn tweets and a replay of older ones.
    mark = time.monotonic()
    replay = _replay_sample(new.older, round(update_config.replay * len(new.learn)),
                            update_config.seed)
    network, history = fine_tune(
        widen_network(_network(champion), len(vocabulary)), vocabulary,
        pd.concat([replay["text"], new.learn["text"]]), list(new.fit["text"]), update_config,
        run_dir, max_chars, progress)
    timings["fine_tune_seconds"] = round(time.monotonic() - mark, 1)

    # The weight (and how much the new tweets count), fitted on the fit tweets; then the table
    # counts them too.
    mark = time.monotonic()
    network_scores = target_log_probs(network, vocabulary, new.fit["text"], max_chars)
    fitted = {}
    for k, learned in learned_tables.items():
        table_scores = learned.log_probs(fit)
        weight = fit_weight(network_scores, table_scores)
        fitted[k] = (float(-mix_log_probs(network_scores, table_scores, weight).mean()),
                     weight, table_scores)
    recency = min(fitted, key=lambda k: fitted[k][0])
    _, weight, table_scores = fitted[recency]
    mixed = mix_log_probs(network_scores, table_scores, weight)
    table_final = learned_tables[recency].update(fit * recency)
    del learned_tables
    timings["weight_seconds"] = round(time.monotonic() - mark, 1)

    old_weight = (champion.mixture or {}).get("network_weight", weight)
    steps = {"champion": (champion.load_model(), champion_table,
                          old_weight, champion.vocabulary)}
    if not new_chars:  # the old network and the new table share one vocabulary
        steps[f"+ table counts the new tweets (x{recency})"] = (champion.load_model(), table_final,
                                                  old_weight, vocabulary)
    steps["+ network fine-tuned"] = (network, table_final, old_weight, vocabulary)
    steps["+ mixture weight refit (challenger)"] = (network, table_final, weight, vocabulary)
    mark = time.monotonic()
    effects = step_effects(steps, new.future["text"], max_chars)
    timings["scoring_seconds"] = round(time.monotonic() - mark, 1)

    lexicon = champion.lexicon()
    grown_lexicon = lexicon.extended(learned_texts) if lexicon is not None else None
    added_words = len(grown_lexicon) - len(lexicon) if lexicon is not None else len(
        words_of(learned_texts))
    novelty = champion.novelty_index()
    if novelty is not None:
        novelty = NoveltyIndex(
            np.concatenate([novelty.hashes, *[shingle_hashes(text, novelty.size)
                                              for text in learned_texts]]),
            novelty.size, novelty.tweets + len(learned_texts))
    seconds = time.monotonic() - started
    record = {
        "champion": champion.version,
        "seen_until": new.future["created_at"].min().isoformat(),
        "config": {k: v for k, v in asdict(update_config).items()
                   if k not in ("model", "out", "run_dir", "dataset")},
        "tweets": new.summary(),
        "new_chars": new_chars,
        "new_words": added_words,
        "replay_tweets": len(replay),
        "recency": recency,
        "recency_fit_bits_per_char": {str(k): round(v[0] / LN2, 4) for k, v in fitted.items()},
        "fine_tuning": history,
        "mixture_fit": {"tweets": len(fit), "chars": len(mixed),
                        "bits_per_char": {
                            "network": round(float(-network_scores.mean() / LN2), 4),
                            "ngram": round(float(-table_scores.mean() / LN2), 4),
                            "mixture": round(float(-mixed.mean() / LN2), 4)}},
        "future_steps": effects.round(4).to_dict(orient="records"),
        "timings": {**timings, "total_seconds": round(seconds, 1)},
    }
    metadata = {key: value for key, value in champion.metadata.items()
                if key not in ("files", "version", "created", "covfefe_version", "mixture",
                               "lexicon", "novelty", "format", "format_version")}
    metadata["model"] = {**metadata.get("model", {}), "vocab_size": len(vocabulary)}
    metadata["update"] = record
    metadata["lineage"] = [*champion.metadata.get("lineage", []), champion.version]
    if novelty is not None:
        metadata["novelty"] = {"shingle": novelty.size, "tweets": novelty.tweets,
                               "shingles": len(novelty)}
    out = settings.resolve(update_config.out) if update_config.out else run_dir / "model"
    saved = save_artifact(out, network, vocabulary, {**metadata, "version": new_version()},
                          saved_model=False, novelty=novelty, overwrite=True)
    challenger = add_mixture(
        saved, table_final, weight,
        {"holdout_tweets": len(fit), "holdout_chars": len(mixed),
         "holdout_bits_per_char": record["mixture_fit"]["bits_per_char"],
         "holdout_period": record["tweets"]["fit_period"]},
        lexicon=grown_lexicon)
    write_json(run_dir / "update.json", {**record, "challenger": challenger.version,
                                          "challenger_path": str(challenger.path)})
    return UpdateResult(challenger, champion, new, new_chars, added_words, history,
                        effects, seconds, run_dir, timings)


def _check_run(run_dir: Path, update_config: UpdateConfig, champion: ModelArtifact,
               new: NewTweets) -> None:
    """Refuse to resume an update folder started from another champion, on other tweets or
    with other parameters (more epochs may be asked of a finished or interrupted one)."""
    identity = {"champion": champion.version, "tweets": new.summary(),
                "config": {k: v for k, v in asdict(update_config).items()
                           if k not in ("out", "run_dir", "model", "dataset", "epochs")}}
    saved = read_json(run_dir / "run.json")
    if saved is not None and saved != json.loads(json.dumps(identity)):
        raise UserError(f"update folder {run_dir} was started from another champion, on other "
                        "tweets or with other parameters: use a new --run-dir")
    write_json(run_dir / "run.json", identity)


__all__ = ["UpdateConfig", "UpdateResult", "update", "seen_until", "split_new_tweets",
           "grow_vocabulary", "widen_network", "table_capacity", "step_effects"]

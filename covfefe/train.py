"""Training: from the dataset to a versioned model artifact, resumable after a crash or kill.

A run lives in its own folder (the run directory)::

    <run>/config.json          the parameters the run was started with
    <run>/data.json            the fingerprint of the data it trains on
    <run>/vocabulary.json      built once from the training tweets
    <run>/checkpoints/last.keras, best.keras   written after every epoch (optimizer included)
    <run>/state.json           epochs done, best epoch, early-stopping and learning-rate state
    <run>/history.csv          one row per epoch (loss, bits/char, learning rate)
    <run>/tensorboard/         TensorBoard logs
    <run>/model/               the exported artifact (covfefe.artifact)

Training has up to two phases. The main one trains on every training tweet for ``epochs``
epochs (or until early stopping). The optional fine-tuning phase then continues from the best
epoch for ``finetune_epochs`` epochs on the training tweets since ``finetune_since`` alone,
at ``finetune_learning_rate``: the validation tweets are the most recent ones, and a model
nudged towards the latest training tweets predicts them better (domain adaptation; the
validation tweets themselves are never trained on). A fine-tuning phase can be added to a
finished run.

Rerunning `train` with the same run directory resumes from the last checkpoint; a run that has
finished goes straight to evaluation and export. Changing the architecture or the data of an
existing run is refused: start a new run directory instead.
"""

import contextlib
import os
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from covfefe import config as settings
from covfefe.corpus import Corpus, SequenceBatches, encode_tweets
from covfefe.errors import UserError
from covfefe.files import read_json, write_json
from covfefe.model import ModelConfig, build_model, compile_model
from covfefe.text import MAX_TWEET_CHARS, Vocabulary

# Parameters that define what a run computes: changing one of them means a new run.
FIXED_PARAMETERS = ("since", "until", "cell", "layers", "units", "embedding_dim", "dropout",
                    "max_chars", "batch_size", "validation_fraction", "min_count", "seed")


@dataclass
class TrainConfig:
    """Every training parameter, with the defaults of a small model that trains on a CPU."""

    run_dir: str = ""  # checkpoints, logs, artifact ("" = a new $COVFEFE_RUNS_DIR/train-<time>)
    dataset: str = ""  # the collected dataset ("" = $COVFEFE_DATA_DIR/tweets.parquet)
    since: str = ""  # train on tweets from this UTC date on ("" = from the first)
    until: str = ""  # train on tweets before this UTC date ("" = to the last)
    name: str = "covfefe"  # the model's name in its metadata and in the API
    cell: str = "lstm"  # "lstm" or "gru"
    layers: int = 2  # stacked recurrent layers
    units: int = 256  # units per recurrent layer
    embedding_dim: int = 64  # character embedding size
    dropout: float = 0.1  # dropout between layers
    max_chars: int = MAX_TWEET_CHARS  # longer tweets are cut
    batch_size: int = 128  # tweets per batch
    epochs: int = 20  # most epochs (early stopping may end sooner)
    learning_rate: float = 0.003  # Adam's initial learning rate
    lr_decay: float = 1.0  # learning rate multiplier per epoch after lr_decay_after (1: none)
    lr_decay_after: int = 0  # epochs at the initial learning rate before lr_decay applies
    lr_factor: float = 0.5  # learning rate multiplier when validation stops improving
    lr_patience: int = 1  # epochs without improvement before the learning rate drops
    patience: int = 3  # epochs without improvement before training stops
    finetune_epochs: int = 0  # then this many epochs on the recent tweets alone (0: none)
    finetune_since: str = ""  # the recent tweets: training tweets from this UTC date on
    finetune_learning_rate: float = 0.0005  # the learning rate the fine-tuning starts at
    validation_fraction: float = 0.05  # the most recent tweets, held out
    min_count: int = settings.VOCAB_MIN_COUNT  # rarer characters become the unknown symbol
    seed: int = 42  # the same seed, data and parameters give the same run
    baseline_order: int = 7  # the Kneser-Ney character n-gram baseline's order
    export_dir: str = ""  # where the artifact goes ("" = <run_dir>/model)
    saved_model: bool = True  # also export a TF Serving SavedModel
    # Data-parallel training (tf.distribute.MirroredStrategy): each batch is split between the
    # devices and their gradients summed; batch_size stays the whole batch, so the model is the
    # same as on one device, up to rounding.
    distribute: str = ""  # "" one device; "mirrored": every GPU; "mirrored:GPU:0,GPU:1": those

    def __post_init__(self):
        if not self.run_dir:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            self.run_dir = str(settings.runs_dir() / f"train-{stamp}")
        self.model_config()  # validates the architecture
        for name in ("max_chars", "batch_size", "epochs", "patience", "lr_patience",
                     "min_count", "baseline_order"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a positive whole number, not {value!r}")
        if (not isinstance(self.lr_decay_after, int) or isinstance(self.lr_decay_after, bool)
                or self.lr_decay_after < 0):
            raise UserError("lr_decay_after must be a whole number of epochs, at least 0, "
                            f"not {self.lr_decay_after!r}")
        if not 0 < self.lr_decay <= 1:
            raise UserError(f"lr_decay must be above 0 and at most 1, not {self.lr_decay!r}")
        if not self.learning_rate > 0:
            raise UserError(f"learning_rate must be above 0, not {self.learning_rate!r}")
        if (not isinstance(self.finetune_epochs, int) or isinstance(self.finetune_epochs, bool)
                or self.finetune_epochs < 0):
            raise UserError("finetune_epochs must be a whole number of epochs, at least 0, "
                            f"not {self.finetune_epochs!r}")
        if self.finetune_epochs and not self.finetune_since:
            raise UserError("finetune_epochs needs finetune_since: the date the recent tweets "
                            "start at")
        if not self.finetune_learning_rate > 0:
            raise UserError("finetune_learning_rate must be above 0, not "
                            f"{self.finetune_learning_rate!r}")
        kind, _, devices = str(self.distribute).partition(":")
        if kind not in ("", "mirrored") or (":" in str(self.distribute) and not devices):
            raise UserError(f"distribute must be \"\" (one device), \"mirrored\" or "
                            f"\"mirrored:DEVICE,DEVICE...\", not {self.distribute!r}")

    def model_config(self) -> ModelConfig:
        return ModelConfig(cell=self.cell, layers=self.layers, units=self.units,
                           embedding_dim=self.embedding_dim, dropout=self.dropout)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown training parameter(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_namespace(cls, namespace: dict) -> "TrainConfig":
        """Return the config of the names a namespace defines (a notebook's parameters)."""
        return cls(**{field.name: namespace[field.name] for field in fields(cls)
                      if field.name in namespace})


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    artifact: object  # covfefe.artifact.ModelArtifact
    history: pd.DataFrame
    resumed_from_epoch: int
    stop_reason: str
    finetune_from: int | None = None  # the last epoch before fine-tuning, if the run fine-tuned

    def summary(self) -> str:
        metrics = self.artifact.metrics
        return (f"model {self.artifact.name} {self.artifact.version} -> {self.artifact.path}\n"
                f"epochs={len(self.history)} (resumed from {self.resumed_from_epoch}, "
                f"{self.stop_reason}) best_epoch={metrics['best_epoch']}\n"
                f"validation bits_per_char={metrics['validation_bits_per_char']:.4f} "
                f"baseline ({metrics['baseline']['name']}) "
                f"bits_per_char={metrics['baseline']['validation_bits_per_char']:.4f}")


def _check_run(run_dir: Path, train_config: TrainConfig, fingerprint: dict) -> None:
    """Refuse to resume a run with other fixed parameters or other data; record them if new."""
    saved = read_json(run_dir / "config.json")
    if saved is not None:
        # A parameter added after the run started has its default value in that run.
        defaults = {field.name: field.default for field in fields(TrainConfig)}
        changed = [name for name in FIXED_PARAMETERS
                   if saved.get(name, defaults[name]) != getattr(train_config, name)]
        if changed:
            raise UserError(
                f"run {run_dir} was started with other {', '.join(changed)} "
                f"({', '.join(f'{n}={saved.get(n)!r}' for n in changed)}): "
                "use a new run directory for new parameters"
            )
    write_json(run_dir / "config.json", asdict(train_config))
    saved_data = read_json(run_dir / "data.json")
    if saved_data is not None and saved_data["sha256"] != fingerprint["sha256"]:
        raise UserError(f"run {run_dir} was started on other data ({saved_data['tweets']} "
                        f"tweets up to {saved_data['last_tweet']}): use a new run directory")
    write_json(run_dir / "data.json", fingerprint)


def load_history(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Return the per-epoch history of a run (empty before its first epoch)."""
    path = settings.resolve(run_dir) / "history.csv"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=["epoch"])
    history = pd.read_csv(path)
    history["epoch"] += 1  # Keras counts from 0; people count from 1
    # A kill between the CSV row and the state write can leave a row for an unsaved epoch.
    state = read_json(settings.resolve(run_dir) / "state.json") or {}
    return history[history["epoch"] <= state.get("epochs_done", 0)].reset_index(drop=True)


def _recent(train_config: TrainConfig, corpus: Corpus) -> pd.DataFrame:
    """The training tweets the fine-tuning phase trains on."""
    from covfefe.data.collect import as_utc

    recent = corpus.train[corpus.train["created_at"] >= as_utc(train_config.finetune_since)]
    if recent.empty:
        raise UserError(f"no training tweets since finetune_since={train_config.finetune_since}"
                        f" (training tweets end at {corpus.train['created_at'].max()})")
    return recent


def distribution_scope(distribute: str):
    """The scope to build or load the model in for a `distribute` parameter: Keras trains a
    model with the tf.distribute strategy it was made under. One device: a scope that does
    nothing."""
    if not distribute:
        return contextlib.nullcontext()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UserError(f"distribute={distribute!r} needs Keras's TensorFlow backend "
                        f"(KERAS_BACKEND=tensorflow), not {keras.backend.backend()}")
    import tensorflow as tf

    devices = distribute.partition(":")[2]
    try:
        strategy = tf.distribute.MirroredStrategy(devices=devices.split(",") if devices else None)
    except (ValueError, RuntimeError) as error:
        raise UserError(f"distribute={distribute!r}: {error}") from None
    return strategy.scope()


def _main_phase_done(train_config: TrainConfig, state: dict) -> bool:
    return (state.get("phase") == "fine-tune" or state["epochs_done"] >= train_config.epochs
            or state.get("stop_reason") == "early stopping")


def fit(train_config: TrainConfig, corpus: Corpus, vocabulary: Vocabulary, *,
        progress: bool = True) -> tuple[dict, int]:
    """Train (or resume training) in the run directory; return the state and the start epoch."""
    run_dir = settings.resolve(train_config.run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    state = read_json(run_dir / "state.json") or {"epochs_done": 0, "finished": False}
    start_epoch = state["epochs_done"]
    main_done = _main_phase_done(train_config, state)
    if train_config.finetune_epochs:
        recent = _recent(train_config, corpus)  # checked before any training
        finetune_end = state.get("finetune_from", start_epoch) + train_config.finetune_epochs
        if state.get("phase") == "fine-tune" and (
                start_epoch >= finetune_end or state.get("stop_reason") == "early stopping"):
            return state, start_epoch
    elif main_done:
        return state, start_epoch

    import keras

    from covfefe.callbacks import (
        BatchOrder,
        BitsPerChar,
        LearningRateDecay,
        RunCheckpoint,
        restore_callbacks,
    )

    validation_batches = SequenceBatches(
        encode_tweets(corpus.validation["text"], vocabulary, train_config.max_chars),
        train_config.batch_size, shuffle=False, score_first=False, fixed_width=True,
    )
    checkpoints = run_dir / "checkpoints"

    def run_phase(model, tweets, end_epoch: int, schedule: list) -> None:
        first = state["epochs_done"]
        state["finished"] = False
        state.pop("stop_reason", None)
        keras.utils.set_random_seed(train_config.seed + first)
        batches = SequenceBatches(encode_tweets(tweets["text"], vocabulary,
                                                train_config.max_chars),
                                  train_config.batch_size, seed=train_config.seed)
        batches.epoch = first
        early_stopping = keras.callbacks.EarlyStopping(monitor="val_xent",
                                                       patience=train_config.patience)
        reduce_lr = keras.callbacks.ReduceLROnPlateau(
            monitor="val_xent", factor=train_config.lr_factor,
            patience=train_config.lr_patience, min_lr=train_config.learning_rate / 100,
        )
        restore_callbacks(state, early_stopping, reduce_lr)
        callbacks = [
            *schedule,
            BatchOrder(batches),
            BitsPerChar(),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=first > 0),
            keras.callbacks.TensorBoard(str(run_dir / "tensorboard")),
            early_stopping,
            reduce_lr,
            RunCheckpoint(run_dir, state, early_stopping, reduce_lr),  # last: records the others
        ]
        if keras.backend.backend() == "tensorflow":
            train_data, validation_data = (batches.to_tf_dataset(),
                                           validation_batches.to_tf_dataset())
        else:  # JAX or PyTorch (the GPU machine has no TensorFlow): the same NumPy batches
            from covfefe.callbacks import KerasBatches

            train_data, validation_data = KerasBatches(batches), KerasBatches(validation_batches)
        model.fit(train_data, validation_data=validation_data, epochs=end_epoch,
                  initial_epoch=first, callbacks=callbacks, shuffle=False,
                  verbose="auto" if progress else 0)
        if not state.get("finished") and state["epochs_done"] >= end_epoch:
            state["finished"], state["stop_reason"] = True, f"{end_epoch} epochs"
        write_json(run_dir / "state.json", state)

    if not main_done:
        keras.utils.set_random_seed(train_config.seed + start_epoch)  # the initial weights too
        with distribution_scope(train_config.distribute):
            if start_epoch and (checkpoints / "last.keras").exists():
                model = keras.saving.load_model(checkpoints / "last.keras")
            else:
                model = compile_model(build_model(train_config.model_config(), len(vocabulary)),
                                      train_config.learning_rate)
        run_phase(model, corpus.train, train_config.epochs,
                  [LearningRateDecay(train_config.lr_decay, train_config.lr_decay_after)])
    if train_config.finetune_epochs:
        if state.get("phase") != "fine-tune":
            # Start from the best epoch, at the fine-tuning rate, with fresh patience.
            state["phase"], state["finetune_from"] = "fine-tune", state["epochs_done"]
            for counters in state.get("callbacks", {}).values():
                counters["wait"] = 0
            with distribution_scope(train_config.distribute):
                model = keras.saving.load_model(checkpoints / "best.keras")
            model.optimizer.learning_rate = train_config.finetune_learning_rate
        else:
            with distribution_scope(train_config.distribute):
                model = keras.saving.load_model(checkpoints / "last.keras")
        run_phase(model, recent, state["finetune_from"] + train_config.finetune_epochs, [])
    return state, start_epoch


def prepare(train_config: TrainConfig, tweets: pd.DataFrame | None = None
            ) -> tuple[Corpus, Vocabulary]:
    """Load and split the data, check it against the run directory, and get the vocabulary."""
    from covfefe.explore import load_dataset

    run_dir = settings.resolve(train_config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if tweets is None:
        tweets = load_dataset(train_config.dataset or None)
    from covfefe.data.collect import as_utc

    if train_config.since:
        tweets = tweets[tweets["created_at"] >= as_utc(train_config.since)]
    if train_config.until:
        tweets = tweets[tweets["created_at"] < as_utc(train_config.until)]
    corpus = Corpus.from_tweets(tweets, train_config.validation_fraction)
    _check_run(run_dir, train_config, corpus.fingerprint())
    vocabulary_path = run_dir / "vocabulary.json"
    if vocabulary_path.exists():
        vocabulary = Vocabulary.load(vocabulary_path)
    else:
        vocabulary = Vocabulary.from_texts(corpus.train["text"], train_config.min_count)
        vocabulary.save(vocabulary_path)
    return corpus, vocabulary


def export_trained_model(train_config: TrainConfig, corpus: Corpus, vocabulary: Vocabulary,
                         state: dict, history: pd.DataFrame, *, progress: bool = True,
                         seconds: float | None = None):
    """Score the best epoch and the n-gram baselines on the validation tweets; export both
    numbers with the model as its artifact (`covfefe.artifact`)."""
    import keras

    from covfefe.artifact import save_artifact
    from covfefe.evaluate import ngram_baselines, score_model
    from covfefe.novelty import NoveltyIndex

    run_dir = settings.resolve(train_config.run_dir)
    best = run_dir / "checkpoints" / "best.keras"
    if not best.exists():
        raise UserError(f"run {run_dir} has no checkpoint to export yet: train first")
    model = keras.saving.load_model(best, compile=False)
    validation = score_model(model, vocabulary, corpus.validation["text"],
                             max_chars=train_config.max_chars, progress=progress)
    baselines = ngram_baselines(corpus, vocabulary, sorted({5, 7, train_config.baseline_order}),
                                train_config.max_chars)
    best_baseline = baselines.iloc[0]
    best_row = history[history["epoch"] == state["best_epoch"]]
    model_config = train_config.model_config()
    metadata = {
        "name": f"{train_config.name}-{model_config.name}",
        "description": "character-level recurrent network trained on tweets",
        "model": {**model_config.to_dict(), "vocab_size": len(vocabulary),
                  "parameters": int(model.count_params()), "max_chars": train_config.max_chars},
        "training": {
            **{k: v for k, v in asdict(train_config).items()
               if k not in ("run_dir", "dataset", "export_dir", "saved_model")},
            "run_dir": train_config.run_dir,
            "epochs_trained": int(state["epochs_done"]),
            "best_epoch": int(state["best_epoch"]),
            "stop_reason": state.get("stop_reason", ""),
            "keras_backend": keras.backend.backend(),
            "seconds_this_session": round(seconds, 1) if seconds is not None else None,
        },
        "data": corpus.fingerprint(),
        "metrics": {
            "validation_bits_per_char": round(validation.bits_per_char, 4),
            "validation_chars": int(validation.chars.sum()),
            "train_bits_per_char_best_epoch": (round(float(best_row["bits_per_char"].iloc[0]), 4)
                                               if len(best_row) else None),
            "best_epoch": int(state["best_epoch"]),
            "baseline": {"name": str(best_baseline["name"]), "order": int(best_baseline["order"]),
                         "validation_bits_per_char":
                             round(float(best_baseline["validation_bits_per_char"]), 4)},
            "baselines": [{"name": row.name, "order": int(row.order),
                           "validation_bits_per_char": round(float(row.validation_bits_per_char),
                                                             4)}
                          for row in baselines.itertuples()],
        },
    }
    folder = (settings.resolve(train_config.export_dir) if train_config.export_dir
              else run_dir / "model")
    novelty = NoveltyIndex.build(pd.concat([corpus.train["text"], corpus.validation["text"]]))
    metadata["novelty"] = {"shingle": novelty.size, "tweets": novelty.tweets,
                           "shingles": len(novelty)}
    return save_artifact(folder, model, vocabulary, metadata,
                         saved_model=train_config.saved_model, novelty=novelty, overwrite=True)


def train(train_config: TrainConfig, tweets: pd.DataFrame | None = None, *,
          progress: bool = True, export: bool = True) -> TrainResult:
    """Train or resume, evaluate the best epoch against the n-gram baselines, export it."""
    started = time.monotonic()
    corpus, vocabulary = prepare(train_config, tweets)
    state, start_epoch = fit(train_config, corpus, vocabulary, progress=progress)
    run_dir = settings.resolve(train_config.run_dir)
    history = load_history(run_dir)
    artifact = None
    if export:
        artifact = export_trained_model(train_config, corpus, vocabulary, state, history,
                                        progress=progress,
                                        seconds=time.monotonic() - started)
    return TrainResult(run_dir, artifact, history, start_epoch, state.get("stop_reason", ""),
                       state.get("finetune_from"))

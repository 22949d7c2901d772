"""Training: from the dataset to a versioned model artifact, resumable after a crash or kill.

A run lives in its own folder (the run directory)::

    <run>/config.json          the parameters the run was started with
    <run>/data.json            the fingerprint of the data it trains on
    <run>/vocabulary.json      built once from the training tweets
    <run>/checkpoints/last.keras, best.keras   written after every epoch (optimizer included)
    <run>/state.json           epochs done, best epoch, early-stopping and learning-rate state
    <run>/history.csv          one row per epoch (loss, bits/char, learning rate)
    <run>/tensorboard/         TensorBoard logs (where TensorFlow is installed: Keras writes them
                               with tf.summary, on every backend)
    <run>/model/               the exported artifact (covfefe.inference.artifact)

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
import importlib.util
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from covfefe import config as settings
from covfefe import tracking
from covfefe.backend import import_keras
from covfefe.data.schema import as_utc, select_period
from covfefe.data.store import load_dataset
from covfefe.errors import UserError
from covfefe.files import read_json, write_json
from covfefe.inference.artifact import save_artifact
from covfefe.lm.novelty import NoveltyIndex
from covfefe.text import Vocabulary
from covfefe.training.callbacks import (
    BatchOrder,
    BitsPerChar,
    KerasBatches,
    LearningRateDecay,
    ResumableEarlyStopping,
    ResumableReduceLROnPlateau,
    RunCheckpoint,
    WarmupCosine,
)
from covfefe.training.corpus import Corpus, SequenceBatches, encode_tweets
from covfefe.training.model import build_model, compile_model
from covfefe.training.run_state import FINE_TUNE, RunState
from covfefe.training.scoring import ngram_baselines, score_model
from covfefe.training.train_config import TrainConfig

keras = import_keras()

__all__ = ["TrainConfig", "TrainResult", "load_history", "prepare", "fit", "train"]

# Parameters that define what a run computes: changing one of them means a new run.
FIXED_PARAMETERS = ("since", "until", "cell", "layers", "units", "embedding_dim", "dropout",
                    "max_chars", "batch_size", "validation_fraction", "min_count", "seed",
                    "init_from")


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    artifact: object  # covfefe.inference.artifact.ModelArtifact
    history: pd.DataFrame
    resumed_from_epoch: int
    stop_reason: str
    finetune_from: int | None = None  # the last epoch before fine-tuning, if the run fine-tuned

    def summary(self) -> str:
        started = (f"resumed after epoch {self.resumed_from_epoch}" if self.resumed_from_epoch
                   else "a new run")
        if self.artifact is None:
            return (f"run {self.run_dir}: epochs={len(self.history)} ({started}, "
                    f"{self.stop_reason or 'not finished'}), not exported: rerun without "
                    "--no-export to score and export it")
        metrics = self.artifact.metrics
        return (f"model {self.artifact.name} {self.artifact.version} -> {self.artifact.path}\n"
                f"epochs={len(self.history)} ({started}, {self.stop_reason}) "
                f"best_epoch={metrics['best_epoch']}\n"
                f"validation bits_per_char={metrics['validation_bits_per_char']:.4f} "
                f"baseline ({metrics['baseline']['name']}) "
                f"bits_per_char={metrics['baseline']['validation_bits_per_char']:.4f}")


def _check_run(run_dir: Path, train_config: TrainConfig, fingerprint: dict) -> None:
    """Refuse to resume a run with other fixed parameters or other data; record them if new."""
    saved = read_json(run_dir / "config.json")
    if saved is not None:
        # A parameter added after the run started has its default value in that run.
        defaults = {field.name: field.default for field in fields(TrainConfig)}
        def same(name: str) -> bool:
            before, now = saved.get(name, defaults[name]), getattr(train_config, name)
            if name == "init_from" and before and now:  # a path: relative or not, the same file
                return settings.resolve(before).resolve() == settings.resolve(now).resolve()
            return before == now

        changed = [name for name in FIXED_PARAMETERS if not same(name)]
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
    epochs_done = RunState.load(settings.resolve(run_dir)).epochs_done
    return history[history["epoch"] <= epochs_done].reset_index(drop=True)


def _recent(train_config: TrainConfig, corpus: Corpus) -> pd.DataFrame:
    """The training tweets the fine-tuning phase trains on."""
    recent = corpus.train[corpus.train["created_at"] >= as_utc(train_config.finetune_since)]
    if recent.empty:
        raise UserError(f"no training tweets since finetune_since={train_config.finetune_since}"
                        f" (training tweets end at {corpus.train['created_at'].max()})")
    return recent


def _keras_verbosity(progress: bool) -> int:
    """Keras's ``verbose``: a live progress bar on a terminal; elsewhere (a notebook's record,
    a log file) one line per epoch, not hundreds of backspaced bar updates; 0 without progress."""
    if not progress:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _main_phase_done(train_config: TrainConfig, state: RunState) -> bool:
    return (state.fine_tuning or state.epochs_done >= train_config.epochs
            or state.stop_reason == "early stopping")


def _finetune_done(train_config: TrainConfig, state: RunState) -> bool:
    return not train_config.finetune_epochs or state.fine_tuning and (
        state.epochs_done >= state.finetune_from + train_config.finetune_epochs
        or state.stop_reason == "early stopping")


def distribution_scope(distribute: str):
    """The scope to build or load the model in for a `distribute` parameter: Keras trains a
    model with the tf.distribute strategy it was made under. One device: a scope that does
    nothing."""
    if not distribute:
        return contextlib.nullcontext()
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


def _main_model(train_config: TrainConfig, run_dir: Path, state: RunState, vocab_size: int):
    """The model the main phase starts (or resumes) from: its last checkpoint, or a new one."""
    keras.utils.set_random_seed(train_config.seed + state.epochs_done)  # the initial weights too
    last = run_dir / "checkpoints" / "last.keras"
    with distribution_scope(train_config.distribute):
        if state.epochs_done and last.exists():
            return keras.saving.load_model(last)
        model = build_model(train_config.model_config(), vocab_size)
        if train_config.init_from:
            model.set_weights(_initial_weights(train_config, model).get_weights())
        return compile_model(model, train_config.learning_rate,
                             weight_decay=train_config.weight_decay)


def _init_path(train_config: TrainConfig) -> Path:
    """The .keras file ``init_from`` names (an artifact folder's model.keras, or the file)."""
    path = settings.resolve(train_config.init_from)
    return path / "model.keras" if path.is_dir() else path


def _initial_weights(train_config: TrainConfig, model):
    """The network ``init_from`` names, checked to have the run's architecture."""
    path = _init_path(train_config)
    try:
        start = keras.saving.load_model(path, compile=False)
    except (OSError, ValueError) as error:
        raise UserError(f"init_from={train_config.init_from!r}: cannot load {path} "
                        f"({error})") from None
    shapes = [w.shape for w in start.get_weights()]
    if shapes != [w.shape for w in model.get_weights()]:
        raise UserError(f"init_from={train_config.init_from!r} is another architecture than "
                        f"{train_config.model_config().name} with this vocabulary: give the "
                        "run its cell, layers, units and embedding_dim")
    return start


def _finetune_model(train_config: TrainConfig, run_dir: Path, state: RunState):
    """The model fine-tuning resumes from, or starts from: the main phase's best epoch, at the
    fine-tuning rate, with fresh patience."""
    if state.fine_tuning:
        with distribution_scope(train_config.distribute):
            return keras.saving.load_model(run_dir / "checkpoints" / "last.keras")
    state.phase, state.finetune_from = FINE_TUNE, state.epochs_done
    state.early_stopping.wait = state.reduce_lr.wait = 0
    with distribution_scope(train_config.distribute):
        model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras")
    model.optimizer.learning_rate = train_config.finetune_learning_rate
    return model


@dataclass
class _Phase:
    """One phase of a run: train ``model`` on ``tweets`` until epoch ``end_epoch``."""

    model: object
    tweets: pd.DataFrame
    end_epoch: int
    schedule: list  # callbacks that set the learning rate each epoch


def _tensorboard(run_dir: Path) -> list:
    """Keras's TensorBoard callback where it can run: it writes through ``tf.summary`` on every
    backend, so a JAX machine without TensorFlow (the GPU machine) trains without it, and says
    so; history.csv has the same curves."""
    if importlib.util.find_spec("tensorflow") is None:
        print("TensorBoard logs skipped: they need TensorFlow, which is not installed "
              "(history.csv has the curves)", file=sys.stderr)
        return []
    return [keras.callbacks.TensorBoard(str(run_dir / "tensorboard"))]


def _train_phase(train_config: TrainConfig, run_dir: Path, state: RunState, phase: _Phase,
                 vocabulary: Vocabulary, validation: SequenceBatches, progress: bool) -> None:
    """Run one phase from the state's epoch on; checkpoint and record every epoch."""
    first = state.epochs_done
    state.finished, state.stop_reason = False, ""
    keras.utils.set_random_seed(train_config.seed + first)
    batches = SequenceBatches(encode_tweets(phase.tweets["text"], vocabulary,
                                            train_config.max_chars),
                              train_config.batch_size, seed=train_config.seed)
    batches.epoch = first
    early_stopping = ResumableEarlyStopping(state.early_stopping, monitor="val_xent",
                                            patience=train_config.patience)
    reduce_lr = ResumableReduceLROnPlateau(
        state.reduce_lr, monitor="val_xent", factor=train_config.lr_factor,
        patience=train_config.lr_patience, min_lr=train_config.learning_rate / 100,
    )
    callbacks = [
        *phase.schedule,
        BatchOrder(batches),
        BitsPerChar(),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=first > 0),
        *_tensorboard(run_dir),
        early_stopping,
        reduce_lr,
        RunCheckpoint(run_dir, state, early_stopping, reduce_lr),  # last: records the others
    ]
    if keras.backend.backend() == "tensorflow":
        train_data, validation_data = batches.to_tf_dataset(), validation.to_tf_dataset()
    else:  # JAX or PyTorch (the GPU machine has no TensorFlow): the same NumPy batches
        train_data, validation_data = KerasBatches(batches), KerasBatches(validation)
    if progress:
        # Keras numbers epochs across phases: fine-tuning's first is "Epoch 3/3" after 2/2.
        name = "fine-tuning" if state.fine_tuning else "training"
        print(f"{name}: epochs {first + 1} to {phase.end_epoch} on {len(phase.tweets)} tweets",
              flush=True)
    phase.model.fit(train_data, validation_data=validation_data, epochs=phase.end_epoch,
                    initial_epoch=first, callbacks=callbacks, shuffle=False,
                    verbose=_keras_verbosity(progress))
    if not state.finished and state.epochs_done >= phase.end_epoch:
        state.finished, state.stop_reason = True, f"{phase.end_epoch} epochs"
    state.save(run_dir)


def fit(train_config: TrainConfig, corpus: Corpus, vocabulary: Vocabulary, *,
        progress: bool = True) -> tuple[RunState, int]:
    """Train (or resume training) in the run directory: the main phase, then the fine-tuning
    phase if there is one; return the state and the epoch this call started from."""
    run_dir = settings.resolve(train_config.run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    state = RunState.load(run_dir)
    start_epoch = state.epochs_done
    main_todo = not _main_phase_done(train_config, state)
    finetune_todo = not _finetune_done(train_config, state)
    if not (main_todo or finetune_todo):
        return state, start_epoch
    validation = SequenceBatches(
        encode_tweets(corpus.validation["text"], vocabulary, train_config.max_chars),
        train_config.batch_size, shuffle=False, score_first=False, fixed_width=True,
    )
    if main_todo:
        model = _main_model(train_config, run_dir, state, len(vocabulary))
        if train_config.schedule == "cosine":
            schedule = [WarmupCosine(train_config.learning_rate, train_config.min_learning_rate,
                                     train_config.warmup_epochs, train_config.epochs)]
        else:
            schedule = [LearningRateDecay(train_config.lr_decay, train_config.lr_decay_after)]
        _train_phase(train_config, run_dir, state,
                     _Phase(model, corpus.train, train_config.epochs, schedule),
                     vocabulary, validation, progress)
    if finetune_todo:
        model = _finetune_model(train_config, run_dir, state)
        end = state.finetune_from + train_config.finetune_epochs
        _train_phase(train_config, run_dir, state,
                     _Phase(model, _recent(train_config, corpus), end, []),
                     vocabulary, validation, progress)
    return state, start_epoch


def prepare(train_config: TrainConfig, tweets: pd.DataFrame | None = None
            ) -> tuple[Corpus, Vocabulary]:
    """Load and split the data, check it against the run directory, and get the vocabulary.

    Everything that can refuse the run is checked before the run directory is created, so a
    refused run leaves nothing behind."""
    if tweets is None:
        tweets = load_dataset(train_config.dataset or None)
    tweets = select_period(tweets, train_config.since, train_config.until)
    corpus = Corpus.from_tweets(tweets, train_config.validation_fraction)
    if train_config.finetune_epochs:
        _recent(train_config, corpus)
    run_dir = settings.resolve(train_config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run(run_dir, train_config, corpus.fingerprint())
    vocabulary_path = run_dir / "vocabulary.json"
    if train_config.init_from and not vocabulary_path.exists():
        # The starting weights' embedding rows are the ids of the vocabulary beside them.
        init_vocabulary = _init_path(train_config).parent / "vocabulary.json"
        if init_vocabulary.exists():
            Vocabulary.load(init_vocabulary).save(vocabulary_path)
    if vocabulary_path.exists():
        vocabulary = Vocabulary.load(vocabulary_path)
    else:
        vocabulary = Vocabulary.from_texts(corpus.train["text"], train_config.min_count)
        vocabulary.save(vocabulary_path)
    return corpus, vocabulary


def export_trained_model(train_config: TrainConfig, corpus: Corpus, vocabulary: Vocabulary,
                         state: RunState, history: pd.DataFrame, *, progress: bool = True,
                         seconds: float | None = None):
    """Score the best epoch and the n-gram baselines on the validation tweets; export both
    numbers with the model as its artifact (`covfefe.inference.artifact`)."""
    run_dir = settings.resolve(train_config.run_dir)
    best = run_dir / "checkpoints" / "best.keras"
    if not best.exists():
        raise UserError(f"run {run_dir} has no checkpoint to export yet: train first")
    model = keras.saving.load_model(best, compile=False)
    validation = score_model(model, vocabulary, corpus.validation["text"],
                             max_chars=train_config.max_chars,
                             # A bar only on a terminal: a notebook's record keeps it at 0%.
                             progress=progress and sys.stderr.isatty())
    baselines = ngram_baselines(corpus, vocabulary, sorted({5, 7, train_config.baseline_order}),
                                train_config.max_chars)
    best_baseline = baselines.iloc[0]
    best_row = history[history["epoch"] == state.best_epoch]
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
            "epochs_trained": int(state.epochs_done),
            "best_epoch": int(state.best_epoch),
            "stop_reason": state.stop_reason,
            "keras_backend": keras.backend.backend(),
            "seconds_this_session": round(seconds, 1) if seconds is not None else None,
        },
        "data": corpus.fingerprint(),
        "metrics": {
            "validation_bits_per_char": round(validation.bits_per_char, 4),
            "validation_chars": int(validation.chars.sum()),
            "train_bits_per_char_best_epoch": (round(float(best_row["bits_per_char"].iloc[0]), 4)
                                               if len(best_row) else None),
            "best_epoch": int(state.best_epoch),
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
    run_dir = settings.resolve(train_config.run_dir)
    # Each session's continuation of a run directory is a run of the same lineage.
    with tracking.run("train", asdict(train_config),
                      tags={"lineage": run_dir.name,
                            "resumed_from_epoch": str(RunState.load(run_dir).epochs_done)}
                      ) as active:
        state, start_epoch = fit(train_config, corpus, vocabulary, progress=progress)
        history = load_history(run_dir)
        tracking.log_history(active, history)
        artifact = None
        if export:
            artifact = export_trained_model(train_config, corpus, vocabulary, state, history,
                                            progress=progress,
                                            seconds=time.monotonic() - started)
            tracking.log_metrics(active, {"validation_bits_per_char":
                                          artifact.metrics["validation_bits_per_char"]})
            if active is not None:
                tracking.register(active, artifact)
    return TrainResult(run_dir, artifact, history, start_epoch, state.stop_reason,
                       state.finetune_from)

"""Keras parts of a training run: bits/char in the logs, checkpoints, and a NumPy data feed."""

import math
import os
from pathlib import Path

from covfefe.backend import import_keras
from covfefe.training.run_state import Patience, RunState

keras = import_keras()

LN2 = math.log(2)


class BitsPerChar(keras.callbacks.Callback):
    """Add ``bits_per_char`` and ``val_bits_per_char`` (cross-entropy / ln 2) to the logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for prefix in ("", "val_"):
            if f"{prefix}xent" in logs:
                logs[f"{prefix}bits_per_char"] = logs[f"{prefix}xent"] / LN2
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate))


class BatchOrder(keras.callbacks.Callback):
    """Shuffle the batches of each epoch by that epoch's number, however often the input
    pipeline starts over (tf.distribute opens one iterator more than the epochs, to look at the
    data first: counting iterators would give the epochs another order than on one device)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = epoch


class LearningRateDecay(keras.callbacks.Callback):
    """Multiply the learning rate by ``decay`` at the start of every epoch after the first
    ``after`` ones. It multiplies the current rate, so it composes with ReduceLROnPlateau, and
    a resumed run (whose optimizer state holds the rate) continues the same schedule."""

    def __init__(self, decay: float, after: int):
        super().__init__()
        self.decay, self.after = decay, after

    def on_epoch_begin(self, epoch, logs=None):
        if self.decay != 1.0 and epoch >= self.after:
            current = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.model.optimizer.learning_rate = current * self.decay


class WarmupCosine(keras.callbacks.Callback):
    """Set the learning rate before every batch: a linear warm-up from 0 over ``warmup`` epochs,
    then a cosine from ``peak`` down to ``floor`` at epoch ``epochs``. The rate is a function
    of the batch's position in the run, so a resumed run continues the same curve."""

    def __init__(self, peak: float, floor: float, warmup: float, epochs: int):
        super().__init__()
        self.peak, self.floor, self.warmup, self.epochs = peak, floor, warmup, epochs
        self.epoch, self.steps = 0, 1

    def rate(self, position: float) -> float:
        """The learning rate at ``position`` epochs into the run."""
        if position < self.warmup:
            return self.peak * position / self.warmup
        done = min(1.0, (position - self.warmup) / max(self.epochs - self.warmup, 1e-9))
        return self.floor + (self.peak - self.floor) * 0.5 * (1 + math.cos(math.pi * done))

    def on_train_begin(self, logs=None):
        self.steps = max(1, int(self.params.get("steps") or 1))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.rate(self.epoch + batch / self.steps)


class _ResumablePatience:
    """A Keras callback that waits for the monitored value to improve (early stopping,
    learning-rate reduction), started from a run's saved counters: a resumed run keeps the
    patience it had used up (Keras resets the counters when training begins)."""

    has_cooldown = False  # learning-rate reduction counts its cooldown too

    def __init__(self, saved: Patience, **kwargs):
        super().__init__(**kwargs)
        self.saved = saved

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.saved.best is not None:
            self.wait, self.best = self.saved.wait, self.saved.best
            if self.has_cooldown:
                self.cooldown_counter = self.saved.cooldown_counter

    def counters(self) -> Patience:
        return Patience(wait=self.wait, best=None if self.best is None else float(self.best),
                        cooldown_counter=self.cooldown_counter if self.has_cooldown else 0)


class ResumableEarlyStopping(_ResumablePatience, keras.callbacks.EarlyStopping):
    """EarlyStopping that starts from a run's saved counters."""


class ResumableReduceLROnPlateau(_ResumablePatience, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau that starts from a run's saved counters, its cooldown included."""

    has_cooldown = True


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch: save the model with its optimizer, the best model, and the run state.

    Files are written to a temporary name and renamed, so a kill at any moment leaves the
    previous checkpoint intact. The state records the epoch count and the counters of the
    early-stopping and learning-rate callbacks, so a resumed run continues where it stopped.
    """

    def __init__(self, run_dir: Path, state: RunState, early_stopping: ResumableEarlyStopping,
                 reduce_lr: ResumableReduceLROnPlateau):
        super().__init__()
        self.run_dir = run_dir
        self.state = state
        self.early_stopping = early_stopping
        self.reduce_lr = reduce_lr

    def _save(self, name: str) -> None:
        path = self.run_dir / "checkpoints" / name
        temporary = path.with_name(f".tmp-{name}")
        self.model.save(temporary)
        os.replace(temporary, path)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        score = float(logs["val_bits_per_char"])
        state = self.state
        state.epochs_done = epoch + 1
        if state.best_val_bits_per_char is None or score < state.best_val_bits_per_char:
            state.best_val_bits_per_char, state.best_epoch = score, epoch + 1
            self._save("best.keras")
        self._save("last.keras")
        state.early_stopping = self.early_stopping.counters()
        state.reduce_lr = self.reduce_lr.counters()
        if self.model.stop_training:
            state.finished, state.stop_reason = True, "early stopping"
        state.save(self.run_dir)


class KerasBatches(keras.utils.PyDataset):
    """`covfefe.training.corpus.SequenceBatches` as a Keras dataset, for backends without
    tf.data."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self._epoch_batches = batches.batch_indices(batches.epoch)

    def __len__(self) -> int:
        return len(self._epoch_batches)

    def __getitem__(self, index: int):
        return self.batches.pad(self._epoch_batches[index])

    def on_epoch_end(self):
        self.batches.epoch += 1
        self._epoch_batches = self.batches.batch_indices(self.batches.epoch)

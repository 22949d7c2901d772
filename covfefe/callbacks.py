"""Keras parts of a training run: bits/char in the logs, checkpoints, and a NumPy data feed."""

import math
import os
from pathlib import Path

import keras

from covfefe.files import write_json

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


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch: save the model with its optimizer, the best model, and the run state.

    Files are written to a temporary name and renamed, so a kill at any moment leaves the
    previous checkpoint intact. The state records the epoch count and the counters of the
    early-stopping and learning-rate callbacks, so a resumed run continues where it stopped.
    """

    def __init__(self, run_dir: Path, state: dict, early_stopping, reduce_lr):
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
        state["epochs_done"] = epoch + 1
        if state.get("best_val_bits_per_char") is None or score < state["best_val_bits_per_char"]:
            state["best_val_bits_per_char"] = score
            state["best_epoch"] = epoch + 1
            self._save("best.keras")
        self._save("last.keras")
        state["callbacks"] = {
            "early_stopping": {"wait": self.early_stopping.wait,
                               "best": float(self.early_stopping.best)},
            "reduce_lr": {"wait": self.reduce_lr.wait, "best": float(self.reduce_lr.best),
                          "cooldown_counter": self.reduce_lr.cooldown_counter},
        }
        if self.model.stop_training:
            state["finished"], state["stop_reason"] = True, "early stopping"
        write_json(self.run_dir / "state.json", state)


def restore_callbacks(state: dict, early_stopping, reduce_lr) -> None:
    """Give resumed early-stopping and learning-rate callbacks their saved counters."""
    saved = state.get("callbacks")
    if not saved:
        return
    # on_train_begin resets these counters, so set them again once training has begun.
    original_begin = early_stopping.on_train_begin

    def on_train_begin(logs=None):
        original_begin(logs)
        early_stopping.wait = saved["early_stopping"]["wait"]
        early_stopping.best = saved["early_stopping"]["best"]
        reduce_lr.wait = saved["reduce_lr"]["wait"]
        reduce_lr.best = saved["reduce_lr"]["best"]
        reduce_lr.cooldown_counter = saved["reduce_lr"]["cooldown_counter"]

    early_stopping.on_train_begin = on_train_begin




class KerasBatches(keras.utils.PyDataset):
    """`covfefe.corpus.SequenceBatches` as a Keras dataset, for backends without tf.data."""

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

"""The progress of a training run, `RunState`: what ``<run>/state.json`` holds after each epoch.

The checkpoint callback updates it and writes it after every epoch; training reads it to
resume. The file keeps the layout earlier runs wrote, so they resume too.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from covfefe.files import read_json, write_json

STATE_FILE = "state.json"
MAIN, FINE_TUNE = "main", "fine-tune"  # the phases of a run, in order


@dataclass
class Patience:
    """The counters of a callback that waits for the validation loss to improve (early
    stopping, learning-rate reduction), saved so that a resumed run keeps its patience."""

    wait: int = 0  # epochs since the best one
    best: float | None = None  # the best validation loss so far (None: no epoch yet)
    cooldown_counter: int = 0  # learning-rate reduction only: epochs left in its cooldown


@dataclass
class RunState:
    """Where a training run stands."""

    epochs_done: int = 0  # epochs trained, both phases counted
    finished: bool = False  # the current phase ended (epochs done or early stopping)
    stop_reason: str = ""  # why it ended: "N epochs" or "early stopping"
    best_epoch: int | None = None  # the epoch of the lowest validation bits/char
    best_val_bits_per_char: float | None = None
    phase: str = MAIN
    finetune_from: int | None = None  # the last epoch of the main phase, once fine-tuning began
    early_stopping: Patience = field(default_factory=Patience)
    reduce_lr: Patience = field(default_factory=Patience)

    @property
    def fine_tuning(self) -> bool:
        return self.phase == FINE_TUNE

    @classmethod
    def load(cls, run_dir: Path) -> "RunState":
        """Return the saved state of a run (a fresh one before its first epoch)."""
        saved = read_json(Path(run_dir) / STATE_FILE) or {}
        counters = saved.get("callbacks", {})
        return cls(
            epochs_done=saved.get("epochs_done", 0), finished=saved.get("finished", False),
            stop_reason=saved.get("stop_reason", ""), best_epoch=saved.get("best_epoch"),
            best_val_bits_per_char=saved.get("best_val_bits_per_char"),
            phase=saved.get("phase", MAIN), finetune_from=saved.get("finetune_from"),
            early_stopping=Patience(**counters.get("early_stopping", {})),
            reduce_lr=Patience(**counters.get("reduce_lr", {})),
        )

    def save(self, run_dir: Path) -> None:
        """Write the state atomically (the layout of earlier runs: counters under "callbacks")."""
        data = asdict(self)
        early_stopping, reduce_lr = data.pop("early_stopping"), data.pop("reduce_lr")
        early_stopping.pop("cooldown_counter")
        data["callbacks"] = {"early_stopping": early_stopping, "reduce_lr": reduce_lr}
        write_json(Path(run_dir) / STATE_FILE, data)

"""Every training parameter in one dataclass, `TrainConfig`, and every parameter of an update
from new tweets in another, `UpdateConfig`, each validated when it is made.

Their own module, apart from `covfefe.training.train` and `covfefe.training.update`, so that
the command line can list the parameters (``covfefe train --help``) without importing pandas
or Keras.
"""

from dataclasses import dataclass, fields
from datetime import UTC, datetime

from covfefe import config as settings
from covfefe.errors import UserError
from covfefe.text import MAX_TWEET_CHARS
from covfefe.training.model import ModelConfig


@dataclass
class TrainConfig:
    """Every training parameter, with the defaults of a small model that trains on a CPU."""

    run_dir: str = ""  # checkpoints, logs, artifact ("" = a new $COVFEFE_RUNS_DIR/train-<time>)
    dataset: str = ""  # the collected dataset ("" = $COVFEFE_DATA_DIR/tweets.parquet)
    since: str = ""  # train on tweets from this UTC date on ("" = from the first)
    until: str = ""  # train on tweets before this UTC date ("" = to the last)
    name: str = "covfefe"  # the model's name in its metadata and in the API
    # The architecture's defaults are ModelConfig's (one place for them).
    cell: str = ModelConfig.cell  # "lstm" or "gru"
    layers: int = ModelConfig.layers  # stacked recurrent layers
    units: int = ModelConfig.units  # units per recurrent layer
    embedding_dim: int = ModelConfig.embedding_dim  # character embedding size
    dropout: float = ModelConfig.dropout  # dropout after the embedding and each recurrent layer
    max_chars: int = MAX_TWEET_CHARS  # longer tweets are cut
    batch_size: int = 128  # tweets per batch
    epochs: int = 20  # most epochs (early stopping may end sooner)
    learning_rate: float = 0.003  # Adam's initial learning rate
    lr_decay: float = 1.0  # learning rate multiplier per epoch after lr_decay_after (1: none)
    lr_decay_after: int = 0  # epochs at the initial learning rate before lr_decay applies
    lr_factor: float = 0.5  # learning rate multiplier when validation stops improving
    lr_patience: int = 1  # epochs without improvement before the learning rate drops
    patience: int = 3  # epochs without improvement before training stops
    # The schedule: "decay" (lr_decay per epoch after lr_decay_after, halved on plateaus) or
    # "cosine" (a linear warm-up over warmup_epochs, then a cosine from learning_rate down to
    # min_learning_rate at the last epoch, set every batch, so a resumed run continues it).
    schedule: str = "decay"
    warmup_epochs: float = 0.0  # "cosine": epochs of linear warm-up from 0
    min_learning_rate: float = 0.0  # "cosine": the floor the rate ends at
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (0: plain Adam)
    init_from: str = ""  # start from this artifact's (or .keras file's) weights ("" = random)
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
        if self.schedule not in ("decay", "cosine"):
            raise UserError(f"schedule must be \"decay\" or \"cosine\", not {self.schedule!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise UserError("warmup_epochs must be at least 0 and fewer than epochs, not "
                            f"{self.warmup_epochs!r}")
        if not 0 <= self.min_learning_rate <= self.learning_rate:
            raise UserError("min_learning_rate must be at least 0 and at most learning_rate, "
                            f"not {self.min_learning_rate!r}")
        if not 0 <= self.weight_decay < 1:
            raise UserError(f"weight_decay must be at least 0 and below 1, not "
                            f"{self.weight_decay!r}")
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
class UpdateConfig:
    """Every parameter of an update, with the defaults chosen on the archive's last months."""

    model: str = ""  # the champion artifact ("" = COVFEFE_MODEL, else the bundled model)
    out: str = ""  # the challenger artifact ("" = <run_dir>/model)
    run_dir: str = ""  # checkpoints and the record ("" = a new $COVFEFE_RUNS_DIR/update-<time>)
    dataset: str = ""  # the collected dataset ("" = $COVFEFE_DATA_DIR/tweets.parquet)
    until: str = ""  # ignore tweets from this UTC date on ("" = use every new tweet)
    future_fraction: float = 0.25  # the newest share of the new tweets: the future, held out
    fit_fraction: float = 0.15  # then the newest share of the rest: refits the mixture weight
    replay: float = 1.0  # older tweets replayed per new tweet, against forgetting
    epochs: int = 5  # fine-tuning epochs (the best on the fit tweets is kept)
    learning_rate: float = 0.0005  # the fine-tuning's Adam learning rate
    batch_size: int = 64  # tweets per batch
    min_char_count: int = 3  # uses a new character needs in the new tweets to get its own id
    order: int = 9  # the n-gram table's order when the champion has none
    recency: int = 0  # times the table counts each new tweet (0: the best of 1-4 on the fit tweets)
    seed: int = 42  # the same seed, data and champion give the same challenger
    samples: int = 200  # tweets each model writes for the comparison's sample figures (0: none)

    def __post_init__(self):
        if not isinstance(self.samples, int) or isinstance(self.samples, bool) or not (
                0 <= self.samples <= 10_000):
            raise UserError(f"samples must be a whole number from 0 to 10000, not "
                            f"{self.samples!r}")
        for name in ("future_fraction", "fit_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise UserError(f"{name} must be between 0 and 1, not {value!r}")
        if not 0 <= self.replay <= 20:
            raise UserError(f"replay must be between 0 and 20, not {self.replay!r}")
        if not isinstance(self.recency, int) or not 0 <= self.recency <= 16:
            raise UserError(f"recency must be a whole number from 0 to 16, not {self.recency!r}")
        for name in ("epochs", "batch_size", "min_char_count", "order"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a positive whole number, not {value!r}")
        if not self.learning_rate > 0:
            raise UserError(f"learning_rate must be above 0, not {self.learning_rate!r}")
        if not self.run_dir:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            self.run_dir = str(settings.runs_dir() / f"update-{stamp}")

"""The character-level recurrent network: its configuration and how it is built.

The network reads a tweet as integer character ids and predicts every next character:
embedding -> stacked LSTM or GRU layers (dropout between them) -> a dense layer of logits over
the vocabulary. Training feeds ``[END] + text`` and targets ``text + [END]``: the end symbol
doubles as the start symbol, so the network learns how tweets begin and when they stop.

The model is plain Keras 3 with no backend-specific code, so the same ``.keras`` file trains on
TensorFlow (CPU here) or JAX (the GPU machine) and loads under either. The recurrent layers keep
the settings the cuDNN kernels need (default activations, no recurrent dropout), so they run
on cuDNN whenever a GPU is present.
"""

from dataclasses import asdict, dataclass, fields

from covfefe.backend import import_keras
from covfefe.errors import UserError

CELLS = ("lstm", "gru")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture: everything `build_model` needs besides the vocabulary size."""

    cell: str = "lstm"  # "lstm" or "gru"
    layers: int = 2  # stacked recurrent layers
    units: int = 256  # units per recurrent layer
    embedding_dim: int = 64  # size of each character's embedding
    dropout: float = 0.1  # dropout after the embedding and after each recurrent layer

    def __post_init__(self):
        if self.cell not in CELLS:
            raise UserError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        for name in ("layers", "units", "embedding_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a positive whole number, not {value!r}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"dropout must be at least 0 and below 1, not {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    @property
    def name(self) -> str:
        """A short name such as ``lstm-2x256``."""
        return f"{self.cell}-{self.layers}x{self.units}"


def build_model(config: ModelConfig, vocab_size: int):
    """Return the uncompiled network: ids (batch, time) -> logits (batch, time, vocab)."""
    keras = import_keras()
    cell = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[config.cell]
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, config.embedding_dim, name="embedding")(ids)
    x = keras.layers.Dropout(config.dropout, name="embedding_dropout")(x)
    for index in range(config.layers):
        x = cell(config.units, return_sequences=True,
                               name=f"{config.cell}_{index + 1}")(x)
        x = keras.layers.Dropout(config.dropout, name=f"dropout_{index + 1}")(x)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model(ids, logits, name=f"covfefe-{config.name}")


def compile_model(model, learning_rate: float, clipnorm: float = 1.0, weight_decay: float = 0.0):
    """Compile for next-character training: Adam (AdamW with a weight decay), cross-entropy on
    logits, weighted by target.

    The pipeline weights every real target 1 and padding 0, and the ``xent`` metric is the
    weighted mean, so ``xent / ln 2`` is exactly bits per (real) character.
    """
    keras = import_keras()
    model.compile(
        optimizer=(keras.optimizers.AdamW(learning_rate=learning_rate, clipnorm=clipnorm,
                                          weight_decay=weight_decay) if weight_decay
                   else keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=clipnorm)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalCrossentropy(from_logits=True,
                                                                      name="xent")],
    )
    return model

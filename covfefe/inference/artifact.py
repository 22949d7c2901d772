"""The model artifact: a versioned folder holding everything needed to use a trained model.

Layout::

    <artifact>/
        metadata.json     format, name, version, parameters, data fingerprint, metrics, files
        vocabulary.json   the character vocabulary (covfefe.text.Vocabulary)
        model.keras       the Keras 3 network, without optimizer state
        saved_model/      the same network as a TensorFlow SavedModel (TF Serving signature)
        weights.npz       the weights as NumPy arrays, for the generator (no Keras needed)
        novelty.npz       hashed shingles of the training tweets (covfefe.lm.novelty), optional
        ngram.npz.xz      the Kneser-Ney table mixed with the network (covfefe.lm.mixture), optional
        lexicon.txt.xz    the words of the training tweets, for real-word decoding, optional

``metadata.json`` lists every other file with its size and SHA-256, and is written last, into a
temporary folder that is renamed into place: a folder without it, or whose files do not match
it, is refused with a clear error instead of being half-loaded.
"""

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from covfefe import __version__
from covfefe.backend import import_keras
from covfefe.errors import UserError
from covfefe.inference.numpy_network import NumpyNetwork
from covfefe.lm.novelty import NoveltyIndex
from covfefe.text import Vocabulary

FORMAT = "covfefe-model"
FORMAT_VERSION = 1
METADATA, VOCABULARY, KERAS_MODEL, SAVED_MODEL, NOVELTY, NUMPY_WEIGHTS, NGRAM, LEXICON = (
    "metadata.json", "vocabulary.json", "model.keras", "saved_model", "novelty.npz",
    "weights.npz", "ngram.npz.xz", "lexicon.txt.xz",
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_table(folder: Path) -> dict[str, dict]:
    return {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size,
                                              "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != METADATA
    }


def new_version(now: datetime | None = None) -> str:
    """Return a version that sorts by creation time, such as ``2026.11.27.213045``."""
    return (now or datetime.now(UTC)).strftime("%Y.%m.%d.%H%M%S")


@dataclass
class ModelArtifact:
    """A verified artifact folder: its metadata and vocabulary; the network loads on demand."""

    path: Path
    metadata: dict
    vocabulary: Vocabulary
    _model: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def version(self) -> str:
        return self.metadata["version"]

    @property
    def metrics(self) -> dict:
        return self.metadata.get("metrics", {})

    def novelty_index(self):
        """Return the artifact's `covfefe.lm.novelty.NoveltyIndex`, or None if it has none."""
        path = self.path / NOVELTY
        return NoveltyIndex.load(path) if NOVELTY in self.metadata["files"] else None

    @property
    def mixture(self) -> dict | None:
        """The metadata of the n-gram mixture (weight, order...), or None without one."""
        return self.metadata.get("mixture") if NGRAM in self.metadata["files"] else None

    def ngram_model(self):
        """Return the artifact's `covfefe.lm.ngram.KneserNeyModel`, or None if it has none."""
        from covfefe.lm.ngram import KneserNeyModel

        return KneserNeyModel.load(self.path / NGRAM) if self.mixture else None

    def lexicon(self):
        """Return the artifact's `covfefe.lm.lexicon.Lexicon`, or None if it has none."""
        from covfefe.lm.lexicon import Lexicon

        return Lexicon.load(self.path / LEXICON) if LEXICON in self.metadata["files"] else None

    def load_model(self):
        """Return the Keras network (loaded once)."""
        if self._model is None:
            keras = import_keras()
            try:
                self._model = keras.saving.load_model(self.path / KERAS_MODEL, compile=False)
            except (OSError, ValueError) as error:
                raise UserError(f"model artifact {self.path}: cannot load {KERAS_MODEL} "
                                f"({error})") from None
        return self._model


@contextmanager
def _staged(folder: Path):
    """Yield an empty temporary folder beside ``folder`` that replaces it once the block has
    written it (metadata last), or is removed if the block fails: never a half-written model.

    A folder cannot be renamed over another, so the old one is first renamed aside (to
    `_previous`), the new one renamed into place, and only then the old one removed: a crash
    between the two renames leaves the old model aside, and `load_artifact` puts it back."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    previous = _previous(folder)
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a served model is read by other users
        yield staging
        if previous.exists() and folder.exists():  # left by a crash after the new one moved in
            shutil.rmtree(previous)
        elif previous.exists():  # left by a crash between the renames: it is the model
            os.replace(previous, folder)
        if folder.exists():
            os.replace(folder, previous)
        os.replace(staging, folder)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _previous(folder: Path) -> Path:
    """Where `_staged` keeps the old version of ``folder`` while the new one moves in."""
    return folder.with_name(f".{folder.name}.previous")


def _write_metadata(staging: Path, metadata: dict) -> None:
    """Write metadata.json, with the size and SHA-256 of every other file, into ``staging``."""
    metadata = {**metadata, "files": _file_table(staging)}
    (staging / METADATA).write_text(json.dumps(metadata, indent=1, ensure_ascii=False) + "\n",
                                    encoding="utf-8")


def save_artifact(folder: str | os.PathLike, model, vocabulary: Vocabulary, metadata: dict, *,
                  saved_model: bool = True, novelty=None, overwrite: bool = False
                  ) -> ModelArtifact:
    """Write a complete artifact folder atomically and return it, loaded back and verified.

    ``metadata`` holds the caller's parts (name, parameters, data, metrics...); the format,
    version (unless given), creation time, package version and file table are added here.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise UserError(f"{folder} already exists: choose another folder or overwrite it")
    with _staged(folder) as staging:
        vocabulary.save(staging / VOCABULARY)
        model.save(staging / KERAS_MODEL)
        NumpyNetwork.from_keras(model).save(staging / NUMPY_WEIGHTS)
        if saved_model:
            model.export(staging / SAVED_MODEL, format="tf_saved_model", verbose=False)
        if novelty is not None:
            novelty.save(staging / NOVELTY)
        now = datetime.now(UTC)
        _write_metadata(staging, {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **metadata,
            "version": metadata.get("version") or new_version(now),
            "created": now.isoformat(timespec="seconds"),
            "covfefe_version": __version__,
        })
    return load_artifact(folder)


def add_mixture(artifact: ModelArtifact, ngram, weight: float, report: dict, lexicon=None,
                output: str | os.PathLike | None = None, metrics: dict | None = None
                ) -> ModelArtifact:
    """Write the artifact with an n-gram table and its mixture weight, and a lexicon if given
    (into ``output``, or in place) and return it loaded back. The metadata records the table,
    the weight and how it was fitted."""
    changes = {"mixture": {"kind": "linear", "network_weight": round(float(weight), 6),
                           "ngram_order": ngram.order, "ngram_name": ngram.name,
                           "ngrams": int(ngram.ngrams), **report}}
    files = {NGRAM: ngram.save}
    if metrics is not None:
        changes["metrics"] = metrics
    if lexicon is not None:
        changes["lexicon"] = {"words": len(lexicon)}
        files[LEXICON] = lexicon.save
    return update_metadata(artifact, changes, output, files=files)


def with_lexicon(artifact: ModelArtifact, lexicon, output: str | os.PathLike | None = None
                 ) -> ModelArtifact:
    """Write the artifact with another lexicon (a `covfefe.lm.lexicon.Lexicon`: a grown one,
    ``artifact.lexicon().extended(new_tweets)``) into ``output`` or in place; return it loaded
    back. The word constraint's costs (``decoding``) stay as they are."""
    return update_metadata(artifact, {"lexicon": {"words": len(lexicon)}}, output,
                           files={LEXICON: lexicon.save})


def update_metadata(artifact: ModelArtifact, changes: dict,
                    output: str | os.PathLike | None = None, files: dict | None = None
                    ) -> ModelArtifact:
    """Write the artifact with metadata ``changes`` and added ``files`` (name -> a function
    writing it to a path) into ``output`` or in place, atomically as `save_artifact` does;
    return it loaded back. The version changes: what the model gives does."""
    folder = Path(output) if output is not None else artifact.path
    if output is not None and folder.exists():
        raise UserError(f"{folder} already exists: choose another folder")
    with _staged(folder) as staging:
        shutil.copytree(artifact.path, staging, dirs_exist_ok=True)
        for name, write in (files or {}).items():
            write(staging / name)
        now = datetime.now(UTC)
        _write_metadata(staging, {
            **artifact.metadata,
            **changes,
            "version": new_version(now),
            "created": now.isoformat(timespec="seconds"),
            "covfefe_version": __version__,
        })
    return load_artifact(folder)


def load_artifact(folder: str | os.PathLike, *, verify: bool = True) -> ModelArtifact:
    """Return the artifact in ``folder``; UserError if it is missing, incomplete or damaged."""
    folder = Path(folder)
    if not folder.exists() and _previous(folder).is_dir():
        os.replace(_previous(folder), folder)  # a replacement crashed between its renames
    if not folder.is_dir():
        raise UserError(f"model artifact {folder} does not exist (or is not a folder)")
    try:
        metadata = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"model artifact {folder} is incomplete: {METADATA} is missing "
                        "(an interrupted export?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"model artifact {folder}: {METADATA} is not valid JSON ({error})"
                        ) from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise UserError(f"{folder} is not a covfefe model artifact")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise UserError(f"model artifact {folder} has format version "
                        f"{metadata.get('format_version')!r}; this covfefe reads "
                        f"{FORMAT_VERSION}")
    files = metadata.get("files") or {}
    for required in (VOCABULARY, KERAS_MODEL):
        if required not in files:
            raise UserError(f"model artifact {folder}: {METADATA} does not list {required}")
    if verify:
        for name, expected in files.items():
            path = folder / name
            if not path.is_file():
                raise UserError(f"model artifact {folder} is incomplete: {name} is missing")
            if (path.stat().st_size != expected["bytes"]
                    or _sha256(path) != expected["sha256"]):
                raise UserError(f"model artifact {folder} is damaged: {name} does not match "
                                f"its checksum in {METADATA}")
    return ModelArtifact(folder, metadata, Vocabulary.load(folder / VOCABULARY))

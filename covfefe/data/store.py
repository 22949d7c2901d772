"""The local dataset every later step reads: one Parquet file, merged by id, written atomically.

A write goes to a temporary file beside the dataset, is flushed to disk, then renamed over it:
a crash at any moment leaves either the previous dataset or the new one, never half of one.
Writers take a lock file, so two collections running at once cannot lose each other's tweets.
"""

import fcntl
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from covfefe import config
from covfefe.data import schema
from covfefe.errors import UserError
from covfefe.files import write_atomically


@dataclass(frozen=True)
class MergeResult:
    """What a merge changed: tweets added, tweets already present, dataset size after."""

    added: int
    already_present: int
    total: int


class TweetStore:
    """The collected tweets on disk (a Parquet file in the `schema`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TweetStore({str(self.path)!r})"

    def exists(self) -> bool:
        """Return True when the dataset file exists."""
        return self.path.is_file()

    def load(self) -> pd.DataFrame:
        """Return the dataset (an empty one in the schema if nothing was collected yet)."""
        if not self.exists():
            return schema.empty_frame()
        try:
            frame = pq.read_table(self.path).to_pandas()
        except (pa.ArrowException, OSError) as error:
            raise UserError(
                f"dataset {self.path} is not a readable Parquet file ({error})"
            ) from None
        missing = set(schema.COLUMNS) - set(frame.columns)
        if missing:
            raise UserError(f"dataset {self.path} lacks the columns {', '.join(sorted(missing))}")
        return frame[list(schema.COLUMNS)].astype(schema.DTYPES)

    def write(self, frame: pd.DataFrame) -> None:
        """Replace the dataset with ``frame`` atomically."""
        table = pa.Table.from_pandas(
            frame[list(schema.COLUMNS)].astype(schema.DTYPES), preserve_index=False
        )
        write_atomically(self.path, lambda stream: pq.write_table(table, stream))

    @contextmanager
    def lock(self):
        """Hold the dataset's writer lock; also removes temporary files a crash left behind."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.path.name}.lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                leftover.unlink(missing_ok=True)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def merge(self, new: pd.DataFrame) -> MergeResult:
        """Add the tweets of ``new`` whose ids the dataset lacks; a stored tweet is kept as is."""
        with self.lock():
            current = self.load()
            fresh = new[~new["id"].isin(current["id"])].drop_duplicates("id")
            if fresh.empty and self.exists():
                return MergeResult(0, len(new), len(current))
            parts = [part for part in (current, fresh) if not part.empty]
            merged = pd.concat(parts, ignore_index=True) if parts else schema.empty_frame()
            merged = merged.sort_values(["created_at", "id"], ignore_index=True)
            self.write(merged)
            return MergeResult(len(fresh), len(new) - len(fresh), len(merged))


def load_dataset(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Return the collected dataset (``""`` or None: the default one); UserError if absent."""
    store = TweetStore(config.resolve(path) if path else config.dataset_path())
    if not store.exists():
        raise UserError(
            f"dataset {store.path} does not exist: collect tweets first "
            "(notebooks/01-collect-tweets.ipynb or `covfefe collect --archive`)"
        )
    return store.load()

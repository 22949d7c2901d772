"""Files written so that a crash at any moment leaves the old version or the new one, whole."""

import json
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes it private; this is shared data, not a secret
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def write_json(path: Path, data) -> None:
    """Write ``data`` as indented JSON, atomically (see `write_atomically`)."""
    text = json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n"
    write_atomically(Path(path), lambda stream: stream.write(text.encode("utf-8")))


def read_json(path: Path):
    """Return the JSON in ``path``, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

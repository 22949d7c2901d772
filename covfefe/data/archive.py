"""Import Trump Twitter Archive exports: JSON or CSV, from a file, a folder, a glob or a URL.

Two generations of the archive's export format are understood, in JSON and in CSV:

- trumptwitterarchive.com: ``id_str, text, created_at, source, is_retweet, retweet_count,
  favorite_count`` (the files in ``../shared/data/trump-twitter-archive``);
- thetrumparchive.com: ``id, text, date, device, isRetweet, retweets, favorites``.
"""

import csv
import glob
import io
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import requests
from tqdm.auto import tqdm

from covfefe import config
from covfefe.data import schema
from covfefe.data.clean import looks_like_reply
from covfefe.errors import CollectionError

ARCHIVE_SUFFIXES = (".json", ".csv")

# Each schema field and the names the export formats give it.
FIELD_ALIASES = {
    "id": ("id_str", "id"),
    "text": ("text",),
    "created_at": ("created_at", "date"),
    "source": ("source", "device"),
    "is_retweet": ("is_retweet", "isRetweet"),
    "retweet_count": ("retweet_count", "retweets"),
    "favorite_count": ("favorite_count", "favorites"),
}
REQUIRED_FIELDS = ("id", "text", "created_at")


def is_url(source: str) -> bool:
    """Return True when a source names an http(s) URL rather than a local path."""
    return urlparse(str(source)).scheme in ("http", "https")


def resolve_locations(source: str) -> list[str]:
    """Return the archive files (or the URL) a source names: a file, a folder, a glob or a URL."""
    source = str(source)
    if is_url(source):
        return [source]
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in ARCHIVE_SUFFIXES)
        if not files:
            raise CollectionError(f"folder {source} holds no .json or .csv archive files")
        return [str(p) for p in files]
    if path.is_file():
        return [str(path)]
    if glob.has_magic(source):
        files = sorted(p for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise CollectionError(f"no archive files match {source}")
        return files
    raise CollectionError(f"archive {source} does not exist (expected a file, folder, glob or URL)")


def download(url: str, *, progress: bool = True) -> bytes:
    """Return the body of an http(s) URL, with a progress bar; CollectionError on any failure."""
    try:
        with requests.get(url, stream=True, timeout=config.DOWNLOAD_TIMEOUT_S) as response:
            if response.status_code >= 400:
                raise CollectionError(
                    f"download of {url} failed: HTTP {response.status_code} {response.reason}"
                )
            total = int(response.headers.get("content-length") or 0) or None
            body = io.BytesIO()
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {url}",
                      disable=not progress, leave=False) as bar:
                for chunk in response.iter_content(config.DOWNLOAD_CHUNK_BYTES):
                    body.write(chunk)
                    bar.update(len(chunk))
    except requests.RequestException as error:
        raise CollectionError(f"could not download {url}: {error}") from None
    return body.getvalue()


def _read(location: str, progress: bool) -> bytes:
    if is_url(location):
        return download(location, progress=progress)
    try:
        return Path(location).read_bytes()
    except OSError as error:
        raise CollectionError(f"cannot read archive {location}: {error.strerror}") from None


def _format_of(location: str, body: bytes) -> str:
    suffix = Path(urlparse(location).path).suffix.lower()
    if suffix in ARCHIVE_SUFFIXES:
        return suffix[1:]
    return "json" if body.lstrip()[:1] in (b"[", b"{") else "csv"


def parse_raw(body: bytes, location: str) -> list[dict]:
    """Return the raw records of one export (JSON list or CSV with a header line)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CollectionError(f"archive {location} is not UTF-8 text ({error.reason})") from None
    if _format_of(location, body) == "json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise CollectionError(
                f"archive {location} is not valid JSON "
                f"(line {error.lineno}, column {error.colno}: {error.msg})"
            ) from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise CollectionError(f"archive {location} is JSON but not a list of tweet objects")
        return records
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _field(raw: dict, name: str):
    for alias in FIELD_ALIASES[name]:
        if alias in raw:
            return raw[alias]
    return None


def normalise_record(raw: dict, origin: str) -> dict:
    """Return one raw archive record in the schema; ``is_retweet`` is the source's own flag."""
    missing = [name for name in REQUIRED_FIELDS if _field(raw, name) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    text = str(_field(raw, "text"))
    source = _field(raw, "source")
    return {
        "id": int(str(_field(raw, "id")).strip()),
        "created_at": schema.parse_timestamp(_field(raw, "created_at")),
        "text": text,
        "source": str(source) if source not in (None, "") else None,
        "is_retweet": schema.parse_flag(_field(raw, "is_retweet")),
        "is_reply": looks_like_reply(text),
        "retweet_count": schema.parse_count(_field(raw, "retweet_count")),
        "favorite_count": schema.parse_count(_field(raw, "favorite_count")),
        "origin": origin,
    }


class TweetArchive:
    """Tweets from Trump Twitter Archive exports, read from a file, folder, glob or URL."""

    def __init__(self, source: str | None = None, *, progress: bool = True):
        self.source = str(source or config.archive_source())
        self.progress = progress
        self.locations = resolve_locations(self.source)

    def __repr__(self) -> str:
        return f"TweetArchive({self.source!r}, {len(self.locations)} files)"

    def records(self) -> Iterator[dict]:
        """Yield every record of every file, normalised to the schema."""
        bar = tqdm(self.locations, desc="reading archive", unit="file",
                   disable=not self.progress or len(self.locations) < 2, leave=False)
        for location in bar:
            origin = f"archive:{location if is_url(location) else Path(location).name}"
            for index, raw in enumerate(parse_raw(_read(location, self.progress), location)):
                try:
                    yield normalise_record(raw, origin)
                except (ValueError, TypeError) as error:
                    raise CollectionError(
                        f"archive {location}, record {index + 1}: {error}"
                    ) from None

    def read(self) -> pd.DataFrame:
        """Return every tweet of the archive as a DataFrame in the schema."""
        return schema.to_frame(list(self.records()))

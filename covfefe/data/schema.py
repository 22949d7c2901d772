"""The one schema every tweet is normalised to, whatever it came from.

| column           | type                | meaning                                              |
|------------------|---------------------|------------------------------------------------------|
| id               | int64               | the tweet id                                         |
| created_at       | datetime64 UTC      | when it was published                                |
| text             | string              | the text as published (cleaning happens later)       |
| source           | string or missing   | the client it was sent from ("Twitter for iPhone")   |
| is_retweet       | bool                | a retweet, flagged by the source or ``RT @`` text     |
| is_reply         | bool                | a reply (starts with a mention or says so)           |
| retweet_count    | Int64 or missing    | retweets when collected                              |
| favorite_count   | Int64 or missing    | likes when collected                                 |
| origin           | string              | ``archive:<file or URL>`` or ``x:@name``          |
"""

from datetime import UTC, datetime

import pandas as pd

COLUMNS = (
    "id",
    "created_at",
    "text",
    "source",
    "is_retweet",
    "is_reply",
    "retweet_count",
    "favorite_count",
    "origin",
)
DTYPES = {
    "id": "int64",
    "created_at": "datetime64[ns, UTC]",
    "text": "string",
    "source": "string",
    "is_retweet": "bool",
    "is_reply": "bool",
    "retweet_count": "Int64",
    "favorite_count": "Int64",
    "origin": "string",
}

# Formats seen in archive exports: the Twitter API's, the archive's CSV export, ISO 8601.
_DATE_FORMATS = (
    "%a %b %d %H:%M:%S %z %Y",  # Tue Jan 01 00:40:26 +0000 2019
    "%m-%d-%Y %H:%M:%S",  # 01-01-2019 00:40:26
    "%Y-%m-%d %H:%M:%S",  # 2019-01-01 00:40:26
)


def parse_timestamp(value) -> datetime:
    """Return a UTC datetime for a timestamp in any format the archives use; ValueError if none."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # Milliseconds since the epoch (some JSON exports).
        moment = datetime.fromtimestamp(value / 1000, tz=UTC)
    else:
        text = str(value).strip()
        for fmt in _DATE_FORMATS:
            try:
                moment = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:  # the archives give naive times in UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_flag(value) -> bool | None:
    """Return a boolean flag from JSON or CSV (``true``/``false``/``1``/``0``), None if absent."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "nan", "none", "null"):
        return None
    if text in ("true", "t", "1", "yes"):
        return True
    if text in ("false", "f", "0", "no"):
        return False
    raise ValueError(f"{value!r} is not a true/false value")


def parse_count(value) -> int | None:
    """Return a non-negative count, None if absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    count = int(float(value))
    if count < 0:
        raise ValueError(f"{value!r} is negative")
    return count


def as_utc(moment) -> pd.Timestamp | None:
    """Return a UTC date or timestamp (a string or a datetime; naive means UTC) as a UTC
    Timestamp, or None for None or ``""`` (no limit)."""
    if moment is None or moment == "":
        return None
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def in_period(created_at: pd.Series, since=None, until=None) -> pd.Series:
    """Return which times are from ``since`` on and before ``until`` (each optional: None or
    ``""`` for no limit; `as_utc` reads them)."""
    since, until = as_utc(since), as_utc(until)
    keep = pd.Series(True, index=created_at.index)
    if since is not None:
        keep &= created_at >= since
    if until is not None:
        keep &= created_at < until
    return keep


def select_period(tweets: pd.DataFrame, since=None, until=None) -> pd.DataFrame:
    """Return the tweets created from ``since`` on and before ``until`` (see `in_period`)."""
    return tweets[in_period(tweets["created_at"], since, until)]


def empty_frame() -> pd.DataFrame:
    """Return a dataset with no rows and the schema's columns and types."""
    return to_frame([])


def to_frame(records: list[dict]) -> pd.DataFrame:
    """Return normalised records as a DataFrame with exactly the schema's columns and types."""
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    for column in ("is_retweet", "is_reply"):
        frame[column] = frame[column].fillna(False)
    return frame.astype(DTYPES)

"""Collection: read tweets from a source, keep the ones worth learning from, merge them in.

The same functions back ``covfefe collect`` and ``notebooks/01-collect-tweets.ipynb``.
Every batch is merged into the dataset as soon as it is read, so an interrupted collection
keeps what it had; a Twitter/X collection also leaves a small state file that lets the next
run resume exactly where the last one stopped.
"""

import json
import os
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from covfefe import config
from covfefe.data import schema
from covfefe.data.archive import TweetArchive
from covfefe.data.clean import clean_tweet, looks_like_retweet
from covfefe.data.store import TweetStore
from covfefe.data.twitter import TwitterCollector, parse_screen_name
from covfefe.errors import CollectionError, UserError
from covfefe.files import write_atomically


@dataclass
class CollectionReport:
    """What one collection did, tweet by tweet; each dropped tweet counts under one reason."""

    read: int = 0
    out_of_range: int = 0
    retweets_flagged: int = 0
    retweets_unflagged: int = 0
    replies: int = 0
    empty: int = 0
    kept: int = 0
    added: int = 0
    already_present: int = 0
    total: int = 0
    dataset: str = ""
    resumed: bool = False

    @property
    def retweets(self) -> int:
        """Return the retweets dropped, flagged by the source or not."""
        return self.retweets_flagged + self.retweets_unflagged

    def add(self, other: "CollectionReport") -> None:
        """Add another batch's counts to this report (the dataset size is the latest)."""
        for field in fields(self):
            if field.type is int and field.name != "total":
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))
        self.total = other.total

    def summary(self) -> str:
        """Return the report as the lines the CLI prints."""
        dropped = (
            f"dropped {self.retweets} retweets ({self.retweets_flagged} flagged, "
            f"{self.retweets_unflagged} unflagged), {self.replies} replies, "
            f"{self.empty} empty after cleaning"
        )
        if self.out_of_range:
            dropped += f", {self.out_of_range} outside the date range"
        lines = [
            f"read {self.read} tweets" + (" (resumed an interrupted run)" if self.resumed else ""),
            dropped,
            f"kept {self.kept}: {self.added} new, {self.already_present} already in the dataset",
            f"dataset {self.dataset} now holds {self.total} tweets",
        ]
        return "\n".join(lines)


def select_tweets(
    frame: pd.DataFrame,
    *,
    keep_retweets: bool = False,
    keep_replies: bool = True,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
) -> tuple[pd.DataFrame, CollectionReport]:
    """Return the tweets worth keeping and a report of what was dropped and why.

    On the way in, ``frame.is_retweet`` is the source's own flag; on the way out it is true for
    every retweet, flagged or recognised by its ``RT @user`` text. Tweets before ``since`` or
    at/after ``until`` (UTC dates or timestamps) are dropped, and so are tweets with nothing left
    after `clean_tweet`.
    """
    report = CollectionReport(read=len(frame))
    keep = schema.in_period(frame["created_at"], since, until)
    report.out_of_range = int((~keep).sum())

    flagged = frame["is_retweet"].astype(bool)
    unflagged = ~flagged & frame["text"].map(looks_like_retweet).astype(bool)
    frame = frame.assign(is_retweet=flagged | unflagged)
    if not keep_retweets:
        report.retweets_flagged = int((keep & flagged).sum())
        report.retweets_unflagged = int((keep & unflagged).sum())
        keep &= ~frame["is_retweet"]
    if not keep_replies:
        report.replies = int((keep & frame["is_reply"]).sum())
        keep &= ~frame["is_reply"]
    empty = frame["text"].map(lambda text: not clean_tweet(text)).astype(bool)
    report.empty = int((keep & empty).sum())
    keep &= ~empty
    kept = frame[keep].reset_index(drop=True)
    report.kept = len(kept)
    return kept, report


def _merge(store: TweetStore, kept: pd.DataFrame, report: CollectionReport) -> CollectionReport:
    result = store.merge(kept)
    report.added, report.already_present, report.total = (
        result.added, result.already_present, result.total
    )
    report.dataset = str(store.path)
    return report


def collect_archive(
    source: str | None = None,
    output: str | os.PathLike | None = None,
    *,
    keep_retweets: bool = False,
    keep_replies: bool = True,
    since=None,
    until=None,
    progress: bool = True,
) -> CollectionReport:
    """Import a Trump Twitter Archive export (file, folder, glob or URL) into the dataset."""
    frame = TweetArchive(source, progress=progress).read()
    kept, report = select_tweets(
        frame, keep_retweets=keep_retweets, keep_replies=keep_replies, since=since, until=until
    )
    return _merge(TweetStore(output or config.dataset_path()), kept, report)


def state_path(dataset: Path, screen_name: str) -> Path:
    """Return the file that records an unfinished timeline collection into ``dataset``."""
    return dataset.parent / f".{dataset.name}.x-{screen_name.lower()}.state.json"


def collect_twitter(
    screen_name: str = config.DEFAULT_SCREEN_NAME,
    output: str | os.PathLike | None = None,
    *,
    bearer_token: str | None = None,
    keep_replies: bool = True,
    since=None,
    until=None,
    progress: bool = True,
    collector: TwitterCollector | None = None,
) -> CollectionReport:
    """Collect a user's new tweets from the X API v2 into the dataset, resuming if interrupted.

    A rerun fetches only tweets newer than the newest one collected from this account
    (``since_id``). Each page is merged as soon as it arrives and the position in the timeline
    is saved after it, so an interrupted run (network failure, rate-limit give-up, Ctrl-C)
    resumes from the next page.
    """
    screen_name = parse_screen_name(screen_name)
    store = TweetStore(output or config.dataset_path())
    origin = f"x:@{screen_name}"
    state_file = state_path(store.path, screen_name)
    collector = collector or TwitterCollector(bearer_token)
    stored = store.load()
    report = CollectionReport(dataset=str(store.path), total=len(stored))

    def save_state() -> None:
        write_atomically(state_file, lambda stream: stream.write(json.dumps(state).encode()))

    if state_file.is_file():
        try:
            state = json.loads(state_file.read_text())
            state = {key: state[key] for key in ("user_id", "since_id", "pagination_token")}
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise CollectionError(
                f"the saved position {state_file} is damaged; delete it to collect from the "
                "newest stored tweet on"
            ) from None
        report.resumed = True
    else:
        # Screen names are case-insensitive: @realdonaldtrump's tweets are @realDonaldTrump's.
        ours = stored.loc[stored["origin"].str.lower() == origin.lower(), "id"]
        state = {
            "user_id": collector.user_id(screen_name),
            "since_id": int(ours.max()) if len(ours) else None,
            "pagination_token": None,
        }
        # Saved before the first page is merged: once it is, the dataset's newest id is no
        # longer this run's since_id, and a run stopped before saving a page token would
        # otherwise restart above the pages it had not read yet and never read them.
        save_state()

    pages = collector.timeline(
        state["user_id"], origin, since_id=state["since_id"],
        pagination_token=state["pagination_token"],
    )
    for page in tqdm(pages, desc=f"collecting @{screen_name}", unit="page", disable=not progress):
        kept, batch = select_tweets(
            schema.to_frame(page.records), keep_replies=keep_replies, since=since, until=until
        )
        report.add(_merge(store, kept, batch))
        if page.next_token:
            state["pagination_token"] = page.next_token
            save_state()
    state_file.unlink(missing_ok=True)
    return report


SOURCES = ("archive", "twitter")


def collect(source: str, *, archive: str | None = None,
            screen_name: str = config.DEFAULT_SCREEN_NAME,
            output: str | os.PathLike | None = None, keep_replies: bool = True,
            keep_retweets: bool = False, since=None, until=None,
            progress: bool = True) -> CollectionReport:
    """Collect from ``source``: ``"archive"`` (`collect_archive` of ``archive``; "" or None:
    $COVFEFE_ARCHIVE) or ``"twitter"`` (`collect_twitter` of ``screen_name``; ``keep_retweets``
    is for archives only). The command line and notebook 01 both call this."""
    if source == "archive":
        return collect_archive(archive or None, output or None, keep_retweets=keep_retweets,
                               keep_replies=keep_replies, since=since, until=until,
                               progress=progress)
    if source == "twitter":
        return collect_twitter(screen_name, output or None, keep_replies=keep_replies,
                               since=since, until=until, progress=progress)
    raise UserError(f"source={source!r} is not one of "
                    f"{', '.join(repr(name) for name in SOURCES)}")

"""The dataset on disk: merge with dedupe by id, atomic writes, crashes that lose nothing."""

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from covfefe.data import schema
from covfefe.data.collect import collect_archive
from covfefe.data.store import TweetStore, load_dataset
from covfefe.errors import UserError


def _tweets(ids, origin="archive:test.json"):
    start = datetime(2019, 1, 1, tzinfo=UTC)
    return schema.to_frame([
        {"id": i, "created_at": start + timedelta(hours=i), "text": f"tweet number {i}",
         "source": "Twitter for iPhone", "is_retweet": False, "is_reply": False,
         "retweet_count": i, "favorite_count": None, "origin": origin}
        for i in ids
    ])


def test_missing_dataset_loads_empty_in_the_schema(dataset):
    frame = TweetStore(dataset).load()
    assert frame.empty and list(frame.columns) == list(schema.COLUMNS)


def test_merge_adds_new_ids_and_keeps_stored_copies(dataset):
    store = TweetStore(dataset)
    first = store.merge(_tweets([3, 1, 2]))
    assert (first.added, first.already_present, first.total) == (3, 0, 3)
    second = store.merge(_tweets([2, 3, 4, 4], origin="x:@realDonaldTrump"))
    assert (second.added, second.already_present, second.total) == (1, 3, 4)
    frame = store.load()
    assert list(frame["id"]) == [1, 2, 3, 4]  # sorted by time, each id once
    assert list(frame["origin"]) == ["archive:test.json"] * 3 + ["x:@realDonaldTrump"]
    assert frame.dtypes.astype(str).to_dict() == schema.DTYPES
    assert pd.isna(frame["favorite_count"]).all()


def test_merging_nothing_new_leaves_the_file_untouched(dataset):
    store = TweetStore(dataset)
    store.merge(_tweets([1, 2]))
    before = dataset.stat().st_mtime_ns
    assert store.merge(_tweets([1])).added == 0
    assert dataset.stat().st_mtime_ns == before


def test_collecting_the_archive_twice_keeps_the_same_count(archive_dir, dataset):
    first = collect_archive(str(archive_dir / "tweets_2012.json"), dataset, progress=False)
    second = collect_archive(str(archive_dir / "tweets_2012.json"), dataset, progress=False)
    assert first.added == first.kept == first.total > 0
    assert second.added == 0 and second.already_present == first.kept
    assert second.total == first.total == len(TweetStore(dataset).load())


def test_an_exception_during_write_keeps_the_previous_dataset(dataset, monkeypatch):
    store = TweetStore(dataset)
    store.merge(_tweets([1, 2]))
    before = dataset.read_bytes()

    def failing_write(table, stream, **kwargs):
        stream.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        store.merge(_tweets([3]))
    assert dataset.read_bytes() == before
    assert list(dataset.parent.glob("*.tmp")) == []  # the half-written file is gone


def test_a_process_killed_mid_write_keeps_the_previous_dataset(dataset):
    store = TweetStore(dataset)
    store.merge(_tweets([1, 2]))
    before = dataset.read_bytes()
    # A real crash: the process dies (no exception handling, no cleanup) halfway through writing.
    child = textwrap.dedent(f"""
        import os
        import pyarrow.parquet as pq
        from tests.test_store import _tweets
        from covfefe.data.store import TweetStore, load_dataset

        def dying_write(table, stream, **kwargs):
            stream.write(b"PAR1 half a file")
            stream.flush()
            os._exit(9)

        pq.write_table = dying_write
        TweetStore({str(dataset)!r}).merge(_tweets(range(100)))
    """)
    result = subprocess.run([sys.executable, "-c", child], capture_output=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 9, result.stderr.decode()
    assert dataset.read_bytes() == before
    leftovers = list(dataset.parent.glob(".tweets.parquet.*.tmp"))
    assert len(leftovers) == 1  # what the crash left behind ...
    assert store.merge(_tweets([3])).total == 3
    assert list(dataset.parent.glob("*.tmp")) == []  # ... is cleared by the next writer


def test_a_damaged_dataset_is_a_clear_error(dataset):
    dataset.parent.mkdir(parents=True)
    dataset.write_bytes(b"this is not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        TweetStore(dataset).load()


def test_a_dataset_missing_columns_is_a_clear_error(dataset):
    dataset.parent.mkdir(parents=True)
    _tweets([1]).drop(columns=["origin"]).to_parquet(dataset)
    with pytest.raises(UserError, match="lacks the columns origin"):
        TweetStore(dataset).load()


def test_load_dataset_reads_the_store(dataset):
    TweetStore(dataset).write(_tweets([0, 1, 2]))
    assert load_dataset(dataset)["id"].tolist() == [0, 1, 2]
    assert load_dataset(str(dataset))["id"].tolist() == [0, 1, 2]


def test_load_dataset_says_what_to_run_first(tmp_path):
    missing = tmp_path / "nothing.parquet"
    with pytest.raises(UserError, match=f"dataset {missing} does not exist: collect tweets"):
        load_dataset(missing)


def test_select_period_keeps_since_and_drops_until():
    tweets = _tweets(range(48))  # one an hour from 2019-01-01 00:00 UTC
    day_two = schema.select_period(tweets, "2019-01-02", "2019-01-02T12:00:00+00:00")
    assert day_two["id"].tolist() == list(range(24, 36))
    assert schema.select_period(tweets, "", None)["id"].tolist() == list(range(48))
    # A timestamp with another offset is the same instant: 01:00+01:00 is 00:00 UTC.
    assert schema.select_period(tweets, until="2019-01-01T01:00:00+01:00").empty

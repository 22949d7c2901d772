"""Archive import: JSON and CSV exports, from a file, a folder, a glob or a URL."""

import csv
import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from covfefe.data import schema
from covfefe.data.archive import TweetArchive
from covfefe.data.collect import collect_archive, select_tweets
from covfefe.errors import CollectionError


def _raw(archive_dir, year):
    return json.loads((archive_dir / f"tweets_{year}.json").read_text())


def _read(source):
    return TweetArchive(str(source), progress=False).read()


def test_json_file_is_read_into_the_schema(archive_dir):
    raw = _raw(archive_dir, 2009)
    frame = _read(archive_dir / "tweets_2009.json")
    assert list(frame.columns) == list(schema.COLUMNS)
    assert frame.dtypes.astype(str).to_dict() == schema.DTYPES
    assert len(frame) == len(raw)
    first = frame.iloc[0]
    assert first["id"] == int(raw[0]["id_str"])
    assert first["text"] == raw[0]["text"]
    assert first["created_at"] == pd.Timestamp(
        datetime.strptime(raw[0]["created_at"], "%a %b %d %H:%M:%S %z %Y")
    )
    assert first["created_at"].tzinfo is not None
    assert first["source"] == raw[0]["source"]
    assert first["favorite_count"] == raw[0]["favorite_count"]
    assert (frame["origin"] == "archive:tweets_2009.json").all()


def _write_csv(path, rows, fieldnames):
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def _stamp(record):
    return datetime.strptime(record["created_at"], "%a %b %d %H:%M:%S %z %Y").astimezone(UTC)


def test_csv_export_of_trumptwitterarchive_matches_json(archive_dir, tmp_path):
    raw = _raw(archive_dir, 2010)
    rows = [{**r, "created_at": _stamp(r).strftime("%m-%d-%Y %H:%M:%S"),
             "is_retweet": str(r.get("is_retweet", "")).lower()} for r in raw]
    fields = ["source", "text", "created_at", "retweet_count", "favorite_count", "is_retweet",
              "id_str"]
    _write_csv(tmp_path / "export.csv", [{k: r.get(k, "") for k in fields} for r in rows], fields)
    from_csv = _read(tmp_path / "export.csv").drop(columns="origin")
    from_json = _read(archive_dir / "tweets_2010.json").drop(columns="origin")
    pd.testing.assert_frame_equal(from_csv, from_json)


def test_csv_export_of_thetrumparchive_matches_json(archive_dir, tmp_path):
    raw = _raw(archive_dir, 2010)
    rows = [{"id": r["id_str"], "text": r["text"], "isRetweet": "f", "isDeleted": "f",
             "device": r["source"], "favorites": r["favorite_count"],
             "retweets": r["retweet_count"], "date": _stamp(r).strftime("%Y-%m-%d %H:%M:%S"),
             "isFlagged": "f"} for r in raw]
    _write_csv(tmp_path / "tta.csv", rows, list(rows[0]))
    from_csv = _read(tmp_path / "tta.csv").drop(columns="origin")
    from_json = _read(archive_dir / "tweets_2010.json").drop(columns="origin")
    pd.testing.assert_frame_equal(from_csv, from_json)


def test_folder_reads_every_year(archive_dir):
    frame = _read(archive_dir)
    expected = sum(len(_raw(archive_dir, year)) for year in range(2009, 2020))
    assert len(frame) == expected
    assert frame["created_at"].dt.year.min() == 2009
    assert frame["created_at"].dt.year.max() == 2019
    assert frame["origin"].nunique() == 11


def test_glob_reads_matching_files_only(archive_dir):
    frame = _read(archive_dir / "tweets_201[01].json")
    assert set(frame["created_at"].dt.year) == {2010, 2011}
    assert len(frame) == len(_raw(archive_dir, 2010)) + len(_raw(archive_dir, 2011))


@pytest.mark.network
def test_url_source_downloads_json_and_csv(archive_dir, tmp_path, serve_folder):
    (tmp_path / "tweets_2009.json").write_bytes((archive_dir / "tweets_2009.json").read_bytes())
    base = serve_folder(tmp_path)
    frame = _read(f"{base}/tweets_2009.json")
    assert len(frame) == len(_raw(archive_dir, 2009))
    assert frame["origin"].iloc[0] == f"archive:{base}/tweets_2009.json"


@pytest.mark.network
def test_url_without_suffix_is_recognised_by_content(archive_dir, tmp_path, serve_folder):
    (tmp_path / "download").write_bytes((archive_dir / "tweets_2009.json").read_bytes())
    assert len(_read(f"{serve_folder(tmp_path)}/download")) == len(_raw(archive_dir, 2009))


@pytest.mark.network
def test_url_with_bad_status_is_a_clear_error(tmp_path, serve_folder):
    url = f"{serve_folder(tmp_path)}/missing.json"
    with pytest.raises(CollectionError, match=r"download of .*missing\.json failed: HTTP 404"):
        _read(url)


@pytest.mark.network
def test_unreachable_url_is_a_clear_error(tmp_path, serve_folder):
    base = serve_folder(tmp_path)
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(CollectionError, match="could not download"):
        # A port nobody listens on (the server just bound port is ours; +1 is very likely free).
        _read(f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/tweets.json")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", '[{"text": "hi", ', r"bad\.json is not valid JSON \(line 1"),
        ("object.json", '{"text": "hi"}', "not a list of tweet objects"),
        ("noid.json", '[{"text": "hi", "created_at": "2019-01-01 00:00:00"}]',
         r"noid\.json, record 1: missing id"),
        ("baddate.json", '[{"id_str": "1", "text": "hi", "created_at": "yesterday"}]',
         r"baddate\.json, record 1"),
        ("badcount.csv", "id,text,date,retweets\n1,hi,2019-01-01 00:00:00,many\n",
         r"badcount\.csv, record 1"),
        ("latin1.csv", b"id,text,date\n1,caf\xe9,2019-01-01 00:00:00\n", "not UTF-8"),
    ],
)
def test_malformed_archives_are_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(CollectionError, match=message):
        _read(path)


@pytest.mark.parametrize(
    ("source", "message"),
    [("nowhere/tweets.json", "does not exist"), ("nowhere/*.json", "no archive files match")],
)
def test_missing_sources_are_clear_errors(tmp_path, source, message):
    with pytest.raises(CollectionError, match=message):
        _read(tmp_path / source)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CollectionError, match="holds no .json or .csv"):
        _read(tmp_path)


def test_unflagged_retweets_in_the_real_archive_are_dropped(archive_dir):
    raw = [r for year in range(2009, 2020) for r in _raw(archive_dir, year)]
    unflagged = sum(1 for r in raw if r["text"].startswith("RT @") and not r.get("is_retweet"))
    assert unflagged > 1000  # the archive really has many
    kept, report = select_tweets(_read(archive_dir))
    assert report.read == len(raw)
    assert report.retweets_unflagged == unflagged
    assert not kept["text"].str.startswith("RT @").any()
    assert not kept["is_retweet"].any()


def test_flagged_and_unflagged_retweets_are_counted_apart(tmp_path):
    records = [
        {"id_str": "1", "text": "An ordinary tweet", "created_at": "2019-01-01 10:00:00",
         "is_retweet": False},
        {"id_str": "2", "text": "Flagged by the archive", "created_at": "2019-01-01 11:00:00",
         "is_retweet": True},
        {"id_str": "3", "text": "RT @WhiteHouse: unflagged", "created_at": "2019-01-01 12:00:00",
         "is_retweet": False},
        {"id_str": "4", "text": "RT @FLOTUS: no flag at all", "created_at": "2019-01-01 13:00:00"},
        {"id_str": "5", "text": "@someone thanks!", "created_at": "2019-01-01 14:00:00"},
        {"id_str": "6", "text": "https://t.co/onlyalink", "created_at": "2019-01-01 15:00:00"},
    ]
    (tmp_path / "mixed.json").write_text(json.dumps(records))
    frame = _read(tmp_path / "mixed.json")
    kept, report = select_tweets(frame)
    assert (report.retweets_flagged, report.retweets_unflagged, report.empty) == (1, 2, 1)
    assert list(kept["id"]) == [1, 5]
    kept, report = select_tweets(frame, keep_replies=False)
    assert report.replies == 1 and list(kept["id"]) == [1]
    kept, report = select_tweets(frame, keep_retweets=True)
    assert list(kept["id"]) == [1, 2, 3, 4, 5]
    assert list(kept["is_retweet"]) == [False, True, True, True, False]


def test_date_range_selects_a_slice(archive_dir, dataset):
    report = collect_archive(str(archive_dir), dataset, since="2016-01-01", until="2016-02-01",
                             progress=False)
    from covfefe.data.store import TweetStore

    frame = TweetStore(dataset).load()
    assert report.kept == report.total == len(frame) > 0
    assert frame["created_at"].min() >= pd.Timestamp("2016-01-01", tz="UTC")
    assert frame["created_at"].max() < pd.Timestamp("2016-02-01", tz="UTC")
    assert report.out_of_range == report.read - report.kept - report.retweets - report.empty

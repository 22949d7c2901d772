"""The covfefe command line, run as a user runs it: a real process, its output and exit status."""

import json
import os
import re
import subprocess
import sys

import pytest


def covfefe(*args, env=None):
    """Run ``python -m covfefe`` and return the completed process."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "covfefe", *args], capture_output=True,
                          text=True, env=environment, timeout=300)


def test_help_lists_the_commands():
    result = covfefe("--help")
    assert result.returncode == 0
    assert "collect" in result.stdout
    assert "--archive" in covfefe("collect", "--help").stdout


def test_collect_archive_reports_counts_and_dedupes_on_rerun(archive_dir, tmp_path):
    raw = [r for path in sorted(archive_dir.glob("tweets_*.json"))
           for r in json.loads(path.read_text())]
    unflagged = sum(1 for r in raw if r["text"].startswith("RT @"))
    output = tmp_path / "tweets.parquet"
    first = covfefe("collect", "--archive", str(archive_dir), "-o", str(output), "--no-progress")
    assert first.returncode == 0, first.stderr
    assert f"read {len(raw)} tweets" in first.stdout
    assert f"dropped {unflagged} retweets (0 flagged, {unflagged} unflagged)" in first.stdout
    kept = int(re.search(r"kept (\d+): \1 new, 0 already", first.stdout).group(1))
    assert 25_000 < kept < len(raw) - unflagged
    second = covfefe("collect", "--archive", str(archive_dir), "-o", str(output), "--no-progress")
    assert second.returncode == 0, second.stderr
    assert f"kept {kept}: 0 new, {kept} already in the dataset" in second.stdout
    assert f"now holds {kept} tweets" in second.stdout


def test_collect_archive_defaults_to_the_configured_archive(archive_dir, tmp_path):
    result = covfefe("collect", "--archive", "-o", str(tmp_path / "t.parquet"), "--no-progress",
                     "--since", "2019-12-01", env={"COVFEFE_ARCHIVE": str(archive_dir)})
    assert result.returncode == 0, result.stderr
    assert "now holds" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["collect", "--archive", "{tmp}/missing.json"], r"missing\.json does not exist"),
        (["collect", "--archive", "{tmp}/broken.json"], r"broken\.json is not valid JSON"),
        (["collect", "--twitter", "realDonaldTrump"], "TWITTER_BEARER_TOKEN is not set"),
        (["collect", "--twitter", "not a name!"], "'not a name!' is not an X screen name"),
        (["collect", "--archive", "--since", "2019-02-30"], "invalid date '2019-02-30'"),
        (["collect"], "one of the arguments --archive --twitter is required"),
        (["collect", "--archive", "--twitter", "x"], "not allowed with argument"),
        (["tweet"], "invalid choice: 'tweet'"),
    ],
)
def test_user_mistakes_are_one_sentence_and_exit_2(tmp_path, args, message):
    (tmp_path / "broken.json").write_text('[{"id_str": "1", "text": "unterminated')
    argv = [arg.format(tmp=tmp_path) for arg in args]
    result = covfefe(*argv, "-o", str(tmp_path / "tweets.parquet"))
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "tweets.parquet").exists()

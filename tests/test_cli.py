"""The covfefe command line, run as a user runs it: a real process, its output and exit status."""

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest

from covfefe import config
from tests.helpers import covfefe, free_port, stop_process, wait_for


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


def test_evaluate_prints_no_tensorflow_lines(tmp_path):
    text = tmp_path / "tweets.txt"
    text.write_text("Make America Great Again!\nThe Fake News Media is working overtime.\n")
    result = covfefe("evaluate", "--text", str(text), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "bits_per_char=" in result.stdout
    assert "keras" not in result.stdout.lower()
    assert result.stderr == "", result.stderr  # no noise, and nothing else either


def test_the_noise_filter_keeps_real_warnings():
    """TensorFlow's start-up lines go, a warning written during the import stays."""
    script = (
        "import os, sys\n"
        "from covfefe.backend import filtered_stderr\n"
        "with filtered_stderr():\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are"
        " written to STDERR\\n')\n"
        "    os.write(2, b'E0000 00:00:1796014386.063253    5318 cuda_platform.cc:52] failed call"
        " to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\\n')\n"
        "    os.write(2, b'W0000 00:00:1.2    7 some_op.cc:9] a real warning\\n')\n"
        "    print('UserWarning: from Python', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["W0000 00:00:1.2    7 some_op.cc:9] a real warning",
                                          "UserWarning: from Python"]


def test_top_level_help_has_no_markup():
    result = covfefe("--help")
    assert "``" not in result.stdout and "`" not in result.stdout


@pytest.mark.parametrize("argv", [
    ["generate", "--temp", "0.5"],
    ["train", "--epoch", "3"],
    ["evaluate", "--base", "5"],
])
def test_abbreviated_options_are_refused(argv):
    result = covfefe(*argv)
    assert result.returncode == 2
    assert f"unrecognized arguments: {argv[1]}" in result.stderr


@pytest.mark.parametrize("command", [["generate"], ["evaluate", "--text", "x.txt"], ["serve"]])
def test_a_model_file_instead_of_its_folder_is_named(command):
    result = covfefe(*command, "--model", "models/covfefe/metadata.json")
    assert result.returncode == 2
    assert "models/covfefe/metadata.json is a file: give the model's folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_refused_train_leaves_no_run_folder(tmp_path):
    runs = tmp_path / "runs"
    result = covfefe("train", "--dataset", str(tmp_path / "none.parquet"),
                     env={"COVFEFE_RUNS_DIR": str(runs)})
    assert result.returncode == 2
    assert "none.parquet does not exist: collect tweets first" in result.stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_train_params_must_be_one_notebooks_flat_file(tmp_path):
    sectioned = tmp_path / "old.yaml"
    sectioned.write_text("03-train-model:\n  epochs: 2\n")
    result = covfefe("train", "--params", str(sectioned))
    assert result.returncode == 2
    assert "must be flat (one notebook's parameters), but 03-train-model holds a section" in (
        result.stderr)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.network
@pytest.mark.parametrize("flag", [False, True], ids=["the setting", "the flag over it"])
def test_serve_listens_where_the_port_flag_else_covfefe_bind_says(tmp_path, flag):
    setting, chosen = free_port(), free_port()
    expected = chosen if flag else setting
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "covfefe", "serve", "--workers", "1",
             *(["--port", str(chosen)] if flag else [])],
            env={**os.environ, "COVFEFE_BIND": f"127.0.0.1:{setting}"},
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _answers(expected), f"covfefe serve on port {expected}", process, log,
                 timeout=240)  # a first start compiles the kernels (a minute on a busy machine)
        assert f"on http://127.0.0.1:{expected}/ (1 workers" in log.read_text()
        assert not _answers(chosen if not flag else setting)
    finally:
        stop_process(process, group=True)


def test_the_bind_address_is_the_flag_over_the_setting_over_the_default(monkeypatch):
    monkeypatch.delenv("COVFEFE_BIND", raising=False)
    assert config.bind_address() == "127.0.0.1:8000"
    assert config.bind_address(port=9000) == "127.0.0.1:9000"
    monkeypatch.setenv("COVFEFE_BIND", "0.0.0.0:8080")
    assert config.bind_address() == "0.0.0.0:8080"
    assert config.bind_address(host="127.0.0.1") == "127.0.0.1:8080"
    assert config.bind_address("::1", 9000) == "[::1]:9000"

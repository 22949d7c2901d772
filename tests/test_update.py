"""The model keeps learning: `covfefe update` builds a challenger from the champion and new
tweets, `covfefe.evaluation.compare` judges it on the future, MLflow tracks and registers it,
`covfefe promote` and `rollback` move the served link atomically."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covfefe.evaluation.compare import compare_scores, paired_bootstrap
from covfefe.inference.artifact import load_artifact
from covfefe.lm.ngram import KneserNeyModel
from covfefe.text import UNK_ID, Vocabulary
from covfefe.training.scoring import Evaluation
from covfefe.training.train_config import UpdateConfig
from covfefe.training.update import (
    grow_vocabulary,
    split_new_tweets,
    table_capacity,
    update,
    widen_network,
)
from tests.helpers import covfefe

# The new tweets: the archive's first days after the tiny model's two months.
NEW_SINCE, NEW_UNTIL = "2016-03-01", "2016-03-08"


def _archive_slice(archive_dir: Path, since: str, until: str, path: Path) -> Path:
    """Write the archive's tweets of [since, until) as an archive file, as an export of the
    newest tweets would come."""
    start, stop = (datetime.fromisoformat(f"{day}T00:00:00+00:00") for day in (since, until))
    tweets = [tweet for tweet in json.loads((archive_dir / "tweets_2016.json").read_text())
              if start <= datetime.strptime(tweet["created_at"], "%a %b %d %H:%M:%S %z %Y")
              < stop]
    path.write_text(json.dumps(tweets))
    return path


@pytest.fixture(scope="module")
def newer(archive_dir, tiny_tweets, tmp_path_factory):
    """A data folder holding the tiny model's tweets and a week of newer ones, collected with
    `covfefe collect --archive NEWFILE` as a user would; and that week's file."""
    data = tmp_path_factory.mktemp("update-data")
    shutil.copy(tiny_tweets, data / "tweets.parquet")
    new_file = _archive_slice(archive_dir, NEW_SINCE, NEW_UNTIL, data.parent / "new.json")
    result = covfefe("collect", "--archive", str(new_file), "--no-progress",
                     env={"COVFEFE_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr
    assert "new" in result.stdout
    return data, new_file


# --- the parts ---------------------------------------------------------------------------

def test_a_table_updated_with_new_tweets_is_the_table_counted_on_all_of_them():
    rng = np.random.default_rng(0)

    def tweets(count, vocab):
        return [np.concatenate([[1], rng.integers(3, vocab, rng.integers(2, 40)), [1]])
                for _ in range(count)]

    old, new = tweets(300, 20), tweets(80, 23)  # the new tweets use 3 new symbols
    counted = KneserNeyModel(6, 23).fit(old + new)
    updated = KneserNeyModel(6, 20).fit(old).update(new, 23)
    assert np.array_equal(updated.keys, counted.keys)
    assert np.array_equal(updated.cumulative, counted.cumulative)
    assert np.allclose(updated.discounts, counted.discounts)
    assert np.allclose(updated.log_probs(new), counted.log_probs(new))


def test_the_vocabulary_grows_at_the_end_and_every_old_id_keeps_its_meaning():
    vocabulary = Vocabulary(list("abc "))
    grown, new = grow_vocabulary(vocabulary, ["abcé é é ü", "🦠🦠🦠 é"], min_count=3,
                                 capacity=100)
    assert new == ["é", "🦠"]  # ü is used once: it stays unknown
    assert grown.chars[:4] == vocabulary.chars
    assert list(grown.encode("abcé🦠ü")) == [3, 4, 5, 7, 8, UNK_ID]
    capped, new = grow_vocabulary(vocabulary, ["éééé 🦠🦠🦠"], min_count=3,
                                  capacity=len(vocabulary) + 1)
    assert new == ["é"] and len(capped) == len(vocabulary) + 1


def test_the_table_capacity_is_what_its_keys_hold():
    assert table_capacity(9) == 87  # 87 ** 9 < 2 ** 58 < 88 ** 9
    KneserNeyModel(9, table_capacity(9))
    with pytest.raises(Exception, match="too high"):
        KneserNeyModel(9, table_capacity(9) + 1)


def test_a_widened_network_gives_old_symbols_the_same_scores_and_new_ones_the_unknowns(
        tiny_model):
    network = tiny_model.load_model()
    wide = widen_network(network, len(tiny_model.vocabulary) + 2)
    ids = tiny_model.vocabulary.encode("Make America Great Again!")[None, :]
    before, after = np.asarray(network(ids)), np.asarray(wide(ids))
    assert after.shape[-1] == before.shape[-1] + 2
    np.testing.assert_allclose(after[..., :before.shape[-1]], before, rtol=1e-6)
    np.testing.assert_allclose(after[..., -1], before[..., UNK_ID], rtol=1e-6)


def test_new_tweets_split_in_time_order_and_the_future_is_the_newest(tiny_tweets):
    tweets = pd.read_parquet(tiny_tweets)
    since = pd.Timestamp("2016-02-15", tz="UTC")
    new = split_new_tweets(tweets, since, UpdateConfig(run_dir="unused"))
    assert new.older["created_at"].max() < since <= new.learn["created_at"].min()
    assert new.learn["created_at"].max() <= new.fit["created_at"].min()
    assert new.fit["created_at"].max() <= new.future["created_at"].min()
    total = len(new.learn) + len(new.fit) + len(new.future)
    assert abs(len(new.future) - total * 0.25) <= 1


def test_too_few_new_tweets_is_one_sentence(tiny_tweets):
    tweets = pd.read_parquet(tiny_tweets)
    with pytest.raises(Exception, match="collect at least"):
        split_new_tweets(tweets, pd.Timestamp("2016-03-01", tz="UTC"),
                         UpdateConfig(run_dir="unused"))


# --- the decision --------------------------------------------------------------------------

def _evaluation(nats, chars):
    return Evaluation([f"tweet {i}" for i in range(len(chars))], np.asarray(nats, float),
                      np.asarray(chars))


def _clearly_better(seed):
    """Scores of 400 tweets, and a comparison with a challenger 0.05 nats/char better on each;
    and the random numbers' generator."""
    rng = np.random.default_rng(seed)
    chars = rng.integers(20, 200, 400)
    champion = chars * rng.normal(1.2, 0.2, 400)
    better = compare_scores(_evaluation(champion, chars),
                            _evaluation(champion - chars * 0.05, chars))
    return chars, champion, better, rng


def test_a_clearly_better_challenger_is_promoted_and_a_tie_is_not():
    chars, champion, better, rng = _clearly_better(1)
    assert better.difference == pytest.approx(0.05 / np.log(2), rel=1e-6)
    assert 0 < better.interval[0] < better.difference < better.interval[1]
    assert better.promote and "promote" in better.summary()
    # The same scores with noise around no difference at all: the interval holds zero.
    noisy = champion + chars * rng.normal(0, 0.3, 400)
    tie = compare_scores(_evaluation(champion, chars), _evaluation(noisy, chars))
    assert tie.interval[0] < 0 < tie.interval[1] or tie.difference <= 0
    assert not tie.promote and "keep the champion" in tie.summary()


def _figures(non_words, near_copies):
    from covfefe.evaluation.quality import SampleQuality

    return SampleQuality(200, 0.9, 1.0, non_words, 0.95, near_copies, 150.0, 0.05, 5000)


def test_a_better_scoring_challenger_whose_samples_are_worse_than_the_bounds_is_kept_out():
    better = _clearly_better(3)[2]
    better.samples = {"champion": _figures(0.010, 0.01), "challenger": _figures(0.012, 0.015)}
    assert better.promote  # within the bounds: the scores decide
    assert "samples challenger challenger" in better.summary()
    better.samples["challenger"] = _figures(0.030, 0.015)  # non-words over 1.5%
    assert not better.promote and better.sample_faults == ["non_word_share"]
    assert "too many non-words" in better.summary()
    # Over the bound but no worse than the champion: not the challenger's fault.
    better.samples["champion"] = _figures(0.035, 0.01)
    assert better.promote
    better.samples["challenger"] = _figures(0.010, 0.05)
    assert better.sample_faults == ["near_copy_share"] and not better.as_dict()["promote"]


def test_the_bootstrap_interval_narrows_with_more_tweets():
    rng = np.random.default_rng(2)

    def width(n):
        chars = rng.integers(20, 200, n)
        a = chars * rng.normal(1.2, 0.3, n)
        b = a + chars * rng.normal(0.0, 0.3, n)
        low, high = paired_bootstrap(a, b, chars, resamples=500)
        return high - low

    assert width(2000) < width(100) / 2


# --- the update itself ---------------------------------------------------------------------

def test_update_learns_the_new_tweets_and_resumes_an_interrupted_fine_tuning(
        tiny_model, newer, tmp_path):
    data, _ = newer
    run_dir = tmp_path / "run"
    settings = dict(model=str(tiny_model.path), run_dir=str(run_dir), order=5,
                    learning_rate=0.003, batch_size=32, dataset=str(data / "tweets.parquet"))
    first = update(UpdateConfig(**settings, epochs=1), progress=False)
    state = json.loads((run_dir / "fine_tune.json").read_text())
    assert state["epochs_done"] == 1
    # Rerun with more epochs: the first is not trained again.
    second = update(UpdateConfig(**settings, epochs=2), progress=False)
    assert second.history[:2] == first.history[:2]
    assert json.loads((run_dir / "fine_tune.json").read_text())["epochs_done"] == 2
    challenger = second.challenger
    record = challenger.metadata["update"]
    assert record["champion"] == tiny_model.version
    assert challenger.metadata["lineage"] == [tiny_model.version]
    assert pd.Timestamp(record["seen_until"]) == second.tweets.future["created_at"].min()
    # The table counts the old and the learned tweets; the weight was fitted.
    assert challenger.mixture["ngram_order"] == 5
    assert 0 < challenger.mixture["network_weight"] < 1
    table = challenger.ngram_model()
    learned = list(second.tweets.older["text"]) + list(second.tweets.learn["text"]) + list(
        second.tweets.fit["text"])
    from covfefe.training.corpus import encode_tweets

    counted = KneserNeyModel(5, len(challenger.vocabulary)).fit(
        encode_tweets(learned, challenger.vocabulary))
    assert np.array_equal(table.keys, counted.keys)
    # Every step is scored on the future tweets, the champion first.
    assert list(second.steps["step"])[0] == "champion"
    assert second.steps["step"].iloc[-1].endswith("(challenger)")
    # Another champion in the same folder is refused.
    with pytest.raises(Exception, match="another champion"):
        update(UpdateConfig(**{**settings, "future_fraction": 0.3}, epochs=2), progress=False)


# --- the user's path: collect, update, evaluate, registry, promote, rollback --------------

@pytest.mark.slow  # covfefe update twice, then the registry's commands: about 40 s
def test_the_loop_on_the_command_line_with_the_local_mlflow_store(tiny_model, newer, tmp_path):
    data, new_file = newer
    env = {"COVFEFE_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": ""}  # the default store
    out = tmp_path / "challenger"
    result = covfefe("update", "--model", str(tiny_model.path), "--out", str(out),
                     "--run-dir", str(tmp_path / "run"), "--epochs", "1", "--order", "5",
                     "--samples", "20", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    assert "decision:" in result.stdout and "interval" in result.stdout
    # Both models wrote samples for the comparison, with the same prefixes and seeds.
    for role in ("champion", "challenger"):
        assert f"samples {role} " in result.stdout and "non_words=" in result.stdout
    assert "registered the challenger as version 2" in result.stdout
    challenger = load_artifact(out)
    assert challenger.metadata["update"]["champion"] == tiny_model.version
    assert (data / "mlflow.db").is_file()  # the default store: beside the dataset

    # The challenger scores a file of the newest tweets, as a user would.
    text = tmp_path / "future.txt"
    text.write_text("\n".join(tweet["text"].replace("\n", " ")
                              for tweet in json.loads(new_file.read_text())[:30]) + "\n")
    scored = covfefe("evaluate", "--model", str(out), "--text", str(text), env=env)
    assert scored.returncode == 0, scored.stderr
    assert "bits_per_char=" in scored.stdout

    listed = covfefe("models", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "champion" in lines["1"] and tiny_model.version in lines["1"]
    assert "challenger" in lines["2"] and challenger.version in lines["2"]

    promoted = covfefe("promote", "challenger", env=env)
    assert promoted.returncode == 0, promoted.stderr
    link = data / "models" / "champion"
    assert link.is_symlink()
    assert load_artifact(link).version == challenger.version
    rolled = covfefe("rollback", env=env)
    assert rolled.returncode == 0, rolled.stderr
    assert load_artifact(link).version == tiny_model.version
    unknown = covfefe("promote", "no-such-version", env=env)
    assert unknown.returncode == 2
    assert "no registered version 'no-such-version'" in unknown.stderr


@pytest.mark.slow  # an update and 14 promotions, each its own process: about 50 s
def test_a_promotion_killed_at_any_moment_leaves_a_model_served(tiny_model, newer, tmp_path):
    """Kill `covfefe promote` at many moments of its run: the served link always names a
    whole model, the old one or the new one."""
    data = tmp_path / "data"
    shutil.copytree(newer[0], data, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts",
                                                                   "models"))
    env = {**os.environ, "COVFEFE_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": ""}
    first = covfefe("update", "--model", str(tiny_model.path), "--run-dir",
                    str(tmp_path / "run"), "--epochs", "1", "--order", "5", "--no-progress",
                    env=env)
    assert first.returncode == 0, first.stderr
    assert covfefe("promote", "1", env=env).returncode == 0
    link = data / "models" / "champion"
    versions = {tiny_model.version, load_artifact(tmp_path / "run" / "model").version}
    started = time.monotonic()
    whole = subprocess.run([sys.executable, "-m", "covfefe", "promote", "2"], env=env,
                           capture_output=True, text=True, timeout=300)
    duration = time.monotonic() - started
    assert whole.returncode == 0, whole.stderr
    for attempt in range(12):
        target = str(2 - attempt % 2)  # back and forth between the two versions
        process = subprocess.Popen([sys.executable, "-m", "covfefe", "promote", target],
                                   env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(duration * (attempt + 1) / 13)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert load_artifact(link).version in versions


def test_a_model_replaced_in_place_is_never_missing_after_a_crash(tiny_model, tmp_path):
    """`update_metadata` (covfefe mix, --save-defaults) replaces a model folder in place: a
    crash between moving the old folder aside and the new one in leaves the old one aside, and
    the next load puts it back."""
    from covfefe.inference.artifact import _previous, update_metadata

    folder = tmp_path / "model"
    shutil.copytree(tiny_model.path, folder)
    os.replace(folder, _previous(folder))  # the moment of the crash
    assert load_artifact(folder).version == tiny_model.version
    assert not _previous(folder).exists()
    replaced = update_metadata(load_artifact(folder), {"note": "a new version"})
    assert replaced.version != tiny_model.version and replaced.metadata["note"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]

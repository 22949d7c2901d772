"""`covfefe evaluate` and the evaluation module on the tiny trained model."""

import re

import numpy as np
import pytest

from covfefe.config import BUNDLED_MODEL, resolve
from covfefe.data.clean import clean_tweet
from covfefe.evaluation.evaluate import by_length, read_text_file, score_served
from covfefe.inference.generate import TweetGenerator
from covfefe.lm.lexicon import LexiconConstraint
from covfefe.text import UNK_ID
from covfefe.training.scoring import score_model
from tests.helpers import covfefe

# The headline: the served distribution; then each part alone.
SUMMARY = re.compile(r"^bits_per_char=(\d+\.\d{4}) chars=(\d+) tweets=(\d+) \(served: ",
                     re.MULTILINE)
NETWORK = re.compile(r"^part, network alone: bits_per_char=(\d+\.\d{4}) chars=(\d+) "
                     r"tweets=(\d+)$", re.MULTILINE)
LINES = ["Make America Great Again!", "", "The Fake News Media ✓✓ is at it again… 🇺🇸",
         "x", "  spaces stay as written  "]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tweets.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def test_text_file_is_scored_exactly_as_written(tiny_model, text_file):
    result = covfefe("evaluate", "--model", str(tiny_model.path), "--text", str(text_file),
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    bits, chars, tweets = SUMMARY.search(result.stdout).groups()
    kept = [line for line in LINES if line]
    # A tweet holding a character outside the vocabulary cannot be generated: left out.
    writable = [line for line in kept if not tiny_model.vocabulary.unknown(line)]
    assert 0 < len(writable) < len(kept)
    assert f"{len(kept) - len(writable)} tweets hold characters outside" in result.stdout
    assert int(tweets) == len(writable)
    assert int(chars) == sum(len(line) for line in writable)  # chars 2..n plus the end
    served = score_served(TweetGenerator.from_artifact(tiny_model), writable)
    assert float(bits) == pytest.approx(served.bits_per_char, abs=1e-4)
    bits, chars, tweets = NETWORK.search(result.stdout).groups()
    assert (int(tweets), int(chars)) == (len(kept), sum(len(line) for line in kept))
    expected = score_model(tiny_model.load_model(), tiny_model.vocabulary, kept)
    assert float(bits) == pytest.approx(expected.bits_per_char, abs=1e-4)


def test_evaluate_and_generation_give_a_tweet_the_same_log_probability():
    """The bundled model as served (network, table, word constraint, end calibration): the
    log-probability generation reports for a tweet after its first character is the one
    evaluation scores it with."""
    generator = TweetGenerator.from_artifact(resolve(BUNDLED_MODEL))
    assert isinstance(generator.network, LexiconConstraint)
    assert generator.network.penalty > 0 and generator.network.fused is not None
    completions = [c for seed in (1, 2) for c in generator.complete("T", n=8, seed=seed)
                   if c.finished]
    assert len(completions) >= 8
    scored = score_served(generator, [c.text for c in completions])
    for completion, nats in zip(completions, scored.nats, strict=True):
        assert -nats == pytest.approx(completion.log_prob, abs=1e-9), completion.text
    # A new word costs the penalty and stays possible.
    scored = score_served(generator, ["The Coronavirus is here", "The President is here"])
    assert np.isfinite(scored.nats).all() and scored.nats[0] > scored.nats[1]


def test_unknown_characters_are_scored_as_the_unknown_symbol(tiny_model):
    vocabulary = tiny_model.vocabulary
    assert UNK_ID in vocabulary.encode("☃").tolist()
    model = tiny_model.load_model()
    snowman = score_model(model, vocabulary, ["a☃"])
    other_unknown = score_model(model, vocabulary, ["a☄"])
    assert snowman.nats[0] == pytest.approx(other_unknown.nats[0])


def test_the_dataset_defaults_to_the_models_validation_tweets(tiny_model, tiny_tweets):
    result = covfefe("evaluate", "--model", str(tiny_model.path), "--dataset", str(tiny_tweets),
                     "--baseline-order", "5", "--no-progress")
    assert result.returncode == 0, result.stderr
    model_bits, chars, tweets = NETWORK.search(result.stdout).groups()
    baseline_bits = re.search(r"^baseline .*: bits_per_char=(\d+\.\d{4})", result.stdout,
                              re.MULTILINE)[1]
    metrics, data = tiny_model.metrics, tiny_model.metadata["data"]
    assert int(tweets) == data["validation_tweets"]
    assert int(chars) == metrics["validation_chars"]
    assert float(model_bits) == pytest.approx(metrics["validation_bits_per_char"], abs=1e-3)
    served = SUMMARY.search(result.stdout)
    assert int(served[3]) <= int(tweets) and float(served[1]) < float("inf")
    order_5 = next(b for b in metrics["baselines"] if b["order"] == 5)
    assert float(baseline_bits) == pytest.approx(order_5["validation_bits_per_char"], abs=1e-3)


def test_clean_scores_raw_tweets_as_training_cleans_them(tiny_model, tmp_path):
    """Raw tweets (curly quotes, entities, a URL): as written they hold characters the model
    never writes, and evaluate says --clean would help; with --clean each line is scored as
    training would have cleaned it, and none is left out."""
    raw = ["\u201cFake News\u201d is at it again &amp; again! https://t.co/AbC123",
           "https://t.co/only"]
    path = tmp_path / "raw.txt"
    path.write_text("\n".join(raw) + "\n", encoding="utf-8")
    as_written = covfefe("evaluate", "--model", str(tiny_model.path), "--text", str(path),
                         "--no-progress")
    assert as_written.returncode == 0, as_written.stderr
    assert "raw tweets? --clean cleans them as training does" in as_written.stdout
    cleaned = covfefe("evaluate", "--model", str(tiny_model.path), "--text", str(path),
                      "--clean", "--no-progress")
    assert cleaned.returncode == 0, cleaned.stderr
    expected = [clean_tweet(line) for line in raw if clean_tweet(line)]
    assert expected == ['"Fake News" is at it again & again!']  # the URL-only line is dropped
    assert f"tweets: {path}, 1 lines cleaned as for training" in cleaned.stdout
    assert "raw tweets?" not in cleaned.stdout and "hold characters outside" not in cleaned.stdout
    bits, chars, tweets = SUMMARY.search(cleaned.stdout).groups()
    assert (int(tweets), int(chars)) == (1, len(expected[0]))
    served = score_served(TweetGenerator.from_artifact(tiny_model), expected)
    assert float(bits) == pytest.approx(served.bits_per_char, abs=1e-4)
    refused = covfefe("evaluate", "--model", str(tiny_model.path), "--clean")
    assert refused.returncode == 2 and "--clean cleans the lines of --text" in refused.stderr


def test_compare_on_the_command_line_cleans_raw_tweets_when_asked(tiny_model, tmp_path):
    """covfefe compare, the same model as champion and challenger: raw tweets as written are
    left out (a character neither writes) with the hint; --clean scores them all."""
    path = tmp_path / "raw.txt"
    path.write_text("\u201cFake News\u201d is at it again!\nMake America Great Again!\n",
                    encoding="utf-8")
    common = ["compare", "--champion", str(tiny_model.path), "--challenger",
              str(tiny_model.path), "--text", str(path), "--samples", "0", "--no-progress"]
    raw = covfefe(*common)
    assert raw.returncode == 0, raw.stderr
    assert "(1 left out: a character one model never writes)" in raw.stdout
    assert "raw tweets? --clean cleans them as training does" in raw.stdout
    cleaned = covfefe(*common, "--clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "on 2 future tweets" in cleaned.stdout and "left out" not in cleaned.stdout
    assert "raw tweets?" not in cleaned.stdout
    assert "difference +0.0000 bits/char" in cleaned.stdout
    assert "decision: keep the champion" in cleaned.stdout


def test_all_tweets_include_the_training_ones(tiny_model, tiny_tweets):
    result = covfefe("evaluate", "--model", str(tiny_model.path), "--dataset", str(tiny_tweets),
                     "--all", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert int(NETWORK.search(result.stdout).group(3)) == tiny_model.metadata["data"]["tweets"]


@pytest.mark.parametrize(("args", "message"), [
    (["--text", "{tmp}/missing.txt"], r"text file .*missing\.txt does not exist"),
    (["--text", "{tmp}/empty.txt"], r"holds no tweets \(one per line\)"),
    (["--text", "{tmp}/latin1.txt"], r"is not UTF-8"),
    (["--model", "{tmp}"], r"is incomplete: metadata\.json is missing"),
    (["--text", "a", "--archive"], "not allowed with argument"),
])
def test_mistakes_are_one_sentence_and_exit_2(tiny_model, tmp_path, args, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    args = [arg.format(tmp=tmp_path) for arg in args]
    if "--model" not in args:
        args = ["--model", str(tiny_model.path), *args]
    result = covfefe("evaluate", *args)
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_read_text_file_keeps_lines_as_written(text_file):
    assert read_text_file(text_file) == [line for line in LINES if line]


def test_bits_by_length_add_up_to_the_whole(tiny_model):
    texts = ["short one", "a somewhat longer tweet about the Fake News Media", "x" * 150]
    evaluation = score_model(tiny_model.load_model(), tiny_model.vocabulary, texts)
    table = by_length(evaluation)
    assert table["tweets"].sum() == 3 and table["chars"].sum() == evaluation.chars.sum()
    weighted = (table["bits_per_char"] * table["chars"]).sum() / table["chars"].sum()
    assert weighted == pytest.approx(evaluation.bits_per_char)
    assert np.isfinite(evaluation.per_tweet()["bits_per_char"]).all()


def test_sample_per_period_takes_at_most_n_of_each_year():
    import pandas as pd

    from covfefe.evaluation.evaluate import sample_per_period

    times = pd.to_datetime(["2015-03-01"] * 2 + ["2016-05-01"] * 10, utc=True)
    tweets = pd.DataFrame({"created_at": times, "text": [f"t{i}" for i in range(12)]})
    picked = sample_per_period(tweets, 3)
    assert picked["created_at"].dt.year.value_counts().to_dict() == {2015: 2, 2016: 3}
    assert picked["created_at"].is_monotonic_increasing
    assert picked.equals(sample_per_period(tweets, 3))  # seeded


def test_an_archive_is_selected_and_cleaned_as_collection_does(tiny_model, tiny_tweets,
                                                                archive_dir):
    window = ["--since", "2016-02-01", "--until", "2016-03-01", "--no-progress"]
    from_archive = covfefe("evaluate", "--model", str(tiny_model.path), "--archive",
                           str(archive_dir), *window)
    from_dataset = covfefe("evaluate", "--model", str(tiny_model.path), "--dataset",
                           str(tiny_tweets), *window)
    assert from_archive.returncode == 0, from_archive.stderr
    assert "tweets: archive, cleaned, from 2016-02-01 to 2016-03-01" in from_archive.stdout
    # The dataset was collected from the same archive: the same tweets, the same score.
    assert SUMMARY.search(from_archive.stdout).groups() == \
        SUMMARY.search(from_dataset.stdout).groups()

"""The bundled model, as `covfefe evaluate` measures it on the real archive: what it serves
(network, table, word constraint) beats the best n-gram table by at least 8% on its validation
tweets, at most 1.62 bits/char and finite on every one; its samples at its default settings
have few non-words (against a general English dictionary, the real tweets' own share beside),
seldom copy, are about as long as real tweets and as often cut at 280 characters (at most
twice). Reruns the measurements its metadata records (models/EXPERIMENTS.md)."""

import re

import pytest

from covfefe import config
from covfefe.inference.artifact import load_artifact
from tests.helpers import covfefe

BUNDLED = config.resolve(config.BUNDLED_MODEL)
SUMMARY = r"bits_per_char=(\d+\.\d{4}) chars=(\d+) tweets=(\d+)"


@pytest.fixture(scope="module")
def bundled():
    return load_artifact(BUNDLED)


def test_its_validation_bits_per_char_are_8_percent_below_the_best_ngram(bundled, archive_dir):
    result = covfefe("evaluate", "--model", str(BUNDLED), "--archive", str(archive_dir),
                     "--baseline-order", "9", "--no-progress", timeout=900)
    assert result.returncode == 0, result.stderr
    model = re.search(rf"^{SUMMARY} \(served: ", result.stdout, re.MULTILINE)
    baseline = re.search(rf"^baseline kneser-ney-9gram .*: {SUMMARY}$", result.stdout,
                         re.MULTILINE)
    bits, chars, tweets = float(model[1]), int(model[2]), int(model[3])
    assert (chars, tweets) == (bundled.metrics["validation_chars"],
                               bundled.metadata["data"]["validation_tweets"])
    assert bits <= 1.62
    assert bits <= 0.92 * float(baseline[1])  # 9 is the best order on this split
    assert "outside the vocabulary" not in result.stdout  # every tweet scored, finitely
    for part in ("the mixture without the word penalty", "network alone"):
        figure = re.search(rf"^part, {part}: {SUMMARY}$", result.stdout, re.MULTILINE)
        assert bits < float(figure[1])


def test_its_samples_at_the_default_settings(bundled, archive_dir):
    samples = bundled.metadata["samples"]
    result = covfefe("evaluate", "--model", str(BUNDLED), "--archive", str(archive_dir),
                     "--samples", str(samples["model"]["samples"]), "--no-progress",
                     timeout=900)
    assert result.returncode == 0, result.stderr
    figures = {name: dict(re.findall(r"(\w+)=([\d.]+)%?", line)) for name, line in
               re.findall(r"^samples (.+?) \(temperature.*?\): (.*)$", result.stdout,
                          re.MULTILINE)}
    model = figures["model"]
    validation = dict(re.findall(r"(\w+)=([\d.]+)", re.search(
        r"^validation tweets: (.*)$", result.stdout, re.MULTILINE)[1]))
    assert float(model["non_words"]) <= 1.5
    assert float(validation["non_word_share"]) > 0  # real tweets have names and coinages too
    assert float(model["near_copies"]) <= 2.0
    assert float(model["at_limit"]) <= 2 * 100 * float(validation["at_limit_share"])
    mean = float(validation["mean_length"])
    assert abs(float(model["mean_length"]) - mean) <= 0.1 * mean
    # The same figures as the metadata records, and the n-gram sampler's beside them.
    assert float(model["non_words"]) == pytest.approx(
        100 * samples["model"]["non_word_share"], abs=0.01)
    assert set(figures) == {"model", f"{samples['ngram']['name']} alone"}

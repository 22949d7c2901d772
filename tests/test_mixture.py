"""The network mixed with an n-gram table: fitted on held-out tweets, scored and generated alike."""

import json
import math
import re

import numpy as np
import pytest

from covfefe.config import BUNDLED_MODEL, resolve
from covfefe.inference.artifact import NGRAM, load_artifact
from covfefe.inference.generate import TweetGenerator
from covfefe.lm.mixture import MixedModel, fit_weight, log_softmax, mix_log_probs, mix_logits
from covfefe.training.corpus import encode_tweets
from covfefe.training.scoring import score_model
from tests.helpers import covfefe

SUMMARY = re.compile(r"^bits_per_char=(\d+\.\d{4}) chars=(\d+) tweets=(\d+)", re.MULTILINE)


@pytest.fixture(scope="module")
def mixed_model(tiny_model, tiny_tweets, tmp_path_factory):
    """The tiny model with a 5-gram table, made by the `covfefe mix` command."""
    output = tmp_path_factory.mktemp("mixed") / "model"
    result = covfefe("mix", "--model", str(tiny_model.path), "--dataset", str(tiny_tweets),
                     "--order", "5", "--holdout", "60", "--output", str(output),
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "kneser-ney-5gram" in result.stdout
    return load_artifact(output)


def test_the_weight_is_the_one_of_highest_likelihood():
    rng = np.random.default_rng(0)
    network, ngram = np.log(rng.uniform(0.01, 1, 5000)), np.log(rng.uniform(0.01, 1, 5000))
    weight = fit_weight(network, ngram)
    grid = np.linspace(0.01, 0.99, 981)
    best = grid[np.argmax([mix_log_probs(network, ngram, w).sum() for w in grid])]
    assert weight == pytest.approx(best, abs=2e-3)


def test_mix_writes_a_new_version_with_the_table_and_its_weight(mixed_model, tiny_model):
    mixture = mixed_model.mixture
    assert NGRAM in mixed_model.metadata["files"]
    assert mixed_model.version != tiny_model.version
    assert 0 < mixture["network_weight"] < 1
    assert mixed_model.metadata["lexicon"]["words"] == len(mixed_model.lexicon()) > 100
    assert mixture["ngram_order"] == 5 and mixture["holdout_tweets"] == 60
    bits = mixture["holdout_bits_per_char"]
    # The weight maximises the likelihood there: the mixture beats both of its parts.
    assert bits["mixture"] <= min(bits["network"], bits["ngram"])
    assert tiny_model.mixture is None  # the original is untouched


def test_generation_and_evaluation_give_a_tweet_the_same_probability(mixed_model):
    """The generator's steps (NumPy network + table) and `covfefe evaluate`'s scoring (Keras
    network + table) are the same mixture."""
    text = "Make America Great Again, the Fake News says."
    evaluation = score_model(mixed_model.load_model(), mixed_model.vocabulary, [text],
                             ngram=mixed_model.ngram_model(),
                             weight=mixed_model.mixture["network_weight"])
    generator = TweetGenerator.from_artifact(mixed_model, lexicon=False)
    assert isinstance(generator.network, MixedModel)
    (sequence,) = encode_tweets([text], mixed_model.vocabulary)
    state, nats = generator.network.initial_state(1), 0.0
    for position in range(len(sequence) - 1):
        log_probs, state = generator.network.step(sequence[position:position + 1], state)
        assert np.exp(log_probs).sum() == pytest.approx(1.0, abs=1e-6)
        if position:
            nats -= log_probs[0, sequence[position + 1]]
    assert nats == pytest.approx(evaluation.nats[0], rel=1e-5)
    # The network alone (a part of the same evaluation) is another, worse-or-equal story.
    assert evaluation.part("network").nats[0] != pytest.approx(nats, rel=1e-5)


def test_a_generated_tweet_scores_what_the_generator_said(mixed_model):
    generator = TweetGenerator.from_artifact(mixed_model, lexicon=False)
    (completion,) = generator.complete("M", temperature=0.8, seed=3)
    assert completion.finished
    evaluation = score_model(mixed_model.load_model(), mixed_model.vocabulary,
                             [completion.text], ngram=mixed_model.ngram_model(),
                             weight=mixed_model.mixture["network_weight"])
    # Generation renormalises over the symbols it may write (never padding or unknown), so
    # its log-probability is a little higher (by the small mass of those), never lower.
    assert -evaluation.nats[0] <= completion.log_prob <= -0.99 * evaluation.nats[0]


def test_evaluate_reports_the_mixture_and_its_parts(mixed_model, tiny_tweets):
    result = covfefe("evaluate", "--model", str(mixed_model.path), "--dataset",
                     str(tiny_tweets), "--no-progress")
    assert result.returncode == 0, result.stderr
    served, mixed, network, ngram = (float(bits) for bits, _, _ in SUMMARY.findall(
        result.stdout.replace(": bits_per_char", ":\nbits_per_char").replace(" (served", "\n")))
    # The headline is what generation draws from: the mixture under the word constraint.
    assert re.search(r"^bits_per_char=.* \(served: .*mixed with its kneser-ney-5gram table.*"
                     r"word forms of its lexicon costs", result.stdout, re.MULTILINE)
    assert served < float("inf")
    assert mixed < network and mixed < ngram
    # The model's validation figure is now the mixture's; the network's is kept beside it.
    metrics = mixed_model.metrics
    assert mixed == pytest.approx(metrics["validation_bits_per_char"], abs=2e-4)
    assert network == pytest.approx(metrics["network_validation_bits_per_char"], abs=2e-3)


def test_the_table_alone_generates_too(mixed_model):
    generator = TweetGenerator(mixed_model.ngram_model(), mixed_model.vocabulary)
    completions = generator.complete("The ", temperature=0.5, n=3, seed=1)
    assert all(c.text.startswith("The ") and len(c.generated) > 0 for c in completions)
    assert completions == generator.complete("The ", temperature=0.5, n=3, seed=1)


def test_a_mixture_weight_outside_0_1_is_refused(mixed_model):
    from covfefe.errors import UserError

    with pytest.raises(UserError, match="between 0 and 1"):
        MixedModel(None, None, 1.0)


def test_mix_refuses_a_holdout_as_big_as_the_training_tweets(tiny_model, tiny_tweets, tmp_path):
    result = covfefe("mix", "--model", str(tiny_model.path), "--dataset", str(tiny_tweets),
                     "--holdout", "100000", "--output", str(tmp_path / "m"))
    assert result.returncode == 2
    assert re.fullmatch(r"covfefe mix: error: holdout must be between 1 and \d+ tweets, "
                        r"not 100000\n", result.stderr)
    assert not (tmp_path / "m").exists()


def test_the_metadata_records_how_the_weight_was_fitted(mixed_model):
    recorded = json.loads((mixed_model.path / "metadata.json").read_text())["mixture"]
    assert set(recorded) >= {"kind", "network_weight", "ngram_order", "ngrams",
                             "holdout_tweets", "holdout_period", "holdout_bits_per_char"}
    assert recorded["kind"] == "linear" and math.isfinite(recorded["network_weight"])


def test_a_models_saved_defaults_are_what_a_request_without_settings_gets(mixed_model,
                                                                          tmp_path):
    from covfefe.inference.artifact import update_metadata
    from serve import create_app

    tuned = update_metadata(mixed_model, {"defaults": {"temperature": 0.7, "top_p": 0.9}},
                            tmp_path / "tuned")
    generator = TweetGenerator.from_artifact(tuned)
    assert generator.complete("The ", seed=5) == generator.complete(
        "The ", temperature=0.7, top_p=0.9, seed=5)
    client = create_app({"TESTING": True, "MODEL_DIR": str(tuned.path)}).test_client()
    body = client.post("/api/generate", json={"prefix": "The ", "seed": 5}).get_json()
    assert (body["parameters"]["temperature"], body["parameters"]["top_p"]) == (0.7, 0.9)
    assert body["completions"][0]["text"] == generator.complete("The ", seed=5)[0].text
    printed = covfefe("generate", "The ", "--seed", "5", "--model", str(tuned.path))
    assert printed.stdout.strip() == generator.complete("The ", seed=5)[0].text


def test_the_fused_mixture_of_a_step_is_the_mixture_that_scoring_computes():
    """``log(w softmax(z) + (1 - w) p)`` in one pass equals ``mix_log_probs`` of the logs, and
    each row is mixed on its own, bit for bit."""
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((40, 91)) * rng.uniform(0.1, 30, (40, 1))).astype(np.float32)
    ngram = rng.dirichlet(np.full(91, 0.05), 40) + 1e-12
    ngram /= ngram.sum(axis=1, keepdims=True)
    mixed = mix_logits(logits, ngram, 0.37)
    expected = mix_log_probs(log_softmax(logits), np.log(ngram), 0.37)
    np.testing.assert_allclose(mixed, expected, rtol=1e-12, atol=1e-12)
    assert np.exp(mixed).sum(axis=1) == pytest.approx(np.ones(40), abs=1e-12)
    for row in (0, 9, 39):
        assert np.array_equal(mix_logits(logits[row:row + 1], ngram[row:row + 1], 0.37)[0],
                              mixed[row])


def test_each_layer_of_the_served_model_steps_a_row_the_same_alone_and_in_a_batch():
    """The bundled model as served, `LexiconConstraint(MixedModel(network, table))`: every
    layer's output for a row, alone and among 32 others, bit for bit."""
    generator = TweetGenerator.from_artifact(resolve(BUNDLED_MODEL))
    constraint = generator.network
    mixture = constraint.model
    rng = np.random.default_rng(5)
    text = generator.vocabulary.encode("Make America Great Again! The Fake News Media's "
                                       "ratings are way down. Thank you!")
    ids = np.stack([np.roll(text, -shift)[:40] for shift in rng.integers(0, len(text), 33)], 1)
    ids[::7] = rng.integers(1, len(generator.vocabulary), (len(ids[::7]), 33))
    state, together = constraint.initial_state(33), []
    for symbols in ids:
        table, _ = mixture.ngram.step_probs(symbols, state[0][1])
        mixed, _ = mixture.step(symbols, state[0])
        masked, state = constraint.step(symbols, state)
        together.append((table, mixed, masked))
    for row in (0, 13, 32):
        alone = constraint.initial_state(1)
        for t, symbols in enumerate(ids[:, row:row + 1]):
            table, _ = mixture.ngram.step_probs(symbols, alone[0][1])
            mixed, _ = mixture.step(symbols, alone[0])
            masked, alone = constraint.step(symbols, alone)
            for name, one, batch in zip(("table", "mixture", "constraint"),
                                        (table, mixed, masked), together[t], strict=True):
                assert np.array_equal(one[0], batch[row]), (name, row, t)
    # The word constraint penalised something, and nothing is impossible.
    assert (together[-1][2] < together[-1][1]).any() and np.isfinite(together[-1][2]).all()


def test_the_served_stack_steps_in_one_call_with_the_numbers_of_its_parts_in_turn():
    """`covfefe.inference.fused`: the bundled model's step (network, table, mixture, word
    penalties) as one compiled call gives what stepping each part in turn gives, bit for bit:
    the scores and every array of the state, over rows that join and leave as in the serving
    engine."""
    from covfefe.inference.fused import FusedStep
    from covfefe.serving.engine import join_rows, take_rows

    constraint = TweetGenerator.from_artifact(resolve(BUNDLED_MODEL)).network
    rng = np.random.default_rng(11)
    fused, parts = constraint.initial_state(3), constraint.initial_state(3)
    for t in range(60):
        ids = rng.integers(1, len(constraint.kinds), len(fused[1]))
        scores, fused = constraint.step(ids, fused)
        expected, parts = constraint.step_parts(ids, parts)
        np.testing.assert_array_equal(scores, expected)
        leaves = [(a, b) for a, b in zip(_leaves(fused), _leaves(parts), strict=True)]
        assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in leaves), t
        if t % 15 == 7:  # two rows join, then the first row leaves
            fused = take_rows(join_rows(fused, constraint.initial_state(2)), slice(1, None))
            parts = take_rows(join_rows(parts, constraint.initial_state(2)), slice(1, None))
    assert isinstance(constraint.fused, FusedStep)
    with pytest.raises(IndexError, match="outside the vocabulary"):
        constraint.step(np.array([len(constraint.kinds)]), constraint.initial_state(1))


def _leaves(nest):
    if isinstance(nest, (list, tuple)):
        return [leaf for item in nest for leaf in _leaves(item)]
    return [nest]

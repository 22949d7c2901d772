"""The stateful NumPy generator: same distribution as the Keras model, sampling, reproducibility."""

import numpy as np
import pytest

from covfefe.errors import UserError
from covfefe.inference.generate import (
    NumpyNetwork,
    TweetGenerator,
    log_softmax,
    sample,
    top_k_filter,
    top_p_filter,
)
from covfefe.text import END_ID
from covfefe.training.model import ModelConfig, build_model


# float32 is Keras's arithmetic; int16 (served) rounds h to 1/4096 and each weight to its
# column's scale: with these large random weights, log-probabilities move by up to about 6e-4.
@pytest.mark.parametrize(("precision", "atol"), [("float32", 2e-4), ("int16", 2e-3)])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stepping_one_character_at_a_time_matches_the_keras_model(cell, precision, atol):
    model = build_model(ModelConfig(cell=cell, layers=2, units=24, embedding_dim=8), 30)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # random weights, larger than the initialisers', to test the math
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32")
                           for w in layer.get_weights()])
    ids = rng.integers(1, 30, size=(3, 17)).astype("int32")
    expected = log_softmax(np.asarray(model(ids), dtype=np.float64))
    network = NumpyNetwork.from_keras(model, precision)
    state = network.initial_state(3)
    for t in range(ids.shape[1]):
        logits, state = network.step(ids[:, t], state)
        np.testing.assert_allclose(log_softmax(logits.astype(np.float64)), expected[:, t],
                                   atol=atol)


def test_the_trained_model_gives_the_same_next_character_probabilities(tiny_model):
    """What the generator serves (16-bit fixed point) against Keras, on a trained model."""
    generator = TweetGenerator.from_artifact(tiny_model)
    assert generator.network.precision == "int16"
    ids = np.array([[END_ID, *tiny_model.vocabulary.encode("Make America Great")]])
    expected = np.exp(log_softmax(np.asarray(tiny_model.load_model()(ids), np.float64)))[0]
    state = generator.network.initial_state(1)
    for t, symbol in enumerate(ids[0]):
        logits, state = generator.network.step(np.array([symbol]), state)
        np.testing.assert_allclose(np.exp(log_softmax(logits.astype(np.float64)))[0],
                                   expected[t], atol=1e-4)  # float32 is within 1e-5


def test_top_k_keeps_the_k_most_likely():
    logits = np.array([[1.0, 5.0, 3.0, 4.0]])
    assert np.isfinite(top_k_filter(logits, 2)).tolist() == [[False, True, False, True]]
    assert np.isfinite(top_k_filter(logits, 0)).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(top_p_filter(logits, 0.7)).tolist() == [[True, True, False, False]]
    assert np.isfinite(top_p_filter(logits, 0.1)).tolist() == [[True, False, False, False]]
    assert np.isfinite(top_p_filter(logits, 1.0)).all()


def test_sampling_follows_the_distribution_and_temperature_sharpens_it():
    logits = np.log(np.array([[0.7, 0.2, 0.1]] * 20000))
    draws = sample(logits, np.random.default_rng(1))
    assert np.bincount(draws, minlength=3) / len(draws) == pytest.approx([0.7, 0.2, 0.1],
                                                                         abs=0.02)
    cold = sample(logits, np.random.default_rng(1), temperature=0.25)
    assert (cold == 0).mean() > 0.95


@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-4])
def test_a_vanishing_temperature_is_greedy_not_an_overflow(temperature):
    logits = np.array([[-1e3, 2.5, 2.4, -np.inf], [3.0, -2.0, 0.0, 1.0]])
    draws = sample(logits, np.random.default_rng(0), temperature=temperature)  # no warning
    assert draws.tolist() == [1, 0]


def test_the_same_seed_gives_the_same_tweets(tiny_model):
    generator = TweetGenerator.from_artifact(tiny_model)
    first = generator.complete("Make America ", temperature=0.8, n=3, seed=7)
    again = generator.complete("Make America ", temperature=0.8, n=3, seed=7)
    other = generator.complete("Make America ", temperature=0.8, n=3, seed=8)
    assert [c.text for c in first] == [c.text for c in again]
    assert [c.log_prob for c in first] == [c.log_prob for c in again]
    assert [c.text for c in first] != [c.text for c in other]
    for completion in first:
        assert completion.text.startswith("Make America ")
        assert len(completion.text) <= 280 and completion.log_prob < 0


def test_max_length_bounds_the_whole_tweet(tiny_model):
    generator = TweetGenerator.from_artifact(tiny_model)
    for completion in generator.complete("Great", n=4, max_length=12, seed=1, temperature=1.2):
        assert len(completion.text) <= 12


def test_a_prefix_is_cleaned_and_unknown_characters_are_read_as_the_unknown_symbol(tiny_model):
    from covfefe.text import UNK_CHAR

    generator = TweetGenerator.from_artifact(tiny_model)
    (completion,) = generator.complete("Fake &amp; “News” ", seed=1)
    assert completion.prefix == 'Fake & "News" ' and completion.unknown == []
    assert "ж" not in generator.vocabulary and "中" not in generator.vocabulary
    zhe = generator.complete("Great ж ", seed=3, n=4)
    chinese = generator.complete("Great 中 ", seed=3, n=4)
    for ours, other in zip(zhe, chinese, strict=True):
        assert ours.text.startswith("Great ж ") and ours.unknown == ["ж"]
        # Both read as the one unknown symbol: the same state, so the same continuation.
        assert ours.generated == other.generated and ours.log_prob == other.log_prob
        assert UNK_CHAR not in ours.generated  # the unknown symbol is never written
    (alone,) = generator.complete("жж", seed=1)  # nothing but unknown characters
    assert alone.prefix == "жж" and alone.unknown == ["ж"] and alone.generated
    with pytest.raises(UserError, match="temperature must be above 0"):
        generator.complete("Hi", temperature=0)


def test_covfefe_generate_prints_reproducible_tweets(tiny_model):
    from tests.helpers import covfefe

    args = ("generate", "Make America ", "-t", "0.8", "-n", "3", "--seed", "7",
            "--model", str(tiny_model.path))
    first, again = covfefe(*args), covfefe(*args)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("Make America ") for line in lines)
    assert first.stdout == again.stdout
    expected = TweetGenerator.from_artifact(tiny_model).complete(
        "Make America ", temperature=0.8, n=3, seed=7)
    assert lines == [c.text for c in expected]
    detailed = covfefe(*args, "--details")
    assert "longest_shared=" in detailed.stdout and "log_prob=-" in detailed.stdout


def test_completions_carry_their_novelty(tiny_model):
    generator = TweetGenerator.from_artifact(tiny_model)
    for completion in generator.complete("The ", n=3, seed=2):
        assert completion.longest_shared == generator.novelty.longest_shared(completion.text)


def test_the_artifact_ships_numpy_weights_that_load_without_keras(tiny_model):
    import subprocess
    import sys

    assert "weights.npz" in tiny_model.metadata["files"]
    saved = NumpyNetwork.load(tiny_model.path / "weights.npz")
    fresh = NumpyNetwork.from_keras(tiny_model.load_model())
    np.testing.assert_array_equal(saved.embedding, fresh.embedding)
    for (kind, weights), (fresh_kind, fresh_weights) in zip(saved.cells, fresh.cells,
                                                            strict=True):
        assert kind == fresh_kind
        for a, b in zip(weights, fresh_weights, strict=True):
            np.testing.assert_array_equal(a, b)
    # A serving worker generates without importing Keras, TensorFlow or pandas at all.
    script = ("import sys; from covfefe.inference.generate import TweetGenerator; "
              f"g = TweetGenerator.from_artifact({str(tiny_model.path)!r}); "
              "g.complete('Great', seed=1); "
              "print(sorted(m for m in ('keras', 'tensorflow', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"

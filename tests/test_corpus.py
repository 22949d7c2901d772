"""The training corpus: time split, encoding, and batches in which every character is a target."""

import numpy as np
import pandas as pd
import pytest

from covfefe.errors import UserError
from covfefe.text import END_ID, PAD_ID, Vocabulary
from covfefe.training.corpus import PAD_MULTIPLE, Corpus, SequenceBatches, encode_tweets


def tweets(texts, start="2019-01-01"):
    times = pd.date_range(start, periods=len(texts), freq="h", tz="UTC")
    return pd.DataFrame({"id": range(1, len(texts) + 1), "created_at": times, "text": texts})


def test_validation_is_the_most_recent_tweets_and_empty_tweets_are_dropped():
    frame = tweets([f"tweet number {i} &amp; more" for i in range(20)] + ["https://t.co/x"])
    frame = frame.sample(frac=1, random_state=1)  # order of the rows must not matter
    corpus = Corpus.from_tweets(frame, validation_fraction=0.1)
    assert len(corpus.train) == 18 and len(corpus.validation) == 2  # the link-only one is gone
    assert corpus.train["created_at"].max() < corpus.validation["created_at"].min()
    assert corpus.validation_since == corpus.validation["created_at"].iloc[0]
    assert corpus.train["text"].iloc[0] == "tweet number 0 & more"  # cleaned like collection


def test_fingerprint_is_stable_and_changes_with_any_text():
    frame = tweets(["one", "two", "three", "four"])
    first = Corpus.from_tweets(frame, 0.25).fingerprint()
    assert first == Corpus.from_tweets(frame, 0.25).fingerprint()
    assert first["tweets"] == 4 and first["train_tweets"] == 3 and first["train_chars"] == 11
    frame.loc[1, "text"] = "tw0"
    assert Corpus.from_tweets(frame, 0.25).fingerprint()["sha256"] != first["sha256"]


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_a_bad_validation_fraction_is_refused(fraction):
    with pytest.raises(UserError, match="validation_fraction must be between 0 and 1"):
        Corpus.from_tweets(tweets(["a", "b"]), fraction)


def test_encoding_wraps_each_tweet_in_end_symbols_and_cuts_long_ones():
    vocabulary = Vocabulary.from_texts(["abc"], min_count=1)
    short, long = encode_tweets(["ab", "abcabc"], vocabulary, max_chars=4)
    assert short.tolist() == [END_ID, *vocabulary.encode("ab"), END_ID]
    assert long.tolist() == [END_ID, *vocabulary.encode("abca")]  # cut: no end symbol


def make_batches(n=300, **options):
    rng = np.random.default_rng(0)
    texts = ["x" * int(rng.integers(1, 200)) for _ in range(n)]
    vocabulary = Vocabulary.from_texts(texts, min_count=1)
    return SequenceBatches(encode_tweets(texts, vocabulary), 16, **options)


def test_every_character_is_a_target_exactly_once_per_epoch():
    batches = make_batches()
    seen = np.concatenate(batches.batch_indices(0))
    assert sorted(seen.tolist()) == list(range(300))
    assert len(batches.batch_indices(0)) == len(batches)
    weights = sum(w.sum() for _, _, w in batches)
    assert weights == batches.targets == sum(len(s) - 1 for s in batches.sequences)


def test_targets_are_the_inputs_shifted_by_one_and_padding_weighs_nothing():
    batches = make_batches()
    for inputs, targets, weights in batches:
        assert inputs.shape == targets.shape == weights.shape
        assert inputs.shape[1] % PAD_MULTIPLE == 0
        assert (inputs[:, 0] == END_ID).all()
        real = weights > 0
        assert (targets[real] != PAD_ID).all() and (targets[~real] == PAD_ID).all()
        both = real[:, :-1] & real[:, 1:]  # target t and the next one are real characters
        np.testing.assert_array_equal(inputs[:, 1:][both], targets[:, :-1][both])


def test_scoring_batches_leave_out_each_tweets_first_character():
    batches = make_batches(shuffle=False, score_first=False)
    inputs, targets, weights = next(iter(batches))
    assert (weights[:, 0] == 0).all() and (weights[:, 1:].sum(axis=1) > -1).all()
    assert batches.targets == sum(len(s) - 2 for s in batches.sequences)
    assert sum(w.sum() for _, _, w in batches) == batches.targets


def test_shuffling_is_repeatable_for_a_seed_and_differs_between_epochs():
    first, second = make_batches(seed=3), make_batches(seed=3)
    orders = [np.concatenate(first.batch_indices(epoch)) for epoch in (0, 1)]
    np.testing.assert_array_equal(orders[0], np.concatenate(second.batch_indices(0)))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], np.concatenate(make_batches(seed=4).batch_indices(0)))


def test_batches_of_similar_length_keep_padding_low():
    batches = make_batches(n=2000)
    padded = sum(w.size for _, _, w in batches)
    assert batches.targets / padded > 0.75  # random order would waste about half


def test_the_tf_data_pipeline_serves_the_same_batches():
    batches = make_batches(seed=5)
    expected = [b for b in make_batches(seed=5)]
    served = list(batches.to_tf_dataset().as_numpy_iterator())
    assert len(served) == len(expected)
    for got, want in zip(served, expected, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_fixed_width_batches_are_all_as_wide_as_the_longest_tweet():
    batches = make_batches(fixed_width=True, shuffle=False)
    widths = {inputs.shape[1] for inputs, _, _ in batches}
    assert len(widths) == 1 and widths.pop() >= max(len(s) - 1 for s in batches.sequences)


def test_the_keras_dataset_for_other_backends_serves_the_same_batches():
    from covfefe.training.callbacks import KerasBatches

    dataset = KerasBatches(make_batches(seed=5))
    for epoch in range(2):
        expected = list(make_batches(seed=5).batch_indices(epoch))
        assert len(dataset) == len(expected)
        for index in (0, len(expected) - 1):
            np.testing.assert_array_equal(dataset[index][0],
                                          make_batches(seed=5).pad(expected[index])[0])
        dataset.on_epoch_end()

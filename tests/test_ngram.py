"""The Kneser-Ney baseline: sums to one, gains from context, scores like the model."""

import numpy as np
import pytest

from covfefe.config import BUNDLED_MODEL, resolve
from covfefe.errors import UserError
from covfefe.inference.artifact import load_artifact
from covfefe.lm.ngram import LEVEL_SHIFT, KneserNeyModel
from covfefe.text import END_ID, Vocabulary
from covfefe.training.corpus import encode_tweets

TEXTS = ["Make America Great Again!", "The Fake News Media is the enemy of the people.",
         "Make America Safe Again!", "The Fake News is working overtime.",
         "Great meeting with the people of Iowa!", "MAKE AMERICA GREAT AGAIN!"] * 3


@pytest.fixture(scope="module")
def vocabulary():
    return Vocabulary.from_texts(TEXTS, min_count=1)


@pytest.mark.parametrize("order", [1, 2, 4, 7])
@pytest.mark.parametrize("prefix", ["", "Make Ame", "The Fake News M", "zzq"])
def test_probabilities_of_every_next_symbol_sum_to_one(vocabulary, order, prefix):
    ngram = KneserNeyModel(order, len(vocabulary)).fit(encode_tweets(TEXTS, vocabulary))
    # A cut tweet ("x" + prefix + symbol, no END) scores the symbol last, after the prefix.
    base = [1, *vocabulary.encode("x" + prefix)]
    sequences = [np.array(base + [symbol], dtype=np.int32) for symbol in range(len(vocabulary))]
    last = [ngram.log_probs([sequence])[-1] for sequence in sequences]
    assert np.exp(last).sum() == pytest.approx(1.0, abs=1e-9)


def test_more_context_predicts_held_out_tweets_better(vocabulary):
    train, held_out = encode_tweets(TEXTS[1:], vocabulary), encode_tweets(TEXTS[:1], vocabulary)
    bits = [-KneserNeyModel(order, len(vocabulary)).fit(train).log_probs(held_out).mean()
            for order in (1, 3, 6)]
    assert bits[0] > bits[1] > bits[2]


def test_it_scores_every_character_after_the_first_plus_the_end(vocabulary):
    ngram = KneserNeyModel(3, len(vocabulary)).fit(encode_tweets(TEXTS, vocabulary))
    assert len(ngram.log_probs(encode_tweets(["Make", "A"], vocabulary))) == (3 + 1) + (0 + 1)


def test_the_longest_seen_context_grows_along_a_known_tweet_and_stays_short_off_it(vocabulary):
    ngram = KneserNeyModel(5, len(vocabulary)).fit(encode_tweets(TEXTS, vocabulary))
    known, unknown = encode_tweets(["Make America Great Again!", "zq zq"], vocabulary)
    seen = ngram.longest_context([known])
    assert len(seen) == len(ngram.log_probs([known]))  # one per scored target, in its order
    # Every context, the END padding before the tweet's start included, was seen whole.
    assert (seen == 4).all()
    assert ngram.longest_context([unknown]).max() <= 2


def test_unseen_characters_still_get_a_probability(vocabulary):
    ngram = KneserNeyModel(5, len(vocabulary)).fit(encode_tweets(TEXTS, vocabulary))
    scores = ngram.log_probs(encode_tweets(["Zebra quokka ☃"], vocabulary))
    assert np.isfinite(scores).all()


def test_an_order_whose_keys_do_not_fit_64_bits_is_refused():
    with pytest.raises(UserError, match="order 12 is too high for a vocabulary of 90"):
        KneserNeyModel(12, 90)


@pytest.mark.parametrize("order", [1, 3, 6])
def test_stepping_gives_the_probabilities_it_scores(vocabulary, order):
    """Generation (one step at a time, every next symbol) and scoring agree exactly."""
    ngram = KneserNeyModel(order, len(vocabulary)).fit(encode_tweets(TEXTS[1:], vocabulary))
    sequences = encode_tweets(["Make America Great!", "The people of Iowa"], vocabulary)
    expected = ngram.log_probs(sequences)
    stepped = []
    for sequence in sequences:
        state = ngram.initial_state(1)
        for position in range(len(sequence) - 1):
            log_probs, state = ngram.step(sequence[position:position + 1], state)
            assert np.exp(log_probs).sum() == pytest.approx(1.0, abs=1e-12)
            if position:  # the first character is not scored
                stepped.append(log_probs[0, sequence[position + 1]])
    np.testing.assert_allclose(stepped, expected, rtol=0, atol=1e-12)


def test_a_batch_of_histories_gives_each_row_its_own_distribution(vocabulary):
    ngram = KneserNeyModel(4, len(vocabulary)).fit(encode_tweets(TEXTS, vocabulary))
    histories = np.array([vocabulary.encode(text) for text in ("Mak", "The", "zzq")])
    batch = ngram.next_probs(histories)
    for row, history in enumerate(histories):
        np.testing.assert_array_equal(ngram.next_probs(history[None]), batch[row:row + 1])
    assert batch[0].argmax() == vocabulary.encode("e")[0]  # "Mak" -> "e"


def test_a_saved_model_loads_back_the_same_and_small(vocabulary, tmp_path):
    sequences = encode_tweets(TEXTS, vocabulary)
    ngram = KneserNeyModel(7, len(vocabulary)).fit(sequences)
    ngram.save(tmp_path / "ngram.npz.xz")
    loaded = KneserNeyModel.load(tmp_path / "ngram.npz.xz")
    assert (loaded.order, loaded.vocab_size, loaded.ngrams) == (7, len(vocabulary), ngram.ngrams)
    np.testing.assert_array_equal(loaded.keys, ngram.keys)
    np.testing.assert_array_equal(loaded.log_probs(sequences), ngram.log_probs(sequences))
    assert (tmp_path / "ngram.npz.xz").stat().st_size < ngram.nbytes / 4


def test_a_damaged_table_is_one_sentence(tmp_path):
    path = tmp_path / "ngram.npz.xz"
    path.write_bytes(b"not a table")
    with pytest.raises(UserError, match=r"n-gram table .* cannot be read"):
        KneserNeyModel.load(path)


def numpy_next_probs(ngram: KneserNeyModel, history: np.ndarray) -> np.ndarray:
    """The generation step as NumPy computed it before the compiled kernel: every row's context
    of every order looked up at once, the continuations scattered into a dense table."""
    rows, base = len(history), ngram.vocab_size
    powers = base ** np.arange(ngram.order - 1, dtype=np.int64)
    contexts = np.zeros((rows, ngram.order), dtype=np.int64)
    contexts[:, 1:] = np.cumsum(history[:, ::-1] * powers, axis=1)
    start, sizes, backoff, totals = ngram._contexts(contexts)
    flat_sizes = sizes.ravel()
    offsets = np.repeat(start.ravel() - np.cumsum(flat_sizes) + flat_sizes, flat_sizes)
    flat = offsets + np.arange(flat_sizes.sum())
    counts = np.zeros((rows * ngram.order, base))
    symbols = (ngram.keys[flat] & ((1 << LEVEL_SHIFT) - 1)) % base
    counts[np.repeat(np.arange(rows * ngram.order), flat_sizes), symbols] = (
        ngram.cumulative[flat + 1].astype(np.float64) - ngram.cumulative[flat].astype(np.float64))
    counts = counts.reshape(rows, ngram.order, base)
    discounted = np.maximum(counts - ngram.discounts[:, None], 0.0) / totals[:, :, None]
    return ngram._interpolate(discounted, backoff)


def histories(ngram: KneserNeyModel, vocabulary, rows: int, seed: int) -> np.ndarray:
    """Histories of every kind: from the training tweets (long contexts seen), padded starts,
    and random symbols (unseen contexts)."""
    rng = np.random.default_rng(seed)
    text = np.concatenate([[END_ID] * (ngram.order - 1)]
                          + [[*vocabulary.encode(t), END_ID] for t in TEXTS])
    width = ngram.order - 1
    starts = rng.integers(0, len(text) - width, rows)
    found = np.stack([text[s:s + width] for s in starts]).astype(np.int64)
    found[rows // 3:rows // 2] = rng.integers(0, ngram.vocab_size, (rows // 2 - rows // 3, width))
    return found


@pytest.mark.parametrize("order", [1, 2, 5, 8])
def test_the_compiled_step_computes_the_numpy_formula_bit_for_bit(vocabulary, order):
    ngram = KneserNeyModel(order, len(vocabulary)).fit(encode_tweets(TEXTS, vocabulary))
    history = histories(ngram, vocabulary, 60, seed=order)
    np.testing.assert_array_equal(ngram.next_probs(history), numpy_next_probs(ngram, history))


@pytest.mark.parametrize("order", [1, 3, 6])
def test_a_row_steps_the_same_alone_and_in_a_batch(vocabulary, order):
    """Bit for bit (the serving engine batches unrelated requests), and as `next_probs` finds
    the history's contexts by searching the keys: the step follows them from the last step."""
    ngram = KneserNeyModel(order, len(vocabulary)).fit(encode_tweets(TEXTS, vocabulary))
    rng = np.random.default_rng(order)
    rows, steps = 12, 30
    # Training text (long contexts seen), random symbols (unseen), ENDs (the padding again).
    ids = np.stack([np.roll(np.concatenate([vocabulary.encode(text) for text in TEXTS]),
                            -rng.integers(0, 300))[:steps] for _ in range(rows)], axis=1)
    ids[rng.random(ids.shape) < 0.1] = END_ID
    ids[10:14, ::3] = rng.integers(0, len(vocabulary), (4, len(ids[0, ::3])))
    state, together = ngram.initial_state(rows), []
    for symbols in ids:
        previous = state[0]
        log_probs, state = ngram.step(symbols, state)
        # The history is one symbol on: the oldest dropped, the fed one last.
        np.testing.assert_array_equal(
            state[0], np.concatenate([previous, symbols[:, None]], axis=1)[:, 1:])
        np.testing.assert_array_equal(log_probs, np.log(ngram.next_probs(state[0])))
        together.append(log_probs)
    for row in (0, 5, 11):
        alone = ngram.initial_state(1)
        for t, symbols in enumerate(ids[:, row:row + 1]):
            log_probs, alone = ngram.step(symbols, alone)
            assert np.array_equal(log_probs[0], together[t][row])


def test_the_bundled_table_steps_to_the_contexts_that_a_search_finds():
    """4.5 million n-grams: every step's probabilities, from the contexts followed link by link,
    equal those of `next_probs`, which searches the keys for the same history."""
    artifact = load_artifact(resolve(BUNDLED_MODEL))
    ngram, vocabulary = artifact.ngram_model(), artifact.vocabulary
    rng = np.random.default_rng(0)
    text = np.array(vocabulary.encode(
        "Make America Great Again! The Fake News Media is working overtime, very unfair. "
        "Thank you to our great Veterans. We will WIN BIG in November! #MAGA"))
    ids = np.stack([np.roll(text, -shift)[:60] for shift in rng.integers(0, len(text), 16)], 1)
    ids[rng.random(ids.shape) < 0.05] = END_ID
    ids[20:25, ::4] = rng.integers(0, len(vocabulary), (5, 4))
    state = ngram.initial_state(16)
    for symbols in ids:
        probs, state = ngram.step_probs(symbols, state)
        np.testing.assert_array_equal(probs, ngram.next_probs(state[0]))

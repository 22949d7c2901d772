"""The Kneser-Ney baseline: sums to one, gains from context, scores like the model."""

import numpy as np
import pytest

from covfefe.corpus import encode_tweets
from covfefe.errors import UserError
from covfefe.ngram import KneserNeyModel
from covfefe.text import Vocabulary

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


def test_unseen_characters_still_get_a_probability(vocabulary):
    ngram = KneserNeyModel(5, len(vocabulary)).fit(encode_tweets(TEXTS, vocabulary))
    scores = ngram.log_probs(encode_tweets(["Zebra quokka ☃"], vocabulary))
    assert np.isfinite(scores).all()


def test_an_order_whose_keys_do_not_fit_64_bits_is_refused():
    with pytest.raises(UserError, match="order 12 is too high for a vocabulary of 90"):
        KneserNeyModel(12, 90)

"""Real-word decoding: the lexicon's trie and the constraint the generator steps through."""

import numpy as np
import pytest

from covfefe.errors import UserError
from covfefe.generate import TweetGenerator
from covfefe.lexicon import Lexicon, LexiconConstraint, words, words_of
from covfefe.numpy_network import NumpyNetwork
from covfefe.text import END_ID


def test_words_are_letters_with_inner_apostrophes_lower_cased():
    assert words("Don't stop, DON'T! 2nd 'quoted' @realDonaldTrump #MAGA") == [
        "don't", "stop", "don't", "nd", "quoted", "realdonaldtrump", "maga"]


def test_the_trie_holds_exactly_its_words(tmp_path):
    lexicon = Lexicon(["great", "greatest", "don't", "a"])
    assert "Great" in lexicon and "GREATEST" in lexicon and "don't" in lexicon
    assert "grea" not in lexicon and "greater" not in lexicon and "don" not in lexicon
    lexicon.save(tmp_path / "lexicon.txt.xz")
    assert Lexicon.load(tmp_path / "lexicon.txt.xz").words == lexicon.words
    with pytest.raises(UserError, match="only a-z and '"):
        Lexicon(["naïve"])


@pytest.fixture(scope="module")
def constrained(tiny_model, tiny_tweets):
    from covfefe.data.store import load_dataset

    lexicon = Lexicon(words_of(load_dataset(tiny_tweets)["text"]))
    network = NumpyNetwork.load(tiny_model.path / "weights.npz")
    return lexicon, TweetGenerator(LexiconConstraint(network, lexicon, tiny_model.vocabulary),
                                   tiny_model.vocabulary)


def test_every_word_written_is_a_word_of_the_lexicon(constrained, tiny_model):
    lexicon, generator = constrained
    free = TweetGenerator.from_artifact(tiny_model)
    prefixes = ["", "The ", "Great "]
    # A tiny model at a high temperature spells freely: without the lexicon, non-words.
    unconstrained = [w for p in prefixes for c in free.complete(p, temperature=1.5, n=10, seed=4)
                     for w in words(c.generated)]
    assert sum(w not in lexicon for w in unconstrained) > 10
    for prefix in prefixes:
        for completion in generator.complete(prefix, temperature=1.5, n=10, seed=4):
            written = words(completion.generated)
            if not completion.finished:  # a tweet cut at 280 may end inside a word
                written = written[:-1]
            assert [w for w in written if w not in lexicon] == []


def test_a_word_the_prefix_started_outside_the_lexicon_is_left_alone(constrained):
    lexicon, generator = constrained
    assert "covfefez" not in lexicon
    completions = generator.complete("Despite the negative press covfefez", temperature=1.0,
                                     n=4, seed=2)
    assert all(c.text.startswith("Despite the negative press covfefez") for c in completions)


def test_the_mask_allows_a_word_to_end_only_where_it_is_complete(constrained, tiny_model):
    lexicon, generator = constrained
    constraint, vocabulary = generator.network, tiny_model.vocabulary
    state = constraint.initial_state(1)
    for symbol in [END_ID, *vocabulary.encode("gre")]:
        _, state = constraint.step(np.array([symbol]), state)
    allowed = constraint.allowed(state[1])[0]
    space, a_lower, a_upper = vocabulary.encode(" aA")
    assert not allowed[space]  # "gre" is not a word
    continues = {w[3] for w in lexicon.words if w.startswith("gre") and len(w) > 3}
    assert allowed[a_lower] == allowed[a_upper] == ("a" in continues)

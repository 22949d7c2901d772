"""Real-word decoding: the lexicon's trie and the constraint the generator steps through."""

import numpy as np
import pytest

from covfefe.errors import UserError
from covfefe.inference.generate import TweetGenerator
from covfefe.inference.numpy_network import NumpyNetwork
from covfefe.lm.lexicon import (
    APOSTROPHE_END,
    FREE,
    LETTERS,
    ROOT,
    Lexicon,
    LexiconConstraint,
    words,
    words_of,
)
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


def numpy_advance(constraint: LexiconConstraint, nodes: np.ndarray, ids: np.ndarray
                  ) -> np.ndarray:
    """The constraint's step as NumPy computed it before the compiled kernel: the node after
    one symbol..."""
    trie = constraint.lexicon
    edges = constraint.edge[ids]
    inside = nodes >= ROOT
    nxt = np.where(inside & (edges >= 0),
                   trie.children[np.maximum(nodes, 0), np.maximum(edges, 0)], FREE)
    apostrophe = edges == len(LETTERS)
    nxt = np.where(apostrophe & (nxt < 0) & inside & trie.complete[np.maximum(nodes, 0)],
                   APOSTROPHE_END, nxt)
    nxt = np.where(apostrophe & (nodes == ROOT), ROOT, nxt)
    nxt = np.where(apostrophe & (nodes == APOSTROPHE_END), APOSTROPHE_END, nxt)
    nxt = np.where((nodes == FREE) & apostrophe, FREE, nxt)
    return np.where(edges < 0, ROOT, nxt)


def numpy_allowed(constraint: LexiconConstraint, nodes: np.ndarray) -> np.ndarray:
    """... and the mask of what may follow it."""
    edge, children = constraint.edge, constraint.lexicon.children
    mask = np.ones((len(nodes), len(edge)), dtype=bool)
    in_word = nodes > ROOT
    words = nodes[in_word]
    part = np.ones((len(words), len(edge)), dtype=bool)
    part[:, edge >= 0] = children[words][:, edge[edge >= 0]] >= 0
    may_end = constraint._may_end[words][:, None]
    part[:, edge < 0] = may_end
    part[:, edge == len(LETTERS)] |= may_end
    mask[in_word] = part
    mask[np.ix_(np.flatnonzero(nodes == APOSTROPHE_END), np.flatnonzero(
        (edge >= 0) & (edge < len(LETTERS))))] = False
    return mask


def test_the_compiled_step_keeps_the_rules_for_every_node_and_symbol(constrained, tiny_model):
    constraint, symbols = constrained[1].network, len(tiny_model.vocabulary)
    nodes = np.concatenate([[ROOT, FREE, APOSTROPHE_END],
                            np.arange(1, len(constraint.lexicon.children))])
    scores = np.random.default_rng(0).standard_normal((len(nodes), symbols))
    model, constraint.model = constraint.model, StaticScores(scores)
    reached = set()
    try:
        for symbol in range(symbols):
            ids = np.full(len(nodes), symbol)
            masked, (_, advanced) = constraint.step(ids, [None, nodes])
            expected = numpy_advance(constraint, nodes, ids)
            np.testing.assert_array_equal(advanced, expected)
            np.testing.assert_array_equal(masked, np.where(
                numpy_allowed(constraint, expected), scores, -np.inf))
            reached |= set(advanced.tolist())
        with pytest.raises(IndexError, match="a symbol outside the vocabulary"):
            constraint.step(np.array([symbols]), [None, nodes[:1]])
    finally:
        constraint.model = model
    assert {ROOT, FREE, APOSTROPHE_END} <= reached  # every kind of node
    np.testing.assert_array_equal(constraint.allowed(nodes), numpy_allowed(constraint, nodes))


class StaticScores:
    """A stand-in for the wrapped model that returns given scores (the constraint alone)."""

    def __init__(self, scores):
        self.scores = scores

    def step(self, ids, state):
        return self.scores[:len(ids)], state


def test_a_row_is_constrained_the_same_alone_and_in_a_batch(constrained, tiny_model):
    constraint = constrained[1].network
    rng = np.random.default_rng(3)
    rows = 40
    ids = rng.integers(0, len(tiny_model.vocabulary), (30, rows))
    ids[:, ::3] = rng.choice(tiny_model.vocabulary.encode("abcdeilnorst' "), (30, 14))
    state, together = constraint.initial_state(rows), []
    for symbols in ids:
        scores, state = constraint.step(symbols, state)
        together.append((scores, state[1]))
    for row in (0, 3, 17, 39):
        alone = constraint.initial_state(1)
        for t, symbols in enumerate(ids):
            scores, alone = constraint.step(symbols[row:row + 1], alone)
            assert np.array_equal(scores[0], together[t][0][row])
            assert alone[1][0] == together[t][1][row]

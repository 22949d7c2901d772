"""The word constraint: the lexicon's forms, its trie, and the penalties the generator steps
through."""

import functools

import numpy as np
import pytest

from covfefe.errors import UserError
from covfefe.inference.generate import TweetGenerator
from covfefe.inference.numpy_network import NumpyNetwork
from covfefe.lm.lexicon import (
    APOSTROPHE_END,
    DEFAULT_PENALTY,
    FREE_HANDLE,
    FREE_WORD,
    ROOT,
    Lexicon,
    LexiconConstraint,
    end_costs,
    spellings,
    word_forms,
    words,
)
from covfefe.text import END_ID, PAD_ID, UNK_ID


def test_words_are_letters_with_inner_apostrophes_lower_cased_outside_handles():
    assert words("Don't stop, DON'T! 2nd 'quoted' @realDonaldTrump #MAGA") == [
        "don't", "stop", "don't", "nd", "quoted", "maga"]


def test_forms_keep_case_and_handles_keep_their_at():
    assert word_forms("Don't stop, DON'T! @realDonaldTrump @Team_Trump45 #MAGA") == [
        "@realDonaldTrump", "@Team_Trump45", "Don't", "stop", "DON'T", "MAGA"]


def test_the_lexicon_holds_forms_as_written_and_grows_with_new_tweets(tmp_path):
    lexicon = Lexicon.from_texts(["Make America Great Again! @FoxNews", "FAKE NEWS"])
    assert "Great" in lexicon and "FAKE" in lexicon and "@FoxNews" in lexicon
    assert "great" not in lexicon and "FoxNews" not in lexicon
    assert spellings(Lexicon(["McCain", "@FoxNews"])) == {"McCain", "MCCAIN", "@FoxNews"}
    grown = lexicon.extended(["The Coronavirus is spreading"])
    assert "Coronavirus" in grown and "Coronavirus" not in lexicon and len(grown) == 11
    lexicon.save(tmp_path / "lexicon.txt.xz")
    assert Lexicon.load(tmp_path / "lexicon.txt.xz").words == lexicon.words
    with pytest.raises(UserError, match="neither letters"):
        Lexicon(["naïve"])


@pytest.fixture(scope="module")
def constrained(tiny_model, tiny_tweets):
    from covfefe.data.store import load_dataset

    lexicon = Lexicon.from_texts(load_dataset(tiny_tweets)["text"])
    network = NumpyNetwork.load(tiny_model.path / "weights.npz")
    return lexicon, TweetGenerator(LexiconConstraint(network, lexicon, tiny_model.vocabulary,
                                                     penalty=3.0), tiny_model.vocabulary)


def known(lexicon: Lexicon, text: str) -> list[str]:
    """The words and handles of a text that the constraint's trie does not hold."""
    forms = spellings(lexicon)
    return [form for form in word_forms(text) if form not in forms]


def test_leaving_the_known_words_is_rare_but_possible(constrained, tiny_model):
    lexicon, generator = constrained
    free = TweetGenerator.from_artifact(tiny_model)
    prefixes = ["", "The ", "Great "]

    def new_words(generator) -> int:
        return sum(len(known(lexicon, c.generated.rsplit(" ", 1)[0] if not c.finished
                             else c.generated))
                   for p in prefixes for c in generator.complete(p, temperature=1.0, n=20,
                                                                  seed=4))

    # A tiny model spells freely: without the constraint, many new words; with it, fewer.
    assert new_words(generator) < 0.6 * new_words(free)
    assert new_words(generator) > 0  # but not none: a soft constraint


@functools.cache
def children_of(trie, node: int) -> dict[int, int]:
    """A node's edges in the trie: symbol -> the node it leads to."""
    return {int(trie.labels[e]): int(trie.targets[e])
            for e in range(trie.offsets[node], trie.offsets[node + 1])}


def reference_next(constraint: LexiconConstraint, chars: list[str], node: int, symbol: int
                   ) -> int:
    """The node after a symbol, as the module docstring says, in plain Python."""
    trie, char = constraint.trie, chars[symbol]
    children = children_of(trie, max(node, 0))
    root_children = children_of(trie, ROOT)
    letter = char.isascii() and char.isalpha()
    handle_char = letter or (char.isascii() and (char.isdigit() or char == "_"))
    if char == "@":
        return root_children.get(symbol, FREE_HANDLE)
    if node in (ROOT, APOSTROPHE_END):
        if not letter:
            return ROOT
        return FREE_WORD if node == APOSTROPHE_END else root_children.get(symbol, FREE_WORD)
    if node == FREE_WORD:
        return FREE_WORD if letter or char == "'" else ROOT
    if node == FREE_HANDLE:
        return FREE_HANDLE if handle_char else ROOT
    in_handle = bool(trie.handle[node])
    if not (handle_char if in_handle else letter or char == "'"):
        return ROOT
    if symbol in children:
        return children[symbol]
    if char == "'" and constraint.may_end[node]:
        return APOSTROPHE_END
    return FREE_HANDLE if in_handle else FREE_WORD


def reference_costs(constraint: LexiconConstraint, chars: list[str], node: int) -> np.ndarray:
    """What each symbol costs after a node: the penalty for leaving the known forms."""
    trie, penalty = constraint.trie, constraint.penalty
    costs = np.zeros(len(chars))
    if node in (FREE_WORD, FREE_HANDLE):
        return costs
    children = {int(trie.labels[e]) for e in range(trie.offsets[node], trie.offsets[node + 1])
                } if node >= ROOT else set()
    for symbol, char in enumerate(chars):
        if symbol in (PAD_ID, UNK_ID) or symbol in children:
            continue
        letter = char.isascii() and char.isalpha()
        if node in (ROOT, APOSTROPHE_END):
            costs[symbol] = penalty if letter else 0.0
            continue
        in_handle = bool(trie.handle[node])
        handle_char = letter or (char.isascii() and (char.isdigit() or char == "_"))
        continues = handle_char if in_handle else letter or char == "'"
        ends = 0.0 if constraint.may_end[node] else penalty
        costs[symbol] = (ends if char == "'" else penalty) if continues else ends
    return costs


def test_the_compiled_step_keeps_the_rules_for_every_node_and_symbol(constrained, tiny_model):
    constraint, vocabulary = constrained[1].network, tiny_model.vocabulary
    symbols = len(vocabulary)
    chars = [vocabulary.decode([i]) if i not in (END_ID, PAD_ID) else "" for i in
             range(symbols)]
    nodes = np.concatenate([[ROOT, FREE_WORD, APOSTROPHE_END, FREE_HANDLE],
                            np.arange(1, len(constraint.trie))])
    rows = np.stack([nodes, np.full(len(nodes), 5)], axis=1)  # [node, characters written]
    scores = np.random.default_rng(0).standard_normal((len(nodes), symbols))
    model, constraint.model = constraint.model, StaticScores(scores)
    # What a node costs does not depend on how it was reached: each node's reference, once.
    costs_after = functools.cache(lambda node: reference_costs(constraint, chars, node))
    reached = set()
    try:
        for symbol in range(symbols):
            ids = np.full(len(nodes), symbol)
            penalised, (_, advanced) = constraint.step(ids, [None, rows])
            expected = [reference_next(constraint, chars, int(node), symbol) for node in nodes]
            np.testing.assert_array_equal(advanced[:, 0], expected)
            assert (advanced[:, 1] == (5 if symbol == END_ID else 6)).all()
            advanced = advanced[:, 0]
            if symbol % 7 == 0:  # the costs after each node: a sample of the symbols suffices
                np.testing.assert_allclose(penalised, scores - np.array(
                    [costs_after(node) for node in expected]))
            reached |= set(advanced.tolist())
        with pytest.raises(IndexError, match="a symbol outside the vocabulary"):
            constraint.step(np.array([symbols]), [None, rows[:1]])
    finally:
        constraint.model = model
    assert {ROOT, FREE_WORD, APOSTROPHE_END, FREE_HANDLE} <= reached  # every kind of node
    assert constraint.trie.handle.any()
    np.testing.assert_array_equal(constraint.costs(rows), [
        costs_after(int(node)) for node in nodes])


class StaticScores:
    """A stand-in for the wrapped model that returns given scores (the constraint alone)."""

    def __init__(self, scores):
        self.scores = scores

    def step(self, ids, state):
        return self.scores[:len(ids)], state


def test_case_is_kept_as_the_archive_writes_a_word(constrained, tiny_model):
    lexicon, generator = constrained
    constraint, vocabulary = generator.network, tiny_model.vocabulary
    assert "the" in lexicon and "thE" not in spellings(lexicon)

    def cost_after(text: str, char: str) -> float:
        state = constraint.initial_state(1)
        for symbol in [END_ID, *vocabulary.encode(text)]:
            _, state = constraint.step(np.array([symbol]), state)
        return float(constraint.costs(state[1])[0, vocabulary.encode(char)[0]])

    assert cost_after(" th", "e") == 0.0 and cost_after(" Th", "e") == 0.0
    assert cost_after(" TH", "E") == 0.0
    assert cost_after(" th", "E") == constraint.penalty  # "thE" is not how a word is written


def test_a_handle_is_a_word_only_after_its_at(constrained, tiny_model):
    lexicon, generator = constrained
    handle = next(form for form in lexicon.words if form.startswith("@") and len(form) > 4)
    constraint, vocabulary = generator.network, tiny_model.vocabulary

    def cost_of(text: str) -> float:
        state, total = constraint.initial_state(1), 0.0
        for symbol in [END_ID, *vocabulary.encode(text + " ")]:
            total += float(constraint.costs(state[1])[0, symbol])
            _, state = constraint.step(np.array([symbol]), state)
        return total

    assert cost_of(f" {handle}") == 0.0
    if handle[1:] not in spellings(lexicon):
        assert cost_of(f" {handle[1:]}") == constraint.penalty


def test_ending_the_tweet_costs_what_its_length_calls_for(constrained, tiny_model):
    constraint = constrained[1].network.with_costs(3.0, end_costs(2.0, 10, 4.0, 20,
                                                                  max_chars=30))
    rows = np.array([[ROOT, 5], [ROOT, 15], [ROOT, 25], [ROOT, 280]])
    np.testing.assert_array_equal(constraint.costs(rows)[:, END_ID], [2.0, 0.0, -4.0, -4.0])
    state = constraint.initial_state(1)
    for symbol in [END_ID, *tiny_model.vocabulary.encode("a b")]:
        _, state = constraint.step(np.array([symbol]), state)
    assert state[1][0, 1] == 3  # the start is no character; each one after it is
    with pytest.raises(UserError, match="0 or more nats"):
        end_costs(-1.0)


def test_a_row_is_constrained_the_same_alone_and_in_a_batch(constrained, tiny_model):
    constraint = constrained[1].network
    rng = np.random.default_rng(3)
    rows = 40
    ids = rng.integers(0, len(tiny_model.vocabulary), (30, rows))
    ids[:, ::3] = rng.choice(tiny_model.vocabulary.encode("abcdeilnorstT@' "), (30, 14))
    state, together = constraint.initial_state(rows), []
    for symbols in ids:
        scores, state = constraint.step(symbols, state)
        together.append((scores, state[1]))
    for row in (0, 3, 17, 39):
        alone = constraint.initial_state(1)
        for t, symbols in enumerate(ids):
            scores, alone = constraint.step(symbols[row:row + 1], alone)
            assert np.array_equal(scores[0], together[t][0][row])
            assert np.array_equal(alone[1][0], together[t][1][row])


def test_an_artifact_takes_a_grown_lexicon(tiny_model, tmp_path):
    from covfefe.inference.artifact import with_lexicon

    lexicon = Lexicon.from_texts(["Make America Great Again"])
    grown = with_lexicon(tiny_model, lexicon.extended(["The Coronavirus is here"]),
                         tmp_path / "model")
    assert "Coronavirus" in grown.lexicon() and grown.metadata["lexicon"]["words"] == 8
    generator = TweetGenerator.from_artifact(grown)
    assert isinstance(generator.network, LexiconConstraint)
    assert generator.decoding["word_penalty"] == DEFAULT_PENALTY

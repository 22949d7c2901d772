"""The word constraint: leaving the words of the training tweets costs probability.

A character model can spell a word that does not exist ("understanded", "DONTUND"), and a new
user of 2020 needs words the archive never used ("coronavirus", "ventilators"). The `Lexicon`
holds every word form of the training tweets as the archive writes it (runs of letters with
inner apostrophes, case kept: "Fake", "FAKE", "McCain") and every handle with its ``@``
("@FoxNews"); `LexiconConstraint` wraps the model the generator steps (the network, or its
mixture with the n-gram table) and, after each symbol, follows the word being written down a
trie of those forms, each also Capitalised and in capitals (a sentence's first word, a shouted
one). A symbol that would leave the known forms costs ``penalty`` nats: a letter (or, in a
handle, a digit or ``_``) that continues none of them, a character that ends a word where no
form is complete ("Gre "), a letter right after an apostrophe that ended a word. Nothing else
changes: the served distribution is

    p(s | history) = p_model(s | history) exp(-penalty [s leaves the known words]) / Z

renormalised over every symbol (the sampler and `covfefe evaluate` do the same sum), so every
string keeps a non-zero probability and a new word is written where the model makes it likely
enough ("We will defeat the vir" -> "virus"). The penalty is paid once per new word: inside a
word that has left the trie (written by the user or drawn), the model spells freely until the
word ends. It is a parameter of the artifact (``metadata["lexicon"]["penalty"]``), chosen by
measurement (models/EXPERIMENTS.md).

The state of a row is its trie node: ``ROOT`` between words, ``FREE_WORD`` or
``FREE_HANDLE`` inside a word or handle that has left the trie, ``APOSTROPHE_END`` after an
apostrophe that ended a word (a letter then would make one word of the two). The constraint has
the generator's step interface, so `covfefe.inference.generate.TweetGenerator` and the serving
engine use it as they are; a step advances each row's node and subtracts the penalties from
its scores in one compiled pass (numba), each row on its own.

A word list that grows with new tweets (``covfefe update``) feeds it through
`Lexicon.extended`; the trie is built from the forms when the constraint is made.
"""

import copy
import lzma
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from covfefe.compiled import compiled
from covfefe.errors import UserError
from covfefe.text import END_ID, MAX_TWEET_CHARS, PAD_ID, UNK_ID, Vocabulary

HANDLE = re.compile(r"@[A-Za-z0-9_]+")
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
FORM = re.compile(r"@[A-Za-z0-9_]+|[A-Za-z]+(?:'[A-Za-z]+)*$")  # what a lexicon line may be
LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
HANDLE_CHARS = LETTERS | frozenset("0123456789_")
APOSTROPHE, AT = "'", "@"
ROOT, FREE_WORD, APOSTROPHE_END, FREE_HANDLE = 0, -1, -2, -3
# Leaving the known words costs this many nats where an artifact records no penalty of its
# own: about the validation optimum of the bundled model (models/EXPERIMENTS.md).
DEFAULT_PENALTY = 2.5


def words(text: str) -> list[str]:
    """Return the words of a text (runs of letters with inner apostrophes, outside handles),
    lower-cased: what the word measures count (`covfefe.evaluation.quality`)."""
    return [word.lower() for word in WORD.findall(HANDLE.sub(" ", text))]


def words_of(texts: Iterable[str]) -> set[str]:
    """Return the set of (lower-cased) words of a collection of tweets."""
    found: set[str] = set()
    for text in texts:
        found.update(words(text))
    return found


def word_forms(text: str) -> list[str]:
    """Return the handles of a text (with their ``@``) and its words as written."""
    return HANDLE.findall(text) + WORD.findall(HANDLE.sub(" ", text))


class Lexicon:
    """The word forms of a set of tweets: words as written (case kept) and handles (``@``)."""

    def __init__(self, forms: Iterable[str]):
        self.words = sorted(set(forms))
        for form in self.words:
            if not FORM.match(form):
                raise UserError(f"lexicon word {form!r} is neither letters (with inner "
                                "apostrophes) nor a handle (@ and letters, digits, _)")
        self._set = frozenset(self.words)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Lexicon":
        """Return the lexicon of a collection of (cleaned) tweets."""
        forms: set[str] = set()
        for text in texts:
            forms.update(word_forms(text))
        return cls(forms)

    def extended(self, texts: Iterable[str]) -> "Lexicon":
        """Return this lexicon with the word forms of more tweets added (new tweets: the
        word list grows with the archive)."""
        return Lexicon(self._set | Lexicon.from_texts(texts)._set)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, form: str) -> bool:
        return form in self._set

    def save(self, path: str | os.PathLike) -> None:
        """Write the forms, one per line, LZMA-compressed."""
        Path(path).write_bytes(lzma.compress("\n".join(self.words).encode("utf-8")))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lexicon":
        try:
            text = lzma.decompress(Path(path).read_bytes()).decode("utf-8")
        except (OSError, lzma.LZMAError, UnicodeDecodeError) as error:
            raise UserError(f"lexicon {path} cannot be read ({error})") from None
        return cls(text.split("\n") if text else [])


def spellings(lexicon: Lexicon) -> set[str]:
    """Return what the constraint's trie holds: each word form as written, Capitalised and in
    capitals; each handle as written."""
    found = set()
    for form in lexicon.words:
        found.add(form)
        if not form.startswith(AT):
            found.update((form[0].upper() + form[1:], form.upper()))
    return found


class Trie:
    """Strings of vocabulary symbols as a trie, its edges in one flat table: the children of
    ``node`` are ``targets[offsets[node]:offsets[node + 1]]``, along the symbols ``labels`` of
    the same slice. ``complete[node]``: a string ends there; ``handle[node]``: it is inside a
    handle."""

    def __init__(self, strings: Iterable[np.ndarray], at_symbol: int):
        children: list[dict[int, int]] = [{}]
        complete = [False]
        handle = [False]
        for symbols in strings:
            node = ROOT
            for symbol in symbols.tolist():
                child = children[node].get(symbol)
                if child is None:
                    child = children[node][symbol] = len(children)
                    children.append({})
                    complete.append(False)
                    handle.append(handle[node] or (node == ROOT and symbol == at_symbol))
                node = child
            complete[node] = True
        counts = np.array([len(c) for c in children], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.labels = np.array([s for c in children for s in sorted(c)], dtype=np.int64)
        self.targets = np.array([c[s] for c in children for s in sorted(c)], dtype=np.int64)
        self.complete = np.array(complete, dtype=bool)
        self.handle = np.array(handle, dtype=bool)

    def __len__(self) -> int:
        return len(self.complete)


# What each symbol is to the constraint (`LexiconConstraint.kinds`), as bits.
LETTER, APOSTROPHE_KIND, HANDLE_CHAR, AT_KIND, NEVER = 1, 2, 4, 8, 16


class LexiconConstraint:
    """The model, with a penalty for each symbol that leaves the known word forms (see the
    module docstring). State: ``[model state, trie node per row]``."""

    def __init__(self, model, lexicon: Lexicon, vocabulary: Vocabulary,
                 penalty: float = DEFAULT_PENALTY, end_costs: np.ndarray | None = None):
        if not 0 <= penalty < np.inf:
            raise UserError(f"the word penalty must be 0 or more nats, not {penalty!r}")
        self.model = model
        self.penalty = float(penalty)
        self.end_costs = _end_costs_array(end_costs)
        self.lexicon = lexicon
        size = len(vocabulary)
        chars = [vocabulary.decode([i]) if i not in (END_ID, PAD_ID, UNK_ID) else ""
                 for i in range(size)]
        kinds = np.zeros(size, dtype=np.int64)
        for symbol, char in enumerate(chars):
            kinds[symbol] = ((LETTER if char in LETTERS else 0)
                             | (APOSTROPHE_KIND if char == APOSTROPHE else 0)
                             | (HANDLE_CHAR if char in HANDLE_CHARS else 0)
                             | (AT_KIND if char == AT else 0))
        kinds[[PAD_ID, UNK_ID]] = NEVER  # never written (the sampler bans them): no penalty
        self.kinds = kinds
        self.at_symbol = vocabulary.encode(AT)[0] if AT in vocabulary else -1
        # Only forms the vocabulary can spell: else a word could start that no symbol ends.
        spellable = [form for form in spellings(lexicon) if all(c in vocabulary for c in form)]
        self.trie = Trie((vocabulary.encode(form).astype(np.int64) for form in spellable),
                         self.at_symbol)
        # Where a word may end: where a form is complete, and after an apostrophe that follows
        # a complete form (a closing quote: "Trump'" is "Trump" then a quote).
        self.may_end = self.trie.complete.copy()
        apostrophes = np.flatnonzero((kinds & APOSTROPHE_KIND) > 0)
        for node in np.flatnonzero(self.trie.complete):
            for symbol in apostrophes:
                child = _child(node, symbol, self.trie.offsets, self.trie.labels,
                               self.trie.targets)
                if child >= 0:
                    self.may_end[child] = True
        # The whole stack's step in one compiled call (`covfefe.inference.fused.FusedStep`), set by
        # `covfefe.inference.fused.fuse` where the stack has the shape it fuses; None: part by part.
        self.fused = None

    def with_costs(self, penalty: float, end_costs: np.ndarray | None) -> "LexiconConstraint":
        """Return the same constraint (the same model and trie) with another word penalty and
        end costs, stepped part by part until `covfefe.inference.fused.fuse` fuses it."""
        if not 0 <= penalty < np.inf:
            raise UserError(f"the word penalty must be 0 or more nats, not {penalty!r}")
        other = copy.copy(self)
        other.penalty, other.end_costs = float(penalty), _end_costs_array(end_costs)
        other.fused = None
        return other

    @property
    def tables(self) -> "WordTables":
        """What the compiled step reads (`WordTables`)."""
        return WordTables(self.kinds, self.trie.offsets, self.trie.labels, self.trie.targets,
                          self.trie.handle, self.may_end, self.penalty, self.end_costs)

    def initial_state(self, n: int) -> list:
        """The model's state and, per row, its trie node and the characters written (0, 0)."""
        return [self.model.initial_state(n), np.zeros((n, 2), dtype=np.int64)]

    def costs(self, rows: np.ndarray) -> np.ndarray:
        """Return ``[rows, symbols]``: the nats each symbol would cost after each row's state
        (``[node, characters written]``, as ``state[1]`` holds them)."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        out = np.empty((len(rows), len(self.kinds)))
        _costs(rows, self.tables, out)
        return out

    def step(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        if self.fused is not None:
            return self.fused(ids, state)
        return self.step_parts(ids, state)

    def step_parts(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """`step` through each part of the stack in turn (what `covfefe.inference.fused` fuses)."""
        scores, model_state = self.model.step(ids, state[0])
        scores = np.ascontiguousarray(scores)
        rows, penalised = np.empty((len(scores), 2), dtype=np.int64), np.empty(scores.shape)
        advance_and_penalise(np.ascontiguousarray(state[1], dtype=np.int64),
                              np.ascontiguousarray(ids, dtype=np.int64), self.tables, scores,
                              rows, penalised)
        return penalised, [model_state, rows]


def end_costs(penalty: float = 0.0, below: int = 0, bonus: float = 0.0,
              bonus_from: int = MAX_TWEET_CHARS, max_chars: int = MAX_TWEET_CHARS
              ) -> np.ndarray:
    """Return what ending the tweet costs (nats) after each number of characters written, 0 to
    ``max_chars``: ``penalty`` below ``below`` characters, ``-bonus`` from ``bonus_from`` on,
    0 between (the end-of-tweet calibration: models/EXPERIMENTS.md)."""
    if penalty < 0 or bonus < 0:
        raise UserError(f"the end penalty and bonus must be 0 or more nats, not {penalty!r} "
                        f"and {bonus!r}")
    written = np.arange(max_chars + 1)
    return np.where(written < below, float(penalty),
                    np.where(written >= bonus_from, -float(bonus), 0.0))


def _end_costs_array(costs) -> np.ndarray:
    if costs is None:
        return np.zeros(1)
    costs = np.ascontiguousarray(costs, dtype=np.float64)
    if costs.ndim != 1 or costs.size == 0 or not np.isfinite(costs).all():
        raise UserError("the end costs must be finite nats, one per number of characters")
    return costs


@compiled(inline=True)
def _child(node, symbol, offsets, labels, targets):
    """The child of ``node`` along ``symbol``, or -1."""
    for edge in range(offsets[node], offsets[node + 1]):
        if labels[edge] == symbol:
            return targets[edge]
    return -1


@compiled(inline=True)
def _continues(kind, in_handle):
    """Whether a symbol of ``kind`` is part of a word (of a handle where ``in_handle``)."""
    if in_handle:
        return (kind & HANDLE_CHAR) != 0
    return (kind & (LETTER | APOSTROPHE_KIND)) != 0


class WordTables(NamedTuple):
    """What the compiled step reads of a `LexiconConstraint`: each symbol's ``kinds`` (bits:
    letter, apostrophe, handle character, @, never written); the trie's edges (``node``'s
    children are ``targets[offsets[node]:offsets[node + 1]]`` along the symbols ``labels``),
    its ``handle`` nodes and the nodes where a word ``may_end``; the word ``penalty`` (nats)
    and ``end_costs[written]``, what ending costs after that many characters."""

    kinds: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    handle: np.ndarray
    may_end: np.ndarray
    penalty: float
    end_costs: np.ndarray


@compiled
def _next_node(node, symbol, words):
    """Return the node after writing ``symbol`` at ``node`` (``words``: `WordTables`)."""
    kinds, offsets, labels, targets = words.kinds, words.offsets, words.labels, words.targets
    handle, may_end = words.handle, words.may_end
    kind = kinds[symbol]
    if kind & AT_KIND:  # a handle begins (and ends the word before it)
        child = _child(ROOT, symbol, offsets, labels, targets)
        return child if child >= 0 else FREE_HANDLE
    if node in (ROOT, APOSTROPHE_END):
        if not kind & LETTER:
            return ROOT
        if node == APOSTROPHE_END:
            return FREE_WORD
        child = _child(ROOT, symbol, offsets, labels, targets)
        return child if child >= 0 else FREE_WORD
    if node in (FREE_WORD, FREE_HANDLE):
        return node if _continues(kind, node == FREE_HANDLE) else ROOT
    if not _continues(kind, handle[node]):
        return ROOT
    child = _child(node, symbol, offsets, labels, targets)
    if child >= 0:
        return child
    if kind & APOSTROPHE_KIND and may_end[node]:  # a closing quote after a word
        return APOSTROPHE_END
    return FREE_HANDLE if handle[node] else FREE_WORD


@compiled
def _costs_after(node, written, words, out):
    """Write into ``out`` what each symbol costs (nats) after ``node`` with ``written``
    characters written: ``words.penalty`` for one that leaves the known forms, else 0; ending
    the tweet costs ``words.end_costs[written]`` more (the last entry for longer)."""
    _word_costs(node, words, out)
    out[END_ID] += words.end_costs[min(written, len(words.end_costs) - 1)]


@compiled
def _word_costs(node, words, out):
    """`_costs_after` but the end's own cost."""
    kinds, offsets, labels, penalty = words.kinds, words.offsets, words.labels, words.penalty
    size = len(kinds)
    if node in (FREE_WORD, FREE_HANDLE):
        for symbol in range(size):
            out[symbol] = 0.0
        return
    if node in (ROOT, APOSTROPHE_END):
        for symbol in range(size):
            out[symbol] = penalty if kinds[symbol] & LETTER else 0.0
        if node == ROOT:  # letters that begin a known form
            for edge in range(offsets[ROOT], offsets[ROOT + 1]):
                out[labels[edge]] = 0.0
        return
    in_handle = words.handle[node]
    ends = 0.0 if words.may_end[node] else penalty
    for symbol in range(size):
        kind = kinds[symbol]
        if kind & NEVER:
            out[symbol] = 0.0
        elif _continues(kind, in_handle):
            # An apostrophe after a complete word closes a quote: no word left.
            out[symbol] = ends if kind & APOSTROPHE_KIND else penalty
        else:
            out[symbol] = ends
    for edge in range(offsets[node], offsets[node + 1]):
        out[labels[edge]] = 0.0


@compiled
def _costs(rows, words, out):
    for row in range(len(rows)):
        _costs_after(rows[row, 0], rows[row, 1], words, out[row])


@compiled
def advance_and_penalise(rows, ids, words, scores, new_rows, penalised):
    """Advance each row's state (``[node, characters written]``) by its symbol into
    ``new_rows``; write its scores less what each symbol would cost next (``words``:
    `WordTables`) into ``penalised``."""
    size = len(words.kinds)
    costs = np.empty(size)
    for row in range(len(rows)):
        symbol = ids[row]
        if not 0 <= symbol < size:  # compiled code checks no index: a crash, else
            raise IndexError("a symbol outside the vocabulary")
        node = _next_node(rows[row, 0], symbol, words)
        written = rows[row, 1] + (symbol != END_ID)  # END: the start, or a row that has ended
        new_rows[row, 0] = node
        new_rows[row, 1] = written
        _costs_after(node, written, words, costs)
        for symbol in range(size):
            penalised[row, symbol] = scores[row, symbol] - costs[symbol]

"""Real words only: decoding constrained to the words of the training tweets.

A character model can spell a word that does not exist ("understanded", "DONTUND"). The
`Lexicon` holds every word of the training tweets (runs of letters with inner apostrophes,
lower-cased, as `covfefe.evaluation.quality` counts them) as a trie, and `LexiconConstraint` wraps
the
model the generator steps (the network, or its mixture with the n-gram table): after each
symbol it follows the word being written down the trie and allows next only a letter (either
case) or apostrophe that continues some word, and a character that ends the word only where the
word is complete. Outside a word every symbol is allowed. A word that the prefix started and the
lexicon does not hold is left alone until it ends. The allowed symbols' probabilities are
renormalised by the sampler, so the rest of the distribution is the model's own.

The state of a row is its trie node: ``ROOT`` between words, ``FREE`` inside a word the
lexicon does not hold, or ``APOSTROPHE_END`` after an apostrophe that ended a word (no letter
may follow it, else the two would read as one word). The constraint has the generator's step
interface, so `covfefe.inference.generate.TweetGenerator` and the serving engine use it as they are;
a step advances each row's node and masks its scores in one compiled pass (numba), each row on
its own.
"""

import lzma
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from covfefe.compiled import compiled
from covfefe.errors import UserError
from covfefe.text import END_ID, PAD_ID, Vocabulary

LETTERS = "abcdefghijklmnopqrstuvwxyz"
APOSTROPHE = "'"
ALPHABET = LETTERS + APOSTROPHE  # what a trie edge can be
ROOT, FREE, APOSTROPHE_END = 0, -1, -2
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


def words(text: str) -> list[str]:
    """Return the words of a text (runs of letters with inner apostrophes), lower-cased."""
    return [word.lower() for word in WORD.findall(text)]


def words_of(texts: Iterable[str]) -> set[str]:
    """Return the set of words of a collection of tweets."""
    found: set[str] = set()
    for text in texts:
        found.update(words(text))
    return found


class Lexicon:
    """A set of lower-case words as a trie: ``children[node, letter]`` (-1 for none) and
    ``complete[node]`` (a word ends there, so a character outside words may follow)."""

    def __init__(self, words: Iterable[str]):
        self.words = sorted(set(words))
        children = [[-1] * len(ALPHABET)]
        complete = [False]
        for word in self.words:
            node = ROOT
            for char in word:
                edge = ALPHABET.find(char)
                if edge < 0:
                    raise UserError(f"lexicon word {word!r} holds {char!r}: only a-z and '")
                if children[node][edge] < 0:
                    children[node][edge] = len(children)
                    children.append([-1] * len(ALPHABET))
                    complete.append(False)
                node = children[node][edge]
            complete[node] = True
        self.children = np.array(children, dtype=np.int32)
        self.complete = np.array(complete, dtype=bool)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        node = ROOT
        for char in word.lower():
            edge = ALPHABET.find(char)
            if edge < 0 or node < 0:
                return False
            node = self.children[node, edge]
        return node >= 0 and bool(self.complete[node])

    def save(self, path: str | os.PathLike) -> None:
        """Write the words, one per line, LZMA-compressed."""
        Path(path).write_bytes(lzma.compress("\n".join(self.words).encode("utf-8")))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lexicon":
        try:
            text = lzma.decompress(Path(path).read_bytes()).decode("utf-8")
        except (OSError, lzma.LZMAError, UnicodeDecodeError) as error:
            raise UserError(f"lexicon {path} cannot be read ({error})") from None
        return cls(text.split("\n") if text else [])


class LexiconConstraint:
    """The model, with symbols that would write a word outside the lexicon masked out (see the
    module docstring). State: ``[model state, trie node per row]``."""

    def __init__(self, model, lexicon: Lexicon, vocabulary: Vocabulary):
        self.model = model
        size = len(vocabulary)
        chars = [vocabulary.decode([i]) if i not in (END_ID, PAD_ID) else "" for i in
                 range(size)]
        # Only words the model can spell (a small vocabulary may lack a rare letter): else a
        # word could start that no symbol can finish.
        spellable = {c.lower() for c in chars if len(c) == 1 and c.isascii()}
        if not set(ALPHABET) <= spellable:
            lexicon = Lexicon(w for w in lexicon.words if set(w) <= spellable)
        self.lexicon = lexicon
        # The trie edge each symbol takes (-1: none; it ends a word), either case alike.
        self.edge = np.array([ALPHABET.find(c.lower()) if len(c) == 1 and c.isascii() else -1
                              for c in chars], dtype=np.int64)
        is_edge = self.edge >= 0
        # allowed_edges[node] as a mask over symbols: symbol s allowed iff the node has a child
        # along edge[s] (letters and apostrophe), or s ends words and the node is complete.
        self._edge_symbols = np.flatnonzero(is_edge)
        self._ending_symbols = np.flatnonzero(~is_edge)
        self._letter_symbols = np.flatnonzero(is_edge & (self.edge < len(LETTERS)))
        self._apostrophe_symbols = np.flatnonzero(self.edge == len(LETTERS))
        # Where a word may end: at a complete node, and at a node reached by an apostrophe
        # where the word before it was complete (an apostrophe ends the word before it unless
        # a letter follows: the word pattern).
        after_apostrophe = self.lexicon.children[:, len(LETTERS)]
        parents = np.flatnonzero(after_apostrophe >= 0)
        self._may_end = self.lexicon.complete.copy()
        self._may_end[after_apostrophe[parents]] |= self.lexicon.complete[parents]
        # The whole stack's step in one compiled call (`covfefe.inference.fused.FusedStep`), set by
        # `covfefe.inference.fused.fuse` where the stack has the shape it fuses; None: part by part.
        self.fused = None

    def initial_state(self, n: int) -> list:
        return [self.model.initial_state(n), np.zeros(n, dtype=np.int64)]

    def allowed(self, nodes: np.ndarray) -> np.ndarray:
        """Return the mask ``[rows, symbols]`` of what each row may write next."""
        nodes = np.ascontiguousarray(nodes, dtype=np.int64)
        mask = np.empty((len(nodes), len(self.edge)), dtype=bool)
        _allowed(nodes, self.edge, self.lexicon.children, self._may_end, mask)
        return mask

    def step(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        if self.fused is not None:
            return self.fused(ids, state)
        return self.step_parts(ids, state)

    def step_parts(self, ids: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """`step` through each part of the stack in turn (what `covfefe.inference.fused` fuses)."""
        scores, model_state = self.model.step(ids, state[0])
        scores = np.ascontiguousarray(scores)
        nodes, masked = np.empty(len(scores), dtype=np.int64), np.empty_like(scores)
        _advance_and_mask(np.ascontiguousarray(state[1], dtype=np.int64),
                          np.ascontiguousarray(ids, dtype=np.int64), self.edge,
                          self.lexicon.children, self.lexicon.complete, self._may_end, scores,
                          nodes, masked)
        return masked, [model_state, nodes]


APOSTROPHE_EDGE = len(LETTERS)  # the trie edge of the apostrophe; the letters' are below it


@compiled
def _next_node(node, edge, children, complete):
    """Return the node after writing a symbol whose trie edge is ``edge`` at ``node``."""
    if edge < 0:  # a character outside words ends the word
        return ROOT
    if edge == APOSTROPHE_EDGE:
        if node <= ROOT:  # a quote between words, inside an unknown word, after an ended one
            return node
        child = children[node, edge]
        # An apostrophe the trie does not continue ends the word (if it may end there).
        return child if child >= 0 or not complete[node] else APOSTROPHE_END
    # A letter after an apostrophe that ended a word, or inside an unknown word: FREE.
    return children[node, edge] if node >= ROOT else FREE


@compiled
def _allowed_after(node, edges, children, may_end, mask):
    """Write into ``mask`` what may follow ``node``, for each symbol (its trie edge in
    ``edges``): a letter or apostrophe that continues a word of the lexicon, a character that
    ends the word where it may end; no letter after an apostrophe that ended a word; anything
    between words and inside an unknown word."""
    for symbol in range(len(edges)):
        edge = edges[symbol]
        if node > ROOT:
            if edge < 0:
                mask[symbol] = may_end[node]
            else:
                # The apostrophe may also end a complete word (then nothing but a non-letter).
                mask[symbol] = children[node, edge] >= 0 or (edge == APOSTROPHE_EDGE
                                                             and may_end[node])
        else:
            mask[symbol] = not (node == APOSTROPHE_END and 0 <= edge < APOSTROPHE_EDGE)


@compiled
def _allowed(nodes, edges, children, may_end, mask):
    for row in range(len(nodes)):
        _allowed_after(nodes[row], edges, children, may_end, mask[row])


@compiled
def _advance_and_mask(nodes, ids, edges, children, complete, may_end, scores, new_nodes,
                      masked):
    """Advance each row's node by its symbol into ``new_nodes``; copy its scores into
    ``masked`` with what may not follow set to minus infinity."""
    allowed = np.empty(len(edges), dtype=np.bool_)
    for row in range(len(nodes)):
        if not 0 <= ids[row] < len(edges):  # compiled code checks no index: a crash, else
            raise IndexError("a symbol outside the vocabulary")
        node = _next_node(nodes[row], edges[ids[row]], children, complete)
        new_nodes[row] = node
        _allowed_after(node, edges, children, may_end, allowed)
        for symbol in range(len(edges)):
            masked[row, symbol] = scores[row, symbol] if allowed[symbol] else -np.inf

"""Generating tweets: a stateful generator that runs the trained network one character at a time.

The training model reads whole tweets; the generator is a separate object (as in TensorFlow's
text-generation tutorial's ``OneStep``) that runs the prefix once, then one recurrent step per
new character, carrying the state forward, for ``n`` candidates in one batch. It runs on plain
NumPy copies of the network's weights, so it needs neither TensorFlow nor a GPU, and it
produces the same next-character distribution as the Keras model (a test compares them).

Sampling (temperature, top-k, top-p) is compiled in `covfefe.inference.sampling`, row by row; the
small
NumPy functions here (`sample` and its filters) are its reference.
"""

import copy
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from covfefe.data.clean import clean_tweet
from covfefe.errors import UserError
from covfefe.inference.artifact import NUMPY_WEIGHTS, ModelArtifact, load_artifact
from covfefe.inference.fused import fuse
from covfefe.inference.numpy_network import NumpyNetwork
from covfefe.inference.sampling import GREEDY_BELOW, draw_rows, target_log_probs
from covfefe.lm.lexicon import DEFAULT_PENALTY, LexiconConstraint, end_costs
from covfefe.lm.mixture import MixedModel
from covfefe.lm.novelty import is_near_copy
from covfefe.text import END_ID, MAX_TWEET_CHARS, PAD_ID, UNK_ID, Vocabulary


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Return log-probabilities from logits along the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` most likely symbols of each row (0 keeps all); the rest become -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    threshold = np.partition(logits, -k, axis=-1)[..., -k, None]
    return np.where(logits >= threshold, logits, -np.inf)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the symbols whose likelier symbols together hold less than ``p`` of the probability
    (nucleus sampling: the smallest set of most likely symbols reaching ``p``, with tied
    symbols kept or dropped together)."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, axis=-1)
    ranked = np.take_along_axis(logits, order, axis=-1)
    probabilities = np.exp(log_softmax(ranked))
    before = np.zeros_like(probabilities)  # the mass of the symbols ranked before each
    np.cumsum(probabilities[..., :-1], axis=-1, out=before[..., 1:])
    # A tied symbol counts the mass before its group (the first of the same value).
    positions = np.arange(ranked.shape[-1])
    new_group = np.ones(ranked.shape, dtype=bool)
    new_group[..., 1:] = ranked[..., 1:] != ranked[..., :-1]
    first = np.maximum.accumulate(np.where(new_group, positions, 0), axis=-1)
    keep_sorted = np.take_along_axis(before, first, axis=-1) < p  # the likeliest always kept
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, logits, -np.inf)


def sample(logits: np.ndarray, rng: np.random.Generator, *, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Draw one symbol per row of logits after temperature, top-k and top-p. Temperatures
    below ``GREEDY_BELOW`` pick the most likely symbol (the limit as the temperature goes to 0;
    dividing by a tinier one would overflow). The NumPy reference of what generation draws
    with (`covfefe.inference.sampling.draw_rows`, compiled, row by row)."""
    if temperature < GREEDY_BELOW:
        best = logits.max(axis=-1, keepdims=True)
        logits = np.where(logits >= best, 0.0, -np.inf)
    else:
        logits = logits / temperature
    logits = top_p_filter(top_k_filter(logits, top_k), top_p)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))  # unnormalised: scaled below
    cumulative = np.cumsum(weights, axis=-1)
    draws = rng.random((logits.shape[0], 1)) * cumulative[:, -1:]
    return np.minimum((cumulative < draws).sum(axis=-1), logits.shape[-1] - 1)


@dataclass
class Completion:
    """One generated tweet: the prefix, what the model wrote after it, and its probability."""

    prefix: str
    generated: str
    log_prob: float  # natural log of the model's probability of the generated part (and END)
    finished: bool  # True when the model ended the tweet itself (END), not the length limit
    longest_shared: int | None = None  # longest run shared with a training tweet (novelty)
    unknown: list[str] = field(default_factory=list)  # prefix characters read as UNK

    @property
    def text(self) -> str:
        return self.prefix + self.generated


BANNED = np.array([PAD_ID, UNK_ID])  # never written: padding, and "some rare character"
# A candidate that is a near copy of a training tweet, or writes nothing after the prefix, is
# replaced by a fresh draw (with a seed derived from the request's), at most this many times.
FRESH_DRAWS = 5
CUT_MARK = "\u2026"  # in place of a word the length limit cut
_OPEN_WORD = re.compile(r"[\w'@#]+$")


def mark_cut(prefix: str, generated: str, finished: bool) -> str:
    """Return ``generated``, or, when the tweet ran into the length limit inside a word (it did
    not end by itself and its last character is part of a word), with that unfinished word
    replaced by "…": never a word cut without a mark."""
    text = prefix + generated
    open_word = None if finished else _OPEN_WORD.search(text)
    if open_word is None:
        return generated
    return generated[:max(open_word.start() - len(prefix), 0)].rstrip() + CUT_MARK


def needs_fresh_draw(completion: "Completion") -> bool:
    """Whether a candidate is no answer to a request for tweets: a near copy of a training
    tweet (`covfefe.lm.novelty.is_near_copy`), or nothing written after the prefix."""
    return (not completion.generated.strip()
            or is_near_copy(completion.longest_shared, completion.text))


def fresh_seed(seed: int | None, attempt: int) -> int | None:
    """The seed of the ``attempt``-th fresh draw of a request seeded ``seed`` (None: None)."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])


def with_fresh_draws(completions: list["Completion"], seed: int | None, redraw
                     ) -> list["Completion"]:
    """Replace each candidate that `needs_fresh_draw` by a fresh one, up to `FRESH_DRAWS`
    rounds: ``redraw(n, seed)`` returns ``n`` new completions of the same request (or None:
    no fresh draw now; the candidates stay). The same seed gives the same tweets (alone, in
    the serving engine, in any batch)."""
    completions = list(completions)
    for attempt in range(1, FRESH_DRAWS + 1):
        again = [i for i, completion in enumerate(completions) if needs_fresh_draw(completion)]
        fresh = redraw(len(again), fresh_seed(seed, attempt)) if again else None
        if fresh is None:
            break
        for i, completion in zip(again, fresh, strict=True):
            completions[i] = completion
    return completions


def normalise_prefix(prefix: str) -> str:
    """Clean a prefix as training text was cleaned (keeping a trailing space, which matters to
    what comes next). Characters the vocabulary does not hold stay in it: the network reads
    them as the unknown symbol, as it read the archive's rare characters in training
    (`Vocabulary.encode`), and the completion keeps the user's own characters."""
    cleaned = clean_tweet(prefix)
    if cleaned and prefix[-1:].isspace():
        cleaned += " "
    return cleaned


class TweetGenerator:
    """Completes tweets with a trained network: ``complete(prefix, temperature=..., n=...)``."""

    def __init__(self, network: NumpyNetwork, vocabulary: Vocabulary,
                 max_chars: int = MAX_TWEET_CHARS, novelty=None, defaults: dict | None = None):
        self.network = network
        self.vocabulary = vocabulary
        self.max_chars = max_chars
        self.novelty = novelty  # a covfefe.lm.novelty.NoveltyIndex, or None
        # The word constraint's costs (`from_artifact`: the artifact's ``decoding``), or None.
        self.decoding: dict | None = None
        # The settings a request that names none gets: the model's measured defaults
        # (`covfefe evaluate --sweep --save-defaults`), else plain sampling.
        self.defaults = {"temperature": 1.0, "top_p": 1.0, **(defaults or {})}
        # What each symbol adds to the text ("" for END and padding), looked up per step.
        self.symbol_text = np.array(
            [vocabulary.decode([i]) if i not in (END_ID, PAD_ID) else ""
             for i in range(len(vocabulary))], dtype=object)

    @classmethod
    def from_artifact(cls, artifact, *, mixture: bool = True, lexicon: bool = True
                      ) -> "TweetGenerator":
        """Build the generator of a `covfefe.inference.artifact.ModelArtifact` (or its folder): the
        network mixed with the artifact's n-gram table when it has one (unless ``mixture`` is
        False: the network alone), writing only the words of its lexicon when it has one
        (unless ``lexicon`` is False)."""
        if not isinstance(artifact, ModelArtifact):
            artifact = load_artifact(artifact)
        if NUMPY_WEIGHTS in artifact.metadata["files"]:  # no Keras, no TensorFlow needed
            network = NumpyNetwork.load(artifact.path / NUMPY_WEIGHTS)
        else:
            network = NumpyNetwork.from_keras(artifact.load_model())
        if mixture and artifact.mixture:
            network = MixedModel(network, artifact.ngram_model(),
                                 artifact.mixture["network_weight"])
        words = artifact.lexicon() if lexicon else None
        if words is not None:
            decoding = {"word_penalty": DEFAULT_PENALTY, "end": {},
                        **artifact.metadata.get("decoding", {})}
            network = fuse(LexiconConstraint(network, words, artifact.vocabulary,
                                             decoding["word_penalty"],
                                             end_costs(**decoding["end"])))
        generator = cls(network, artifact.vocabulary,
                        artifact.metadata.get("model", {}).get("max_chars", MAX_TWEET_CHARS),
                        artifact.novelty_index(), artifact.metadata.get("defaults"))
        if words is not None:
            generator.decoding = decoding
        return generator

    def with_costs(self, penalty: float, end: dict | None = None) -> "TweetGenerator":
        """Return this generator with its word penalty and end costs (the arguments of
        `covfefe.lm.lexicon.end_costs`) changed (the sweep of `covfefe.evaluation.quality`);
        the rest is shared."""
        if not isinstance(self.network, LexiconConstraint):
            raise UserError("this generator has no word constraint to set costs of")
        generator = copy.copy(self)
        generator.network = fuse(self.network.with_costs(penalty, end_costs(**(end or {}))))
        generator.decoding = {"word_penalty": penalty, "end": dict(end or {})}
        return generator

    def log_probs(self, sequences: Sequence[np.ndarray], batch_size: int = 256,
                  progress: bool = False) -> list[np.ndarray]:
        """Return, for each encoded tweet (``[END] + ids + [END]``, `encode_tweets`), the
        natural log-probability of each symbol after its first character under exactly the
        distribution `complete` draws from at temperature 1 and top-p 1: the same steps (the
        network, the table, the word penalties), the same banned symbols, the same
        normalisation. A tweet's total is the ``log_prob`` generation gives it after a prefix
        of its first character."""
        from tqdm.auto import tqdm

        scores = []
        for start in tqdm(range(0, len(sequences), batch_size), desc="scoring", unit="batch",
                          disable=not progress):
            chunk = sequences[start:start + batch_size]
            width = max(len(sequence) for sequence in chunk)
            ids = np.full((len(chunk), width), END_ID, dtype=np.int64)
            for row, sequence in enumerate(chunk):
                ids[row, :len(sequence)] = sequence
            state = self.network.initial_state(len(chunk))
            target = np.zeros((len(chunk), width))
            for position in range(width - 1):
                logits, state = self.network.step(ids[:, position], state)
                if position >= 1:  # the first character is given, as a prefix
                    target[:, position + 1] = target_log_probs(logits, ids[:, position + 1],
                                                               BANNED)
            scores += [target[row, 2:len(sequence)] for row, sequence in enumerate(chunk)]
        return scores

    def complete(self, prefix: str = "", *, temperature: float | None = None, n: int = 1,
                 max_length: int = MAX_TWEET_CHARS, seed: int | None = None, top_k: int = 0,
                 top_p: float | None = None, fresh_draws: bool = True) -> list[Completion]:
        """Return ``n`` completions of ``prefix``, each at most ``max_length`` characters long
        in all; the same seed and parameters give the same tweets. A temperature or top-p of
        None is the model's default (``defaults``). A candidate that is a near copy of a
        training tweet or writes nothing is replaced by a fresh draw (`with_fresh_draws`)
        unless ``fresh_draws`` is False (the model's own draws, as the sample figures count
        them)."""
        def once(n: int, seed: int | None) -> list[Completion]:
            for kind, value in self.stream(prefix, temperature=temperature, n=n,
                                           max_length=max_length, seed=seed, top_k=top_k,
                                           top_p=top_p):
                if kind == "done":
                    return value
            raise AssertionError("stream() always ends with its completions")

        drawn = once(n, seed)
        return with_fresh_draws(drawn, seed, once) if fresh_draws else drawn

    def stream(self, prefix: str = "", *, temperature: float | None = None, n: int = 1,
               max_length: int = MAX_TWEET_CHARS, seed: int | None = None, top_k: int = 0,
               top_p: float | None = None) -> Iterator[tuple[str, object]]:
        """Generate as `complete` does, yielding as it goes: ``("prefix", str)`` (the cleaned
        prefix), then ``("chars", [str] * n)`` per step ("" for a finished candidate), then
        ``("done", [Completion] * n)``. Checks the arguments before yielding anything. A
        prefix character outside the vocabulary is fed as the unknown symbol and listed in
        each completion's ``unknown``."""
        temperature = self.defaults["temperature"] if temperature is None else temperature
        top_p = self.defaults["top_p"] if top_p is None else top_p
        if not temperature > 0:
            raise UserError(f"temperature must be above 0, not {temperature!r}")
        prefix = normalise_prefix(prefix)
        max_length = min(max_length, self.max_chars)
        if len(prefix) >= max_length:
            raise UserError(f"the prefix is {len(prefix)} characters long; it must be shorter "
                            f"than max_length ({max_length})")
        return self._stream(prefix, temperature, n, max_length, seed, top_k, top_p)

    def _stream(self, prefix, temperature, n, max_length, seed, top_k, top_p):
        yield "prefix", prefix
        rng = np.random.default_rng(seed)
        state = self.network.initial_state(n)
        for symbol in [END_ID, *self.vocabulary.encode(prefix)]:
            logits, state = self.network.step(np.full(n, symbol), state)
        generated = np.zeros((n, max_length - len(prefix)), dtype=np.int64)
        log_prob = np.zeros(n)
        done = np.zeros(n, dtype=bool)  # the model has written END
        for position in range(generated.shape[1]):
            logits = np.array(logits, dtype=np.float64)  # a copy, to ban symbols in
            logits[:, BANNED] = -np.inf
            symbols, symbol_log_prob = draw_rows(logits, rng.random(n), temperature, top_k,
                                                 top_p)
            log_prob += np.where(done, 0.0, symbol_log_prob)
            symbols = np.where(done, PAD_ID, symbols)
            generated[:, position] = symbols
            done |= symbols == END_ID
            yield "chars", self.symbol_text[symbols].tolist()
            if done.all():
                break
            logits, state = self.network.step(np.where(done, END_ID, symbols), state)
        completions = [Completion(prefix, mark_cut(prefix, self.vocabulary.decode(row),
                                                   bool(end)), float(lp), bool(end))
                       for row, lp, end in zip(generated, log_prob, done, strict=True)]
        unknown = self.vocabulary.unknown(prefix)
        for completion in completions:
            completion.unknown = list(unknown)
        if self.novelty is not None:
            for completion in completions:
                completion.longest_shared = self.novelty.longest_shared(completion.text)
        yield "done", completions

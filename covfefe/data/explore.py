"""What to look at in the dataset before training: volume, lengths, characters, hashtags, mentions.

The same functions back ``notebooks/02-explore-tweets.ipynb``. Each computing function is pure
and returns a pandas object; each ``plot_*`` function draws one of those objects on a new
`matplotlib.figure.Figure` and returns it. The figures are built without pyplot, so they need
no display and no global state: a notebook shows a returned figure once (with the inline
backend), a script can ``figure.savefig(...)``.

Lengths, characters, hashtags and mentions are measured on the cleaned text (`clean_tweet`),
which is what the model learns from: links are gone (so a ``#`` inside a URL is not a
hashtag) and HTML entities are decoded (so ``&#8220;`` is a quotation mark, not ``#8220``).
"""

import functools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd
from matplotlib import font_manager, ft2font, rcParams
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from covfefe import config
from covfefe.data.clean import clean_tweet
from covfefe.data.schema import select_period
from covfefe.data.store import load_dataset
from covfefe.errors import UserError
from covfefe.text import Vocabulary

# Twitter's limit on a tweet's length: 140 characters until November 2017, 280 after. It counts
# a link as 23 characters whatever its length, so cleaned tweets can come out a little longer.
TWEET_LENGTH_LIMITS = (140, 280)

# A hashtag is "#" then word characters with at least one letter ("#1" is not a hashtag),
# not glued to a preceding word character ("C#" is not one either).
HASHTAG = re.compile(r"(?<!\w)#(\w*[^\W\d_]\w*)")
# A mention is "@" then a screen name (1-15 ASCII letters, digits or underscores), not preceded
# by a screen-name character (so "info@trump.com" is not a mention; ".@CNN" is).
MENTION = re.compile(r"(?<![A-Za-z0-9_@])@([A-Za-z0-9_]{1,15})(?![A-Za-z0-9_])")

# Characters the vocabulary holds, and those it maps to the unknown symbol.
KNOWN_COLOR, UNKNOWN_COLOR = "tab:blue", "tab:red"


def select_tweets(dataset: str = "", since: str = "", until: str = "") -> pd.DataFrame:
    """Return the dataset's tweets from ``since`` on and before ``until`` (``""``: no bound);
    a `UserError` naming the period and what the dataset holds when there are none."""
    tweets = load_dataset(dataset)
    selected = select_period(tweets, since or None, until or None)
    if selected.empty:
        period = {(True, True): f" from {since} until {until}", (True, False): f" since {since}",
                  (False, True): f" before {until}", (False, False): ""}[bool(since), bool(until)]
        where = dataset or config.dataset_path()
        if tweets.empty:
            raise UserError(f"no tweets{period} to explore: {where} holds none yet; collect "
                            "some first (notebooks/01-collect-tweets.ipynb)")
        first, last = tweets["created_at"].min().date(), tweets["created_at"].max().date()
        raise UserError(f"no tweets{period} to explore in {where}, which holds {len(tweets)} "
                        f"from {first} to {last}: choose since and until in that period, or "
                        "collect this one first (notebooks/01-collect-tweets.ipynb)")
    return selected


def dataset_summary(tweets: pd.DataFrame) -> pd.Series:
    """Return the dataset at a glance: tweets, replies, first and last tweet, clients, origins."""
    return pd.Series(
        {
            "tweets": len(tweets),
            "replies": int(tweets["is_reply"].sum()),
            "first tweet": tweets["created_at"].min(),
            "last tweet": tweets["created_at"].max(),
            "clients": tweets["source"].nunique(),
            "origins": ", ".join(sorted(tweets["origin"].unique())),
        },
        name="dataset",
        dtype=object,
    )


def cleaned_texts(tweets: pd.DataFrame) -> pd.Series:
    """Return the cleaned text of every tweet (`clean_tweet` with its defaults), same index."""
    return tweets["text"].astype(str).map(clean_tweet).rename("cleaned_text")


def tweets_per_year(tweets: pd.DataFrame) -> pd.Series:
    """Return the number of tweets per UTC year, every year from the first to the last included."""
    years = tweets["created_at"].dt.year
    counts = years.value_counts()
    if counts.empty:
        return pd.Series([], index=pd.Index([], name="year", dtype="int64"), name="tweets",
                         dtype="int64")
    span = pd.RangeIndex(int(years.min()), int(years.max()) + 1, name="year")
    return counts.reindex(span, fill_value=0).astype("int64").rename("tweets")


def text_lengths(texts: Iterable[str]) -> pd.Series:
    """Return the length in characters of each text."""
    return pd.Series([len(text) for text in texts], name="length", dtype="int64")


def length_distribution(texts: Iterable[str], bin_width: int = 10) -> pd.Series:
    """Return how many texts fall in each length bin, indexed by the bin's first length.

    Bins are ``[0, bin_width)``, ``[bin_width, 2 * bin_width)``, ...; every bin up to the longest
    text is present, empty ones with 0.
    """
    if bin_width < 1:
        raise ValueError(f"bin_width={bin_width!r} must be a positive number of characters")
    lengths = text_lengths(texts)
    index = pd.RangeIndex(0, int(lengths.max()) + 1 if len(lengths) else 0, bin_width,
                          name="length from")
    counts = (lengths // bin_width * bin_width).value_counts()
    return counts.reindex(index, fill_value=0).astype("int64").rename("tweets")


def character_frequencies(
    texts: Iterable[str], min_count: int = config.VOCAB_MIN_COUNT
) -> pd.DataFrame:
    """Return each character's count, share of all characters and whether it is in the vocabulary.

    ``known`` says whether `Vocabulary.from_texts` (with ``min_count``) would give the character
    its own id; the others map to the unknown symbol. Rows are in the vocabulary's order:
    falling count, ties by code point.
    """
    counts = Counter()
    for text in texts:
        counts.update(text)
    vocabulary = Vocabulary.from_counts(counts, min_count=min_count)
    chars = sorted(counts, key=lambda char: (-counts[char], ord(char)))
    total = sum(counts.values())
    return pd.DataFrame(
        {
            "count": pd.Series([counts[c] for c in chars], dtype="int64"),
            "share": pd.Series([counts[c] / total for c in chars], dtype="float64"),
            "known": pd.Series([c in vocabulary for c in chars], dtype="bool"),
        }
    ).set_axis(pd.Index(chars, name="character", dtype=object))


def vocabulary_coverage(frequencies: pd.DataFrame) -> pd.Series:
    """Return how much of the text the vocabulary covers, from `character_frequencies`.

    ``unknown share`` is the fraction of all characters (occurrences, not distinct ones) that
    the vocabulary maps to the unknown symbol.
    """
    unknown = frequencies.loc[~frequencies["known"], "count"]
    total = int(frequencies["count"].sum())
    return pd.Series(
        {
            "characters": total,
            "distinct characters": len(frequencies),
            "in the vocabulary": int(frequencies["known"].sum()),
            "mapped to unknown": len(unknown),
            "unknown occurrences": int(unknown.sum()),
            "unknown share": unknown.sum() / total if total else 0.0,
        },
        name="vocabulary coverage",
        dtype=object,
    )


def _top_matches(texts: Iterable[str], pattern: re.Pattern, prefix: str, n: int,
                 label: str) -> pd.Series:
    spellings: dict[str, Counter] = defaultdict(Counter)
    for text in texts:
        for match in pattern.findall(text):
            spellings[match.casefold()][match] += 1
    rows = []
    for key, spelled in spellings.items():
        # Show the spelling used most often (ties: the first in code-point order).
        shown = min(spelled, key=lambda spelling: (-spelled[spelling], spelling))
        rows.append((-spelled.total(), key, prefix + shown, spelled.total()))
    rows.sort()
    rows = rows[:n]
    return pd.Series([row[3] for row in rows], dtype="int64", name="count",
                     index=pd.Index([row[2] for row in rows], name=label, dtype=object))


def top_hashtags(texts: Iterable[str], n: int = 20) -> pd.Series:
    """Return the ``n`` most used hashtags and how many times each occurs.

    Counting ignores case (``#MAGA`` and ``#maga`` are one hashtag, as on Twitter); each is shown
    in its most frequent spelling. Every occurrence counts, so a tweet repeating a hashtag counts
    twice. Ties are ordered alphabetically.
    """
    return _top_matches(texts, HASHTAG, "#", n, "hashtag")


def top_mentions(texts: Iterable[str], n: int = 20) -> pd.Series:
    """Return the ``n`` most mentioned accounts and how many times each is mentioned.

    Screen names are case-insensitive on Twitter, so counting ignores case (``@FoxNews`` and
    ``@foxnews`` are one account); each is shown in its most frequent spelling. Every occurrence
    counts. Ties are ordered alphabetically.
    """
    return _top_matches(texts, MENTION, "@", n, "mention")


@functools.cache
def _font_charmap() -> frozenset[int]:
    try:
        path = font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"]))
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def _label(text: str) -> str:
    """Return text that matplotlib draws as written: no mathtext, no missing glyphs."""
    charmap = _font_charmap()
    shown = "".join(
        char if not charmap or ord(char) in charmap else f"U+{ord(char):04X}" for char in text
    )
    return shown.replace("$", r"\$")


def _character_label(char: str) -> str:
    return "\u2423" if char == " " else _label(char)  # an open box stands for the space


def plot_tweets_per_year(per_year: pd.Series) -> Figure:
    """Return a bar chart of `tweets_per_year`, each bar labelled with its count."""
    figure = Figure(figsize=(9, 4), layout="constrained")
    axes = figure.add_subplot()
    bars = axes.bar(per_year.index.astype(str), per_year.to_numpy(), color=KNOWN_COLOR)
    axes.bar_label(bars, fontsize=8)
    axes.set(title="Tweets per year (UTC)", xlabel="year", ylabel="tweets")
    return figure


def plot_length_distribution(distribution: pd.Series) -> Figure:
    """Return a histogram of `length_distribution`, with Twitter's length limits marked."""
    figure = Figure(figsize=(9, 4), layout="constrained")
    axes = figure.add_subplot()
    starts = distribution.index.to_numpy()
    width = int(np.diff(starts).min()) if len(starts) > 1 else 1
    axes.bar(starts, distribution.to_numpy(), width=width, align="edge", color=KNOWN_COLOR)
    for limit in TWEET_LENGTH_LIMITS:
        axes.axvline(limit, color="gray", linestyle="--", linewidth=1)
        axes.annotate(f"{limit}", (limit, 1), xycoords=("data", "axes fraction"),
                      xytext=(3, -12), textcoords="offset points", color="gray")
    axes.set(title="Length of the cleaned tweets", xlabel="characters", ylabel="tweets")
    return figure


# Characters per row of the character chart: enough room for each label upright at a legible size.
CHARACTERS_PER_ROW = 50


def plot_character_frequencies(frequencies: pd.DataFrame, top_n: int | None = None) -> Figure:
    """Return the counts of `character_frequencies` (log scale), unknown characters in red,
    most frequent first, in rows of `CHARACTERS_PER_ROW` characters so that every label reads.

    ``top_n`` limits the chart to the most frequent characters (None: all of them).
    """
    shown = frequencies if top_n is None else frequencies.head(top_n)
    rows = max(1, -(-len(shown) // CHARACTERS_PER_ROW))
    figure = Figure(figsize=(11, 1.2 + 2.6 * rows), layout="constrained")
    all_axes = figure.subplots(rows, 1, sharey=True, squeeze=False)[:, 0]
    for row, axes in enumerate(all_axes):
        part = shown.iloc[row * CHARACTERS_PER_ROW:(row + 1) * CHARACTERS_PER_ROW]
        colors = np.where(part["known"].to_numpy(), KNOWN_COLOR, UNKNOWN_COLOR)
        positions = np.arange(len(part))
        axes.bar(positions, part["count"].to_numpy(), color=colors, width=0.8)
        axes.set_xticks(positions, [_character_label(char) for char in part.index], fontsize=9)
        for label in axes.get_xticklabels():
            if len(label.get_text()) > 2:  # a code point (U+4E2D) for a glyph the font lacks
                label.set_rotation(90)
        axes.set_xlim(-1, CHARACTERS_PER_ROW if rows > 1 else len(part))
        axes.set_yscale("log")
        axes.set_ylabel("occurrences")
    all_axes[0].set_title("Character counts in the cleaned tweets (log scale), most frequent first")
    all_axes[0].legend(handles=[Patch(color=KNOWN_COLOR, label="in the vocabulary"),
                                Patch(color=UNKNOWN_COLOR, label="mapped to the unknown symbol")],
                       loc="upper right")
    return figure


def plot_top_counts(counts: pd.Series, title: str) -> Figure:
    """Return a horizontal bar chart of `top_hashtags` or `top_mentions`, the largest on top."""
    figure = Figure(figsize=(7, max(2.5, 0.28 * len(counts) + 1)), layout="constrained")
    axes = figure.add_subplot()
    labels = [_label(str(name)) for name in counts.index]
    bars = axes.barh(labels[::-1], counts.to_numpy()[::-1], color=KNOWN_COLOR)
    axes.bar_label(bars, fontsize=8, padding=2)
    axes.set(title=title, xlabel="occurrences")
    return figure

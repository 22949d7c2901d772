"""Exploration: exact counts on small hand-made datasets, and figures that hold what they should."""

import io

import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from covfefe.data import explore, schema
from covfefe.text import Vocabulary


def tweets(*rows: tuple[str, str]) -> pd.DataFrame:
    """Return a dataset in the schema from (UTC timestamp, text) pairs."""
    return schema.to_frame([
        {"id": index, "created_at": pd.Timestamp(stamp, tz="UTC"), "text": text,
         "source": "Twitter for Android" if index % 2 else "Twitter for iPhone",
         "is_retweet": False, "is_reply": text.startswith("@"), "retweet_count": None,
         "favorite_count": None, "origin": "archive:test.json"}
        for index, (stamp, text) in enumerate(rows)
    ])


SAMPLE = tweets(
    ("2012-03-01 10:00", "Great rally &amp; crowd! https://t.co/abc"),
    ("2012-12-31 23:59", "@CNN is fake"),
    ("2014-01-01 00:00", "Wow"),
)


def test_dataset_summary():
    summary = explore.dataset_summary(SAMPLE)
    assert summary["tweets"] == 3
    assert summary["replies"] == 1
    assert summary["first tweet"] == pd.Timestamp("2012-03-01 10:00", tz="UTC")
    assert summary["last tweet"] == pd.Timestamp("2014-01-01 00:00", tz="UTC")
    assert summary["clients"] == 2
    assert summary["origins"] == "archive:test.json"


def test_cleaned_texts_are_what_the_model_learns_from():
    texts = explore.cleaned_texts(SAMPLE)
    assert texts.tolist() == ["Great rally & crowd!", "@CNN is fake", "Wow"]
    assert texts.index.equals(SAMPLE.index)


def test_tweets_per_year_includes_empty_years():
    per_year = explore.tweets_per_year(SAMPLE)
    assert per_year.to_dict() == {2012: 2, 2013: 0, 2014: 1}
    assert per_year.index.name == "year" and per_year.name == "tweets"


def test_tweets_per_year_of_an_empty_dataset():
    per_year = explore.tweets_per_year(schema.empty_frame())
    assert per_year.empty and per_year.dtype == "int64"


def test_length_distribution_counts_every_bin_up_to_the_longest():
    texts = ["", "abc", "a" * 9, "a" * 10, "a" * 25]
    assert explore.text_lengths(texts).tolist() == [0, 3, 9, 10, 25]
    distribution = explore.length_distribution(texts, bin_width=10)
    assert distribution.to_dict() == {0: 3, 10: 1, 20: 1}
    assert explore.length_distribution(["abcd"], bin_width=2).to_dict() == {0: 0, 2: 0, 4: 1}
    assert explore.length_distribution([]).empty


def test_length_distribution_rejects_a_bin_width_below_one():
    with pytest.raises(ValueError, match="bin_width=0 must be a positive"):
        explore.length_distribution(["abc"], bin_width=0)


def test_character_frequencies_follow_the_vocabulary():
    texts = ["aab", "ab", "cb", "d"]
    frequencies = explore.character_frequencies(texts, min_count=2)
    assert frequencies.index.tolist() == ["a", "b", "c", "d"]  # by count, then code point
    assert frequencies["count"].tolist() == [3, 3, 1, 1]
    assert frequencies["share"].tolist() == [3 / 8, 3 / 8, 1 / 8, 1 / 8]
    assert frequencies["known"].tolist() == [True, True, False, False]
    vocabulary = Vocabulary.from_texts(texts, min_count=2)
    assert [char for char in frequencies.index if char in vocabulary] == vocabulary.chars


def test_vocabulary_coverage_counts_what_maps_to_unknown():
    coverage = explore.vocabulary_coverage(
        explore.character_frequencies(["aab", "ab", "cb", "d"], min_count=2)
    )
    assert coverage.to_dict() == {
        "characters": 8, "distinct characters": 4, "in the vocabulary": 2,
        "mapped to unknown": 2, "unknown occurrences": 2, "unknown share": 0.25,
    }
    empty = explore.vocabulary_coverage(explore.character_frequencies([]))
    assert empty["unknown share"] == 0.0


def test_top_hashtags_ignore_case_and_show_the_usual_spelling():
    texts = [
        "#MAGA rally tonight #maga",
        "#MAGA! and #Trump2016",
        "#trump2016 is #1, C#sharp is not a hashtag",
        "#Zebra",
    ]
    top = explore.top_hashtags(texts, n=10)
    assert top.to_dict() == {"#MAGA": 3, "#Trump2016": 2, "#Zebra": 1}
    assert top.index.name == "hashtag"
    assert explore.top_hashtags(texts, n=1).to_dict() == {"#MAGA": 3}
    assert explore.top_hashtags(["no tags"]).empty


def test_top_mentions_ignore_case_emails_and_overlong_names():
    texts = [
        ".@CNN is fake news, @cnn!",
        "write to info@trump.com",
        "@FoxNews and @foxandfriends, @abcdefghijklmnop is too long",
    ]
    top = explore.top_mentions(texts)
    assert top.to_dict() == {"@CNN": 2, "@foxandfriends": 1, "@FoxNews": 1}
    assert top.index.tolist() == ["@CNN", "@foxandfriends", "@FoxNews"]  # ties alphabetically


def _render(figure: Figure) -> bytes:
    # Drawing for real catches what building a figure does not (a missing glyph, bad mathtext);
    # filterwarnings = error turns any warning it gives into a failure.
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue()


def test_plots_hold_one_bar_per_value_and_render():
    per_year = explore.tweets_per_year(SAMPLE)
    figure = explore.plot_tweets_per_year(per_year)
    (axes,) = figure.axes
    assert len(axes.patches) == 3
    assert [label.get_text() for label in axes.get_xticklabels()] == ["2012", "2013", "2014"]
    assert [patch.get_height() for patch in axes.patches] == [2, 0, 1]

    distribution = explore.length_distribution(["a" * 5, "a" * 150, "a" * 290], bin_width=10)
    figure = explore.plot_length_distribution(distribution)
    (axes,) = figure.axes
    assert len(axes.patches) == 30
    assert {patch.get_width() for patch in axes.patches} == {10}
    assert [line.get_xdata()[0] for line in axes.lines] == list(explore.TWEET_LENGTH_LIMITS)

    frequencies = explore.character_frequencies(["aa  $中", "a $"], min_count=2)
    figure = explore.plot_character_frequencies(frequencies)
    (axes,) = figure.axes
    assert len(axes.patches) == 4
    labels = [label.get_text() for label in axes.get_xticklabels()]
    assert labels == ["\u2423", "a", r"\$", "U+4E2D"]  # no glyph for 中 in the default font
    unknown = to_hex(explore.UNKNOWN_COLOR)
    assert [to_hex(patch.get_facecolor()) == unknown for patch in axes.patches] == [
        False, False, False, True
    ]
    assert len(explore.plot_character_frequencies(frequencies, top_n=2).axes[0].patches) == 2
    # Many characters: rows of at most CHARACTERS_PER_ROW, labels upright and legible.
    many = explore.character_frequencies(["".join(chr(0x41 + i) * (200 - i) for i in range(58))
                                          + "!?"], min_count=1)
    rows = explore.plot_character_frequencies(many).axes
    assert [len(axes.patches) for axes in rows] == [50, 10]
    for axes in rows:
        for label in axes.get_xticklabels():
            assert label.get_rotation() == 0 and label.get_fontsize() >= 9

    hashtags = pd.Series([5, 3, 1], index=["#MAGA", "#Trump2016", "#$money"])
    figure = explore.plot_top_counts(hashtags, "Top hashtags")
    (axes,) = figure.axes
    assert axes.get_title() == "Top hashtags"
    assert [patch.get_width() for patch in axes.patches] == [1, 3, 5]  # the largest on top
    assert axes.get_yticklabels()[-1].get_text() == "#MAGA"

    for figure in (explore.plot_tweets_per_year(per_year),
                   explore.plot_length_distribution(distribution),
                   explore.plot_character_frequencies(frequencies),
                   explore.plot_top_counts(hashtags, "Top hashtags")):
        assert _render(figure).startswith(b"\x89PNG")

"""Every cleaning rule of clean_tweet, and retweet/reply detection."""

import pytest

from covfefe.data.clean import clean_tweet, is_emoji, looks_like_reply, looks_like_retweet


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        # HTML entities: named, numeric, hexadecimal, and doubly escaped ones.
        ("Mexico &amp; Canada", "Mexico & Canada"),
        ("&lt;3 &gt; &quot;great&quot;", '<3 > "great"'),
        ("caf&eacute; &#8220;hi&#8221; &#x2014; ok", 'café "hi" - ok'),
        ("Fake &amp;amp; biased", "Fake & biased"),
        ("&nbsp;spaced&nbsp;out", "spaced out"),
        # Curly quotes and dashes become ASCII.
        ("\u201cstuff\u201d and \u2018it\u2019s\u2019", "\"stuff\" and 'it's'"),
        ("now \u2013 then \u2014 never \u2212 5 \u2015 x \u2012 y",
         "now - then - never - 5 - x - y"),
        ("Wait for it\u2026", "Wait for it..."),
        # Whitespace: newlines, tabs, Unicode spaces folded; zero-width characters removed.
        ("  MAKE\n\nAMERICA\tGREAT\u00a0AGAIN!  ", "MAKE AMERICA GREAT AGAIN!"),
        ("thin\u2009space and\u3000wide", "thin space and wide"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("bell\x07 and null\x00", "bell and null"),
        # URLs are dropped by default.
        ("Great rally! https://t.co/AbC123xyz", "Great rally!"),
        ("see http://bit.ly/x and www.trump.com now", "see and now"),
        ("pic pic.twitter.com/abcDEF here", "pic here"),
        # Mentions stay by default (with the .@ idiom).
        (".@CNN is fake news, says @FoxNews", ".@CNN is fake news, says @FoxNews"),
        # Emoji (flags, keycaps, ZWJ sequences, variation selectors) are dropped by default.
        ("USA \U0001f1fa\U0001f1f8\U0001f1fa\U0001f1f8!", "USA !"),
        ("Thank you \U0001f44d\U0001f3fb\u2764\ufe0f", "Thank you"),
        ("family \U0001f468\u200d\U0001f469\u200d\U0001f467 day", "family day"),
        # Accented letters and ordinary symbols stay.
        ("Señor Peña paid $5,000 (50%) for #1", "Señor Peña paid $5,000 (50%) for #1"),
        # Nothing left: empty.
        ("https://t.co/abc", ""),
        ("   \n\t ", ""),
        ("\U0001f1fa\U0001f1f8", ""),
    ],
)
def test_clean_tweet_default_rules(raw, cleaned):
    assert clean_tweet(raw) == cleaned


def test_clean_tweet_is_idempotent_on_archive_like_text():
    raw = ("The Tech \u201cstuff\u201d is just bells &amp; whistles... "
           "https://t.co/x \U0001f1fa\U0001f1f8")
    once = clean_tweet(raw)
    assert clean_tweet(once) == once == 'The Tech "stuff" is just bells & whistles...'


@pytest.mark.parametrize(
    ("options", "raw", "cleaned"),
    [
        ({"urls": "keep"}, "Watch https://t.co/AbC", "Watch https://t.co/AbC"),
        ({"mentions": "drop"}, "Thank you @FoxNews and .@CNN!", "Thank you and !"),
        ({"mentions": "drop"}, "mail me at a@b.com", "mail me at a@b.com"),
        ({"emoji": "keep"}, "USA \U0001f1fa\U0001f1f8", "USA \U0001f1fa\U0001f1f8"),
    ],
)
def test_clean_tweet_options(options, raw, cleaned):
    assert clean_tweet(raw, **options) == cleaned


@pytest.mark.parametrize("option", ["urls", "mentions", "emoji"])
def test_clean_tweet_rejects_unknown_choice(option):
    with pytest.raises(ValueError, match=option):
        clean_tweet("x", **{option: "sometimes"})


@pytest.mark.parametrize(
    ("char", "expected"),
    [("\U0001f600", True), ("\u2764", True), ("\ufe0f", True), ("\u200d", True),
     ("a", False), ("é", False), ("$", False), ("\u2019", False)],
)
def test_is_emoji(char, expected):
    assert is_emoji(char) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RT @realDonaldTrump: Make America Great Again!", True),
        ("  RT @foxandfriends: ...", True),
        ("RT this if you agree", False),
        ('"@fan: Mr. Trump you are great" Thanks!', False),
        ("ART @ the museum", False),
        ("Great RT @someone", False),
    ],
)
def test_looks_like_retweet(text, expected):
    assert looks_like_retweet(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("@JohnDoe Thank you!", True), (" @a b", True), (".@CNN is fake", False),
     ("Thank you @JohnDoe", False)],
)
def test_looks_like_reply(text, expected):
    assert looks_like_reply(text) is expected

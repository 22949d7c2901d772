"""Turning a published tweet into the text the model learns from, and telling retweets apart.

`clean_tweet` is the one cleaning function; it is pure (same input, same output, no I/O).
The choices it makes, and why:

- **HTML entities** are decoded, all of them (``&amp;`` ``&gt;`` ``&#8220;`` ``&eacute;`` ...),
  repeatedly, because the archive holds doubly escaped text such as ``&amp;amp;``.
- **Typographic punctuation** becomes its ASCII form: curly quotes become ``'`` and ``"``,
  en/em dashes, minus signs and horizontal bars become ``-``, the ellipsis character becomes
  ``...``. The same tweet is typed both ways depending on the phone it came from; the model
  should not spend capacity telling them apart.
- **Whitespace**: every run of whitespace (newlines, tabs, no-break and other Unicode spaces)
  becomes one space, zero-width characters and control characters are removed, and the ends are
  stripped. A tweet is one line, so a file of tweets is one tweet per line.
- **URLs** (``urls="drop"``, the default) are removed: ``https://t.co/...`` links are random
  strings that no model can learn and that would only teach it to emit noise. ``"keep"`` leaves
  them.
- **Mentions** (``mentions="keep"``, the default) stay: ``@FoxNews`` and ``.@CNN`` are part of
  the style. ``"drop"`` removes them.
- **Emoji** (``emoji="drop"``, the default) are removed: they are rare in the archive (mostly
  2018-2019 flags), so the data-derived vocabulary would map them to the unknown symbol anyway.
  ``"keep"`` leaves them.

A tweet that is empty after cleaning (only a link, say) is dropped by the callers.
"""

import html
import re
import unicodedata

URL_CHOICES = ("drop", "keep")
MENTION_CHOICES = ("keep", "drop")
EMOJI_CHOICES = ("drop", "keep")

_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",  # left single quotation mark
        "\u2019": "'",  # right single quotation mark
        "\u201a": "'",  # single low-9 quotation mark
        "\u201b": "'",  # single high-reversed-9 quotation mark
        "\u2032": "'",  # prime
        "\u00b4": "'",  # acute accent used as an apostrophe
        "\u201c": '"',  # left double quotation mark
        "\u201d": '"',  # right double quotation mark
        "\u201e": '"',  # double low-9 quotation mark
        "\u201f": '"',  # double high-reversed-9 quotation mark
        "\u2033": '"',  # double prime
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": "-",  # figure dash
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u2015": "-",  # horizontal bar
        "\u2212": "-",  # minus sign
        "\u2026": "...",  # horizontal ellipsis
    }
)
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200e\u200f\u2060\ufeff\u00ad"))

_URL = re.compile(r"\b(?:https?://|www\.|pic\.twitter\.com/)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])\.?@\w{1,15}\b")
_RETWEET = re.compile(r"^\s*RT @\w")
_WHITESPACE = re.compile(r"\s+")

# Code points that are pictographs or that only modify them (joiners, selectors, skin tones).
_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),  # mahjong ... symbols and pictographs extended-A, flags, skin tones
    (0x2600, 0x27BF),  # miscellaneous symbols, dingbats
    (0x2B00, 0x2BFF),  # arrows and stars (⭐ ⬆)
    (0x2300, 0x23FF),  # technical (⌚ ⏰)
    (0xFE00, 0xFE0F),  # variation selectors
    (0x200D, 0x200D),  # zero-width joiner
    (0x20E3, 0x20E3),  # combining enclosing keycap
    (0xE0020, 0xE007F),  # tag characters (subdivision flags)
)


_EMOJI = re.compile("[" + "".join(f"{chr(low)}-{chr(high)}" for low, high in _EMOJI_RANGES) + "]")
# Control characters other than whitespace (which the last step folds) carry nothing.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")


def is_emoji(char: str) -> bool:
    """Return True when a single character is an emoji or a part of one."""
    return bool(_EMOJI.fullmatch(char))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def unescape_html(text: str) -> str:
    """Decode every HTML entity, repeating until nothing changes (for ``&amp;amp;``)."""
    for _ in range(4):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    return text


def clean_tweet(
    text: str, *, urls: str = "drop", mentions: str = "keep", emoji: str = "drop"
) -> str:
    """Return the cleaned text of one tweet ("" when nothing is left); see the module docstring."""
    _check_choice("urls", urls, URL_CHOICES)
    _check_choice("mentions", mentions, MENTION_CHOICES)
    _check_choice("emoji", emoji, EMOJI_CHOICES)
    text = unescape_html(text)
    text = unicodedata.normalize("NFC", text).translate(_PUNCTUATION).translate(_ZERO_WIDTH)
    if urls == "drop":
        text = _URL.sub(" ", text)
    if mentions == "drop":
        text = _MENTION.sub("", text)
    if emoji == "drop":
        text = _EMOJI.sub(" ", text)
    text = _CONTROL.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def looks_like_retweet(text: str) -> bool:
    """Return True for the text of a retweet (``RT @user: ...``), flagged or not."""
    return bool(_RETWEET.match(text))


def looks_like_reply(text: str) -> bool:
    """Return True for a reply: a tweet that starts with a mention (``@user ...``).

    A tweet starting ``.@user`` is the public-mention idiom, not a reply.
    """
    return text.lstrip().startswith("@")

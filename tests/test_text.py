"""The data-derived character vocabulary."""

import json

import numpy as np
import pytest

from covfefe.errors import UserError
from covfefe.text import END_ID, PAD_ID, SPECIALS, UNK_CHAR, UNK_ID, Vocabulary


def test_vocabulary_comes_from_the_data():
    vocab = Vocabulary.from_texts(["aaab", "abc", "aaz"], min_count=2)
    # a:6, b:2 kept by falling frequency; c:1 and z:1 are rare and map to unknown.
    assert vocab.chars == ["a", "b"]
    assert len(vocab) == len(SPECIALS) + 2
    assert "c" not in vocab and "a" in vocab
    assert vocab.unknown("abcz") == ["c", "z"]


def test_ties_are_broken_by_code_point_so_the_order_is_stable():
    assert Vocabulary.from_texts(["ba", "ab"], min_count=1).chars == ["a", "b"]


def test_encode_decode_round_trip_with_end_and_unknown():
    vocab = Vocabulary.from_texts(["covfefe"] * 3, min_count=1)
    ids = vocab.encode("covfefe!", end=True)
    assert ids.dtype == np.int32
    assert ids[-1] == END_ID and ids[-2] == UNK_ID
    assert vocab.decode(ids) == "covfefe" + UNK_CHAR
    assert vocab.decode([PAD_ID, *vocab.encode("ef"), END_ID, *vocab.encode("c")]) == "ef"


def test_save_and_load_round_trip(tmp_path):
    vocab = Vocabulary.from_texts(["Make America Great Again!"] * 2, min_count=2)
    loaded = Vocabulary.load(vocab.save(tmp_path / "vocabulary.json"))
    assert loaded == vocab
    assert loaded.counts == vocab.counts and loaded.min_count == 2


def test_vocabulary_of_the_real_archive_is_small_and_covers_almost_everything(archive_dir):
    from covfefe.data.archive import TweetArchive
    from covfefe.data.clean import clean_tweet

    texts = [clean_tweet(t) for t in TweetArchive(archive_dir / "tweets_2016.json",
                                                   progress=False).read()["text"]]
    vocab = Vocabulary.from_texts(texts)
    total = sum(map(len, texts))
    unknown = sum(1 for text in texts for char in text if char not in vocab)
    assert 60 < len(vocab) < 200
    assert unknown / total < 1e-3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        (json.dumps({"format": "something-else"}), "not a covfefe vocabulary"),
        (json.dumps({"format": "covfefe-vocabulary", "version": 99, "specials": []}),
         "unsupported version"),
    ],
)
def test_load_refuses_damaged_files(tmp_path, content, message):
    path = tmp_path / "vocabulary.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        Vocabulary.load(path)


def test_load_of_missing_file_names_it(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Vocabulary.load(tmp_path / "nope.json")

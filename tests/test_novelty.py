"""The novelty index: the longest run a text shares with the indexed tweets, from hashes only."""

import numpy as np
import pytest

from covfefe.errors import UserError
from covfefe.lm.novelty import SHINGLE, NoveltyIndex, is_near_copy, shingle_hashes

TWEETS = ["The Fake News Media is working overtime to make us look bad!",
          "Great meeting with the Governors of the Great State of Iowa today.",
          "MAKE AMERICA GREAT AGAIN!"]


@pytest.fixture(scope="module")
def index():
    return NoveltyIndex.build(TWEETS)


def test_a_copied_run_is_measured_to_the_character(index):
    copied = "The Fake News Media is working"  # 30 characters of the first tweet
    assert index.longest_shared(f"Wow. {copied}, believe me") == len(copied)
    assert index.longest_shared(TWEETS[1]) == len(TWEETS[1])


def test_new_text_shares_nothing_and_short_runs_count_as_zero(index):
    assert index.longest_shared("Quokkas are wonderful animals, folks") == 0
    assert index.longest_shared("Great State") == 0  # 11 characters: less than one shingle
    assert index.longest_shared("") == 0


def test_the_index_holds_hashes_not_text(index, tmp_path):
    path = index.save(tmp_path / "novelty.npz")
    assert b"Fake News" not in path.read_bytes()
    loaded = NoveltyIndex.load(path)
    np.testing.assert_array_equal(loaded.hashes, index.hashes)
    assert (loaded.size, loaded.tweets) == (SHINGLE, 3)
    assert loaded.longest_shared(TWEETS[2]) == len(TWEETS[2])


def test_hashes_depend_on_every_character_and_its_position():
    assert len(set(shingle_hashes("abcdefghijklmn"))) == 3
    assert shingle_hashes("abcdefghijkl")[0] != shingle_hashes("abcdefghijkm")[0]
    assert shingle_hashes("abcdefghijkl")[0] != shingle_hashes("bacdefghijkl")[0]


def test_a_damaged_index_is_a_clear_error(tmp_path):
    path = tmp_path / "novelty.npz"
    path.write_bytes(b"not an index")
    with pytest.raises(UserError, match="novelty index .* cannot be read"):
        NoveltyIndex.load(path)


def test_the_trained_model_ships_its_index(tiny_model):
    index = tiny_model.novelty_index()
    assert tiny_model.metadata["novelty"]["tweets"] == tiny_model.metadata["data"]["tweets"]
    assert len(index) == tiny_model.metadata["novelty"]["shingles"] > 1000


@pytest.mark.parametrize(("shared", "text", "copy"), [
    (25, "Make America Great Again!", True),  # the whole tweet is in the archive
    (25, "Make America Great Again! And the wall will be paid for.", False),  # a phrase
    (40, "x" * 60, True),  # 40 characters and two thirds of the tweet
    (40, "x" * 100, False),  # 40 characters of 100: an ordinary shared phrase
    (0, "", False),
    (None, "Make America Great Again!", False),  # no index
])
def test_near_copies_are_whole_tweets_or_long_shares_of_most_of_one(shared, text, copy):
    assert is_near_copy(shared, text) is copy

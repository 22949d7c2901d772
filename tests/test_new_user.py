"""What a new user of 2020 tried at the defaults (issue 27), as tests: the bundled model through
gunicorn, as the page and the API serve it."""

import json
import re
import urllib.request

import pytest

from covfefe import config
from covfefe.evaluation.evaluate import score_served
from covfefe.inference.artifact import load_artifact
from covfefe.inference.generate import CUT_MARK, TweetGenerator
from covfefe.lm.lexicon import spellings, word_forms
from tests.helpers import stop_process
from tests.test_gunicorn import _wait_for_health, start_gunicorn

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    log = tmp_path_factory.mktemp("gunicorn-new-user") / "server.log"
    process, base = start_gunicorn(log, COVFEFE_MODEL=str(config.BUNDLED_MODEL),
                                   COVFEFE_RATE_LIMIT="100000 per minute")
    _wait_for_health(process, base, log)
    yield base
    stop_process(process)


@pytest.fixture(scope="module")
def lexicon():
    return load_artifact(config.resolve(config.BUNDLED_MODEL)).lexicon()


def generate(base: str, **body) -> list[dict]:
    request = urllib.request.Request(f"{base}/api/generate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["completions"]


def thirty_tweets(base: str) -> list[dict]:
    return [c for seed in (1, 2, 3) for c in generate(base, prefix="", n=10, seed=seed)]


def test_case_is_kept_as_the_archive_writes_a_word(served, lexicon):
    # "AbHor", "thosE", "veRbally": a known word in a case the archive never wrote it in.
    known = spellings(lexicon)
    lower = {form.lower() for form in known}
    garbled = [form for c in thirty_tweets(served) for form in word_forms(c["generated"])
               if form.lower() in lower and form not in known]
    assert garbled == []


def test_handles_keep_their_at(served, lexicon):
    # "Make America Great AgostinelliNick!": a handle written as a word.
    known = spellings(lexicon)
    handles = {form[1:] for form in known if form.startswith("@")} - known
    bare = [form for c in thirty_tweets(served) for form in word_forms(c["generated"])
            if form in handles]
    assert bare == []


def test_a_tweet_cut_at_the_limit_inside_a_word_says_so(served):
    completions = generate(served, prefix="The ", n=16, seed=5, max_length=60)
    cut = [c["text"] for c in completions if not c["finished"]]
    assert cut  # 60 characters are too few for most tweets
    for text in cut:
        assert len(text) <= 60
        assert text.endswith(CUT_MARK) or not re.search(r"[\w'@#]$", text), text


def test_a_copy_is_replaced_by_a_fresh_draw_when_the_user_asks_for_tweets(served):
    # "Make America" gave exactly "Make America Great Again!" 3 times in 5.
    for seed in (1, 2, 3):
        completions = generate(served, prefix="Make America", n=5, seed=seed)
        assert not any(c["novelty"]["near_copy"] for c in completions), completions


def test_a_prefix_that_ends_a_sentence_is_continued(served):
    # "Obamagate!" most often got no continuation at all.
    completions = generate(served, prefix="Obamagate!", n=10, seed=4)
    assert all(c["generated"].strip() for c in completions)
    assert all(c["text"].startswith("Obamagate!") for c in completions)


def test_a_word_the_archive_never_used_is_kept_and_completed(served):
    completions = generate(served, prefix="The Coronavirus is", n=8, seed=6)
    assert all(c["text"].startswith("The Coronavirus is") and c["generated"].strip()
               for c in completions)
    # Every string keeps a probability as served: the hard word list gave this one none.
    generator = TweetGenerator.from_artifact(config.resolve(config.BUNDLED_MODEL))
    scored = score_served(generator, ["The Coronavirus is spreading. We will defeat the virus!"])
    assert 0 < scored.nats[0] < float("inf")


@pytest.mark.parametrize("prefix, word", [("The Coronaviru", "Coronavirus"),
                                          ("Stop the Obamagat", "Obamagate")])
def test_a_prefix_ending_mid_way_through_a_new_word_can_be_completed_into_it(served, prefix,
                                                                            word):
    written = [c["text"] for seed in range(1, 11)
               for c in generate(served, prefix=prefix, n=10, seed=seed)]
    completed = [text for text in written if re.match(rf".* {word}\b", text)]
    assert completed, written[:10]

"""The X API v2 collector: tweepy's real `Client`, with the API itself played by `responses`.

Every response body has the shape the real API sends (``/2/users/by/username/:name`` and
``/2/users/:id/tweets``); the assertions look at the query strings tweepy actually sent.
"""

import io
import json
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses
from responses.registries import OrderedRegistry

from covfefe import cli, config
from covfefe.data import collect as collect_module
from covfefe.data import schema
from covfefe.data.collect import collect_twitter, state_path
from covfefe.data.store import TweetStore
from covfefe.data.twitter import TWEET_FIELDS, TwitterCollector, parse_screen_name
from covfefe.errors import CollectionError, UserError

API = "https://api.twitter.com/2"
TOKEN = "AAAAAAAAAAAAAAAAAAAAAtest%2Ftoken"
USER_ID = "25073877"
TIMELINE_PATH = f"/2/users/{USER_ID}/tweets"
TIMELINE_URL = f"https://api.twitter.com{TIMELINE_PATH}"
USER = {"id": USER_ID, "name": "Donald J. Trump", "username": "realDonaldTrump"}
# Pagination tokens look like these.
PAGE_2 = "7140dibdnow9c7btw3w29grvxfcgvpb9n9coehpk7xz5i"
PAGE_3 = "7140dibdnow9c7btw3w29eyzb4zb7ijz0ej58nqs0vm7n"
COLLECT_ARGV = ["collect", "--twitter", "realDonaldTrump", "--no-progress", "-o"]
ORIGIN = "x:@realDonaldTrump"

# Real tweets of December 2019 (from the Trump Twitter Archive), oldest first.
TWEETS = [
    (1208137095270862848, "Nancy Pelosi is looking for a Quid Pro Quo with the Senate. "
     "Why aren\u2019t we Impeaching her?"),
    (1208246633168850944, "Broke all time Stock Market Record again today. 135 times since "
     "my 2016 Election Win. Thank you!"),
    (1209262137182445569, "NASDAQ UP 72.2% SINCE OUR GREAT 2016 ELECTION VICTORY! DOW UP 55.8%. "
     "The best is yet to come!"),
    (1209447572546424832, "\u201cStocks kick off Christmas week at All-Time Record Highs.\u201d "
     "@foxandfriends"),
    (1209812664601522178, "MERRY CHRISTMAS!"),
    (1209935018153455616, "2019 HOLIDAY RETAIL SALES WERE UP 3.4% FROM LAST YEAR, THE BIGGEST "
     "NUMBER IN U.S. HISTORY. CONGRATULATIONS AMERICA!"),
    (1210415111925649408, "\u201cPelosi\u2019s stall tactics expose the weakness of "
     "Democrat\u2019s impeachment case.\u201d @GreggJarrett @FoxNews"),
    (1210679670133469186, "\u201cDow closes at another All-Time High!\u201d @cvpayne @FoxBusiness"),
    (1211655287247126535, "Thank you to highly respected Jewish leader Dov Hikind for his "
     "wonderful statements about me this morning on @foxandfriends."),
    (1212152711753453573, "How is the Paris Accord doing? Don\u2019t ask! https://t.co/9N0yibmDkj"),
]
RETWEET_TEXT = "RT @realDonaldTrump: SCHIFF'S \"FACT\" WITNESSES! https://t.co/Pab2y1BVoN"
REPLY_TEXT = "@jimcramer \u201cThis is the best number I\u2019ve ever seen in my life.\u201d"


def tweet(
    index: int, *, text: str | None = None, references=(), in_reply_to: str | None = None
) -> dict:
    """Return the API v2 object of ``TWEETS[index]`` (a larger index is a newer tweet)."""
    tweet_id, archived_text = TWEETS[index]
    data = {
        "id": str(tweet_id),
        "text": text if text is not None else archived_text,
        "created_at": f"2019-12-{20 + index:02d}T23:59:59.000Z",
        "public_metrics": {
            "retweet_count": 15000 + index, "reply_count": 9000, "like_count": 70000,
            "quote_count": 800,
        },
        "edit_history_tweet_ids": [str(tweet_id)],
    }
    if references:
        data["referenced_tweets"] = [{"type": kind, "id": ref} for kind, ref in references]
    if in_reply_to is not None:
        data["in_reply_to_user_id"] = in_reply_to
    return data


def page(*tweets: dict, next_token: str | None = None) -> dict:
    """Return a timeline page as the API sends it: tweets newest first, then ``meta``."""
    tweets = sorted(tweets, key=lambda data: int(data["id"]), reverse=True)
    meta = {"result_count": len(tweets)}
    if tweets:
        meta.update(newest_id=tweets[0]["id"], oldest_id=tweets[-1]["id"])
    if next_token:
        meta["next_token"] = next_token
    return {"data": tweets, "meta": meta} if tweets else {"meta": meta}


def problem(status: int, title: str) -> dict:
    """Return the RFC 7807 body the v2 API sends with a plain HTTP error."""
    return {"title": title, "detail": title, "type": "about:blank", "status": status}


def ids(*indexes: int) -> list[int]:
    """Return the ids of these ``TWEETS``, in the dataset's (oldest first) order."""
    return sorted(TWEETS[index][0] for index in indexes)


def query(call) -> dict[str, str]:
    """Return the query parameters of a recorded request."""
    return dict(parse_qsl(urlsplit(call.request.url).query))


def timeline_queries(x_api) -> list[dict[str, str]]:
    """Return the query parameters of every timeline request, in order."""
    return [query(call) for call in x_api.calls if urlsplit(call.request.url).path == TIMELINE_PATH]


def lookups(x_api) -> list[str]:
    """Return the URLs of every account lookup."""
    return [call.request.url for call in x_api.calls if "/by/username/" in call.request.url]


def stored(dataset):
    """Return the dataset as stored on disk."""
    return TweetStore(dataset).load()


@pytest.fixture
def x_api():
    """The X API: it answers requests with the responses registered on it, in that order.

    Each response is used once and all of them must be used; a request out of order or beyond
    the last one fails as a connection error (so a collector that loops cannot hang a test).
    """
    with responses.RequestsMock(
        assert_all_requests_are_fired=True, registry=OrderedRegistry
    ) as mock:
        yield mock


def serve_user(x_api, name: str = "realDonaldTrump") -> None:
    """Serve the lookup of an account by screen name."""
    x_api.get(f"{API}/users/by/username/{name}", json={"data": USER})


def serve_timeline(x_api, *pages: dict) -> None:
    """Serve these timeline pages, in this order, one per request."""
    for body in pages:
        x_api.get(TIMELINE_URL, json=body)


@pytest.fixture
def sleeps() -> list[float]:
    """The delays the collector asked to sleep (nothing really sleeps)."""
    return []


@pytest.fixture
def collector(sleeps) -> TwitterCollector:
    """A collector with a test token that records the delays it is asked to wait."""
    return TwitterCollector(TOKEN, sleep=sleeps.append)


def collect_timeline(dataset, collector, name="realDonaldTrump", **options):
    """Collect an account's timeline into ``dataset`` through ``collector``, quietly."""
    return collect_twitter(name, dataset, collector=collector, progress=False, **options)


def test_pages_are_followed_to_the_end_and_land_in_the_dataset(x_api, collector, dataset):
    serve_user(x_api)
    serve_timeline(
        x_api,
        page(tweet(9), tweet(8), tweet(7), next_token=PAGE_2),
        page(tweet(6), tweet(5), tweet(4), next_token=PAGE_3),
        page(tweet(3), tweet(2)),
    )

    report = collect_timeline(dataset, collector)

    first, second, third = timeline_queries(x_api)
    assert first == {
        "max_results": "100", "exclude": "retweets", "tweet.fields": ",".join(TWEET_FIELDS),
    }
    assert second["pagination_token"] == PAGE_2
    assert third["pagination_token"] == PAGE_3
    assert "since_id" not in second and "since_id" not in third
    assert all(call.request.headers["Authorization"] == f"Bearer {TOKEN}" for call in x_api.calls)

    frame = stored(dataset)
    assert list(frame.columns) == list(schema.COLUMNS)
    assert frame["id"].tolist() == ids(*range(2, 10))
    assert set(frame["origin"]) == {ORIGIN}
    assert str(frame["created_at"].dt.tz) == "UTC"
    newest = frame.iloc[-1]
    assert newest["text"] == TWEETS[9][1]
    assert newest["created_at"].isoformat() == "2019-12-29T23:59:59+00:00"
    assert (newest["retweet_count"], newest["favorite_count"]) == (15009, 70000)
    assert not frame["is_retweet"].any() and not frame["is_reply"].any()
    assert (report.read, report.kept, report.added, report.total) == (8, 8, 8, 8)
    assert not state_path(dataset, "realDonaldTrump").exists()


@pytest.mark.parametrize("rerun_name", ["realDonaldTrump", "@realdonaldtrump"])
def test_a_rerun_asks_only_for_tweets_newer_than_the_newest_collected(
    x_api, collector, dataset, rerun_name
):
    serve_user(x_api)
    serve_timeline(x_api, page(tweet(4), tweet(3), tweet(2)))
    collect_timeline(dataset, collector)
    serve_user(x_api, rerun_name.lstrip("@"))
    serve_timeline(x_api, page(tweet(6), tweet(5)))

    report = collect_timeline(dataset, collector, rerun_name)

    first_run, rerun = timeline_queries(x_api)
    assert "since_id" not in first_run
    # The account's tweets are found whatever the case of the name it is asked for by.
    assert rerun["since_id"] == str(TWEETS[4][0])
    assert (report.read, report.added, report.already_present, report.total) == (2, 2, 0, 5)
    assert stored(dataset)["id"].tolist() == ids(2, 3, 4, 5, 6)


def test_a_rerun_with_nothing_new_adds_nothing(x_api, collector, dataset):
    serve_user(x_api)
    serve_timeline(x_api, page(tweet(1), tweet(0)))
    collect_timeline(dataset, collector)
    serve_user(x_api)
    serve_timeline(x_api, page())

    report = collect_timeline(dataset, collector)

    assert timeline_queries(x_api)[-1]["since_id"] == str(TWEETS[1][0])
    assert (report.read, report.added, report.total) == (0, 0, 2)
    assert not state_path(dataset, "realDonaldTrump").exists()


def test_retweets_are_excluded_by_the_api_and_dropped_if_they_come_back(
    x_api, collector, dataset
):
    serve_user(x_api)
    serve_timeline(x_api, page(
        tweet(5),
        # A retweet the API flags, and an old-style manual one that only its text gives away.
        tweet(4, text=RETWEET_TEXT, references=[("retweeted", "1197755129539317760")]),
        tweet(3, text=RETWEET_TEXT),
        tweet(2),
    ))

    report = collect_timeline(dataset, collector)

    (sent,) = timeline_queries(x_api)
    assert sent["exclude"] == "retweets"
    assert stored(dataset)["id"].tolist() == ids(2, 5)
    assert (report.retweets_flagged, report.retweets_unflagged) == (1, 1)
    assert (report.read, report.kept) == (4, 2)
    assert "dropped 2 retweets (1 flagged, 1 unflagged)" in report.summary()


@pytest.mark.parametrize(
    ("keep_replies", "kept", "dropped"), [(True, (2, 3, 4), 0), (False, (2, 4), 1)]
)
def test_replies_are_kept_unless_asked_otherwise(
    x_api, collector, dataset, keep_replies, kept, dropped
):
    serve_user(x_api)
    serve_timeline(x_api, page(
        tweet(4, references=[("quoted", "1209449029672873985")]),
        tweet(3, text=REPLY_TEXT, references=[("replied_to", "1202965831254290432")],
              in_reply_to="27574606"),
        tweet(2),
    ))

    report = collect_timeline(dataset, collector, keep_replies=keep_replies)

    frame = stored(dataset)
    assert frame["id"].tolist() == ids(*kept)
    assert report.replies == dropped
    # A quote tweet is neither a reply nor a retweet.
    assert frame.set_index("id")["is_reply"].to_dict() == {
        TWEETS[index][0]: index == 3 for index in kept
    }
    assert not frame["is_retweet"].any()


def test_a_rate_limit_is_waited_out_until_the_announced_reset(x_api, collector, dataset, sleeps):
    reset = int(time.time()) + 900
    serve_user(x_api)
    x_api.get(TIMELINE_URL, status=429, json=problem(429, "Too Many Requests"),
              headers={"x-rate-limit-limit": "1500", "x-rate-limit-remaining": "0",
                       "x-rate-limit-reset": str(reset)})
    serve_timeline(x_api, page(tweet(3), tweet(2)))

    report = collect_timeline(dataset, collector)

    # The reset is 900 s away (less the moments this test took), plus a second's margin.
    assert sleeps == [pytest.approx(901, abs=10)]
    first, retry = timeline_queries(x_api)
    assert retry == first
    assert report.added == 2


def test_a_rate_limit_that_does_not_lift_gives_up(x_api, dataset, sleeps):
    collector = TwitterCollector(TOKEN, sleep=sleeps.append, max_rate_limit_waits=2)
    serve_user(x_api)
    for _ in range(3):
        x_api.get(TIMELINE_URL, status=429, json=problem(429, "Too Many Requests"),
                  headers={"x-rate-limit-reset": str(int(time.time()) + 60)})

    with pytest.raises(CollectionError, match="rate-limited after 2 waits"):
        collect_timeline(dataset, collector)

    assert len(sleeps) == 2
    assert len(timeline_queries(x_api)) == 3
    assert stored(dataset).empty
    # "Run it again later to resume": the position to resume from is saved.
    state = json.loads(state_path(dataset, "realDonaldTrump").read_text())
    assert state == {"user_id": int(USER_ID), "since_id": None, "pagination_token": None}


def test_a_rate_limit_without_a_reset_time_waits_a_minute(x_api, collector, dataset, sleeps):
    serve_user(x_api)
    x_api.get(TIMELINE_URL, status=429, json=problem(429, "Too Many Requests"))
    serve_timeline(x_api, page(tweet(2)))

    collect_timeline(dataset, collector)

    assert sleeps == [60]
    assert stored(dataset)["id"].tolist() == ids(2)


def test_a_rejected_token_is_named(x_api, collector, dataset):
    x_api.get(f"{API}/users/by/username/realDonaldTrump", status=401,
              json=problem(401, "Unauthorized"))

    with pytest.raises(CollectionError, match="401") as error:
        collect_timeline(dataset, collector)

    assert config.TWITTER_TOKEN_ENV in str(error.value)
    assert "bearer token" in str(error.value)


def test_a_plan_without_timeline_access_is_explained(x_api, collector, dataset):
    x_api.get(f"{API}/users/by/username/realDonaldTrump", status=403, json={
        "client_id": "27849311",
        "detail": "When authenticating requests to the Twitter API v2 endpoints, you must use "
        "keys and tokens from a Twitter developer App that is attached to a Project. You can "
        "create a project via the developer portal.",
        "registration_url": "https://developer.twitter.com/en/docs/projects/overview",
        "title": "Client Forbidden",
        "required_enrollment": "Appropriate Level of API Access",
        "reason": "client-not-enrolled",
        "type": "https://api.twitter.com/2/problems/client-forbidden",
    })

    with pytest.raises(CollectionError, match="403") as error:
        collect_timeline(dataset, collector)

    message = str(error.value)
    assert "plan" in message and "permissions" in message
    assert "attached to a Project" in message


def test_a_missing_token_is_named(x_api, dataset, monkeypatch):
    monkeypatch.delenv(config.TWITTER_TOKEN_ENV, raising=False)

    with pytest.raises(CollectionError, match=config.TWITTER_TOKEN_ENV):
        TwitterCollector()
    with pytest.raises(CollectionError, match=config.TWITTER_TOKEN_ENV):
        collect_twitter("realDonaldTrump", dataset, progress=False)

    assert not x_api.calls


def test_an_unknown_account_is_a_clear_error(x_api, collector, dataset):
    x_api.get(f"{API}/users/by/username/nobody", json={"errors": [{
        "value": "nobody",
        "detail": "Could not find user with username: [nobody].",
        "title": "Not Found Error",
        "resource_type": "user",
        "parameter": "username",
        "resource_id": "nobody",
        "type": "https://api.twitter.com/2/problems/resource-not-found",
    }]})

    with pytest.raises(CollectionError, match=r"no X account named @nobody \(Could not find"):
        collect_timeline(dataset, collector, "nobody")

    assert not state_path(dataset, "nobody").exists()


def test_a_timeline_the_token_may_not_read_is_an_error_not_an_empty_one(
    x_api, collector, dataset
):
    serve_user(x_api)
    x_api.get(TIMELINE_URL, json={"errors": [{
        "value": USER_ID,
        "detail": f"Sorry, you are not authorized to see the user with id: [{USER_ID}].",
        "title": "Authorization Error",
        "resource_type": "user",
        "parameter": "id",
        "resource_id": USER_ID,
        "type": "https://api.twitter.com/2/problems/not-authorized-for-resource",
    }]})

    with pytest.raises(CollectionError, match="not authorized to see the user"):
        collect_timeline(dataset, collector)


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ({"body": requests.ConnectionError("Connection aborted: RemoteDisconnected")},
         "could not reach the X API"),
        ({"status": 503, "json": problem(503, "Service Unavailable")}, "HTTP 503"),
    ],
    ids=["connection-error", "503"],
)
def test_an_interrupted_collection_keeps_its_tweets_and_resumes_where_it_stopped(
    x_api, collector, dataset, failure, message
):
    serve_user(x_api)
    serve_timeline(x_api, page(tweet(1), tweet(0)))
    collect_timeline(dataset, collector)
    since_id = str(TWEETS[1][0])
    state_file = state_path(dataset, "realDonaldTrump")

    serve_user(x_api)
    serve_timeline(x_api, page(tweet(9), tweet(8), tweet(7), next_token=PAGE_2))
    x_api.get(TIMELINE_URL, **failure)
    with pytest.raises(CollectionError, match=message):
        collect_timeline(dataset, collector)

    assert stored(dataset)["id"].tolist() == ids(0, 1, 7, 8, 9)
    assert json.loads(state_file.read_text()) == {
        "user_id": int(USER_ID), "since_id": int(since_id), "pagination_token": PAGE_2,
    }
    lookups_before = len(lookups(x_api))

    serve_timeline(x_api, page(tweet(6), tweet(5), tweet(4), tweet(3), tweet(2)))
    report = collect_timeline(dataset, collector)

    resumed = timeline_queries(x_api)[-1]
    assert resumed["pagination_token"] == PAGE_2
    # The same since_id as the interrupted run, not the newest id it had already stored.
    assert resumed["since_id"] == since_id
    assert len(lookups(x_api)) == lookups_before  # the account's id comes from the state
    assert report.resumed and "(resumed an interrupted run)" in report.summary()
    assert (report.added, report.total) == (5, 10)
    assert stored(dataset)["id"].tolist() == ids(*range(10))
    assert not state_file.exists()


def test_a_stop_right_after_a_page_is_stored_still_resumes_without_a_gap(
    x_api, collector, dataset, monkeypatch
):
    serve_user(x_api)
    serve_timeline(x_api, page(tweet(1), tweet(0)))
    collect_timeline(dataset, collector)
    real_write = collect_module.write_atomically

    def interrupt_before_saving_a_page_token(path, write):
        buffer = io.BytesIO()
        write(buffer)
        if json.loads(buffer.getvalue())["pagination_token"]:
            raise KeyboardInterrupt  # Ctrl-C between merging a page and saving the position
        real_write(path, write)

    monkeypatch.setattr(collect_module, "write_atomically", interrupt_before_saving_a_page_token)
    serve_user(x_api)
    serve_timeline(x_api, page(tweet(9), tweet(8), next_token=PAGE_2))
    with pytest.raises(KeyboardInterrupt):
        collect_twitter("realDonaldTrump", dataset, collector=collector, progress=False)
    monkeypatch.undo()
    assert stored(dataset)["id"].tolist() == ids(0, 1, 8, 9)

    serve_timeline(
        x_api,
        page(tweet(9), tweet(8), next_token=PAGE_2),
        page(tweet(7), tweet(6), tweet(5)),
    )
    report = collect_twitter("realDonaldTrump", dataset, collector=collector, progress=False)

    restarted, _ = timeline_queries(x_api)[-2:]
    assert restarted["since_id"] == str(TWEETS[1][0])
    assert "pagination_token" not in restarted
    assert (report.added, report.already_present) == (3, 2)
    assert stored(dataset)["id"].tolist() == ids(0, 1, 5, 6, 7, 8, 9)


@pytest.mark.parametrize(
    "name", ["", "@", "real Donald Trump", "realDonaldTrump!", "a_name_of_sixteen", "@@trump"]
)
def test_a_bad_screen_name_is_a_user_error(x_api, collector, dataset, name):
    with pytest.raises(UserError, match="is not an X screen name"):
        collect_timeline(dataset, collector, name)

    assert not x_api.calls


def test_a_screen_name_may_start_with_at():
    assert parse_screen_name(" @realDonaldTrump ") == "realDonaldTrump"


def test_the_cli_collects_a_timeline(x_api, dataset, monkeypatch, capsys):
    monkeypatch.setenv(config.TWITTER_TOKEN_ENV, TOKEN)
    serve_user(x_api)
    serve_timeline(
        x_api,
        page(tweet(9), tweet(8), tweet(7, text=RETWEET_TEXT), next_token=PAGE_2),
        page(tweet(6), tweet(5, text=REPLY_TEXT, in_reply_to="27574606")),
    )

    status = cli.main([*COLLECT_ARGV, str(dataset)])

    out = capsys.readouterr().out
    assert status == 0
    assert x_api.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "read 5 tweets" in out
    assert "dropped 1 retweets (0 flagged, 1 unflagged), 0 replies" in out
    assert "kept 4: 4 new, 0 already in the dataset" in out
    assert f"dataset {dataset} now holds 4 tweets" in out


def test_the_cli_names_a_missing_token(x_api, dataset, monkeypatch, capsys):
    monkeypatch.delenv(config.TWITTER_TOKEN_ENV, raising=False)

    status = cli.main([*COLLECT_ARGV, str(dataset)])

    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert config.TWITTER_TOKEN_ENV in lines[0] and lines[0].startswith("covfefe collect: error:")
    assert "Traceback" not in captured.err
    assert not dataset.exists()


@pytest.mark.parametrize("content", ["{not json", '{"user_id": 1}', "[1, 2]"])
def test_a_damaged_saved_position_is_a_clear_error(collector, dataset, content):
    path = state_path(dataset, "realDonaldTrump")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    with pytest.raises(CollectionError, match="saved position .* is damaged; delete it"):
        collect_timeline(dataset, collector)

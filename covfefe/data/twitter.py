"""Collect a user's timeline from the X (Twitter) API v2 with tweepy's `Client`.

The timeline endpoint returns at most the 3,200 most recent tweets, newest first, 100 a page.
Retweets are excluded by the API (and checked again locally); rate limits (HTTP 429) are waited
out until the reset time the API announces; plan or permission problems (401, 403) become one
clear sentence.
"""

import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import requests
import tweepy
from tqdm.auto import tqdm

from covfefe import config
from covfefe.data.clean import looks_like_reply
from covfefe.errors import CollectionError, UserError

TWEET_FIELDS = ["created_at", "public_metrics", "referenced_tweets", "in_reply_to_user_id"]
_SCREEN_NAME = re.compile(r"^@?([A-Za-z0-9_]{1,15})$")


def parse_screen_name(value: str) -> str:
    """Return a screen name without its ``@``; UserError if it cannot be one."""
    match = _SCREEN_NAME.match(value.strip())
    if not match:
        raise UserError(
            f"{value!r} is not an X screen name (1-15 letters, digits or underscores)"
        )
    return match.group(1)


def tweet_record(tweet: tweepy.Tweet, origin: str) -> dict:
    """Return an API v2 tweet in the dataset schema; ``is_retweet`` is the API's own flag.

    As for archive records, `select_tweets` adds the retweets recognised only by their
    ``RT @user`` text, so that its report can tell the two apart.
    """
    kinds = {reference.type for reference in tweet.referenced_tweets or ()}
    metrics = tweet.public_metrics or {}
    return {
        "id": int(tweet.id),
        "created_at": tweet.created_at,
        "text": tweet.text,
        "source": tweet.data.get("source"),
        "is_retweet": "retweeted" in kinds,
        "is_reply": "replied_to" in kinds
        or tweet.in_reply_to_user_id is not None
        or looks_like_reply(tweet.text),
        "retweet_count": metrics.get("retweet_count"),
        "favorite_count": metrics.get("like_count"),
        "origin": origin,
    }


@dataclass(frozen=True)
class TimelinePage:
    """One page of a timeline: its tweets (schema records) and the token of the next page."""

    records: list[dict]
    next_token: str | None


def _api_detail(error: tweepy.HTTPException) -> str:
    return "; ".join(error.api_messages) or str(error.response.reason)


class TwitterCollector:
    """Reads timelines through tweepy's v2 `Client`, waiting out rate limits."""

    def __init__(
        self,
        bearer_token: str | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_rate_limit_waits: int = config.TWITTER_MAX_RATE_LIMIT_WAITS,
        page_size: int = config.TWITTER_PAGE_SIZE,
    ):
        token = bearer_token or config.twitter_bearer_token()
        if not token:
            raise CollectionError(
                f"{config.TWITTER_TOKEN_ENV} is not set: create an app in the X developer "
                f"portal and export its bearer token as {config.TWITTER_TOKEN_ENV}"
            )
        self.client = tweepy.Client(bearer_token=token, wait_on_rate_limit=False)
        self.sleep = sleep
        self.max_rate_limit_waits = max_rate_limit_waits
        self.page_size = page_size

    def _call(self, method, **params) -> tweepy.Response:
        """Call a tweepy method, waiting out 429s and turning API failures into CollectionError."""
        waits = 0
        while True:
            try:
                return method(**params)
            except tweepy.TooManyRequests as error:
                waits += 1
                if waits > self.max_rate_limit_waits:
                    raise CollectionError(
                        f"X API still rate-limited after {self.max_rate_limit_waits} waits; "
                        "run the collection again later to resume"
                    ) from None
                reset = error.response.headers.get("x-rate-limit-reset")
                delay = max(float(reset) - time.time(), 0) + 1 if reset else 60
                tqdm.write(f"X API rate limit reached; waiting {delay:.0f} s for it to reset",
                           file=sys.stderr)
                self.sleep(delay)
            except tweepy.Unauthorized as error:
                raise CollectionError(
                    f"X API rejected the bearer token (401 Unauthorized: {_api_detail(error)}); "
                    f"check {config.TWITTER_TOKEN_ENV}"
                ) from None
            except tweepy.Forbidden as error:
                raise CollectionError(
                    "X API refused the request (403 Forbidden): your API plan or app "
                    f"permissions do not allow reading timelines ({_api_detail(error)})"
                ) from None
            except tweepy.HTTPException as error:
                status = error.response.status_code
                raise CollectionError(
                    f"X API request failed (HTTP {status}: {_api_detail(error)})"
                ) from None
            except requests.RequestException as error:
                raise CollectionError(f"could not reach the X API: {error}") from None

    def user_id(self, screen_name: str) -> int:
        """Return the numeric id of the account with this screen name."""
        response = self._call(self.client.get_user, username=screen_name)
        if response.data is None:
            detail = "; ".join(e.get("detail", str(e)) for e in response.errors or [])
            raise CollectionError(f"no X account named @{screen_name} ({detail or 'not found'})")
        return int(response.data.id)

    def timeline(
        self, user_id: int, origin: str, *, since_id: int | None = None,
        pagination_token: str | None = None,
    ) -> Iterator[TimelinePage]:
        """Yield the pages of a user's timeline, newest first, retweets excluded by the API."""
        token = pagination_token
        while True:
            response = self._call(
                self.client.get_users_tweets,
                id=user_id,
                max_results=self.page_size,
                since_id=since_id,
                pagination_token=token,
                exclude=["retweets"],
                tweet_fields=TWEET_FIELDS,
            )
            if not response.data and response.errors:
                # A timeline the token may not read (a protected or suspended account) comes
                # back as 200 with errors only; reading it as "no tweets" would hide that.
                detail = "; ".join(e.get("detail", str(e)) for e in response.errors)
                raise CollectionError(f"X API returned no timeline for user {user_id} ({detail})")
            token = (response.meta or {}).get("next_token")
            yield TimelinePage([tweet_record(t, origin) for t in response.data or []], token)
            if not token:
                return

"""The loop end to end: new tweets from the X API (its local stand-in), `covfefe update
--promote --reload`, and the server then answering with the new version, with no failed
request during the swap."""

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import datetime

import pytest

from covfefe import cli
from covfefe.inference.artifact import load_artifact
from tests.helpers import free_port, stop_process, wait_for
from tests.test_twitter import API, TIMELINE_URL, TOKEN, USER, page, x_api  # noqa: F401

pytestmark = pytest.mark.network  # gunicorn serves the champion on 127.0.0.1 through the loop

NEW_SINCE, NEW_UNTIL = "2016-03-01", "2016-03-06"


def _api_tweets(archive_dir) -> list[dict]:
    """The archive's tweets of a few days after the tiny model's months, as the X API v2
    sends tweet objects (newest first), retweets left out as the collector asks."""
    start, stop = (datetime.fromisoformat(f"{day}T00:00:00+00:00")
                   for day in (NEW_SINCE, NEW_UNTIL))
    found = []
    for tweet in json.loads((archive_dir / "tweets_2016.json").read_text()):
        created = datetime.strptime(tweet["created_at"], "%a %b %d %H:%M:%S %z %Y")
        if start <= created < stop and not tweet["text"].startswith("RT @"):
            found.append({"id": tweet["id_str"], "text": tweet["text"],
                          "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                          "public_metrics": {"retweet_count": 1, "reply_count": 1,
                                             "like_count": 1, "quote_count": 0},
                          "edit_history_tweet_ids": [tweet["id_str"]]})
    return sorted(found, key=lambda data: int(data["id"]), reverse=True)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except OSError:  # not listening yet
        return 0, {}


def _post(url: str, body: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return -1  # refused or reset: the worst failure of all


def test_new_tweets_in_a_promoted_challenger_out_and_served_without_a_failed_request(
        tiny_model, tiny_tweets, archive_dir, x_api, tmp_path, monkeypatch):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(tiny_tweets, data / "tweets.parquet")
    for name, value in {"COVFEFE_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": "",
                        "COVFEFE_MODEL": str(tiny_model.path),
                        "TWITTER_BEARER_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    # The first champion: the model in service, registered and served through the link.
    assert cli.main(["promote", "1"]) == 0
    link = data / "models" / "champion"
    assert load_artifact(link).version == tiny_model.version

    port, pidfile, log = free_port(), tmp_path / "gunicorn.pid", tmp_path / "server.log"
    environment = {**os.environ, "COVFEFE_MODEL": str(link), "COVFEFE_WORKERS": "2",
                   "COVFEFE_BIND": f"127.0.0.1:{port}",
                   "COVFEFE_RATE_LIMIT": "100000 per minute"}  # the load is one client
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:serve.gunicorn_conf", "--pid",
             str(pidfile), "serve:create_app()"], env=environment, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    statuses, stop, clients = [], threading.Event(), []

    def load():
        while not stop.is_set():
            statuses.append(_post(f"{base}/api/generate",
                                  {"prefix": "Make America", "max_length": 40, "n": 1}))

    try:
        wait_for(lambda: _get(f"{base}/api/health")[0] == 200, "the server", server, log,
                 timeout=180)
        assert _get(f"{base}/api/health")[1]["model"]["version"] == tiny_model.version
        clients += [threading.Thread(target=load) for _ in range(2)]
        for client in clients:
            client.start()

        # New tweets come from the X API (its stand-in: three pages, newest first).
        tweets = _api_tweets(archive_dir)
        assert len(tweets) > 60
        x_api.get(f"{API}/users/by/username/realDonaldTrump", json={"data": USER})
        for body in (page(*tweets[:50], next_token="p2"), page(*tweets[50:])):
            x_api.get(TIMELINE_URL, json=body)
        assert cli.main(["collect", "--twitter", "realDonaldTrump", "--no-progress"]) == 0

        assert cli.main(["update", "--promote", "--reload", str(pidfile), "--epochs", "1",
                         "--order", "5", "--learning-rate", "0.003", "--run-dir",
                         str(tmp_path / "update"), "--no-progress"]) == 0
        challenger = load_artifact(tmp_path / "update" / "model")
        assert load_artifact(link).version == challenger.version  # promoted
        wait_for(lambda: _get(f"{base}/api/health")[1].get("model", {}).get("version")
                 == challenger.version, "the reloaded server", server, log, timeout=180)
        answered = len(statuses)
        wait_for(lambda: len(statuses) > answered + 4, "answers from the new model",
                 server, log, timeout=60)
    finally:
        stop.set()
        for client in clients:  # their last requests end before the server stops
            client.join(timeout=60)
        stop_process(server, group=True)
    assert statuses and set(statuses) == {200}, (
        f"{sum(s != 200 for s in statuses)} of {len(statuses)} requests failed: "
        f"{sorted(set(statuses))}")

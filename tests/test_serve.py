"""The API through Flask's test client: every route, every bad input, CORS, v2 compatibility."""

import re

import pytest

from covfefe import __version__
from tests.helpers import ALLOWED_ORIGIN


def test_health_reports_ok_and_version(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["version"] == __version__
    assert {"rows_in_flight", "queued", "steps_per_second", "rows_per_step"} <= set(
        body["engine"])
    assert isinstance(body["stream_steps"], int)
    assert body["rate_limit"] == {"storage": "memory", "shared": False}


def test_errors_are_one_line_json(client):
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert response.get_json()["error"].startswith("Not Found:")
    response = client.post("/api/health")
    assert response.status_code == 405
    assert "Method Not Allowed" in response.get_json()["error"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/api/generate", {"POST", "OPTIONS"}),  # not the web page's catch-all 404
    ("GET", "/api/autocomplete", {"POST", "OPTIONS"}),
    ("TRACE", "/api/autocomplete", {"POST", "OPTIONS"}),
    ("DELETE", "/api/health", {"GET", "HEAD", "OPTIONS"}),
    ("POST", "/api/generate/stream", {"GET", "HEAD", "OPTIONS"}),
])
def test_a_method_a_route_does_not_take_is_405_with_allow(client, method, path, allowed):
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == allowed  # RFC 9110 requires it
    assert response.get_json()["error"].startswith("Method Not Allowed")


def test_generate_completes_the_prefix_with_n_candidates(client, tiny_model):
    response = client.post("/api/generate", json={"prefix": "Make America ", "n": 3,
                                                  "temperature": 0.8, "seed": 7})
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"] == {"name": tiny_model.name, "version": tiny_model.version}
    assert body["seed"] == 7 and body["parameters"]["n"] == 3
    assert len(body["completions"]) == 3
    for completion in body["completions"]:
        assert completion["text"] == completion["prefix"] + completion["generated"]
        assert completion["text"].startswith("Make America ")
        assert len(completion["text"]) <= 280 and completion["log_prob"] < 0
        assert isinstance(completion["novelty"]["longest_shared"], int)
        assert isinstance(completion["novelty"]["near_copy"], bool)


def test_the_same_seed_reproduces_and_the_seed_used_is_returned(client):
    first = client.post("/api/generate", json={"prefix": "The ", "n": 2}).get_json()
    again = client.post("/api/generate", json={"prefix": "The ", "n": 2,
                                               "seed": first["seed"]}).get_json()
    assert again["completions"] == first["completions"]


@pytest.mark.parametrize(("body", "message"), [
    ({"prefix": 5}, "prefix must be a string of at most 200 characters, not 5"),
    ({"prefix": "x" * 201}, "prefix is 201 characters long; it must be at most 200"),
    ({"temperature": 0}, "temperature must be a number above 0 and at most 2.0, not 0"),
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"temperature": True}, "temperature must be a number"),
    ({"n": 0}, "n must be a whole number at least 1 and at most 16, not 0"),
    ({"n": 17}, "n must be a whole number at least 1 and at most 16, not 17"),
    ({"n": 2.5}, "n must be a whole number"),
    ({"n": 2.0}, "n must be a whole number"),  # as its schema says: an integer
    ({"top_p": 1.5}, "top_p must be a number above 0 and at most 1.0"),
    ({"top_k": -1}, "top_k must be a whole number at least 0"),
    ({"seed": -3}, "seed must be a whole number at least 0"),
    ({"max_length": 281}, "max_length must be a whole number at least 1 and at most 280"),
    ({"colour": "red"}, "unknown field 'colour'; the fields are prefix, temperature"),
    ({"seed": 10**400}, "seed must be a whole number at least 0"),  # no OverflowError
    ({"temperature": -(10**400)}, "temperature must be a number above 0"),
    ({"n": 1e308 * 10}, "n must be a whole number"),  # Infinity, as Python's JSON writes it
    ([1, 2], "the request body must be a JSON object"),
])
def test_bad_generate_requests_are_400_naming_the_field(client, body, message):
    response = client.post("/api/generate", json=body)
    assert response.status_code == 400
    error = response.get_json()
    assert message in error["error"]
    # The field to blame, for a form to show the message beside it (none for the whole body).
    named = next((name for name in body if isinstance(body, dict)), None)
    assert error.get("field") == (None if named == "colour" else named)


@pytest.mark.parametrize(("data", "content_type", "status", "message"), [
    ("{not json", "application/json", 400, "the request body is not valid JSON"),
    ("[" * 1000 + "]" * 1000, "application/json", 400, "the request body is not valid JSON"),
    ('{"prefix": ' + "[" * 5000 + "]" * 5000 + "}", "application/json", 400,
     "the request body is not valid JSON"),  # nested too deep: no RecursionError
    ('{"temperature": ' + "9" * 400 + "}", "application/json", 400,
     "temperature must be a number above 0 and at most 2.0"),
    ("prefix=x", "application/x-www-form-urlencoded", 400, "Content-Type: application/json"),
    ('{"prefix": "' + "x" * 20000 + '"}', "application/json", 413, "Request Entity Too Large"),
])
def test_malformed_bodies_are_4xx_json(client, data, content_type, status, message):
    response = client.post("/api/generate", data=data, content_type=content_type)
    assert response.status_code == status
    assert message in response.get_json()["error"]


NOT_WHOLE_TEXT = "is not whole UTF-8 text"


@pytest.fixture
def own_client(app):
    """A test client with an address of its own: its requests do not spend the rate-limit
    budget of `client`'s address, which the tests below it count on."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "192.0.2.30"
    return client


@pytest.mark.parametrize(("route", "data", "field"), [
    ("/api/generate", b'{"prefix": "\\ud800"}', "prefix"),  # a JSON escape: half a character
    ("/api/generate", b'{"prefix": "ab\\udfffc"}', "prefix"),
    ("/api/generate", b'{"prefix": "\xed\xa0\x80"}', "prefix"),  # the same, as raw bytes
    ("/api/generate", b'{"prefix": "caf\xe9"}', "prefix"),  # Latin-1, not UTF-8
    ("/api/autocomplete", b'{"beginningOfTweet": "\\udfff"}', "beginningOfTweet"),
    ("/api/autocomplete", b'{"beginningOfTweet": "\xff"}', "beginningOfTweet"),
])
def test_text_that_is_not_whole_utf8_is_400_naming_the_field(own_client, route, data, field):
    response = own_client.post(route, data=data, content_type="application/json")
    assert response.status_code == 400, response.data
    assert NOT_WHOLE_TEXT in response.get_json()["error"]
    assert response.get_json()["field"] == field


@pytest.mark.parametrize(("query", "field"), [
    ("prefix=%FF", "prefix"),  # Werkzeug keeps it as the literal text "%FF"
    ("prefix=%ED%A0%80", "prefix"),  # a surrogate in UTF-8's shape
    ("prefix=ab%C3", "prefix"),  # a character cut short
])
def test_a_query_that_is_not_whole_utf8_is_400_naming_the_field(own_client, query, field):
    response = own_client.get(f"/api/generate/stream?{query}")
    assert response.status_code == 400, response.data
    assert "is not UTF-8 text" in response.get_json()["error"]
    assert response.get_json()["field"] == field


def test_a_utf16_body_is_not_json(own_client):
    # json.loads detects UTF-16 and UTF-32 in bytes; JSON on the wire is UTF-8 (RFC 8259).
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        response = own_client.post("/api/generate", content_type="application/json",
                                   data='{"prefix": "Make "}'.encode(encoding))
        assert response.status_code == 400
        assert response.get_json()["error"] == "the request body is not valid JSON"


def test_options_answers_no_content_not_an_html_page(own_client):
    response = own_client.options("/api/generate")
    assert response.status_code == 204 and not response.data
    assert "Content-Type" not in response.headers
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


def test_v2_autocomplete_keeps_its_contract(client):
    response = client.post("/api/autocomplete",
                           json={"beginningOfTweet": "Crooked ", "temperature": 0.5})
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"beginningOfTweet", "temperature", "autocompletedTweet", "timestamp",
                         "unknownCharacters"}
    assert body["beginningOfTweet"] == "Crooked " and body["temperature"] == 0.5
    assert body["autocompletedTweet"].startswith("Crooked ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", body["timestamp"])
    default = client.post("/api/autocomplete", json={"beginningOfTweet": ""}).get_json()
    assert default["temperature"] == 1.0
    # v2 took temperature 0 (the likeliest character each time) and ignored unknown fields.
    greedy = [client.post("/api/autocomplete", json={"beginningOfTweet": "The ",
                                                     "temperature": 0, "colour": "red"})
              for _ in range(2)]
    assert [r.status_code for r in greedy] == [200, 200]
    assert greedy[0].get_json()["temperature"] == 0
    assert greedy[0].get_json()["autocompletedTweet"] == greedy[1].get_json()[
        "autocompletedTweet"]


@pytest.mark.parametrize(("body", "field", "message"), [
    ({}, "beginningOfTweet", "beginningOfTweet is required"),
    ({"beginningOfTweet": None}, "beginningOfTweet", "beginningOfTweet is required"),
    ({"beginningOfTweet": "x" * 51}, "beginningOfTweet", "it must be at most 50"),
    ({"beginningOfTweet": "x", "temperature": 1.3}, "temperature", "at most 1.2"),
    ({"beginningOfTweet": "x", "temperature": None}, "temperature", "not None"),  # not in v2
    ({"beginningOfTweet": "x", "temperature": 10**400}, "temperature", "at most 1.2"),
])
def test_bad_v2_requests_are_400(client, body, field, message):
    response = client.post("/api/autocomplete", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["error"] and response.get_json()["field"] == field


UNKNOWN_PREFIX = "I <3 Ärzte 中 "  # none of these in the tiny model's vocabulary


def test_a_prefix_with_unknown_characters_completes_on_every_route(client, tiny_model):
    vocabulary = tiny_model.vocabulary
    unknown = sorted({char for char in UNKNOWN_PREFIX if char not in vocabulary})
    assert {"<", "Ä", "中"} <= set(unknown)
    posted = client.post("/api/generate", json={"prefix": UNKNOWN_PREFIX, "n": 2, "seed": 4})
    assert posted.status_code == 200
    for completion in posted.get_json()["completions"]:
        assert completion["text"].startswith(UNKNOWN_PREFIX)  # the user's own characters
        assert completion["unknown"] == unknown and "\ufffd" not in completion["generated"]
    streamed = client.get("/api/generate/stream",
                          query_string={"prefix": UNKNOWN_PREFIX, "n": "2", "seed": "4"})
    events = parse_events(streamed.get_data(as_text=True))
    assert events[0] == ("prefix", {"prefix": UNKNOWN_PREFIX, "seed": 4, "unknown": unknown})
    assert events[-1][1]["completions"] == posted.get_json()["completions"]
    v2 = client.post("/api/autocomplete", json={"beginningOfTweet": UNKNOWN_PREFIX})
    assert v2.status_code == 200
    assert v2.get_json()["autocompletedTweet"].startswith(UNKNOWN_PREFIX)
    assert v2.get_json()["unknownCharacters"] == unknown
    only = client.post("/api/generate", json={"prefix": "中中", "seed": 1})
    assert only.status_code == 200  # nothing but unknown characters: still an answer
    assert only.get_json()["completions"][0]["text"].startswith("中中")


def test_cors_is_answered_for_configured_origins_only(client):
    preflight = client.options("/api/autocomplete", headers={
        "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
    other = client.options("/api/autocomplete", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_model_card_has_metrics_and_baseline(client, tiny_model):
    card = client.get("/api/model").get_json()
    assert card["version"] == tiny_model.version
    assert card["metrics"]["validation_bits_per_char"] > 0
    assert card["metrics"]["baseline"]["name"].startswith("kneser-ney")
    assert "files" not in card


def test_a_missing_model_stops_the_worker_with_a_clear_message(tmp_path):
    from serve import create_app

    with pytest.raises(SystemExit, match="model artifact .* does not exist"):
        create_app({"MODEL_DIR": str(tmp_path / "none")})


def parse_events(text: str) -> list[tuple[str, dict]]:
    import json

    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events


def test_the_stream_sends_characters_as_they_come_then_the_result(client):
    query = {"prefix": "Make ", "n": "2", "seed": "11", "temperature": "0.9"}
    response = client.get("/api/generate/stream", query_string=query)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = parse_events(response.get_data(as_text=True))
    assert events[0] == ("prefix", {"prefix": "Make ", "seed": 11, "unknown": []})
    kind, result = events[-1]
    assert kind == "done"
    steps = [data["chars"] for kind, data in events[1:-1]]
    assert steps and all(kind == "message" for kind, _ in events[1:-1])
    for candidate, completion in enumerate(result["completions"]):
        streamed = "".join(step[candidate] for step in steps)
        assert completion["text"] == "Make " + streamed
    posted = client.post("/api/generate", json={"prefix": "Make ", "n": 2, "seed": 11,
                                                "temperature": 0.9}).get_json()
    assert posted["completions"] == result["completions"]


@pytest.mark.parametrize(("query", "message"), [
    ({"n": "many"}, "n must be a whole number at least 1 and at most 16, not 'many'"),
    ({"temperature": "-1"}, "temperature must be a number above 0"),
    ({"mood": "angry"}, "unknown parameter 'mood'"),
    ({"seed": "9" * 400}, "seed must be a whole number"),  # no OverflowError
    ({"temperature": "9" * 400}, "temperature must be a number"),
    ({"n": "1_6"}, "n must be a whole number"),  # int() would take it
    ({"n": "\uff11\uff16"}, "n must be a whole number"),  # full-width digits
    ({"temperature": "nan"}, "temperature must be a number"),
])
def test_bad_stream_requests_are_400_before_streaming(client, query, message):
    response = client.get("/api/generate/stream", query_string=query)
    assert response.status_code == 400 and message in response.get_json()["error"]


def test_a_client_over_the_rate_limit_gets_429(tiny_model):
    from serve import create_app

    client = create_app({"TESTING": True, "MODEL_DIR": str(tiny_model.path),
                         "RATE_LIMIT": "3 per minute"}).test_client()
    statuses = [client.post("/api/generate", json={"max_length": 5}).status_code
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.post("/api/generate", json={})
    assert response.status_code == 429
    assert response.get_json()["error"].startswith("Too Many Requests: 3 per 1 minute")
    assert 0 < int(response.headers["Retry-After"]) <= 60 + 2  # the window, then spread
    other_client = client.post("/api/generate", json={"max_length": 5},
                               environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other_client.status_code == 200
    assert client.get("/api/health").status_code == 200  # never limited


@pytest.mark.parametrize("proxies, expected", [(0, [200, 429]), (1, [200, 200])])
def test_behind_a_proxy_the_rate_limit_counts_the_forwarded_client(tiny_model, proxies,
                                                                    expected):
    from serve import create_app

    client = create_app({"TESTING": True, "MODEL_DIR": str(tiny_model.path),
                         "RATE_LIMIT": "1 per minute", "PROXIES": proxies}).test_client()
    statuses = [client.post("/api/generate", json={"max_length": 5},
                            headers={"X-Forwarded-For": address},
                            environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code
                for address in ("203.0.113.1", "203.0.113.2")]
    # With no trusted proxy, both requests come from nginx's address and share one budget;
    # with one, each forwarded client has its own.
    assert statuses == expected


def test_a_bad_proxies_setting_stops_the_app_with_a_clear_message(tiny_model):
    from serve import create_app

    with pytest.raises(SystemExit, match="COVFEFE_PROXIES is 'nginx'; it must be a whole number"):
        create_app({"MODEL_DIR": str(tiny_model.path), "PROXIES": "nginx"})


def test_the_openapi_document_describes_every_route_and_field(app, client):
    from serve.api import AUTOCOMPLETE_FIELDS, GENERATE_FIELDS

    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    routes = {(rule.rule, method.lower()) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/api/") for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == routes
    generate = document["paths"]["/api/generate"]["post"]
    schema = generate["requestBody"]["content"]["application/json"]["schema"]
    assert list(schema["properties"]) == list(GENERATE_FIELDS)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["n"] == {"type": "integer", "minimum": 1, "maximum": 16,
                                         "default": 1, "nullable": True}  # null: the default
    temperature = schema["properties"]["temperature"]
    assert temperature["minimum"] == 0 and temperature["exclusiveMinimum"] is True  # 3.0 style
    v2 = document["paths"]["/api/autocomplete"]["post"]["requestBody"]["content"]
    assert v2["application/json"]["schema"]["required"] == list(
        name for name, field in AUTOCOMPLETE_FIELDS.items() if field.required)
    assert {"400", "413", "429"} <= set(generate["responses"])


def test_each_request_is_logged_as_one_json_line(client, caplog):
    import json
    import logging

    from serve import access_log

    access_log.propagate = True  # let caplog see it for this test
    try:
        with caplog.at_level(logging.INFO, logger="covfefe.access"):
            client.post("/api/generate", json={"n": 0}, headers={"User-Agent": "pytest"})
    finally:
        access_log.propagate = False
    entries = [json.loads(r.getMessage()) for r in caplog.records if r.name == "covfefe.access"]
    entry = entries[-1]
    assert entry["method"] == "POST" and entry["path"] == "/api/generate"
    assert entry["status"] == 400 and entry["ms"] >= 0 and entry["agent"] == "pytest"


def test_the_web_page_and_its_files_are_served_beside_the_api(client):
    with client.get("/") as page:  # files are streamed: close them
        assert page.status_code == 200 and page.mimetype == "text/html"
        assert b'<script type="module" src="js/main.js">' in page.data
    with client.get("/js/main.js") as script:
        assert script.status_code == 200 and "javascript" in script.mimetype
    for path in ("/../covfefe/cli.py", "/js/../../serve/api.py", "/missing.js"):
        response = client.get(path)
        assert response.status_code == 404 and "error" in response.get_json()
    assert client.get("/api/nothing").get_json()["error"].startswith("Not Found")


def test_a_webapp_dir_without_a_page_stops_the_app(tiny_model, tmp_path):
    from serve import create_app

    with pytest.raises(SystemExit, match="has no index.html"):
        create_app({"MODEL_DIR": str(tiny_model.path), "WEBAPP_DIR": str(tmp_path)})


def test_a_worker_runs_numpy_on_one_blas_thread(app):
    # Several requests at once in a worker, each product on every core, collapsed throughput
    # (bench/load.py: 1.6 requests/s instead of 30).
    from threadpoolctl import threadpool_info

    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert pools and all(pool["num_threads"] == 1 for pool in pools)


def test_a_bad_blas_threads_setting_stops_the_app(tiny_model):
    from serve import create_app

    with pytest.raises(SystemExit, match="COVFEFE_BLAS_THREADS is 'many'; it must be a whole num"):
        create_app({"MODEL_DIR": str(tiny_model.path), "BLAS_THREADS": "many"})


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ENGINE_ROWS", "abc", "COVFEFE_ENGINE_ROWS is 'abc'; it must be a whole number from 16"),
    # Flask-Limiter only logged an error on every request, and limited nothing.
    ("RATE_LIMIT", "lots", "COVFEFE_RATE_LIMIT is 'lots'; it must be a rate limit such as "
                           "'60 per minute'"),
    ("ENGINE", "maybe", "COVFEFE_ENGINE is 'maybe'; it must be on or off"),
    ("CORS_ORIGINS", "www.example.org", "COVFEFE_CORS_ORIGINS is 'www.example.org'; it must be "
                                        "origins"),
    ("RATELIMIT_STORAGE_URI", "redis:6379", "COVFEFE_RATELIMIT_STORAGE_URI is 'redis:6379'; it"),
])
def test_a_bad_setting_stops_the_app_in_one_sentence(tiny_model, name, value, message):
    from serve import create_app

    with pytest.raises(SystemExit, match=re.escape(message)) as stopped:
        create_app({"MODEL_DIR": str(tiny_model.path), name: value})
    assert str(stopped.value.code).startswith("covfefe serve: ")
    assert "\n" not in stopped.value.code


def test_every_setting_is_read_and_a_name_nothing_reads_is_refused():
    from covfefe import config

    settings = config.serve_settings({"COVFEFE_WORKERS": "3", "COVFEFE_ENGINE": "off",
                                      "COVFEFE_RATE_LIMIT": "5/second", "COVFEFE_HOME": "/x"})
    assert settings["WORKERS"] == 3 and settings["ENGINE"] is False
    assert settings["RATE_LIMIT"] == "5/second"
    assert settings["ENGINE_ROWS"] == config.ENGINE_ROWS  # the defaults for the rest
    with pytest.raises(config.SettingError, match="COVFEFE_RATE_LIMT is not a setting; did "
                                                  "you mean COVFEFE_RATE_LIMIT?"):
        config.serve_settings({"COVFEFE_RATE_LIMT": "5/second"})


def test_the_generating_routes_share_one_budget_per_client(tiny_model):
    from serve import create_app

    client = create_app({"TESTING": True, "MODEL_DIR": str(tiny_model.path),
                         "RATE_LIMIT": "3 per minute"}).test_client()
    calls = [lambda: client.post("/api/generate", json={"max_length": 5}),
             lambda: client.get("/api/generate/stream", query_string={"max_length": "5"}),
             lambda: client.post("/api/autocomplete", json={"beginningOfTweet": "x"})]
    answers = [call() for call in calls]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    # Retry-After belongs to a 429 (the X-RateLimit headers say where the budget stands).
    assert all("Retry-After" not in answer.headers for answer in answers)
    assert [answers[-1].headers[name] for name in ("X-RateLimit-Limit",
                                                   "X-RateLimit-Remaining")] == ["3", "0"]
    refused = [call() for call in calls]  # the budget is spent, whichever the route
    assert [answer.status_code for answer in refused] == [429, 429, 429]
    assert all(int(answer.headers["Retry-After"]) > 0 for answer in refused)


def test_the_in_memory_limit_expires_with_one_sweeper_not_a_thread_per_request(tiny_model,
                                                                              monkeypatch):
    import threading
    import time

    from serve import create_app, ratelimit

    started = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start",
                        lambda thread: (started.append(thread), start(thread))[1])
    monkeypatch.setattr(ratelimit, "SWEEP_S", 0.2)
    app = create_app({"TESTING": True, "MODEL_DIR": str(tiny_model.path),
                      "RATE_LIMIT": "3 per 2 seconds"})
    client, storage = app.test_client(), app.extensions["covfefe.limiter"].storage
    assert isinstance(storage, ratelimit.SweptMemoryStorage)  # memory:// is the swept store
    started.clear()
    statuses = [client.post("/api/generate", json={"max_length": 3}).status_code
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    # limits' own store starts a threading.Timer on nearly every hit; this one, one sweeper.
    limiter_threads = [thread for thread in started if not thread.name.startswith("covfefe-engine")]
    assert [thread.name for thread in limiter_threads] == ["covfefe-ratelimit-sweeper"]
    assert storage.counters  # the client's counter, until its window ends
    deadline = time.monotonic() + 10
    while storage.counters and time.monotonic() < deadline:  # swept once expired, unread
        time.sleep(0.1)
    assert not storage.counters
    assert client.post("/api/generate", json={"max_length": 3}).status_code == 200  # a new window


def test_the_in_memory_store_counts_fixed_windows_on_limits_public_storage_base(monkeypatch):
    import time

    from limits import parse
    from limits.storage import MemoryStorage, Storage, storage_from_string
    from limits.strategies import FixedWindowRateLimiter

    from serve import ratelimit

    storage = storage_from_string("memory://")
    assert isinstance(storage, ratelimit.SweptMemoryStorage)
    assert isinstance(storage, Storage) and not isinstance(storage, MemoryStorage)
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    limiter, limit = FixedWindowRateLimiter(storage), parse("2 per 10 seconds")
    assert [limiter.hit(limit, "generate", "a") for _ in range(3)] == [True, True, False]
    assert limiter.hit(limit, "generate", "b")  # each client counts on its own
    assert limiter.get_window_stats(limit, "generate", "a") == (1010.0, 0)
    now[0] = 1010.0  # the window has ended
    assert limiter.get_window_stats(limit, "generate", "a") == (1010.0, 2)
    assert limiter.hit(limit, "generate", "a")
    limiter.clear(limit, "generate", "a")
    assert limiter.get_window_stats(limit, "generate", "a").remaining == 2
    assert storage.reset() == 1  # b's counter


def test_every_setting_of_the_api_is_documented():
    from covfefe import config
    from tests.helpers import ROOT

    text = (ROOT / "deploy" / "README.md").read_text()
    missing = [name for name in config.SERVE_SETTINGS if f"`COVFEFE_{name}`" not in text]
    assert not missing, missing

"""The API blueprint: routes under ``/api``.

- ``POST /api/generate``: complete a prefix (JSON in, JSON out).
- ``GET /api/generate/stream``: the same, as server-sent events, character by character.
- ``POST /api/autocomplete``: the covfefe-flow v2 API, for its existing clients.
- ``GET /api/model``: the model card. ``GET /api/health``: liveness.
- ``GET /api/openapi.json``: the OpenAPI 3 document of all of these.
"""

import json
import secrets
from datetime import UTC, datetime
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context

from covfefe import __version__
from covfefe.errors import UserError
from covfefe.novelty import is_near_copy
from covfefe.text import MAX_TWEET_CHARS
from serve.validation import Field, RequestError, read_json, read_query

api = Blueprint("api", __name__, url_prefix="/api")

# The routes that run the model, rate-limited per client (serve.create_app applies the limit).
LIMITED_ENDPOINTS = ("api.generate", "api.generate_stream", "api.autocomplete")
MAX_CANDIDATES = 16
MAX_PREFIX = 200
MAX_SEED = 2**32 - 1
V2_MAX_PREFIX = 50

GENERATE_FIELDS = {
    "prefix": Field(str, default="", max_length=MAX_PREFIX),
    "temperature": Field(float, default=1.0, low=0, low_open=True, high=2.0),
    "top_k": Field(int, default=0, low=0, high=1000),
    "top_p": Field(float, default=1.0, low=0, low_open=True, high=1.0),
    "n": Field(int, default=1, low=1, high=MAX_CANDIDATES),
    "seed": Field(int, default=None, low=0, high=MAX_SEED),
    "max_length": Field(int, default=MAX_TWEET_CHARS, low=1, high=MAX_TWEET_CHARS),
}
AUTOCOMPLETE_FIELDS = {
    "beginningOfTweet": Field(str, required=True, max_length=V2_MAX_PREFIX),
    "temperature": Field(float, default=1.0, low=0, low_open=True, high=1.2),
}


def generator():
    return current_app.extensions["covfefe.generator"]


def _stream(values: dict):
    """Return the generation stream (arguments checked) and the seed it uses."""
    seed = values["seed"] if values["seed"] is not None else secrets.randbelow(MAX_SEED + 1)
    try:
        stream = generator().stream(
            values["prefix"], temperature=values["temperature"], n=values["n"],
            max_length=values["max_length"], seed=seed, top_k=values["top_k"],
            top_p=values["top_p"])
    except UserError as error:  # the prefix: characters the model cannot write, or too long
        # (the generator's other check, temperature > 0, is the field's own bound above)
        raise RequestError(str(error), "prefix") from None
    return stream, seed


def _complete(values: dict) -> tuple[list, int]:
    stream, seed = _stream(values)
    return dict(stream)["done"], seed


def _result(values: dict, seed: int, completions: list) -> dict:
    model = current_app.extensions["covfefe.artifact"]
    return {"model": {"name": model.name, "version": model.version},
            "parameters": {**values, "seed": seed}, "seed": seed,
            "completions": [_completion_json(c) for c in completions]}


def _completion_json(completion) -> dict:
    return {
        "text": completion.text, "prefix": completion.prefix,
        "generated": completion.generated, "log_prob": round(completion.log_prob, 4),
        "finished": completion.finished,
        "novelty": {"longest_shared": completion.longest_shared,
                    "near_copy": is_near_copy(completion.longest_shared, completion.text)},
    }


@api.post("/generate")
def generate():
    """Complete a prefix: n candidates, with their log-probability and novelty."""
    values = read_json(request, GENERATE_FIELDS)
    completions, seed = _complete(values)
    return jsonify(_result(values, seed, completions))


def _event(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


@api.get("/generate/stream")
def generate_stream():
    """Server-sent events: ``prefix``, then one message per step with each candidate's new
    character ("" once it has ended), then ``done`` with the same result as POST /generate."""
    values = read_query(request, GENERATE_FIELDS)
    stream, seed = _stream(values)

    def events():
        for kind, value in stream:
            if kind == "prefix":
                yield _event({"prefix": value, "seed": seed}, "prefix")
            elif kind == "chars":
                yield _event({"chars": value})
            else:
                yield _event(_result(values, seed, value), "done")

    return Response(stream_with_context(events()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@api.post("/autocomplete")
def autocomplete():
    """The covfefe-flow v2 route: one completion of ``beginningOfTweet``."""
    values = read_json(request, AUTOCOMPLETE_FIELDS)
    (completion,), _ = _complete({**{name: field.default
                                      for name, field in GENERATE_FIELDS.items()},
                                   "prefix": values["beginningOfTweet"],
                                   "temperature": values["temperature"]})
    return jsonify(beginningOfTweet=values["beginningOfTweet"],
                   temperature=values["temperature"], autocompletedTweet=completion.text,
                   timestamp=datetime.now(UTC).isoformat(timespec="seconds"))


@api.get("/model")
def model_card():
    """The model card: name, version, parameters, data and metrics."""
    metadata = dict(current_app.extensions["covfefe.artifact"].metadata)
    metadata.pop("files", None)
    return jsonify(metadata)


@api.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document, built from the same field definitions as the validation."""
    from serve.openapi import openapi_document

    return jsonify(openapi_document(GENERATE_FIELDS, AUTOCOMPLETE_FIELDS))


def _rate_limit_store() -> dict:
    """Where this worker counts the rate limit: the shared store (Redis), or its own memory
    (the default, or the fallback while the shared store does not answer a ping)."""
    kind = urlsplit(current_app.config["RATELIMIT_STORAGE_URI"]).scheme
    if kind == "memory":
        return {"storage": "memory", "shared": False}
    if current_app.extensions["covfefe.limiter"].storage.check():
        return {"storage": kind, "shared": True}
    return {"storage": kind, "shared": False, "fallback": "memory",
            "error": f"the rate-limit store ({kind}) is unreachable: each worker counts on its "
                     "own until it answers again"}


@api.get("/health")
def health():
    """Report that the worker is up, which version of covfefe it runs, and where it counts the
    rate limit ("degraded" while the shared store is unreachable; it still serves)."""
    store = _rate_limit_store()
    return jsonify(status="degraded" if "fallback" in store else "ok", version=__version__,
                   rate_limit=store)

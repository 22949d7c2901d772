"""The OpenAPI 3 document of the API, built from the same field definitions that validate
requests, so the two cannot drift apart."""

from covfefe import __version__
from serve.validation import Field


def field_schema(field: Field) -> dict:
    """Return the JSON schema of one request field."""
    if field.kind is str:
        schema = {"type": "string", "maxLength": field.max_length}
    else:
        schema = {"type": "integer" if field.kind is int else "number"}
        if field.low is not None:
            schema["minimum"] = field.low
            if field.low_open:  # OpenAPI 3.0: a flag beside minimum (a number only from 3.1)
                schema["exclusiveMinimum"] = True
        if field.high is not None:
            schema["maximum"] = field.high
    if field.default is not None:
        schema["default"] = field.default
    return schema


def object_schema(fields: dict[str, Field], *, closed: bool = True) -> dict:
    """Return the JSON schema of a request body; an optional field may be null (its default)
    unless it says otherwise; ``closed``: other fields are refused (else ignored)."""
    properties = {}
    for name, field in fields.items():
        properties[name] = field_schema(field)
        if not field.required and field.nullable:
            properties[name]["nullable"] = True
    schema = {"type": "object", "additionalProperties": not closed, "properties": properties}
    required = [name for name, field in fields.items() if field.required]
    if required:
        schema["required"] = required
    return schema


ERROR = {"description": "a mistake in the request, named in one sentence",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _errors(*codes: int) -> dict:
    names = {400: "invalid request (the message names the field)", 413: "body too large",
             429: "rate limit reached (see Retry-After)",
             503: "the server is busy: its generation engine is full (see Retry-After)"}
    return {str(code): {**ERROR, "description": names[code]} for code in codes}


def openapi_document(generate_fields: dict, autocomplete_fields: dict) -> dict:
    """Return the OpenAPI 3.0 document of every route."""
    completion = {"type": "object", "properties": {
        "text": {"type": "string"}, "prefix": {"type": "string"},
        "generated": {"type": "string"}, "log_prob": {"type": "number"},
        "finished": {"type": "boolean", "description": "the model ended the tweet itself"},
        "unknown": {"type": "array", "items": {"type": "string"},
                    "description": "characters of the prefix the model does not know, read "
                                   "as its unknown symbol (kept in the text)"},
        "novelty": {"type": "object", "properties": {
            "longest_shared": {"type": "integer", "nullable": True,
                               "description": "longest run shared with a training tweet"},
            "near_copy": {"type": "boolean"}}}}}
    result = {"type": "object", "properties": {
        "model": {"type": "object", "properties": {"name": {"type": "string"},
                                                   "version": {"type": "string"}}},
        "parameters": {"type": "object"},
        "seed": {"type": "integer", "description": "pass it back to reproduce this result"},
        "completions": {"type": "array", "items": {"$ref": "#/components/schemas/Completion"}}}}
    json_body = {"required": True, "content": {"application/json": {"schema": None}}}
    query = [{"name": name, "in": "query", "required": field.required,
              "schema": field_schema(field)} for name, field in generate_fields.items()]
    ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "covfefe-flow API", "version": __version__,
                 "description": "Complete the beginning of a tweet in the style of the Trump "
                                "Twitter Archive. Every tweet it writes is a machine-made fake."},
        "paths": {
            "/api/generate": {"post": {
                "summary": "Complete a prefix: n candidates with log-probability and novelty",
                "requestBody": {**json_body, "content": {"application/json": {
                    "schema": object_schema(generate_fields)}}},
                "responses": {"200": {"description": "the completions", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Result"}}}},
                    **_errors(400, 413, 429, 503)}}},
            "/api/generate/stream": {"get": {
                "summary": "The same as server-sent events: 'prefix', one message per "
                           "character step ({chars: [...]}), then 'done' with the result",
                "parameters": query,
                "responses": {"200": {"description": "an event stream", "content": {
                    # OpenAPI 3.0: the schema of an event stream describes each event.
                    "text/event-stream": {"schema": {
                        "type": "object", "required": ["data"], "properties": {
                            "event": {"type": "string", "description":
                                      "'prefix' first, 'done' last; none on the steps"},
                            "data": {"type": "string", "description":
                                     "JSON: {prefix, seed, unknown}; then {chars: [one "
                                     "string per candidate]} per step; then, for 'done', the same "
                                     "object as POST /api/generate returns"}}}}}},
                    **_errors(400, 429, 503)}}},
            "/api/autocomplete": {"post": {
                "summary": "covfefe-flow v2: one completion of beginningOfTweet",
                "requestBody": {**json_body, "content": {"application/json": {
                    "schema": object_schema(autocomplete_fields, closed=False)}}},
                "responses": {"200": {"description": "the completion", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "beginningOfTweet": {"type": "string"},
                        "temperature": {"type": "number"},
                        "autocompletedTweet": {"type": "string"},
                        "timestamp": {"type": "string", "format": "date-time"},
                        "unknownCharacters": {"type": "array", "items": {"type": "string"},
                                              "description": "characters of the prefix read "
                                                             "as the unknown symbol"}}}}}},
                    **_errors(400, 413, 429, 503)}}},
            "/api/model": {"get": {"summary": "The model card: metadata, metrics, baseline",
                                   "responses": {"200": ok}}},
            "/api/health": {"get": {
                "summary": "Liveness, version, the model served (name and version), the "
                           "character steps this worker's streams "
                           "generated, the engine's state, and where the rate limit is counted "
                           "(status 'degraded' while the shared store is unreachable)",
                "responses": {"200": ok}}},
            "/api/openapi.json": {"get": {"summary": "This document",
                                          "responses": {"200": ok}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"},
                                     "field": {"type": "string", "description":
                                               "the request field the error is about"}}},
            "Completion": completion, "Result": result}},
    }

"""An OpenAPI fuzz run: schemathesis generates requests from /api/openapi.json, valid and
invalid, against the real app with the tiny trained model; no request may get a server error,
and every response must match the document."""

import pytest
import schemathesis
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from tests.helpers import ALLOWED_ORIGIN, call_generated_requests

MIN_REQUESTS = 1000
EXAMPLES = 200  # per operation and mode: Hypothesis stops early where little can vary


@pytest.fixture(scope="module")
def fuzz_schema(tiny_model):
    from serve import create_app

    app = create_app({"TESTING": True, "MODEL_DIR": str(tiny_model.path),
                      "CORS_ORIGINS": [ALLOWED_ORIGIN], "RATE_LIMIT": "1000000 per minute"})
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


def extreme_cases(schema):
    """Examples that Hypothesis rarely reaches and that once got 500s: integers of 400 digits
    (OverflowError on the way to a float) in JSON and in the query, and JSON nested deeper
    than the parser's recursion limit."""
    generate = schema["/api/generate"]["POST"]
    stream = schema["/api/generate/stream"]["GET"]
    autocomplete = schema["/api/autocomplete"]["POST"]
    huge = 10**400
    json_body = "application/json"
    yield generate.Case(body={"seed": huge}, media_type=json_body), {}
    yield generate.Case(body={"temperature": huge}, media_type=json_body), {}
    yield autocomplete.Case(body={"beginningOfTweet": "x", "temperature": huge},
                            media_type=json_body), {}
    yield stream.Case(query={"seed": str(huge)}), {}
    yield stream.Case(query={"temperature": str(huge)}), {}
    yield stream.Case(query={"n": "1_6"}), {}
    # Sent as text: Python's own JSON writer would hit its recursion limit first.
    deep = '{"prefix": ' + "[" * 5000 + "]" * 5000 + "}"
    yield generate.Case(body={}, media_type=json_body), {"data": deep}


def no_server_error(case, response) -> None:
    assert response.status_code < 500, (case.method, case.path, case.body, case.query,
                                        response.text)


def test_a_thousand_generated_requests_get_no_server_error(fuzz_schema):
    statuses: dict[int, int] = {}
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) >= 5  # generate, stream, autocomplete, model, health
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # Every other check runs (server errors, status codes, response schemas, content
            # types, negative data rejected). Not "schema-valid data is accepted": one limit
            # cannot be written in OpenAPI (the prefix must be shorter than max_length), and
            # those requests get a 400 naming the field, which test_serve checks.
            try:
                call_generated_requests(operation, mode, EXAMPLES, statuses,
                                        excluded_checks=[positive_data_acceptance],
                                        check=no_server_error)
            except Unsatisfiable:  # no parameters and no body: nothing to make invalid
                assert mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET"
    for case, raw in extreme_cases(fuzz_schema):
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance], **raw)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code == 400, (case.path, case.body, case.query, response.text)
        assert response.json()["error"], response.text
    total = sum(statuses.values())
    print(f"fuzz: {total} requests, statuses {dict(sorted(statuses.items()))}")
    assert total >= MIN_REQUESTS, statuses
    assert statuses.get(200, 0) > 100 and statuses.get(400, 0) > 100, statuses

"""covfefe-flow v2's clients: schemathesis runs v2's own /autocomplete contract
(tests/contracts/v2-autocomplete.openapi.yaml) against this API, valid and invalid requests. Every
request v2 accepted must be accepted here, every invalid one refused, every answer must match
v2's response schema. Only 4xx statuses that v2 never documented are set aside."""

from pathlib import Path

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import status_code_conformance

from tests.helpers import call_generated_requests

CONTRACT = Path(__file__).parent / "contracts" / "v2-autocomplete.openapi.yaml"
EXAMPLES = 150  # per mode


@pytest.fixture(scope="module")
def v2_schema(tiny_model):
    from serve import create_app

    schema = schemathesis.openapi.from_path(CONTRACT)
    schema.app = create_app({"TESTING": True, "MODEL_DIR": str(tiny_model.path),
                             "RATE_LIMIT": "1000000 per minute"})
    return schema


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_v2_clients_get_what_v2_promised(v2_schema, mode):
    (operation,) = [result.ok() for result in v2_schema.get_all_operations()]
    statuses: dict[int, int] = {}

    call_generated_requests(operation, mode, EXAMPLES, statuses,
                            excluded_checks=[status_code_conformance])
    print(f"v2 contract, {mode.value}: statuses {dict(sorted(statuses.items()))}")
    if mode == GenerationMode.POSITIVE:
        assert statuses.get(200, 0) >= EXAMPLES // 2, statuses
    else:
        assert statuses.get(400, 0) >= EXAMPLES // 2, statuses

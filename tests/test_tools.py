"""Tests that need a system tool skip without it, unless COVFEFE_REQUIRE_ALL=1 makes that fail."""

import re

import pytest

from tests.helpers import ROOT

_TEST = """
from helpers import require_tool

def test_needs_a_tool():
    require_tool("covfefe-no-such-tool")

def test_has_a_tool():
    assert require_tool("sh").endswith("sh")
"""


@pytest.fixture(autouse=True)
def only_the_plugins_named(monkeypatch):
    """The inner pytest runs load only the plugins their command line names: seconds instead
    of the dozen the environment installs (schemathesis, nbval, playwright...)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(helpers=(ROOT / "tests" / "helpers.py").read_text())
    pytester.makepyfile(test_tool=_TEST)
    return pytester


def test_missing_tool_is_skipped_with_a_printed_reason(suite, monkeypatch):
    monkeypatch.delenv("COVFEFE_REQUIRE_ALL", raising=False)
    result = suite.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*system tool 'covfefe-no-such-tool' is not installed*"])


def test_missing_tool_fails_when_every_tool_is_required(suite, monkeypatch):
    monkeypatch.setenv("COVFEFE_REQUIRE_ALL", "1")
    result = suite.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*COVFEFE_REQUIRE_ALL=1 requires every tool*"])


_SKIPS = """
import pytest

def test_skipped_in_the_body():
    pytest.skip("no such thing here")

@pytest.mark.skipif(True, reason="not on this machine")
def test_skipped_by_a_marker():
    pass
"""


@pytest.mark.parametrize(("require_all", "outcomes"), [
    ("0", {"skipped": 2}),
    ("1", {"failed": 1, "errors": 1}),  # the marker skips in set-up: an error there
])
def test_every_skip_fails_when_every_test_is_required(pytester, monkeypatch, require_all,
                                                      outcomes):
    """tests/conftest.py turns any skip into a failure under COVFEFE_REQUIRE_ALL=1."""
    monkeypatch.setenv("COVFEFE_REQUIRE_ALL", require_all)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_skips=_SKIPS)
    result = pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider")
    result.assert_outcomes(**outcomes)
    if require_all == "1":
        result.stdout.fnmatch_lines(["*COVFEFE_REQUIRE_ALL=1 runs every test: *no such thing*"])


def test_a_test_that_hangs_fails_at_its_time_limit(pytester, monkeypatch):
    """pytest-timeout is on (the dev extra) and ends a test that runs past its limit."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_hangs="import time\n\ndef test_hangs():\n    time.sleep(60)\n")
    result = pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "pytest_timeout",
                                           "-o", "timeout=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Timeout*"])


def test_the_docker_modules_share_one_worker_and_every_module_keeps_one(pytester, monkeypatch):
    """make test's pytest-xdist run (tests/conftest.py): the two Docker modules go to one
    worker, whose private dockerd and images they share, and each other module goes whole to
    one worker. (pytest 9.2's node ids made xdist's loadgroup group nothing, silently.) The
    lines the Docker fixtures report (image builds and sizes) reach the run's summary."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    tests = "\n\n".join(f"def test_{number}():\n    pass" for number in range(6))
    pytester.makepyfile(test_deploy_images=tests, test_swarm=tests, test_other=tests,
                        test_more="from tests.docker_engine import report\n\n" + tests.replace(
                            "()", "(request)").replace("pass", "report(request, 'made here')"))
    result = pytester.runpytest_subprocess(
        "-p", "tests.conftest", "-p", "xdist", "-p", "no:cacheprovider", "-v",
        "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder")
    result.assert_outcomes(passed=24)
    assert result.outlines.count("[docker] made here") == 6
    workers: dict[str, set[str]] = {}
    for line in result.outlines:
        if match := re.match(r"\[(gw\d)\] .* PASSED (test_\w+)\.py::test_\d@(\w+)", line):
            worker, module, group = match.groups()
            assert group == ("docker" if module in ("test_deploy_images", "test_swarm")
                             else module)
            workers.setdefault(module, set()).add(worker)
    assert set(workers) == {"test_deploy_images", "test_swarm", "test_other", "test_more"}
    assert all(len(used) == 1 for used in workers.values()), workers
    assert workers["test_deploy_images"] == workers["test_swarm"]

"""Tests that need a system tool skip without it, unless COVFEFE_REQUIRE_ALL=1 makes that fail."""

import pytest

from tests.helpers import ROOT

_TEST = """
from helpers import require_tool

def test_needs_a_tool():
    require_tool("covfefe-no-such-tool")

def test_has_a_tool():
    assert require_tool("sh").endswith("sh")
"""


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

"""deploy/cloudflare_dns.py: the real `cloudflare` SDK against a local stand-in of the v4 API.

The script runs as the operator runs it (a subprocess with CLOUDFLARE_API_TOKEN in its
environment and --base-url pointing at tests/cloudflare_standin.py on 127.0.0.1); nothing leaves
the machine. Every run is checked for the token in its stdout and stderr.
"""

import os
import re
import secrets
import subprocess
import sys

import pytest
from cloudflare import Cloudflare, PermissionDeniedError

from tests.cloudflare_standin import ALL_PERMISSIONS, CloudflareStandin
from tests.helpers import ROOT

pytestmark = pytest.mark.network

SCRIPT = ROOT / "deploy" / "cloudflare_dns.py"
ZONE = "covfefe.example.org"
IP = "203.0.113.10"
OLD_IP = "198.51.100.7"
# More records than one page of the script's listing (100), so that pages are really followed.
FILLERS = 150
APEX, WWW, API = ZONE, f"www.{ZONE}", f"api.{ZONE}"
WANTED = {APEX: True, WWW: True, API: False}  # name -> proxied


@pytest.fixture
def token():
    """A fresh random token, so that finding it in any output means it leaked."""
    return "cf-test-" + secrets.token_urlsafe(30)


@pytest.fixture
def read_only_token():
    return "cf-read-" + secrets.token_urlsafe(30)


@pytest.fixture
def api(token, read_only_token):
    """The stand-in, holding our zone (with FILLERS unrelated records) and another zone."""
    with CloudflareStandin({token: ALL_PERMISSIONS,
                            read_only_token: {"zone:read", "dns:read"}}) as standin:
        standin.add_zone("other.example")
        standin.add_record("other.example", "www", "A", OLD_IP)
        standin.add_zone(ZONE)
        for i in range(FILLERS):
            if i % 2:
                standin.add_record(ZONE, f"host-{i:03d}", "A", f"198.51.100.{i}")
            else:
                standin.add_record(ZONE, f"host-{i:03d}", "TXT", f"filler {i}")
        yield standin


@pytest.fixture
def cli(api, token):
    """Run the script against the stand-in: cli(*args, token=..., env=...) -> CompletedProcess."""

    def run(*args, token=token, env=None):
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
        environ.update(DOMAIN=ZONE, NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        if token is not None:
            environ["CLOUDFLARE_API_TOKEN"] = token
        environ.update(env or {})
        result = subprocess.run([sys.executable, str(SCRIPT), "--base-url", api.base_url, *args],
                                env=environ, capture_output=True, text=True, timeout=60,
                                cwd=ROOT, check=False)
        for secret in filter(None, [token, *(env or {}).values()]):
            if secret not in (ZONE, api.base_url):
                assert secret not in result.stdout + result.stderr, "a secret was printed"
        return result

    return run


def assert_wanted_records(api):
    for name, proxied in WANTED.items():
        (record,) = api.records(ZONE, name, "A")
        assert (record["content"], record["proxied"]) == (IP, proxied), name


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cloudflare_dns.py: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_creates_apex_and_www_proxied_and_api_dns_only(cli, api):
    result = cli("--ip", IP)
    assert result.returncode == 0, result.stderr
    assert_wanted_records(api)
    writes = api.writes()
    assert [w.method for w in writes] == ["POST"] * 3
    assert {w.body["name"]: (w.body["content"], w.body["proxied"], w.body["ttl"])
            for w in writes} == {name: (IP, proxied, 1) for name, proxied in WANTED.items()}
    assert all(r.token_known and not r.global_key_sent for r in api.requests)
    assert f"{ZONE}: created 3, updated 0, 0 already correct" in result.stdout
    assert api.records("other.example", "www.other.example")[0]["content"] == OLD_IP


def test_second_run_writes_nothing_and_says_so(cli, api):
    assert cli("--ip", IP).returncode == 0
    before = len(api.requests)
    result = cli("--ip", IP)
    assert result.returncode == 0, result.stderr
    assert [r.method for r in api.requests[before:]] == ["GET"] * len(api.requests[before:])
    assert f"{ZONE}: all 3 records already correct, nothing changed" in result.stdout
    assert_wanted_records(api)


def test_wrong_records_are_updated_in_place(cli, api):
    apex = api.add_record(ZONE, "@", "A", IP, proxied=True)
    www = api.add_record(ZONE, "www", "A", OLD_IP, proxied=True, comment="set by hand")
    api_record = api.add_record(ZONE, "api", "A", IP, proxied=True, ttl=300)
    result = cli("--ip", IP)
    assert result.returncode == 0, result.stderr
    writes = api.writes()
    assert {(w.method, w.path.rsplit("/", 1)[1]) for w in writes} == {
        ("PATCH", www["id"]), ("PATCH", api_record["id"])}
    assert_wanted_records(api)
    assert api.records(ZONE, APEX)[0] == apex
    # Updated in place: same ids, and what the script does not manage is kept.
    assert api.records(ZONE, WWW)[0]["comment"] == "set by hand"
    assert api.records(ZONE, API)[0]["ttl"] == 300
    assert f"update: A {WWW} -> {IP} (proxied) (was {OLD_IP} (proxied))" in result.stdout
    assert f"update: A {API} -> {IP} (DNS only) (was {IP} (proxied))" in result.stdout
    assert f"{ZONE}: created 0, updated 2, 1 already correct" in result.stdout


@pytest.mark.parametrize("existing_ip", [IP, OLD_IP], ids=["correct", "wrong-ip"])
def test_record_on_a_later_page_is_found_not_duplicated(cli, api, existing_ip):
    existing = api.add_record(ZONE, "api", "A", existing_ip)
    assert len(api.records(ZONE)) > 100  # so it is on the second page of the listing
    result = cli("--ip", IP)
    assert result.returncode == 0, result.stderr
    listings = [r.query for r in api.requests if r.path.endswith("/dns_records")]
    assert {q.get("page", "1") for q in listings} >= {"1", "2"}
    (record,) = api.records(ZONE, API)
    assert record["id"] == existing["id"]
    assert record["content"] == IP
    assert all(w.body["name"] != API for w in api.writes() if w.method == "POST")


def test_token_without_dns_edit_gets_one_clear_line(cli, api, read_only_token):
    result = cli("--ip", IP, token=read_only_token)
    assert_one_line_error(result, "HTTP 403", "code 10000", "CLOUDFLARE_API_TOKEN",
                          "Zone.DNS Edit", f"create {APEX}")
    assert api.records(ZONE, APEX) == []
    assert result.stdout.startswith(f"zone {ZONE}: {FILLERS} DNS records")


def test_unknown_token_gets_one_clear_line(cli, api):
    result = cli("--ip", IP, token="cf-wrong-" + secrets.token_urlsafe(30))
    assert_one_line_error(result, "HTTP 403", f"look up the zone {ZONE}", "Zone.DNS Edit")
    assert [r.token_known for r in api.requests] == [False]


def test_missing_token_is_a_user_error_before_any_request(cli, api):
    result = cli("--ip", IP, token=None)
    assert_one_line_error(result, "CLOUDFLARE_API_TOKEN is not set", "Zone.DNS Edit")
    assert api.requests == []


@pytest.mark.parametrize("bad_ip", ["203.0.113.300", "2001:db8::1", "covfefe-aws", ""])
def test_invalid_ip_is_a_user_error_before_any_request(cli, api, bad_ip):
    result = cli("--ip", bad_ip)
    assert_one_line_error(result, f"--ip {bad_ip!r} is not an IPv4 address")
    assert api.requests == []


def test_unknown_zone_is_a_user_error(cli, api):
    result = cli("--ip", IP, "--zone", "nowhere.example")
    assert_one_line_error(result, "no Cloudflare zone named nowhere.example")
    assert api.writes() == []


def test_cname_in_the_way_stops_before_writing_anything(cli, api):
    api.add_record(ZONE, "www", "CNAME", "covfefe.pages.example", proxied=True)
    result = cli("--ip", IP)
    assert_one_line_error(result, f"{WWW} has a CNAME record (to covfefe.pages.example)")
    assert api.writes() == []


def test_two_a_records_for_a_name_are_not_guessed_at(cli, api):
    api.add_record(ZONE, "api", "A", IP)
    api.add_record(ZONE, "api", "A", OLD_IP)
    result = cli("--ip", IP)
    assert_one_line_error(result, f"{API} has 2 A records ({IP}, {OLD_IP})")
    assert api.writes() == []


def test_aaaa_record_beside_is_kept_and_mentioned(cli, api):
    api.add_record(ZONE, "api", "AAAA", "2001:db8::7")
    result = cli("--ip", IP)
    assert result.returncode == 0, result.stderr
    assert f"note: {API} also has an AAAA record (2001:db8::7)" in result.stderr
    assert api.records(ZONE, API, "AAAA")[0]["content"] == "2001:db8::7"
    assert_wanted_records(api)


def test_dry_run_reads_the_zone_and_writes_nothing(cli, api):
    api.add_record(ZONE, "www", "A", OLD_IP, proxied=False)
    before = api.records(ZONE)
    result = cli("--ip", IP, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert api.writes() == []
    assert api.records(ZONE) == before
    assert f"would create: A {APEX} -> {IP} (proxied)" in result.stdout
    assert f"would update: A {WWW} -> {IP} (proxied) (was {OLD_IP} (DNS only))" in result.stdout
    assert f"would create: A {API} -> {IP} (DNS only)" in result.stdout
    assert "dry run: would create 2 and update 1 records; nothing written" in result.stdout


def test_dry_run_without_a_token_prints_the_plan_only(cli, api):
    result = cli("--ip", IP, "--dry-run", token=None)
    assert result.returncode == 0, result.stderr
    assert api.requests == []
    assert re.findall(r"^would upsert: A (\S+) -> (\S+) \((.*)\)$", result.stdout, re.M) == [
        (APEX, IP, "proxied"), (WWW, IP, "proxied"), (API, IP, "DNS only")]


def test_a_global_key_in_the_environment_is_never_sent(cli, api):
    global_key = secrets.token_hex(20)
    result = cli("--ip", IP, env={"CLOUDFLARE_API_KEY": global_key,
                                  "CLOUDFLARE_EMAIL": "ops@example.org"})
    assert result.returncode == 0, result.stderr
    assert api.requests and all(r.token_known and not r.global_key_sent for r in api.requests)


def test_the_standin_speaks_the_v4_api_the_sdk_expects(api, token, read_only_token):
    """The SDK itself against the stand-in: filters, pages, result_info, PUT and a 403."""
    with Cloudflare(api_token=token, base_url=api.base_url, max_retries=0) as client:
        (zone,) = client.zones.list(name=ZONE)
        assert zone.name == ZONE
        raw = client.dns.records.with_raw_response.list(zone_id=zone.id, per_page=20, page=2)
        info = raw.http_response.json()["result_info"]
        assert info == {"page": 2, "per_page": 20, "count": 20, "total_count": FILLERS,
                        "total_pages": 8}
        assert len(list(client.dns.records.list(zone_id=zone.id, per_page=20))) == FILLERS
        (txt,) = client.dns.records.list(zone_id=zone.id, name={"exact": f"host-000.{ZONE}"},
                                         type="TXT")
        assert txt.content == "filler 0"
        assert len(list(client.dns.records.list(zone_id=zone.id, type="A"))) == FILLERS // 2
        created = client.dns.records.create(zone_id=zone.id, type="A", name="api",
                                            content=OLD_IP, ttl=1)
        assert (created.name, created.proxied) == (API, False)
        replaced = client.dns.records.update(created.id, zone_id=zone.id, type="A", name=API,
                                             content=IP, proxied=False, ttl=120)
        assert (replaced.id, replaced.content, replaced.ttl) == (created.id, IP, 120)
    with Cloudflare(api_token=read_only_token, base_url=api.base_url, max_retries=0) as client:
        with pytest.raises(PermissionDeniedError) as denied:
            client.dns.records.create(zone_id=zone.id, type="A", name="x", content=IP)
        assert denied.value.body["errors"] == [{"code": 10000,
                                                "message": "Authentication error"}]

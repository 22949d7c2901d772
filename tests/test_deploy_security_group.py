"""deploy/security_group.py against moto's EC2 API in server mode on 127.0.0.1.

The script runs for real (a subprocess, real boto3 calls over HTTP); the tests read the group
back with their own boto3 client (and with the aws CLI where it is installed), so what is
checked is what an EC2 API holds, not what the script says it did.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from tests.helpers import require_tool, stop_process

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "security_group.py"
REGION = "us-east-1"
GROUP = "covfefe-flow"
# Fake credentials: moto accepts any; the secret must never appear in the script's output.
ACCESS_KEY = "AKIACOVFEFETEST00001"
SECRET_KEY = "covfefe-test-secret-must-never-be-printed"
OPERATOR = "203.0.113.7"


def expected_rules(operator_cidr: str, group_id: str) -> set[tuple]:
    """The exact rule set the group must hold: (direction, protocol, from, to, source)."""
    rules = set()
    for port in (80, 443):
        for cidr in ("0.0.0.0/0", "::/0"):
            rules.add(("ingress", "tcp", port, port, cidr))
            rules.add(("egress", "tcp", port, port, cidr))
    for port in (22, 2376):
        rules.add(("ingress", "tcp", port, port, operator_cidr))
    # Docker swarm between the group's own members, both ways, and no one else.
    for protocol, port in (("tcp", 2377), ("tcp", 7946), ("udp", 7946), ("udp", 4789)):
        for direction in ("ingress", "egress"):
            rules.add((direction, protocol, port, port, group_id))
    return rules


def flatten(group: dict) -> set[tuple]:
    """A described group's rules as (direction, protocol, from, to, source) tuples."""
    rules = set()
    for direction, field in (("ingress", "IpPermissions"), ("egress", "IpPermissionsEgress")):
        for perm in group.get(field, []):
            ports = (perm.get("FromPort"), perm.get("ToPort"))
            if perm["IpProtocol"] == "-1":
                ports = (None, None)
            sources = ([r["CidrIp"] for r in perm.get("IpRanges", [])]
                       + [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
                       + [r["GroupId"] for r in perm.get("UserIdGroupPairs", [])]
                       + [r["PrefixListId"] for r in perm.get("PrefixListIds", [])])
            for source in sources:
                rules.add((direction, perm["IpProtocol"], *ports, source))
    return rules


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    """moto's server (every AWS API, EC2 included) on a free port of 127.0.0.1."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"moto_server exited: {log_path.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                        break
                except (urllib.error.URLError, OSError):
                    if time.monotonic() > deadline:
                        pytest.fail(f"moto_server did not start: {log_path.read_text()[-2000:]}")
                    time.sleep(0.2)
            yield url
        finally:
            stop_process(proc, timeout=10)


@pytest.fixture
def moto(moto_url):
    """moto's URL, its state wiped for this test."""
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    return moto_url


@pytest.fixture
def bare_env(tmp_path):
    """The environment without any AWS setting, credentials or config files of the developer."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    # Without credentials boto3 would ask the instance metadata service: never leave the box.
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


@pytest.fixture
def aws_env(bare_env):
    """`bare_env` plus fake credentials for moto."""
    return {**bare_env, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


@pytest.fixture
def ec2(moto):
    """The tests' own EC2 client on moto, to read back (or tamper with) what the script made."""
    client = boto3.client("ec2", region_name=REGION, endpoint_url=moto,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    yield client
    client.close()


@pytest.fixture
def run(moto, aws_env):
    """Run the script against moto; returns the CompletedProcess. Checks no secret leaked."""

    def run_script(*args, env=None, endpoint=True, region=True):
        command = [sys.executable, str(SCRIPT), *args]
        if endpoint:
            command += ["--endpoint-url", moto]
        if region:
            command += ["--region", REGION]
        result = subprocess.run(command, env=env or aws_env, capture_output=True, text=True,
                                timeout=60)
        assert SECRET_KEY not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        return result

    return run_script


def describe(ec2, group_id: str) -> dict:
    return ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]


def default_vpc(ec2) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    return vpcs[0]["VpcId"]


def group_id_of(result) -> str:
    """The last stdout line, which the script promises is the group id."""
    assert result.returncode == 0, result.stderr
    group_id = result.stdout.strip().splitlines()[-1]
    assert group_id.startswith("sg-")
    return group_id


def test_first_run_creates_exactly_the_rules(run, ec2):
    result = run("--operator-ip", OPERATOR)
    group_id = group_id_of(result)
    group = describe(ec2, group_id)
    assert group["GroupName"] == GROUP
    assert group["VpcId"] == default_vpc(ec2)
    # Exactly these: AWS's default allow-all egress rule is gone, nothing else is open.
    assert flatten(group) == expected_rules(f"{OPERATOR}/32", group_id)
    assert f"created security group {GROUP} ({group_id})" in result.stdout
    assert "revoked      egress  all traffic to 0.0.0.0/0" in result.stdout


def rule_ids(ec2, group_id: str) -> set[str]:
    rules = ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    return {rule["SecurityGroupRuleId"] for rule in rules}


def test_second_run_changes_nothing(run, ec2):
    first = group_id_of(run("--operator-ip", OPERATOR))
    before, ids_before = describe(ec2, first), rule_ids(ec2, first)
    second = run("--operator-ip", OPERATOR)
    assert group_id_of(second) == first
    assert "is up to date: nothing changed" in second.stdout
    assert "added" not in second.stdout and "revoked" not in second.stdout
    after = describe(ec2, first)
    assert flatten(after) == flatten(before) == expected_rules(f"{OPERATOR}/32", first)
    # Not only the same rules: the same rule objects (none revoked and added again).
    assert rule_ids(ec2, first) == ids_before
    assert len(ids_before) == len(expected_rules(f"{OPERATOR}/32", first))


def test_new_operator_ip_replaces_the_old_one(run, ec2):
    group_id = group_id_of(run("--operator-ip", OPERATOR))
    result = run("--operator-ip", "198.51.100.42")
    assert group_id_of(result) == group_id
    assert flatten(describe(ec2, group_id)) == expected_rules("198.51.100.42/32", group_id)
    assert f"revoked      ingress tcp 22      from {OPERATOR}/32" in result.stdout
    assert "4 rule changes made" in result.stdout


def test_ipv6_operator_gets_a_single_address(run, ec2):
    group_id = group_id_of(run("--operator-ip", "2001:db8::7"))
    assert flatten(describe(ec2, group_id)) == expected_rules("2001:db8::7/128", group_id)


def test_dry_run_changes_nothing_on_the_server(run, ec2):
    result = run("--operator-ip", OPERATOR, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "sg-new"
    assert f"would create security group {GROUP}" in result.stdout
    assert "would add    ingress tcp 2376    from 203.0.113.7/32" in result.stdout
    assert "would revoke egress  all traffic to 0.0.0.0/0" in result.stdout
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [GROUP]}])["SecurityGroups"]
    assert groups == []

    # A group that drifted: a new operator IP, a port opened by hand, a self-reference.
    group_id = group_id_of(run("--operator-ip", OPERATOR))
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8888, "ToPort": 8888,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]},
    ])
    drifted = flatten(describe(ec2, group_id))
    result = run("--operator-ip", "198.51.100.42", "--dry-run")
    assert group_id_of(result) == group_id
    assert "would revoke ingress tcp 8888    from 0.0.0.0/0" in result.stdout
    assert f"would revoke ingress all traffic from {group_id}" in result.stdout
    assert "would add    ingress tcp 22      from 198.51.100.42/32" in result.stdout
    assert "dry run: 6 rule changes not made" in result.stdout
    assert flatten(describe(ec2, group_id)) == drifted

    # The real run then removes the drift.
    group_id_of(run("--operator-ip", "198.51.100.42"))
    assert flatten(describe(ec2, group_id)) == expected_rules("198.51.100.42/32", group_id)


def test_swarm_ports_are_open_between_members_only(run, ec2):
    """2377/tcp, 7946/tcp+udp and 4789/udp from and to the group itself (the swarm's hosts):
    a swarm port opened to the world by hand is revoked."""
    dry = run("--operator-ip", OPERATOR, "--dry-run")
    assert "would add    ingress tcp 2377    from sg-new" in dry.stdout
    assert "would add    egress  udp 4789    to sg-new" in dry.stdout
    group_id = group_id_of(run("--operator-ip", OPERATOR))
    swarm_ports = {2377, 7946, 4789}
    swarm = {rule for rule in flatten(describe(ec2, group_id)) if rule[2] in swarm_ports}
    assert {source for *_, source in swarm} == {group_id}
    assert {(direction, protocol, port) for direction, protocol, port, _, _ in swarm} == {
        (direction, protocol, port) for direction in ("ingress", "egress")
        for protocol, port in (("tcp", 2377), ("tcp", 7946), ("udp", 7946), ("udp", 4789))}
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 2377, "ToPort": 2377,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    result = run("--operator-ip", OPERATOR)
    assert "revoked      ingress tcp 2377    from 0.0.0.0/0" in result.stdout
    assert flatten(describe(ec2, group_id)) == expected_rules(f"{OPERATOR}/32", group_id)


def test_given_vpc_is_used(run, ec2):
    # An IPv6 VPC: AWS (and moto) give its new groups an allow-all ::/0 egress rule as well.
    vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16",
                            AmazonProvidedIpv6CidrBlock=True)["Vpc"]["VpcId"]
    dry = run("--operator-ip", OPERATOR, "--vpc-id", vpc_id, "--dry-run")
    assert f"would create security group {GROUP} in {vpc_id}" in dry.stdout
    assert "would revoke egress  all traffic to ::/0" in dry.stdout
    # 12 for the web and the operator, 8 for the swarm (4 ports, in and out).
    assert "dry run: 20 rule changes not made" in dry.stdout
    result = run("--operator-ip", OPERATOR, "--vpc-id", vpc_id)
    assert "20 rule changes made" in result.stdout
    group_id = group_id_of(result)
    group = describe(ec2, group_id)
    assert group["VpcId"] == vpc_id
    assert flatten(group) == expected_rules(f"{OPERATOR}/32", group_id)
    in_default = ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [GROUP]},
        {"Name": "vpc-id", "Values": [default_vpc(ec2)]}])["SecurityGroups"]
    assert in_default == []


def test_defaults_come_from_the_environment(run, ec2, aws_env):
    vpc_id = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
    env = {**aws_env, "AWS_REGION": REGION, "AWS_SECURITY_GROUP": "covfefe-env",
           "AWS_VPC_ID": vpc_id}
    group_id = group_id_of(run("--operator-ip", OPERATOR, env=env, region=False))
    group = describe(ec2, group_id)
    assert (group["GroupName"], group["VpcId"]) == ("covfefe-env", vpc_id)


def test_unknown_vpc_is_a_user_error(run):
    result = run("--operator-ip", OPERATOR, "--vpc-id", "vpc-0123456789abcdef0")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown VPC 'vpc-0123456789abcdef0' in region us-east-1" in lines[0]


def test_missing_credentials_is_a_user_error(run, bare_env):
    result = run("--operator-ip", OPERATOR, env=bare_env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "security_group.py: error: no AWS credentials: set AWS_ACCESS_KEY_ID and"
        " AWS_SECRET_ACCESS_KEY (deploy/deploy.secrets.env) or an AWS profile")


def test_missing_region_is_a_user_error(run):
    result = run("--operator-ip", OPERATOR, region=False)
    assert result.returncode == 2
    assert "no AWS region: pass --region or set AWS_REGION" in result.stderr


@pytest.mark.parametrize("bad_ip", ["1.2.3", "203.0.113.0/24", "example.org", "", "999.1.1.1"])
def test_invalid_operator_ip_is_a_user_error(run, ec2, bad_ip):
    result = run("--operator-ip", bad_ip)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"security_group.py: error: invalid operator IP {bad_ip!r}: give one IPv4 or IPv6"
        " address, like 203.0.113.7")
    assert ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [GROUP]}])["SecurityGroups"] == []


def test_operator_ip_is_looked_up(run, ec2, serve_folder, tmp_path):
    # A local stand-in for https://checkip.amazonaws.com: one address and a newline.
    (tmp_path / "checkip").write_text("192.0.2.55\n")
    (tmp_path / "broken").write_text("<html>rate limited</html>\n")
    base = serve_folder(tmp_path)
    group_id = group_id_of(run("--checkip-url", f"{base}/checkip"))
    assert flatten(describe(ec2, group_id)) == expected_rules("192.0.2.55/32", group_id)

    result = run("--checkip-url", f"{base}/broken")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"security_group.py: error: {base}/broken did not answer with an IP address;"
        " pass --operator-ip")


def test_aws_cli_sees_the_rules(run, moto, aws_env):
    aws = require_tool("aws")
    group_id = group_id_of(run("--operator-ip", OPERATOR))
    described = subprocess.run(
        [aws, "ec2", "describe-security-groups", "--endpoint-url", moto, "--region", REGION,
         "--group-ids", group_id, "--output", "json"],
        env=aws_env, capture_output=True, text=True, timeout=60, check=True,
    )
    (group,) = json.loads(described.stdout)["SecurityGroups"]
    assert flatten(group) == expected_rules(f"{OPERATOR}/32", group_id)


def load_script():
    spec = importlib.util.spec_from_file_location("security_group", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being made.
    sys.modules["security_group"] = module
    spec.loader.exec_module(module)
    return module


def test_plan_ignores_descriptions_and_normalizes_protocols():
    sg = load_script()
    wanted = sg.desired_rules("203.0.113.7/32", "sg-0123456789abcdef0")
    # The same rules as AWS may describe them: other descriptions, protocol given as a number.
    described = [
        {"IpProtocol": "6", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "203.0.113.7/32", "Description": "typed in the console"}]},
    ]
    current = sg.rules_from_permissions(described, "ingress")
    to_add, to_revoke = sg.plan(current, wanted)
    assert to_revoke == []
    assert len(to_add) == len(wanted) - 1
    assert all(rule.from_port != 22 for rule in to_add)
    assert {rule.key() for rule in to_add} | {rule.key() for rule in current} == {
        rule.key() for rule in wanted}


def test_unreachable_endpoint_is_one_line(run, aws_env):
    closed = f"http://127.0.0.1:{free_port()}"
    result = run("--operator-ip", OPERATOR, "--endpoint-url", closed, endpoint=False,
                 env={**aws_env, "AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"Could not connect to the endpoint URL: \"{closed}/\"" in result.stderr


def test_error_lines_mask_secrets(monkeypatch, capsys):
    sg = load_script()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    assert sg.fail(f"signature for {SECRET_KEY}\nrejected", 2) == 2
    assert capsys.readouterr().err == "security_group.py: error: signature for *** rejected\n"

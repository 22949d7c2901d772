"""The operator's deploy scripts (deploy/*.sh), their configuration and the compose file.

Nothing here reaches AWS, Cloudflare, Let's Encrypt or a Docker engine: docker-machine, docker,
docker-compose, VBoxManage and the project's Python are stubs on PATH that append their
arguments (and what reached them) to a JSON-lines file. The tests assert the exact commands that
the scripts build from the configuration, that --dry-run runs none of them, and that no secret
value appears in what the scripts print or pass on a command line. shellcheck, bash -n and
`docker compose config` (or Debian's docker-compose) check the files themselves.
"""

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.helpers import MLFLOW_IMAGE_FILES, last_commit, require_all, require_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CONFIG = DEPLOY / "config.env"
SECRETS_EXAMPLE = DEPLOY / "deploy.secrets.env.example"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
STACK_FILE = DEPLOY / "stack.yml"
SCRIPTS = sorted(path.name for path in DEPLOY.glob("*.sh") if path.name != "lib.sh")
SERVICES = {"collect", "train", "serve", "web", "certbot"}
VOLUMES = {"tweets", "runs", "models", "certificates", "acme-webroot"}

# Values no real secret has, so that finding one anywhere is proof of a leak.
FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKE0000LEAKED01",
    "AWS_SECRET_ACCESS_KEY": "fake/Secret+Access/Key0123456789leaked",
    "CLOUDFLARE_API_TOKEN": "cf-fake-token-0123456789-leaked",
    "JUPYTER_TOKEN": "jupyter-fake-token-0123-leaked",
    "TWITTER_BEARER_TOKEN": "twitter-fake-bearer-0123-leaked",
}
# The configuration the tests use: every value differs from deploy/config.env's, so a flag
# that ignored the configuration would show.
TEST_CONFIG = {
    "DOMAIN": "covfefe.test",
    "EMAIL": "ops@covfefe.test",
    "ACME_SERVER": "https://acme.invalid/directory",
    "AWS_REGION": "eu-west-3",
    "AWS_ZONE": "b",
    "AWS_INSTANCE_TYPE": "t3.micro",
    "AWS_VPC_ID": "vpc-0abc1234",
    "AWS_SECURITY_GROUP": "covfefe-test-sg",
    "AWS_MACHINE": "covfefe-test-aws",
    "AWS_ROOT_SIZE": "20",
    "AWS_VOLUME_TYPE": "gp2",
    "AWS_AMI": "ami-0123456789abcdef0",
    "AWS_SSH_USER": "admin",
    "LOCAL_MACHINE": "covfefe-test-local",
    "LOCAL_CPUS": "3",
    "LOCAL_MEMORY": "6144",
    "LOCAL_DISK": "40000",
    "LOCAL_HOSTONLY_CIDR": "192.168.57.1/24",
    "TRAIN_PARAMS": "ci",
    "JUPYTER_PORT": "8899",
    "COMPOSE_PROJECT_NAME": "covfefetest",
    "API_WORKERS": "3",
    "SWARM_WORKERS": "1",
    "API_REPLICAS": "4",
    "API_RATE_LIMIT": "30/minute",
    "WEB_HTTP_PORT": "8081",
    "WEB_HTTPS_PORT": "8444",
    "MLFLOW_PORT": "5001",
}
STUB_IP = "192.0.2.10"  # TEST-NET-1: documentation only, never routed
STUB_AMI = "ami-0fromssm000000001"
STUB_JOIN_TOKEN = "SWMTKN-1-fake-join-token-0123-leaked"  # a secret: anyone holding it can join

STUB = r'''#!{python} -S
"""Test stand-in for {name}: records its arguments, answers like the real tool would."""
import io, json, os, sys, tarfile

SECRET_NAMES = {secret_names!r}
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
data = sys.stdin.buffer.read() if sys.stdin is not None else b""
try:
    stdin = data.decode()
except UnicodeDecodeError:
    stdin = f"<{{len(data)}} bytes>"
record = {{
    "tool": name, "argv": args, "stdin": stdin, "docker_host": os.environ.get("DOCKER_HOST"),
    "machine": os.environ.get("DOCKER_MACHINE_NAME"),
    "acme_server": os.environ.get("ACME_SERVER"),
    "secrets_in_env": sorted(key for key in SECRET_NAMES if os.environ.get(key)),
    # docker build --build-arg MODEL=DIR: what DIR held while the image was built.
    "model_files": next((sorted(os.listdir(arg[6:])) for arg in args
                         if arg.startswith("MODEL=") and os.path.isdir(arg[6:])), None),
}}
with open(os.environ["STUB_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(record) + "\n")
if " ".join([name] + args).startswith(os.environ.get("STUB_FAIL") or "\0"):
    sys.exit(f"{{name}}: failing as the test asked")
if name == "docker-machine" and args[:1] == ["ls"]:
    print("\n".join(filter(None, os.environ.get("STUB_MACHINES", "").split(","))))
elif name == "docker-machine" and args[:1] == ["ip"]:
    print("{ip}")
elif name == "docker-machine" and args[:1] == ["inspect"]:
    print(f"172.31.0.{{len(args[-1])}}")  # a private IP per host name
elif name == "docker" and args[:1] == ["info"]:
    print(os.environ.get("STUB_SWARM", "inactive"))
elif name == "docker" and args[:2] == ["secret", "inspect"]:
    # The swarm's secrets: those named in STUB_SECRETS exist.
    if args[2] not in os.environ.get("STUB_SECRETS", "").split(","):
        sys.exit(f"Error: no such secret: {{args[2]}}")
    print("[]")
elif name == "docker" and args[:2] == ["swarm", "join-token"]:
    print("{join_token}")
elif name == "docker-machine" and args[:1] == ["env"] and "--unset" in args:
    print("unset DOCKER_TLS_VERIFY\nunset DOCKER_HOST\nunset DOCKER_CERT_PATH")
elif name == "docker-machine" and args[:1] == ["env"]:
    print(f'export DOCKER_TLS_VERIFY="1"\nexport DOCKER_HOST="tcp://{ip}:2376"\n'
          f'export DOCKER_CERT_PATH="/nonexistent/{{args[-1]}}"\n'
          f'export DOCKER_MACHINE_NAME="{{args[-1]}}"\n'
          f'# Run this command to configure your shell:\n# eval $(docker-machine env {{args[-1]}})')
elif name == "python" and args[:1] == ["-c"] and "ssm" in args[1]:
    print("{ami}")
elif "--entrypoint" in args and "tar" in args and "-cf" in args:
    # `compose run ... tar -cf - .` in the train container: send a small model folder.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        body = b'{{"stub": true}}'
        info = tarfile.TarInfo("./metadata.json")
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
    sys.stdout.buffer.write(buffer.getvalue())
'''


def env_lines(path: Path) -> dict[str, str]:
    """Return the KEY=value lines of an env file."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


class Sandbox:
    """A temporary home with stub tools, a test configuration and a secrets file."""

    def __init__(self, tmp_path: Path, *, tools=("docker-machine", "docker", "docker-compose",
                                                 "VBoxManage", "python")):
        self.path = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for tool in tools:
            stub = self.bin / tool
            stub.write_text(STUB.format(python=sys.executable, name=tool, ip=STUB_IP,
                                        ami=STUB_AMI, join_token=STUB_JOIN_TOKEN,
                                        secret_names=sorted(FAKE_SECRETS)))
            stub.chmod(0o755)
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.log = tmp_path / "calls.jsonl"
        self.config = tmp_path / "config.env"
        self.secrets = tmp_path / "deploy.secrets.env"
        self.write_config(TEST_CONFIG)
        self.write_secrets(FAKE_SECRETS)
        self.env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "COVFEFE_DEPLOY_CONFIG": str(self.config),
            "COVFEFE_DEPLOY_SECRETS": str(self.secrets),
            "PYTHON": str(self.bin / "python"),
            "STUB_LOG": str(self.log),
        }

    def write_config(self, values: dict[str, str]) -> None:
        self.config.write_text("".join(f"{key}={value}\n" for key, value in values.items()))

    def write_secrets(self, values: dict[str, str]) -> None:
        self.secrets.write_text("".join(f"{key}={value}\n" for key, value in values.items()))

    def run(self, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        """Run deploy/SCRIPT from the sandbox (not the checkout) with the stubs on PATH."""
        return subprocess.run(
            [str(DEPLOY / script), *args], cwd=self.path, env={**self.env, **env},
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )

    def calls(self, tool: str | None = None) -> list[dict]:
        """The recorded calls, of one tool or of all."""
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [call for call in calls if tool is None or call["tool"] == tool]

    def compose_calls(self) -> list[list[str]]:
        """The arguments of every compose call, after `-f FILE --env-file FILE`."""
        calls = []
        for call in self.calls():
            argv = call["argv"]
            if call["tool"] == "docker" and argv[:1] == ["compose"]:
                argv = argv[1:]
            elif call["tool"] != "docker-compose":
                continue
            assert argv[:4] == ["-f", "deploy/docker-compose.yml", "--env-file",
                                str(self.config)], argv
            calls.append(argv[4:])
        return calls


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    return Sandbox(tmp_path)


def compose_lines(output: str, sandbox: Sandbox) -> list[str]:
    """Dry-run lines with the compose prefix replaced by COMPOSE."""
    prefix = f" -f deploy/docker-compose.yml --env-file {shlex.quote(str(sandbox.config))}"
    return [re.sub(r"(?<![\w-])(docker compose|docker-compose)" + re.escape(prefix), "COMPOSE",
                   line) for line in output.splitlines()]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for name, value in {**FAKE_SECRETS, "SWARM_JOIN_TOKEN": STUB_JOIN_TOKEN}.items():
            assert value not in text, f"the value of {name} leaked"


# --- the files themselves ---------------------------------------------------------------------

def test_shellcheck_passes_on_every_script():
    shellcheck = require_tool("shellcheck")
    scripts = sorted(str(path.relative_to(ROOT)) for path in DEPLOY.rglob("*.sh"))
    result = subprocess.run([shellcheck, *scripts], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_parses():
    for path in sorted(DEPLOY.rglob("*.sh")):
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_scripts_follow_the_house_style():
    for name in SCRIPTS:
        text = (DEPLOY / name).read_text()
        lines = text.splitlines()
        assert lines[:3] == ["#!/usr/bin/env bash", "set -euo pipefail",
                             "[[ ${TRACE:-} ]] && set -x"], name
        assert 'source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"' in text, name
        function = re.fullmatch(r'(\w+) "\$@"', lines[-1])
        assert function, f"{name} must end by calling its function with \"$@\""
        assert f"\n{function[1]}() {{\n" in text, name
        assert os.access(DEPLOY / name, os.X_OK), f"{name} is not executable"


def test_shellcheckrc_explains_every_setting():
    lines = (ROOT / ".shellcheckrc").read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            above = number - 1
            while above >= 0 and lines[above].strip() and not lines[above].startswith("#"):
                above -= 1  # a group of settings shares the comment above it
            assert above >= 0 and lines[above].startswith("#"), (
                f".shellcheckrc line {number + 1} ({line}) has no comment saying why")


def test_configuration_files_are_plain_and_documented():
    config, secrets = env_lines(CONFIG), env_lines(SECRETS_EXAMPLE)
    assert set(config) == set(TEST_CONFIG), "TEST_CONFIG must cover every variable of config.env"
    assert set(secrets) == set(FAKE_SECRETS)
    assert all(value == "" for value in secrets.values()), "the example must hold no secret"
    for key, value in config.items():
        # bash and compose's --env-file must read the same value: no quotes, spaces, comments.
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key), key
        assert re.fullmatch(r"[^\s'\"#]*", value), f"{key}={value}"
    example = (ROOT / ".env.example").read_text().splitlines()
    documented = {}
    for number, line in enumerate(example):
        match = re.match(r"([A-Z][A-Z0-9_]*)=", line)
        if match:
            documented[match[1]] = example[number - 1]
    missing = (set(config) | set(secrets)) - set(documented)
    assert not missing, f".env.example lacks {sorted(missing)}"
    for key, above in documented.items():
        assert above.startswith("#"), f".env.example: {key} has no comment above it"
    assert_no_secret("\n".join(example))


def compose_command() -> list[str]:
    """`docker compose` when the CLI plugin is there, else Debian's docker-compose."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    return [require_tool("docker-compose")]


def compose_config() -> dict:
    command = compose_command()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    base = [*command, "-f", str(COMPOSE_FILE), "--env-file", str(CONFIG)]
    if len(command) == 2:
        # The plugin leaves services of profiles out unless asked for them.
        base += ["--profile", "train"]
    result = subprocess.run([*base, "config", *(["--format", "json"] if len(command) == 2 else [])],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # JSON is YAML too


def published_ports(service: dict) -> set[int]:
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["published"]))
        else:
            ports.add(int(str(port).split(":")[-2].rsplit(":", 1)[-1]))
    return ports


def volume_sources(service: dict) -> set[str]:
    sources = set()
    for volume in service.get("volumes", []):
        sources.add(volume["source"] if isinstance(volume, dict) else volume.split(":")[0])
    return sources


def test_compose_file_validates_with_the_expected_services():
    config = compose_config()
    services = config["services"]
    assert set(services) == SERVICES
    assert set(config["volumes"]) == VOLUMES
    assert published_ports(services["web"]) == {80, 443}
    assert published_ports(services["train"]) == {8888}
    assert not published_ports(services["serve"]), "the API is reached through nginx only"
    assert not published_ports(services["certbot"])
    assert services["serve"]["build"]["dockerfile"] == "Dockerfile.serve"
    assert services["train"]["build"]["dockerfile"] == "Dockerfile.train"
    assert services["web"]["build"]["dockerfile"] == "deploy/web/Dockerfile"
    assert services["certbot"]["build"]["dockerfile"] == "deploy/certbot/Dockerfile"
    assert re.search(r"^FROM certbot/certbot:", (DEPLOY / "certbot" / "Dockerfile").read_text(),
                     re.MULTILINE), "the certbot service is certbot's own image, extended"
    assert str(services["web"]["sysctls"]["net.ipv4.ip_unprivileged_port_start"]) == "0"
    serve = services["serve"]["environment"]
    assert str(serve["COVFEFE_PROXIES"]) == "1"
    assert serve["COVFEFE_CORS_ORIGINS"] == "https://www.covfefe.example.org"
    assert "/api/health" in " ".join(services["serve"]["healthcheck"]["test"])
    assert services["web"]["environment"]["DOMAIN"] == "covfefe.example.org"
    for name in ("web", "certbot"):
        assert volume_sources(services[name]) == {"certificates", "acme-webroot"}, name
    assert volume_sources(services["train"]) == {"tweets", "runs", "models"}
    assert volume_sources(services["collect"]) == {"tweets"}
    # Secrets are passed through from the environment, never written into the file.
    for name in ("collect", "train"):
        assert services[name]["environment"]["TWITTER_BEARER_TOKEN"] in (None, "")
    text = COMPOSE_FILE.read_text()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "CLOUDFLARE_API_TOKEN"):
        assert name not in text, f"{name} has no business in a container"


def test_compose_interpolates_only_configured_variables():
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    assert used, "the compose file takes its settings from deploy/config.env"
    assert used <= set(env_lines(CONFIG)), used - set(env_lines(CONFIG))


# --- the commands built from the configuration ---------------------------------------------------

def test_local_host_is_created_with_the_configured_virtualbox_flags(sandbox):
    result = sandbox.run("local-host.sh")
    assert result.returncode == 0, result.stderr
    assert [call["argv"] for call in sandbox.calls("docker-machine")] == [
        ["ls", "--quiet"],
        ["create", "--driver", "virtualbox",
         "--virtualbox-cpu-count", "3",
         "--virtualbox-memory", "6144",
         "--virtualbox-disk-size", "40000",
         "--virtualbox-hostonly-cidr", "192.168.57.1/24",
         "covfefe-test-local"],
    ]


def test_aws_host_is_created_with_the_configured_amazonec2_flags(sandbox):
    result = sandbox.run("02-aws-host.sh")
    assert result.returncode == 0, result.stderr
    calls = sandbox.calls("docker-machine")
    assert [call["argv"] for call in calls] == [
        ["ls", "--quiet"],
        ["create", "--driver", "amazonec2",
         "--amazonec2-region", "eu-west-3",
         "--amazonec2-zone", "b",
         "--amazonec2-instance-type", "t3.micro",
         "--amazonec2-vpc-id", "vpc-0abc1234",
         "--amazonec2-security-group", "covfefe-test-sg",
         "--amazonec2-security-group-readonly",
         "--amazonec2-root-size", "20",
         "--amazonec2-volume-type", "gp2",
         "--amazonec2-ami", "ami-0123456789abcdef0",
         "--amazonec2-ssh-user", "admin",
         "--amazonec2-tags", "project,covfefe-flow",
         "covfefe-test-aws"],
    ]
    # The credentials reach docker-machine through its environment, not its arguments.
    create = calls[-1]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(create["secrets_in_env"])
    assert not any("key" in arg.lower() and "keypath" not in arg for arg in create["argv"])
    assert_no_secret(json.dumps(create["argv"]), result.stdout, result.stderr)
    assert not sandbox.calls("python")


def test_aws_host_defaults_to_the_default_vpc_and_the_current_ubuntu_ami(sandbox):
    sandbox.write_config({**TEST_CONFIG, "AWS_VPC_ID": "", "AWS_AMI": ""})
    result = sandbox.run("02-aws-host.sh")
    assert result.returncode == 0, result.stderr
    [lookup] = sandbox.calls("python")
    assert lookup["argv"][0] == "-c"
    assert lookup["argv"][2:] == [
        "eu-west-3",
        "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"]
    create = sandbox.calls("docker-machine")[-1]["argv"]
    assert "--amazonec2-vpc-id" not in create
    assert create[create.index("--amazonec2-ami") + 1] == STUB_AMI


def test_an_existing_host_is_left_alone(sandbox):
    result = sandbox.run("02-aws-host.sh", STUB_MACHINES="other,covfefe-test-aws")
    assert result.returncode == 0, result.stderr
    assert "exists already" in result.stderr
    assert [call["argv"] for call in sandbox.calls("docker-machine")] == [["ls", "--quiet"]]


def test_security_group_step_runs_the_tool_with_the_configuration(sandbox):
    result = sandbox.run("01-security-group.sh", "--operator-ip", "203.0.113.7")
    assert result.returncode == 0, result.stderr
    [call] = sandbox.calls("python")
    assert call["argv"] == ["deploy/security_group.py", "--region", "eu-west-3",
                            "--name", "covfefe-test-sg", "--vpc-id", "vpc-0abc1234",
                            "--operator-ip", "203.0.113.7"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(call["secrets_in_env"])


def test_dns_step_points_the_records_at_the_host_ip(sandbox):
    result = sandbox.run("03-dns.sh")
    assert result.returncode == 0, result.stderr
    assert [call["argv"] for call in sandbox.calls("docker-machine")] == [
        ["ip", "covfefe-test-aws"]]
    [call] = sandbox.calls("python")
    assert call["argv"] == ["deploy/cloudflare_dns.py", "--ip", STUB_IP, "--zone", "covfefe.test"]
    assert "CLOUDFLARE_API_TOKEN" in call["secrets_in_env"]


def test_dns_step_stops_when_the_host_has_no_ip(sandbox):
    result = sandbox.run("03-dns.sh", STUB_FAIL="docker-machine ip")
    assert result.returncode == 1
    assert "docker-machine ip covfefe-test-aws failed" in result.stderr
    assert not sandbox.calls("python")


def test_up_builds_and_starts_the_api_and_nginx_on_the_aws_host(sandbox):
    result = sandbox.run("04-up.sh")
    assert result.returncode == 0, result.stderr
    assert sandbox.calls("docker-machine")[0]["argv"] == [
        "env", "--shell", "bash", "covfefe-test-aws"]
    assert sandbox.compose_calls() == [["up", "-d", "--build", "serve", "web"]]
    compose = [call for call in sandbox.calls() if call["tool"] != "docker-machine"]
    assert compose[0]["docker_host"] == f"tcp://{STUB_IP}:2376", "compose must target the host"


def test_certificates_are_obtained_with_the_certbot_service_then_renewed(sandbox):
    result = sandbox.run("05-certificates.sh")
    assert result.returncode == 0, result.stderr
    assert sandbox.compose_calls() == [
        ["build", "certbot"],
        ["run", "--rm", "certbot", "obtain"],
        ["up", "-d", "certbot"],
        ["restart", "web"],
    ]
    compose = [call for call in sandbox.calls() if call["tool"] != "docker-machine"]
    assert [call["acme_server"] for call in compose[1:3]] == ["https://acme.invalid/directory"] * 2
    assert all(call["docker_host"] == f"tcp://{STUB_IP}:2376" for call in compose)


def test_certificates_staging_trial_then_replace(sandbox):
    result = sandbox.run("05-certificates.sh", "--staging")
    assert result.returncode == 0, result.stderr
    compose = [call for call in sandbox.calls() if call["tool"] != "docker-machine"]
    staging = "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert [call["acme_server"] for call in compose[1:3]] == [staging, staging]
    sandbox.log.unlink()
    result = sandbox.run("05-certificates.sh", "--replace")
    assert result.returncode == 0, result.stderr
    assert sandbox.compose_calls()[1:3] == [
        ["run", "--rm", "--entrypoint", "certbot", "certbot", "delete", "--non-interactive",
         "--cert-name", "covfefe.test"],
        ["run", "--rm", "certbot", "obtain"],
    ]


@pytest.mark.parametrize(("arguments", "machine", "expected"), [
    (["start", "serve"], "covfefe-test-aws", [["up", "-d", "serve"]]),
    (["stop", "web"], "covfefe-test-aws", [["stop", "web"]]),
    (["restart", "web"], "covfefe-test-aws", [["restart", "web"]]),
    (["rebuild", "serve"], "covfefe-test-aws", [["up", "-d", "--build", "--no-deps", "serve"]]),
    (["logs", "certbot", "--since", "1h"], "covfefe-test-aws",
     [["logs", "--follow", "--tail", "200", "--since", "1h", "certbot"]]),
    (["shell", "web"], "covfefe-test-aws", [["exec", "web", "sh"]]),
    (["shell", "train"], "covfefe-test-local",
     [["--profile", "train", "run", "--rm", "train", "bash"]]),
    (["start", "train"], "covfefe-test-local", [["--profile", "train", "up", "-d", "train"]]),
    (["--host", "aws", "logs", "collect"], "covfefe-test-aws",
     [["--profile", "train", "logs", "--follow", "--tail", "200", "collect"]]),
    (["--host", "local", "status", "serve"], "covfefe-test-local", [["ps"]]),
])
def test_service_actions(sandbox, arguments, machine, expected):
    result = sandbox.run("service.sh", *arguments)
    assert result.returncode == 0, result.stderr
    assert sandbox.calls("docker-machine")[0]["argv"] == ["env", "--shell", "bash", machine]
    assert sandbox.compose_calls() == expected


@pytest.mark.parametrize(("arguments", "message"), [
    (["start", "nginx"], "unknown service 'nginx'"),
    (["explode", "web"], "unknown action 'explode'"),
    (["start"], "expected ACTION SERVICE"),
    (["--host", "mars", "start", "web"], "unknown host 'mars'"),
    (["stop", "web", "--now"], "unknown argument '--now'"),
])
def test_service_rejects_bad_arguments(sandbox, arguments, message):
    result = sandbox.run("service.sh", *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert not sandbox.calls()


def test_use_host_prints_only_the_environment(sandbox):
    result = sandbox.run("use-host.sh", "aws")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('export DOCKER_TLS_VERIFY="1"\n')
    assert f'export DOCKER_HOST="tcp://{STUB_IP}:2376"' in result.stdout
    assert [call["argv"] for call in sandbox.calls()] == [
        ["env", "--shell", "bash", "covfefe-test-aws"]]
    result = sandbox.run("use-host.sh", "--unset")
    assert result.stdout.startswith("unset DOCKER_TLS_VERIFY")


def test_train_collects_trains_and_fetches_the_model(sandbox, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "tweets_2016.json").write_text("[]")
    fetched = tmp_path / "fetched"
    # Relative paths are the caller's (the scripts themselves work from the repository root).
    result = sandbox.run("train.sh", "--archive", "archive", "--params", "ci",
                         "--fetch-model", "fetched")
    assert result.returncode == 0, result.stderr
    assert sandbox.calls("docker-machine")[0]["argv"] == [
        "env", "--shell", "bash", "covfefe-test-local"]
    calls = sandbox.compose_calls()
    assert all(call[:2] == ["--profile", "train"] for call in calls), calls
    build, upload, collect, train, fetch = (call[2:] for call in calls)
    assert build == ["build", "train"]
    assert upload[:6] == ["run", "--rm", "-T", "--entrypoint", "sh", "collect"]
    assert collect == ["run", "--rm", "collect"]
    assert train == ["run", "--rm", "train", "python", "-m", "covfefe.notebooks",
                     "ci", "03-train-model", "04-evaluate-model"]
    assert fetch[:6] == ["run", "--rm", "-T", "--entrypoint", "tar", "train"]
    assert f"tar -C {archive} -cf - ." in result.stderr
    uploaded = [call for call in sandbox.calls() if call["argv"][-1:] == [upload[-1]]][0]
    with tarfile.open(fileobj=io.BytesIO(uploaded["stdin"].encode()), mode="r") as sent:
        assert "./tweets_2016.json" in sent.getnames()
    assert json.loads((fetched / "metadata.json").read_text()) == {"stub": True}


def test_train_from_an_url_or_the_x_api(sandbox):
    result = sandbox.run("train.sh", "--archive", "https://example.org/tweets.csv")
    assert result.returncode == 0, result.stderr
    assert sandbox.compose_calls()[1] == [
        "--profile", "train", "run", "--rm", "collect", "covfefe", "collect", "--archive",
        "https://example.org/tweets.csv"]
    sandbox.log.unlink()
    result = sandbox.run("train.sh", "--twitter", "realDonaldTrump")
    assert result.returncode == 0, result.stderr
    collect = [call for call in sandbox.calls() if "collect" in call["argv"]][0]
    assert collect["argv"][-4:] == ["covfefe", "collect", "--twitter", "realDonaldTrump"]
    assert "TWITTER_BEARER_TOKEN" in collect["secrets_in_env"]


def test_teardown_removes_the_host_and_the_security_group(sandbox):
    result = sandbox.run("99-teardown.sh", "--yes", "--local",
                         STUB_MACHINES="covfefe-test-aws,covfefe-test-local")
    assert result.returncode == 0, result.stderr
    assert [call["argv"] for call in sandbox.calls("docker-machine")] == [
        ["ls", "--quiet"],  # no swarm workers
        ["ls", "--quiet"],
        ["env", "--shell", "bash", "covfefe-test-aws"],
        ["rm", "-y", "covfefe-test-aws"],
        ["ls", "--quiet"],
        ["rm", "-y", "covfefe-test-local"],
    ]
    assert sandbox.compose_calls() == [["down", "--remove-orphans"]]
    # Not in a swarm: no stack to remove, no swarm to leave.
    assert [call["argv"] for call in sandbox.calls("docker")] == [
        ["info", "--format", "{{.Swarm.LocalNodeState}}"]]
    [delete] = sandbox.calls("python")
    assert delete["argv"][0] == "-c" and "delete_security_group" in delete["argv"][1]
    assert delete["argv"][2:] == ["eu-west-3", "covfefe-test-sg", "vpc-0abc1234"]
    assert "www.covfefe.test" in result.stderr and "Cloudflare" in result.stderr


def test_teardown_skips_what_is_gone_and_asks_before_removing(sandbox):
    result = sandbox.run("99-teardown.sh", "--yes")
    assert result.returncode == 0, result.stderr
    assert "no docker-machine host covfefe-test-aws" in result.stderr
    assert [call["argv"] for call in sandbox.calls("docker-machine")] == [["ls", "--quiet"]] * 2
    sandbox.log.unlink()
    result = sandbox.run("99-teardown.sh", STUB_MACHINES="covfefe-test-aws")
    assert result.returncode == 2
    assert "without --yes" in result.stderr
    assert not sandbox.calls()


def test_aws_host_takes_another_name_for_a_swarm_worker(sandbox):
    result = sandbox.run("02-aws-host.sh", "covfefe-test-aws-worker-2")
    assert result.returncode == 0, result.stderr
    create = sandbox.calls("docker-machine")[-1]["argv"]
    assert create[0] == "create" and create[-1] == "covfefe-test-aws-worker-2"
    assert create[create.index("--amazonec2-security-group") + 1] == "covfefe-test-sg"


def docker_calls(sandbox: Sandbox) -> list[tuple[str, list[str]]]:
    """(the host it went to, the arguments) of every docker call."""
    return [(call["machine"], call["argv"]) for call in sandbox.calls("docker")]


def test_swarm_inits_the_manager_and_joins_a_new_worker(sandbox):
    result = sandbox.run("06-swarm.sh", STUB_MACHINES="covfefe-test-aws")
    assert result.returncode == 0, result.stderr
    # The security group first (its swarm rules), through step 1 and the project's Python.
    security_group = sandbox.calls("python")[0]["argv"]
    assert security_group[:3] == ["deploy/security_group.py", "--region", "eu-west-3"]
    # The missing worker is created like the manager (step 2), then joins with the token.
    creates = [call["argv"] for call in sandbox.calls("docker-machine")
               if call["argv"][0] == "create"]
    assert [argv[-1] for argv in creates] == ["covfefe-test-aws-worker-1"]
    manager_ip, worker_ip = "172.31.0.16", "172.31.0.25"  # the stub's private IPs
    assert docker_calls(sandbox) == [
        ("covfefe-test-aws", ["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        ("covfefe-test-aws", ["swarm", "init", "--advertise-addr", manager_ip]),
        ("covfefe-test-aws", ["swarm", "join-token", "--quiet", "worker"]),
        ("covfefe-test-aws-worker-1", ["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        ("covfefe-test-aws-worker-1", ["swarm", "join", "--token", STUB_JOIN_TOKEN,
                                       "--advertise-addr", worker_ip, f"{manager_ip}:2377"]),
        ("covfefe-test-aws", ["node", "ls"]),
    ]
    assert "--token *** " in result.stderr, "the join token is masked where it is printed"
    assert_no_secret(result.stdout, result.stderr)


def test_swarm_leaves_members_alone_and_needs_the_manager(sandbox):
    result = sandbox.run("06-swarm.sh", STUB_SWARM="active",
                         STUB_MACHINES="covfefe-test-aws,covfefe-test-aws-worker-1")
    assert result.returncode == 0, result.stderr
    assert not [argv for _, argv in docker_calls(sandbox) if argv[1:2] in (["init"], ["join"])]
    assert "covfefe-test-aws-worker-1 is in a swarm already" in result.stderr
    result = sandbox.run("06-swarm.sh")
    assert result.returncode == 1
    assert "no host covfefe-test-aws: run deploy/02-aws-host.sh first" in result.stderr
    sandbox.write_config({**TEST_CONFIG, "SWARM_WORKERS": "two"})
    result = sandbox.run("06-swarm.sh")
    assert result.returncode == 2 and "SWARM_WORKERS must be a whole number" in result.stderr


def test_stack_builds_on_every_node_deploys_the_tag_and_waits(sandbox):
    result = sandbox.run("07-stack.sh", "--tag", "v7",
                         STUB_MACHINES="covfefe-test-aws,covfefe-test-aws-worker-1,other")
    assert result.returncode == 0, result.stderr
    builds = [(machine, argv[argv.index("--tag") + 1]) for machine, argv in docker_calls(sandbox)
              if argv[0] == "build"]
    web_commit = last_commit("webapp", "deploy/nginx", "deploy/web")
    certbot_commit = last_commit("deploy/certbot")
    mlflow_commit = last_commit(*MLFLOW_IMAGE_FILES)
    # serve takes the new tag; web, certbot and mlflow the commit that last changed their files.
    assert builds == [("covfefe-test-aws-worker-1", "covfefe-serve:v7"),
                      ("covfefe-test-aws", "covfefe-serve:v7"),
                      ("covfefe-test-aws", f"covfefe-web:{web_commit}"),
                      ("covfefe-test-aws", f"covfefe-certbot:{certbot_commit}"),
                      ("covfefe-test-aws", f"covfefe-mlflow:{mlflow_commit}")]
    # The first deploy makes MLflow's database password: random, from Python, into a secret.
    secret = "covfefetest_mlflow-db-password"
    assert docker_calls(sandbox)[-3:-1] == [("covfefe-test-aws", ["secret", "inspect", secret]),
                                            ("covfefe-test-aws", ["secret", "create", secret,
                                                                  "-"])]
    [token] = [call for call in sandbox.calls("python") if call["argv"][0] == "-c"]
    assert "secrets.token_hex" in token["argv"][1]
    machine, deploy = docker_calls(sandbox)[-1]
    assert machine == "covfefe-test-aws"
    assert deploy == ["stack", "deploy", "--compose-file", "deploy/stack.yml",
                      "--resolve-image", "never", "--prune", "covfefetest"]
    [wait] = [call for call in sandbox.calls("python") if call["argv"][0] != "-c"]
    assert wait["argv"] == ["deploy/stack_health.py", "--stack", "covfefetest", "--wait", "900"]
    assert wait["machine"] == "covfefe-test-aws"


def test_stack_tag_defaults_to_the_commit_and_builds_can_be_skipped(sandbox):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    result = sandbox.run("07-stack.sh", "--no-build",
                         STUB_SECRETS="covfefetest_mlflow-db-password")
    assert result.returncode == 0, result.stderr
    # The database password's secret is there already: kept.
    assert [argv[:2] for _, argv in docker_calls(sandbox)] == [["secret", "inspect"],
                                                               ["stack", "deploy"]]
    assert f"+ env SERVE_IMAGE=covfefe-serve:{commit} WEB_IMAGE=covfefe-web:" in result.stderr


def test_stack_bakes_the_champion_into_serve_under_a_tag_of_its_own(sandbox, tiny_model,
                                                                     tmp_path):
    """--model: the champion (through the served link, as make update leaves it) is copied
    into the build context for serve's build on every node, under a tag naming its digest, and
    removed after."""
    link = tmp_path / "champion"
    link.symlink_to(tiny_model.path, target_is_directory=True)
    result = sandbox.run("07-stack.sh", "--model", str(link),
                         STUB_MACHINES="covfefe-test-aws,covfefe-test-aws-worker-1")
    assert result.returncode == 0, result.stderr
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    digest = hashlib.sha256((tiny_model.path / "metadata.json").read_bytes()).hexdigest()
    tag = f"covfefe-serve:{commit}-model-{digest[:12]}"
    serve_builds = [call for call in sandbox.calls("docker")
                    if call["argv"][0] == "build" and "Dockerfile.serve" in call["argv"]]
    assert [call["machine"] for call in serve_builds] == ["covfefe-test-aws-worker-1",
                                                          "covfefe-test-aws"]
    for call in serve_builds:
        assert call["argv"] == ["build", "--file", "Dockerfile.serve", "--build-arg",
                                "MODEL=models/stack-model", "--tag", tag, "."]
        assert call["model_files"] == sorted(path.name for path in tiny_model.path.iterdir())
    others = [call["argv"] for call in sandbox.calls("docker")
              if call["argv"][0] == "build" and "Dockerfile.serve" not in call["argv"]]
    assert len(others) == 3 and not any("--build-arg" in argv for argv in others)
    assert f"SERVE_IMAGE={tag} " in result.stderr
    assert not (ROOT / "models" / "stack-model").exists(), "the staged copy is removed"
    # Another model, another tag: the rolling update replaces the replicas.
    result = sandbox.run("07-stack.sh", "--model", str(ROOT / "models" / "covfefe"))
    assert result.returncode == 0, result.stderr
    assert f"SERVE_IMAGE={tag} " not in result.stderr and "-model-" in result.stderr


@pytest.mark.parametrize("arguments, expected", [
    (["--scale", "5"], ["service", "scale", "--detach", "covfefetest_serve=5"]),
    (["--rollback"], ["service", "rollback", "--detach", "covfefetest_serve"]),
])
def test_stack_scales_and_rolls_back_serve(sandbox, arguments, expected):
    result = sandbox.run("07-stack.sh", *arguments)
    assert result.returncode == 0, result.stderr
    assert docker_calls(sandbox) == [("covfefe-test-aws", expected)]
    assert sandbox.calls("python")[0]["argv"][0] == "deploy/stack_health.py"


@pytest.mark.parametrize("arguments, message", [
    (["--scale", "many"], "--scale needs a number of replicas"),
    (["--tag", "no/slash"], "--tag needs an image tag"),
    (["--web-tag", ""], "--web-tag needs an image tag"),
    (["--tag"], "--tag needs an image tag"),
    (["--model"], "--model needs a model artifact folder"),
    (["--model", "."], "is not a model artifact folder (no metadata.json)"),
    (["--model", str(ROOT / "models" / "covfefe"), "--no-build"], "cannot go with --no-build"),
    (["--model", str(ROOT / "models" / "covfefe"), "--rollback"], "not with --scale or --rollback"),
])
def test_stack_refuses_bad_arguments(sandbox, arguments, message):
    result = sandbox.run("07-stack.sh", *arguments)
    assert result.returncode == 2 and message in result.stderr
    assert not sandbox.calls()


def test_teardown_leaves_the_swarm_and_removes_the_workers(sandbox):
    result = sandbox.run("99-teardown.sh", "--yes", STUB_SWARM="active",
                         STUB_MACHINES="covfefe-test-aws,covfefe-test-aws-worker-1,"
                                       "covfefe-test-aws-worker-2")
    assert result.returncode == 0, result.stderr
    removed = [call["argv"][-1] for call in sandbox.calls("docker-machine")
               if call["argv"][0] == "rm"]
    assert removed == ["covfefe-test-aws-worker-1", "covfefe-test-aws-worker-2",
                       "covfefe-test-aws"]
    assert docker_calls(sandbox) == [
        ("covfefe-test-aws-worker-1", ["swarm", "leave", "--force"]),
        ("covfefe-test-aws-worker-2", ["swarm", "leave", "--force"]),
        ("covfefe-test-aws", ["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        ("covfefe-test-aws", ["stack", "rm", "covfefetest"]),
        ("covfefe-test-aws", ["swarm", "leave", "--force"]),
    ]


def stack_config(env: dict[str, str]) -> dict:
    """deploy/stack.yml as `docker stack config` reads it (interpolated, merged, typed)."""
    docker = require_tool("docker")
    if subprocess.run([docker, "stack", "config", "--help"], capture_output=True,
                      timeout=30).returncode:
        if require_all():
            pytest.fail("this docker CLI has no `docker stack config` (Docker 23 or later)")
        pytest.skip("this docker CLI has no `docker stack config` (Docker 23 or later)")
    result = subprocess.run([docker, "stack", "config", "--compose-file", str(STACK_FILE)],
                            cwd=ROOT, env={"PATH": os.environ["PATH"], "HOME": "/tmp", **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_stack_file_is_ready_for_swarm():
    images = {"SERVE_IMAGE": "covfefe-serve:v1", "WEB_IMAGE": "covfefe-web:v1",
              "CERTBOT_IMAGE": "covfefe-certbot:v1", "MLFLOW_IMAGE": "covfefe-mlflow:v1"}
    config = stack_config({**env_lines(CONFIG), **images})
    services = config["services"]
    assert set(services) == {"serve", "redis", "web", "certbot", "postgres", "mlflow"}
    serve = services["serve"]
    assert serve["image"] == "covfefe-serve:v1"
    assert serve["deploy"]["replicas"] == 3
    assert serve["deploy"]["endpoint_mode"] == "dnsrr", "no service VIP: DNS round robin"
    assert serve["deploy"]["resources"]["limits"]["cpus"] and \
        serve["deploy"]["resources"]["limits"]["memory"]
    update = serve["deploy"]["update_config"]
    assert (update["order"], update["parallelism"], update["failure_action"]) == (
        "start-first", 1, "rollback")
    assert serve["deploy"]["rollback_config"]["order"] == "start-first"
    assert "/api/health" in " ".join(serve["healthcheck"]["test"]), "the health check gates it"
    environment = serve["environment"]
    assert environment["COVFEFE_RATELIMIT_STORAGE_URI"].startswith("redis://redis:6379/")
    assert environment["COVFEFE_RATE_LIMIT"] == "60/minute"
    assert str(environment["COVFEFE_PROXIES"]) == "1"
    assert not serve.get("ports"), "the API is reached through nginx only"
    redis = services["redis"]
    assert redis["image"].startswith("redis:")
    assert volume_sources(redis) == {"redis-data"}
    assert redis["deploy"]["endpoint_mode"] == "dnsrr"
    web = services["web"]
    assert web["environment"]["API_UPSTREAM"] == "serve:8000"
    assert {(port["published"], port["mode"]) for port in web["ports"]} == {
        (80, "host"), (443, "host")}
    assert web["deploy"]["update_config"]["order"] == "stop-first", "host ports are exclusive"
    for name in ("web", "certbot"):
        assert volume_sources(services[name]) == {"certificates", "acme-webroot"}, name
    # MLflow on PostgreSQL: the password only as a secret file, never in the environment.
    mlflow, postgres = services["mlflow"], services["postgres"]
    secret = f"{env_lines(CONFIG)['COMPOSE_PROJECT_NAME']}_mlflow-db-password"
    assert config["secrets"]["mlflow-db-password"] == {"external": True, "name": secret}
    for service, setting in ((mlflow, "MLFLOW_DB_PASSWORD_FILE"),
                             (postgres, "POSTGRES_PASSWORD_FILE")):
        assert service["environment"][setting] == "/run/secrets/mlflow-db-password"
        assert [entry["source"] for entry in service["secrets"]] == ["mlflow-db-password"]
        assert not any("PASSWORD=" in str(value) or "://" in str(value)
                       for value in service["environment"].values())
    assert volume_sources(postgres) == {"postgres-data"}
    assert volume_sources(mlflow) == {"mlflow-artifacts"}
    assert {(port["target"], port["published"], port["mode"]) for port in mlflow["ports"]} == {
        (5000, 5000, "host")}
    assert not postgres.get("ports"), "the database is reached on the overlay network only"
    for name in ("redis", "web", "certbot", "postgres", "mlflow"):  # node-local volumes
        assert services[name]["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    # Scaled by the configuration, like the script's --scale does live.
    scaled = stack_config({**env_lines(CONFIG), **images, "API_REPLICAS": "5"})
    assert scaled["services"]["serve"]["deploy"]["replicas"] == 5


def test_stack_interpolates_only_configured_variables_and_the_images():
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", STACK_FILE.read_text()))
    assert used <= set(env_lines(CONFIG)) | {"SERVE_IMAGE", "WEB_IMAGE", "CERTBOT_IMAGE",
                                             "MLFLOW_IMAGE"}


@pytest.mark.network
def test_teardown_deletes_the_security_group_in_a_local_ec2(sandbox):
    """The teardown's boto3 code against moto's EC2 on 127.0.0.1, with the project's Python."""
    if require_all():
        import moto.server as moto_server  # CI: moto[server] is part of the dev extra
    else:
        moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        ec2 = boto3.client("ec2", region_name="eu-west-3", endpoint_url=endpoint,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
        vpc_id = vpc["Vpcs"][0]["VpcId"]
        group = ec2.create_security_group(GroupName="covfefe-test-sg", Description="test",
                                          VpcId=vpc_id)
        sandbox.write_config({**TEST_CONFIG, "AWS_VPC_ID": ""})
        sandbox.write_secrets({**FAKE_SECRETS, "AWS_ACCESS_KEY_ID": "testing",
                               "AWS_SECRET_ACCESS_KEY": "testing"})
        env = {"PYTHON": sys.executable, "AWS_ENDPOINT_URL": endpoint}
        result = sandbox.run("99-teardown.sh", "--yes", **env)
        assert result.returncode == 0, result.stderr
        assert f"deleted the security group covfefe-test-sg ({group['GroupId']})" in result.stdout
        names = [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]]
        assert "covfefe-test-sg" not in names
        result = sandbox.run("99-teardown.sh", "--yes", **env)
        assert result.returncode == 0, result.stderr
        assert "nothing to delete" in result.stdout
    finally:
        server.stop()


# --- --help, --dry-run, errors and secrets -------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS)
def test_help(sandbox, script):
    result = sandbox.run(script, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: deploy/{script}")
    assert "--dry-run" in result.stdout
    assert not sandbox.calls()


# What each script's --dry-run must print: its arguments and lines (COMPOSE stands for the
# compose command with deploy/docker-compose.yml and the configuration file).
DRY_RUNS = {
    "01-security-group.sh": ([], [
        "{python} deploy/security_group.py --region eu-west-3 --name covfefe-test-sg"
        " --vpc-id vpc-0abc1234"]),
    "02-aws-host.sh": ([], [
        "docker-machine create --driver amazonec2 --amazonec2-region eu-west-3"
        " --amazonec2-zone b --amazonec2-instance-type t3.micro --amazonec2-vpc-id vpc-0abc1234"
        " --amazonec2-security-group covfefe-test-sg --amazonec2-security-group-readonly"
        " --amazonec2-root-size 20 --amazonec2-volume-type gp2"
        " --amazonec2-ami ami-0123456789abcdef0 --amazonec2-ssh-user admin"
        " --amazonec2-tags project,covfefe-flow covfefe-test-aws"]),
    "03-dns.sh": ([], [
        "docker-machine ip covfefe-test-aws",
        "{python} deploy/cloudflare_dns.py --ip '<covfefe-test-aws-ip>' --zone covfefe.test"]),
    "04-up.sh": ([], [
        'eval "$(docker-machine env --shell bash covfefe-test-aws)"',
        "COMPOSE up -d --build serve web"]),
    "05-certificates.sh": (["--staging"], [
        'eval "$(docker-machine env --shell bash covfefe-test-aws)"',
        "COMPOSE build certbot",
        "env ACME_SERVER=https://acme-staging-v02.api.letsencrypt.org/directory COMPOSE run"
        " --rm certbot obtain",
        "env ACME_SERVER=https://acme-staging-v02.api.letsencrypt.org/directory COMPOSE up -d"
        " certbot",
        "COMPOSE restart web"]),
    "06-swarm.sh": ([], [
        "deploy/01-security-group.sh --dry-run",
        "docker-machine inspect --format '{{{{.Driver.PrivateIPAddress}}}}' covfefe-test-aws",
        'eval "$(docker-machine env --shell bash covfefe-test-aws)"',
        "docker info --format '{{{{.Swarm.LocalNodeState}}}}'",
        "docker swarm init --advertise-addr '<covfefe-test-aws-private-ip>'",
        "docker swarm join-token --quiet worker",
        'eval "$(docker-machine env --shell bash covfefe-test-aws-worker-1)"',
        "docker swarm join --token '***' --advertise-addr"
        " '<covfefe-test-aws-worker-1-private-ip>' '<covfefe-test-aws-private-ip>:2377'",
        "docker node ls"]),
    "07-stack.sh": (["--tag", "v2", "--web-tag", "w1"], [
        "git log -1 --format=%h -- deploy/certbot",
        "git log -1 --format=%h -- deploy/mlflow requirements/mlflow-server.txt",
        'eval "$(docker-machine env --shell bash covfefe-test-aws-worker-1)"',
        "docker build --file Dockerfile.serve --tag covfefe-serve:v2 .",
        'eval "$(docker-machine env --shell bash covfefe-test-aws)"',
        "docker build --file deploy/web/Dockerfile --tag covfefe-web:w1 .",
        "docker build --file deploy/certbot/Dockerfile --tag 'covfefe-certbot:<certbot-commit>' .",
        "docker build --file deploy/mlflow/Dockerfile --tag 'covfefe-mlflow:<mlflow-commit>' .",
        "{python} -c 'import secrets; print(secrets.token_hex(24))'"
        " | docker secret create covfefetest_mlflow-db-password -",
        "env SERVE_IMAGE=covfefe-serve:v2 WEB_IMAGE=covfefe-web:w1"
        " 'CERTBOT_IMAGE=covfefe-certbot:<certbot-commit>'"
        " 'MLFLOW_IMAGE=covfefe-mlflow:<mlflow-commit>' docker stack deploy"
        " --compose-file deploy/stack.yml --resolve-image never --prune covfefetest",
        "{python} deploy/stack_health.py --stack covfefetest --wait 900"]),
    "99-teardown.sh": (["--local"], [
        'eval "$(docker-machine env --shell bash covfefe-test-aws-worker-1)"',
        "docker swarm leave --force",
        "docker-machine rm -y covfefe-test-aws-worker-1",
        'eval "$(docker-machine env --shell bash covfefe-test-aws)"',
        "docker stack rm covfefetest",
        "COMPOSE down --remove-orphans",
        "docker-machine rm -y covfefe-test-aws",
        "docker-machine rm -y covfefe-test-local"]),
    "local-host.sh": ([], [
        "docker-machine create --driver virtualbox --virtualbox-cpu-count 3"
        " --virtualbox-memory 6144 --virtualbox-disk-size 40000"
        " --virtualbox-hostonly-cidr 192.168.57.1/24 covfefe-test-local"]),
    "service.sh": (["logs", "web"], [
        'eval "$(docker-machine env --shell bash covfefe-test-aws)"',
        "COMPOSE logs --follow --tail 200 web"]),
    "train.sh": (["--archive", "{archive}", "--fetch-model", "{tmp}/model"], [
        'eval "$(docker-machine env --shell bash covfefe-test-local)"',
        "COMPOSE --profile train build train",
        "tar -C {archive} -cf - . | COMPOSE --profile train run --rm -T --entrypoint sh collect"
        " -c 'rm -rf /data/archive && mkdir /data/archive && tar -xf - -C /data/archive'",
        "COMPOSE --profile train run --rm collect",
        "COMPOSE --profile train run --rm train python -m covfefe.notebooks"
        " ci 03-train-model 04-evaluate-model",
        "mkdir -p {tmp}/model",
        "COMPOSE --profile train run --rm -T --entrypoint tar train -C models/covfefe -cf - . |"
        " tar -xf - -C {tmp}/model"]),
    "use-host.sh": (["local"], ["docker-machine env --shell bash covfefe-test-local"]),
}


def dry_run(sandbox: Sandbox, script: str, **env: str) -> tuple[subprocess.CompletedProcess,
                                                                  list[str]]:
    archive = sandbox.path / "archive"
    archive.mkdir(exist_ok=True)
    values = {"python": sandbox.env["PYTHON"], "archive": archive, "tmp": sandbox.path}
    arguments, expected = DRY_RUNS[script]
    arguments = [argument.format(**values) for argument in arguments]
    result = sandbox.run(script, "--dry-run", *arguments, **env)
    return result, [line.format(**values) for line in expected]


def test_every_script_has_a_dry_run_case():
    assert set(DRY_RUNS) == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_prints_the_commands_and_runs_nothing(sandbox, script):
    result, expected = dry_run(sandbox, script)
    assert result.returncode == 0, result.stderr
    lines = compose_lines(result.stdout, sandbox)
    for line in expected:
        assert line in lines, f"{line!r} not in:\n{result.stdout}"
    assert not sandbox.calls(), "a dry run must not run anything"


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("trace", ["", "1"])
def test_secrets_never_appear_in_output_or_arguments(sandbox, script, trace):
    """With TRACE=1 (bash prints every command it runs) too, dry run and real run alike."""
    result, _ = dry_run(sandbox, script, TRACE=trace)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result.stdout, result.stderr)
    arguments = {"service.sh": ["logs", "web"], "use-host.sh": ["aws"],
                 "99-teardown.sh": ["--yes"], "train.sh": ["--skip-collect"]}.get(script, [])
    env = {"06-swarm.sh": {"STUB_MACHINES": "covfefe-test-aws"}}.get(script, {})
    result = sandbox.run(script, *arguments, TRACE=trace, **env)
    assert result.returncode == 0, result.stderr
    assert sandbox.calls(), "the real run must have called the stubs"
    # `docker swarm join` takes its token on its command line only (the operator's docker
    # CLI, talking to the worker over TLS); it is masked wherever a script prints it.
    calls = [line for line in sandbox.log.read_text().splitlines()
             if '"argv": ["swarm", "join", "--token"' not in line]
    assert_no_secret(result.stdout, result.stderr, "\n".join(calls))


def test_run_masks_secret_values_in_printed_commands(sandbox):
    snippet = ('source deploy/lib.sh; load_config; DRY_RUN=1; '
               'run curl -H "Authorization: Bearer $CLOUDFLARE_API_TOKEN" https://x.invalid; '
               'DRY_RUN=; run true "$AWS_SECRET_ACCESS_KEY"')
    result = subprocess.run(["bash", "-c", snippet], cwd=ROOT, env=sandbox.env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "curl -H 'Authorization: Bearer ***' https://x.invalid\n"
    assert result.stderr.endswith("+ true ***\n")
    assert_no_secret(result.stdout, result.stderr)


def test_the_environment_wins_over_the_configuration(sandbox):
    snippet = 'source deploy/lib.sh; load_config; echo "$DOMAIN $AWS_REGION"'
    result = subprocess.run(["bash", "-c", snippet], cwd=ROOT,
                            env={**sandbox.env, "DOMAIN": "staging.covfefe.test"},
                            capture_output=True, text=True, timeout=30)
    assert result.stdout == "staging.covfefe.test eu-west-3\n"


def test_env_files_are_read_as_compose_reads_them(sandbox):
    sandbox.config.write_text('DOMAIN="covfefe.test"\r\nEMAIL=ops@covfefe.test # the inbox\n'
                              "AWS_REGION='eu-west-3'\nAWS_ZONE=a#b\n# a comment\n\nAWS_VPC_ID=\n")
    snippet = ('source deploy/lib.sh; load_config; '
               'printf "%s|" "$DOMAIN" "$EMAIL" "$AWS_REGION" "$AWS_ZONE" "${AWS_VPC_ID-unset}"')
    result = subprocess.run(["bash", "-c", snippet], cwd=ROOT, env=sandbox.env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "covfefe.test|ops@covfefe.test|eu-west-3|a#b||"


def test_readme_walks_through_every_script():
    readme = (DEPLOY / "README.md").read_text()
    for script in SCRIPTS:
        assert f"deploy/{script}" in readme, f"deploy/README.md never shows {script}"
    walkthrough = readme[readme.index("## The steps"):]
    steps = [walkthrough.index(f"deploy/{script}") for script in SCRIPTS if script[:2].isdigit()]
    assert steps == sorted(steps), "the numbered steps must come in order"
    for words in ("t3.small", "t2.micro", "EBS", "IPv4", "Cloudflare Free", "Let's Encrypt",
                  "approximate", "aws.amazon.com/ec2/pricing", "Tearing it all down"):
        assert words in readme, words


def test_a_missing_required_variable_is_named(sandbox):
    sandbox.write_config({key: value for key, value in TEST_CONFIG.items() if key != "DOMAIN"})
    result = sandbox.run("04-up.sh")
    assert result.returncode == 2
    assert f"DOMAIN is not set: set it in {sandbox.config}" in result.stderr
    assert not sandbox.calls()


def test_a_missing_or_malformed_configuration_file(sandbox):
    result = sandbox.run("04-up.sh", COVFEFE_DEPLOY_CONFIG=str(sandbox.path / "nope.env"))
    assert result.returncode == 2
    assert "nope.env does not exist" in result.stderr
    sandbox.config.write_text("DOMAIN=covfefe.test\nexport EMAIL = ops@covfefe.test\n")
    result = sandbox.run("04-up.sh")
    assert result.returncode == 2
    assert "line 2 is not KEY=value" in result.stderr
    assert not sandbox.calls()


def test_a_missing_secret_is_named_without_a_value(sandbox):
    sandbox.write_secrets({key: value for key, value in FAKE_SECRETS.items()
                           if key != "AWS_SECRET_ACCESS_KEY"})
    result = sandbox.run("02-aws-host.sh")
    assert result.returncode == 2
    assert "AWS_SECRET_ACCESS_KEY is not set: put it in" in result.stderr
    assert not sandbox.calls()
    result = sandbox.run("02-aws-host.sh", "--dry-run")
    assert result.returncode == 0, "a dry run only warns"
    assert "warning: AWS_SECRET_ACCESS_KEY is not set" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_missing_docker_machine_says_how_to_get_it(tmp_path):
    if shutil.which("docker-machine", path="/usr/bin:/bin"):
        pytest.skip("docker-machine is installed system-wide here")
    sandbox = Sandbox(tmp_path, tools=("docker", "docker-compose", "VBoxManage", "python"))
    result = sandbox.run("local-host.sh")
    assert result.returncode == 1
    for text in ("docker-machine is not installed", "archived",
                 "https://github.com/docker/machine/releases/download/v0.16.2/",
                 "gitlab.com/gitlab-org/ci-cd/docker-machine", "sudo install"):
        assert text in result.stderr, text
    assert not sandbox.calls()
    result = sandbox.run("local-host.sh", "--dry-run")
    assert result.returncode == 0
    assert "warning: docker-machine is not installed" in result.stderr
    assert result.stdout.startswith("docker-machine create --driver virtualbox")


# 01 and 03 pass other options on to their tool; service.sh has its own test.
@pytest.mark.parametrize("script", sorted(set(SCRIPTS) - {
    "01-security-group.sh", "03-dns.sh", "service.sh"}))
def test_unknown_options_are_refused(sandbox, script):
    result = sandbox.run(script, "--frobnicate")
    assert result.returncode == 2
    assert "--frobnicate" in result.stderr and "--help" in result.stderr
    assert not sandbox.calls()

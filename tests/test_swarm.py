"""Beyond one host: the swarm stack (deploy/stack.yml) deployed for real on a single-node swarm.

deploy/stack_health.py (the Docker SDK) is checked first on its own: an unreachable daemon is
one clear sentence naming DOCKER_HOST.

Then the tests' private dockerd (tests/docker_engine.py) becomes a single-node swarm, and
deploy/07-stack.sh deploys the stack on it with the locally built images (serve, web, mlflow,
and the Redis and PostgreSQL stand-ins; certbot is left out: it needs Let's Encrypt), talking
to it through a docker-machine stub, the real docker CLI and the project's Python. This kernel
has no IPVS, so the routing mesh and service virtual IPs could not work here; the stack uses
neither (DNS round robin to the replicas, host-mode ports for nginx), as it does in
production. Checked through nginx over TLS and the Docker SDK: every replica healthy and
reached, the rate limit exact across them, a rolling update to a serve image with another model
baked in (as 07-stack.sh --model builds it) under a bounded load with no failed request, every
replica then naming the new model; scaling down; and MLflow's tracking server, used by the covfefe
CLI as a team would, keeping runs, versions, aliases and artifacts in PostgreSQL and on its
volume across restarts.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from covfefe.inference.artifact import load_artifact
from tests.docker_engine import (
    MLFLOW_IMAGE,
    SERVE_DOCKERFILE,
    build,
    cannot,
    report,
)
from tests.helpers import (
    MLFLOW_IMAGE_FILES,
    ROOT,
    covfefe,
    free_port,
    https_request,
    last_commit,
)

STACK_HEALTH = ROOT / "deploy" / "stack_health.py"
STACK_LABEL = "com.docker.stack.namespace"


@pytest.mark.parametrize("docker_host", ["unix:///nonexistent/docker.sock",
                                         "tcp://127.0.0.1:9"])
def test_stack_health_names_an_unreachable_daemon(docker_host, tmp_path):
    env = {**os.environ, "DOCKER_HOST": docker_host, "HOME": str(tmp_path)}
    env.pop("DOCKER_TLS_VERIFY", None)
    result = subprocess.run([sys.executable, str(STACK_HEALTH), "--stack", "covfefe"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line == (f"stack_health.py: error: cannot reach the Docker daemon at {docker_host} "
                    "(DOCKER_HOST): start it, or point DOCKER_HOST at it "
                    "(eval \"$(deploy/use-host.sh aws)\")")
    assert not result.stdout


# ---------------------------------------------------------------- a real single-node swarm

DOMAIN = "covfefe.example.org"
STACK = "covfefetest"
REPLICAS = 3
LIMIT = 15  # requests per client and hour on the generating routes, in the stack's Redis
CHEAP = {"prefix": "", "n": 1, "max_length": 1, "seed": 1}
SERVE_V2 = "covfefe-serve:test-v2"


@dataclass
class Stack:
    """The stack on the test engine's swarm, and how to reach it through nginx."""

    engine: object
    https_port: int
    sandbox: Path
    env: dict
    mlflow_port: int

    def deploy(self, *arguments: str) -> subprocess.CompletedProcess:
        """deploy/07-stack.sh against the test engine (docker-machine is a stub pointing at it;
        docker and the project's Python are real)."""
        return subprocess.run([str(ROOT / "deploy" / "07-stack.sh"), *arguments],
                              cwd=self.sandbox, env=self.env, capture_output=True, text=True,
                              timeout=900)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        return https_request(f"api.{DOMAIN}", self.https_port, method, path, body)

    def service(self, name: str):
        return self.engine.client.services.get(f"{STACK}_{name}")

    def containers(self, service: str, *, stopped: bool = False) -> list:
        """The service's running containers (with ``stopped``, the exited ones too)."""
        return self.engine.client.containers.list(
            all=stopped, filters={"label": f"com.docker.swarm.service.name={STACK}_{service}"})

    def logs(self, *services: str) -> str:
        """The tasks' states and the last lines of each container of these services (for a
        failure's message)."""
        lines = []
        for name in services:
            for task in self.service(name).tasks():
                status = task["Status"]
                lines.append(f"{name} task: {status['State']} {status.get('Err', '')}")
            for container in self.containers(name, stopped=True):
                lines.append(f"--- {container.name} ({container.status}):")
                lines.append(container.logs(tail=30).decode(errors="replace"))
        return "\n".join(lines)

    def serve_containers(self) -> list:
        return self.containers("serve")

    def served(self, path: str, status: int = 200) -> dict[str, int]:
        """How many requests for `path` answered `status` each running serve replica logged."""
        wanted = (f'"path": "{path}", "status": {status}').encode()
        return {container.name: container.logs().count(wanted)
                for container in self.serve_containers()}


def stack_file(folder: Path) -> Path:
    """deploy/stack.yml without certbot (it needs Let's Encrypt)."""
    stack = yaml.safe_load((ROOT / "deploy" / "stack.yml").read_text())
    del stack["services"]["certbot"]
    path = folder / "stack.yml"
    path.write_text(yaml.safe_dump(stack, sort_keys=False))
    return path


def sandbox_for(engine, folder: Path, https_port: int, mlflow_port: int) -> dict:
    """The environment 07-stack.sh runs in: a docker-machine that points docker at the test
    engine, the test configuration, the trimmed stack file."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    machine = bin_dir / "docker-machine"
    machine.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  ls) echo covfefe-test-aws ;;\n'
        f'  env) echo \'export DOCKER_HOST="{engine.base_url}"\'; echo "unset DOCKER_TLS_VERIFY";'
        ' echo "unset DOCKER_CERT_PATH" ;;\n'
        '  *) echo "docker-machine stub: $*" >&2; exit 1 ;;\n'
        "esac\n")
    machine.chmod(0o755)
    config = folder / "config.env"
    values = {**env_lines(ROOT / "deploy" / "config.env"), "DOMAIN": DOMAIN,
              "AWS_MACHINE": "covfefe-test-aws", "COMPOSE_PROJECT_NAME": STACK,
              "API_REPLICAS": str(REPLICAS), "API_RATE_LIMIT": f"{LIMIT}/hour",
              "WEB_HTTP_PORT": str(free_port()), "WEB_HTTPS_PORT": str(https_port),
              "MLFLOW_PORT": str(mlflow_port)}
    config.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    (folder / "client").mkdir()
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(folder), "LANG": "C.UTF-8",
            "DOCKER_CONFIG": str(folder / "client"), "COVFEFE_DEPLOY_CONFIG": str(config),
            "COVFEFE_DEPLOY_SECRETS": str(folder / "none.env"),
            "COVFEFE_STACK_FILE": str(stack_file(folder)), "PYTHON": sys.executable,
            "PYTHONPATH": str(ROOT)}


def env_lines(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return dict(pairs)


@pytest.fixture(scope="module")
def serve_v2(engine, serve_image, package_index, tiny_model, request):
    """The "new release" of the rolling update: serve with another model (the tests' tiny one)
    baked in, built as 07-stack.sh --model builds it: the model copied to models/stack-model
    in the build context, Dockerfile.serve's MODEL naming it (the rest comes from the cache)."""
    staged = ROOT / "models" / "stack-model"
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(tiny_model.path, staged)
    try:
        build(engine, request, SERVE_DOCKERFILE, SERVE_V2, package_index("serve"),
              MODEL="models/stack-model")
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return tiny_model


@pytest.fixture(scope="module")
def stack(engine, serve_image, serve_v2, web_image, redis_image, mlflow_image, postgres_image,
          tmp_path_factory, request):
    """A single-node swarm on the test engine with the stack deployed by 07-stack.sh."""
    if shutil.which("docker") is None:
        cannot("the docker CLI is not installed (07-stack.sh runs it)")
    client = engine.client
    client.swarm.init(advertise_addr="127.0.0.1")
    # 07-stack.sh names the mlflow image by the last commit that changed it.
    client.images.get(MLFLOW_IMAGE).tag("covfefe-mlflow", last_commit(*MLFLOW_IMAGE_FILES))
    folder = tmp_path_factory.mktemp("swarm")
    https_port, mlflow_port = free_port(), free_port()
    stack = Stack(engine, https_port, folder,
                  sandbox_for(engine, folder, https_port, mlflow_port), mlflow_port)
    started = time.monotonic()
    try:
        result = stack.deploy("--no-build", "--tag", "test", "--web-tag", "test")
        assert result.returncode == 0, result.stdout + result.stderr
        report(request, f"stack {STACK} deployed and converged in "
                        f"{time.monotonic() - started:.0f} s")
        # nginx answers (it may start before its first look-up of serve succeeds).
        deadline = time.monotonic() + 60
        while True:
            try:
                if stack.request("GET", "/api/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "nginx did not answer through the stack"
            time.sleep(1)
        yield stack
    finally:
        for service in client.services.list(filters={"label": f"{STACK_LABEL}={STACK}"}):
            service.remove()
        client.swarm.leave(force=True)


def test_the_stack_converges_with_every_replica_healthy(stack):
    services = {service.name: service for service in stack.engine.client.services.list(
        filters={"label": f"{STACK_LABEL}={STACK}"})}
    assert set(services) == {f"{STACK}_{name}"
                             for name in ("serve", "redis", "web", "postgres", "mlflow")}
    serve = stack.service("serve")
    assert serve.attrs["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    running = [task for task in serve.tasks(filters={"desired-state": "running"})
               if task["Status"]["State"] == "running"]
    assert len(running) == REPLICAS
    for container in stack.serve_containers():
        container.reload()
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
    # The deploy tool agrees (and says so through the SDK).
    result = subprocess.run([sys.executable, str(STACK_HEALTH), "--stack", STACK],
                            env={**os.environ, "DOCKER_HOST": stack.engine.base_url},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + stack.logs("mlflow", "postgres")
    assert f"{STACK}_serve" in result.stdout and f"{REPLICAS}/{REPLICAS} running" in result.stdout


def test_requests_through_nginx_reach_every_replica(stack):
    for _ in range(30):
        status, body = stack.request("GET", "/api/model")
        assert status == 200, body
    counts = stack.served("/api/model")
    assert len(counts) == REPLICAS and sum(counts.values()) >= 30
    assert all(counts.values()), f"a replica got no request: {counts}"
    status, body = stack.request("GET", "/api/health")
    assert json.loads(body)["rate_limit"] == {"storage": "redis", "shared": True}


def test_the_rate_limit_holds_across_the_replicas(stack):
    statuses = [stack.request("POST", "/api/generate", CHEAP)[0] for _ in range(LIMIT + 10)]
    assert statuses == [200] * LIMIT + [429] * 10
    allowed = stack.served("/api/generate")
    assert sum(allowed.values()) == LIMIT
    assert sum(1 for count in allowed.values() if count) >= 2, \
        f"the allowed requests went to one replica only: {allowed}"


def health_versions(stack, requests: int = 3 * REPLICAS) -> Counter:
    """The model versions /api/health names through nginx (DNS round robin: every replica)."""
    versions = Counter()
    for _ in range(requests):
        status, body = stack.request("GET", "/api/health")
        assert status == 200, body
        versions[json.loads(body)["model"]["version"]] += 1
    return versions


def test_a_rolling_update_under_load_fails_no_request(stack, serve_v2, request):
    """serve to a new image with another model, one replica at a time, start-first, while
    clients keep asking through nginx: every request answers 200, and then every replica
    serves the new model."""
    bundled = load_artifact(ROOT / "models" / "covfefe").version
    assert set(health_versions(stack)) == {bundled}
    results: list[tuple[int | str, float]] = []
    done = threading.Event()

    def client():
        paths = ["/api/model", "/api/openapi.json", "/api/health"]
        number = 0
        # Bounded: it stops with the update, or after 5,000 requests or 10 minutes at most.
        deadline = time.monotonic() + 600
        while not done.is_set() and len(results) < 5000 and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                status, _ = stack.request("GET", paths[number % len(paths)])
            except OSError as error:
                status = type(error).__name__
            results.append((status, time.monotonic() - started))
            number += 1

    clients = [threading.Thread(target=client) for _ in range(2)]
    started = time.monotonic()
    for thread in clients:
        thread.start()
    try:
        result = stack.deploy("--no-build", "--tag", "test-v2", "--web-tag", "test")
    finally:
        done.set()
        for thread in clients:
            thread.join(timeout=60)
    duration = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    failures = [status for status, _ in results if status != 200]
    report(request, f"rolling update of {REPLICAS} replicas under load: {len(results)} "
                    f"requests, {len(failures)} failed, {duration:.0f} s, slowest "
                    f"{max(seconds for _, seconds in results):.2f} s")
    assert not failures, Counter(failures)
    assert len(results) >= 100, "the load ran all through the update"
    serve = stack.service("serve")
    assert serve.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == SERVE_V2
    assert serve.attrs["UpdateStatus"]["State"] == "completed"
    images = {container.image.tags[0] for container in stack.serve_containers()}
    assert images == {SERVE_V2} and len(stack.serve_containers()) == REPLICAS
    assert set(health_versions(stack)) == {serve_v2.version}
    served = stack.served("/api/health")
    assert len(served) == REPLICAS and all(served.values()), served
    # web was left alone: its tag did not change.
    assert stack.service("web").attrs.get("UpdateStatus") is None


def test_serve_scales_down(stack):
    result = stack.deploy("--scale", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2/2 running" in result.stdout
    serve = stack.service("serve")
    assert serve.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    running = [task for task in serve.tasks(filters={"desired-state": "running"})
               if task["Status"]["State"] == "running"]
    assert len(running) == 2
    assert stack.request("GET", "/api/model")[0] == 200


# ---------------------------------------------------------------- MLflow on PostgreSQL


def _wait_for_mlflow(stack, seconds: float = 180) -> None:
    """Until the tracking server answers /health (it restarts until postgres accepts it)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{stack.mlflow_port}/health",
                                        timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"MLflow did not answer within {seconds:.0f} s:\n"
                                 + stack.logs("mlflow", "postgres"))
        time.sleep(2)


def _psql(stack, query: str) -> str:
    [container] = stack.containers("postgres")
    status, output = container.exec_run(["psql", "--username", "mlflow", "--dbname", "mlflow",
                                         "--tuples-only", "--no-align", "--command", query])
    assert status == 0, output
    return output.decode().strip()


def test_mlflow_keeps_the_registry_in_postgres_and_the_artifacts_across_restarts(
        stack, tiny_model, tmp_path):
    """The team's tracking server, as the covfefe CLI uses it: the first champion registered
    (its artifact uploaded through the server), the registry in PostgreSQL; after both
    services restart, another machine lists the same versions and promotes one, downloading
    its artifact through the server."""
    _wait_for_mlflow(stack)
    uri = f"http://127.0.0.1:{stack.mlflow_port}"
    first = {"MLFLOW_TRACKING_URI": uri, "COVFEFE_MODEL": str(tiny_model.path),
             "COVFEFE_DATA_DIR": str(tmp_path / "first")}
    listed = covfefe("models", env=first)
    assert listed.returncode == 0, listed.stderr
    assert f"model covfefe in {uri}" in listed.stdout
    assert f"1  {tiny_model.version}" in listed.stdout and "champion" in listed.stdout
    # In PostgreSQL, not in a file inside the server's container.
    assert _psql(stack, "SELECT name, version FROM model_versions") == "covfefe|1"
    assert _psql(stack, "SELECT alias, version FROM registered_model_aliases") == "champion|1"

    for name in ("postgres", "mlflow"):
        stack.service(name).force_update()
    result = subprocess.run([sys.executable, str(STACK_HEALTH), "--stack", STACK, "--wait",
                             "300"], env={**os.environ, "DOCKER_HOST": stack.engine.base_url},
                            capture_output=True, text=True, timeout=360)
    assert result.returncode == 0, result.stdout + result.stderr
    _wait_for_mlflow(stack)

    other = {"MLFLOW_TRACKING_URI": uri, "COVFEFE_DATA_DIR": str(tmp_path / "other")}
    again = covfefe("models", env=other)
    assert again.returncode == 0, again.stderr
    assert f"1  {tiny_model.version}" in again.stdout and "champion" in again.stdout
    promoted = covfefe("promote", "1", env=other)
    assert promoted.returncode == 0, promoted.stderr
    link = tmp_path / "other" / "models" / "champion"
    assert load_artifact(link).version == tiny_model.version  # whole, its hashes checked

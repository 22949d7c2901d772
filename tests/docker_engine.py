"""A Docker engine of the tests' own, driven through the Docker SDK, and the images it builds.

A pytest plugin (tests/conftest.py loads it) shared by the image tests (test_deploy_images.py)
and the swarm tests (test_swarm.py): one private ``dockerd`` per test session (own socket, data
root and exec root; no bridge and no iptables rules, so nothing on the host changes), talked to
with ``docker.DockerClient(base_url=...)``, and the project's images built on it once.

Docker Hub cannot be reached from here (nor from CI), so the official base images cannot be
pulled. Local stand-ins tagged exactly like the ``FROM`` lines and the stack's images
(``python:3.11-slim``, ``nginx:1.27-bookworm``, ``redis:7.2-bookworm``,
``postgres:15-bookworm``) are made with
mmdebstrap from Debian's mirror and kept as tarballs under ``.cache/docker/``, so that a machine
makes them once. Builds use the host network.

pip inside a build needs a package index: the host's own pip (whose configuration knows how this
machine reaches PyPI) downloads the wheels the image needs into ``.cache/docker/``, and a small
PEP 503 index on 127.0.0.1 serves them to the build as ``PIP_INDEX_URL`` (a build argument of
the discarded build stage only; nothing secret is passed or baked in).
"""

import contextlib
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.parse
from pathlib import Path

import docker
import docker.errors
import pytest
from packaging.markers import Marker

from tests.helpers import ROOT, require_all, require_tool

CACHE = ROOT / ".cache" / "docker"
DEBIAN_MIRROR = os.environ.get("COVFEFE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PYTHON_BASE = "python:3.11-slim"
NGINX_BASE = "nginx:1.27-bookworm"
# The stack's Redis (deploy/stack.yml). The stand-in is Debian bookworm's redis-server (7.0):
# the commands the rate limit uses (INCRBY, EXPIRE, EVALSHA, PING) are the same in 7.2.
REDIS_BASE = "redis:7.2-bookworm"
# The stack's PostgreSQL, for MLflow: Debian bookworm's PostgreSQL 15, like the official image.
POSTGRES_BASE = "postgres:15-bookworm"
SERVE_DOCKERFILE = ROOT / "Dockerfile.serve"
MLFLOW_DOCKERFILE = ROOT / "deploy" / "mlflow" / "Dockerfile"
TRAIN_DOCKERFILE = ROOT / "Dockerfile.train"
WEB_DOCKERFILE = ROOT / "deploy" / "web" / "Dockerfile"
SERVE_IMAGE, TRAIN_IMAGE, WEB_IMAGE = "covfefe-serve:test", "covfefe-train:test", "covfefe-web:test"
MLFLOW_IMAGE = "covfefe-mlflow:test"
BUILD_TIMEOUT = 900
WORKER_LINES = pytest.StashKey[list]()  # the [docker] lines that xdist's workers sent back

# mmdebstrap recipes of the stand-ins: Debian bookworm, like the official images, with what those
# images provide where our Dockerfiles rely on it. The recipe's hash names the cached tarball.
SLIM = [
    "--variant=minbase",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    "--aptopt=Acquire::Retries \"3\"",
]
# python:3.11-slim: python, pip and venv, `python`/`pip` on PATH in /usr/local/bin, and pip free
# to install system-wide (Debian's EXTERNALLY-MANAGED marker removed).
PYTHON_RECIPE = [
    *SLIM,
    "--include=ca-certificates,netbase,python3,python3-venv,python3-pip",
    "--customize-hook=rm -f \"$1\"/usr/lib/python3*/EXTERNALLY-MANAGED",
    "--customize-hook=for name in python python3; do"
    " ln -s /usr/bin/python3 \"$1\"/usr/local/bin/$name; done",
    "--customize-hook=for name in pip pip3; do"
    " ln -s /usr/bin/pip3 \"$1\"/usr/local/bin/$name; done",
]
PYTHON_IMAGE = """
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
"""
# nginx:1.27-bookworm: nginx in /usr/sbin (Debian's 1.22), envsubst (gettext-base), curl, the
# `nginx` user (uid 101), its nginx.conf including conf.d/*.conf, a default site, /var/cache/nginx,
# logs to stdout/stderr, an entrypoint that runs its arguments (the official one would also
# render /etc/nginx/templates; our web image brings its own entrypoint instead).
NGINX_SITE = r"""server {
    listen 80;
    server_name localhost;
    location / { root /usr/share/nginx/html; index index.html; }
}
"""
NGINX_CONF = r"""user nginx;
worker_processes auto;
error_log /var/log/nginx/error.log notice;
pid /var/run/nginx.pid;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
"""
NGINX_RECIPE = [
    *SLIM,
    "--include=ca-certificates,curl,gettext-base,nginx",
    "--customize-hook=chroot \"$1\" groupadd --system --gid 101 nginx",
    "--customize-hook=chroot \"$1\" useradd --system --gid nginx --no-create-home"
    " --home /nonexistent --shell /bin/false --uid 101 nginx",
    "--customize-hook=rm -rf \"$1\"/etc/nginx/sites-enabled \"$1\"/etc/nginx/sites-available"
    " \"$1\"/var/www/html",
    f"--customize-hook=printf '%s' '{NGINX_CONF}' > \"$1\"/etc/nginx/nginx.conf",
    f"--customize-hook=printf '%s' '{NGINX_SITE}' > \"$1\"/etc/nginx/conf.d/default.conf",
    "--customize-hook=mkdir -p \"$1\"/usr/share/nginx/html \"$1\"/docker-entrypoint.d"
    " \"$1\"/var/cache/nginx",
    "--customize-hook=ln -sf /dev/stdout \"$1\"/var/log/nginx/access.log",
    "--customize-hook=ln -sf /dev/stderr \"$1\"/var/log/nginx/error.log",
    "--customize-hook=printf '#!/bin/sh\\nexec \"$@\"\\n' > \"$1\"/docker-entrypoint.sh",
    "--customize-hook=chmod 755 \"$1\"/docker-entrypoint.sh",
]
NGINX_IMAGE = """
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/docker-entrypoint.sh"]
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
"""


# redis:7.2-bookworm: redis-server as the `redis` user in /data, started by `redis-server`
# (the stack gives its own command line).
REDIS_RECIPE = [
    *SLIM,
    "--include=redis-server",
    "--customize-hook=mkdir -p \"$1\"/data",
    "--customize-hook=chroot \"$1\" chown redis:redis /data",
]
REDIS_IMAGE = """
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
"""

# postgres:15-bookworm: the server as the `postgres` user, PGDATA in /var/lib/postgresql/data
# (an empty folder of its own, so that a named volume takes its owner), the official image's
# POSTGRES_* settings handled by an entrypoint of the same name (tests/stand_ins/).
POSTGRES_ENTRYPOINT = ROOT / "tests" / "stand_ins" / "postgres-entrypoint.sh"
POSTGRES_RECIPE = [
    *SLIM,
    "--include=postgresql-15",
    # The entrypoint's content in the recipe: a changed script makes the stand-in anew.
    "--customize-hook=: entrypoint "
    + hashlib.sha256(POSTGRES_ENTRYPOINT.read_bytes()).hexdigest()[:12],
    f"--customize-hook=upload {POSTGRES_ENTRYPOINT} /usr/local/bin/docker-entrypoint.sh",
    "--customize-hook=chmod 755 \"$1\"/usr/local/bin/docker-entrypoint.sh",
    "--customize-hook=mkdir -p \"$1\"/var/lib/postgresql/data",
    "--customize-hook=chroot \"$1\" chown postgres:postgres /var/lib/postgresql/data",
    "--customize-hook=chmod 700 \"$1\"/var/lib/postgresql/data",
]
# The socket folder is made here: the tarball keeps nothing under /run.
POSTGRES_IMAGE = """
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV PGDATA=/var/lib/postgresql/data
RUN mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql \
    && chmod 3777 /var/run/postgresql
USER postgres
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
"""


def report(request, line: str) -> None:
    """Write a line into the test run's output, even while pytest captures it. A pytest-xdist
    worker's output goes nowhere: there the line waits for the summary (`pytest_testnodedown`)."""
    config = request.config
    if hasattr(config, "workeroutput"):  # an xdist worker
        config.workeroutput.setdefault("docker", []).append(line)
        return
    plugins = config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(f"[docker] {line}")


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: a worker is done
def pytest_testnodedown(node, error):
    lines = getattr(node, "workeroutput", {}).get("docker", [])
    node.config.stash.setdefault(WORKER_LINES, []).extend(lines)


def pytest_terminal_summary(terminalreporter, config):
    """The workers' [docker] lines (image builds, their sizes, the engine's times)."""
    for line in config.stash.get(WORKER_LINES, []):
        terminalreporter.write_line(f"[docker] {line}")


def cannot(reason: str):
    """Skip with a reason; under COVFEFE_REQUIRE_ALL=1 (CI) fail instead."""
    if require_all():
        pytest.fail(f"{reason} (COVFEFE_REQUIRE_ALL=1 requires the Docker tests to run)")
    pytest.skip(reason)


def tail(text: str | bytes, lines: int = 60) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def logs(container) -> str:
    """The last lines a container wrote (stdout and stderr), for a failure message."""
    with contextlib.suppress(docker.errors.APIError):
        return tail(container.logs())
    return "(no logs)"


# ---------------------------------------------------------------- the engine


class Engine:
    """A private dockerd, and the Docker SDK's client of it (``engine.client``)."""

    def __init__(self, root: Path, dockerd: str):
        self.root = root
        self.socket = root / "docker.sock"
        self.base_url = f"unix://{self.socket}"
        self.log_path = root / "dockerd.log"
        self.command = [dockerd, "--host", self.base_url,
                        "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                        "--pidfile", str(root / "dockerd.pid"), "--bridge=none",
                        "--iptables=false", "--ip6tables=false", "--log-level=warn"]
        self.process = None
        self.client = None

    def start(self, timeout: float = 60) -> str | None:
        """Start dockerd; return None when it answers, else why it could not start."""
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return (f"dockerd exited with status {self.process.returncode}:\n"
                        f"{tail(self.log_path.read_text(), 20)}")
            if self.socket.exists():
                with contextlib.suppress(docker.errors.DockerException):
                    # "auto": the API version the engine speaks (Debian's 20.10 is 1.41).
                    self.client = docker.DockerClient(base_url=self.base_url, version="auto",
                                                      timeout=BUILD_TIMEOUT)
                    self.client.ping()
                    return None
            time.sleep(0.5)
        return f"dockerd did not answer within {timeout:.0f} s:\n{tail(self.log_path.read_text())}"

    def run(self, image: str, command=None, **options) -> tuple[int, str, str]:
        """Run a container to its end; return its exit status, stdout and stderr."""
        container = self.client.containers.run(image, command, detach=True, **options)
        try:
            status = container.wait(timeout=300)["StatusCode"]
            return (status, container.logs(stdout=True, stderr=False).decode(),
                    container.logs(stdout=False, stderr=True).decode())
        finally:
            container.remove(force=True)

    def stop(self) -> dict[str, float]:
        """Leave the swarm, remove the containers, stop dockerd, unmount what it left and
        delete its folder; return how long each step took."""
        times, started = {}, time.monotonic()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(docker.errors.DockerException):
                if self.client.info()["Swarm"]["LocalNodeState"] == "active":
                    self.client.swarm.leave(force=True)
                for container in self.client.containers.list(all=True):
                    container.remove(force=True)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.client is not None:
            self.client.close()
        times["dockerd"] = time.monotonic() - started
        with open("/proc/mounts") as mounts:
            points = [line.split()[1] for line in mounts]
        for point in sorted(points, key=len, reverse=True):
            if point.startswith(f"{self.root}/"):
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        times["cleanup"] = time.monotonic() - started - times["dockerd"]
        return times


@pytest.fixture(scope="session")
def engine(request):
    """A running private dockerd (skipped, or failed in CI, when none can run here)."""
    dockerd = require_tool("dockerd")
    if os.geteuid() != 0:
        cannot("dockerd and mmdebstrap need root; run the Docker tests as root (CI does)")
    # A short path: the engine's unix sockets must fit in 108 bytes.
    engine = Engine(Path(tempfile.mkdtemp(prefix="covfefe-docker-")), dockerd)
    try:
        problem = engine.start()
        if problem:
            cannot(f"dockerd cannot run on this machine: {problem}")
        info = engine.client.info()
        report(request, f"dockerd {info['ServerVersion']} started, storage driver "
                        f"{info['Driver']}")
        yield engine
    finally:
        times = engine.stop()
        report(request, "engine stopped in {dockerd:.0f} s, cleaned up in {cleanup:.0f} s"
               .format(**times))


# ---------------------------------------------------------------- the stand-ins


def stand_in_tarball(name: str, recipe: list[str]) -> tuple[Path, subprocess.Popen | None]:
    """The cached tarball of a stand-in, and the mmdebstrap making it when it is not there yet
    (it writes TARBALL.partial, renamed by `finish_tarball`)."""
    key = hashlib.sha256(json.dumps([DEBIAN_MIRROR, recipe]).encode()).hexdigest()[:12]
    tarball = CACHE / f"{name}-{key}.tar"
    if tarball.exists():
        return tarball, None
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CACHE.glob(f"{name}-*.tar"):  # made from an older recipe
        stale.unlink()
    partial, log = partial_paths(tarball)
    with log.open("w") as output:
        process = subprocess.Popen([require_tool("mmdebstrap"), "--mode=root", "--format=tar",
                                    *recipe, "bookworm", str(partial), DEBIAN_MIRROR],
                                   stdout=output, stderr=subprocess.STDOUT)
    return tarball, process


def partial_paths(tarball: Path) -> tuple[Path, Path]:
    partial = tarball.with_name(f"{tarball.name}.{os.getpid()}.partial")
    return partial, partial.with_name(f"{partial.name}.log")


def finish_tarball(tarball: Path, process: subprocess.Popen | None) -> None:
    if process is None:
        return
    partial, log = partial_paths(tarball)
    try:
        status = process.wait(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        status = "timeout"
    if status != 0:
        partial.unlink(missing_ok=True)
        pytest.fail(f"mmdebstrap could not make {tarball.name} ({status}):\n"
                    f"{tail(log.read_text())}")
    os.replace(partial, tarball)
    log.unlink()


def import_stand_ins(engine, request, wanted) -> list[str]:
    """Import stand-ins (tag, name, recipe, Dockerfile lines) under their official names, made
    with mmdebstrap on a cold cache, all at once (downloads and unpacking overlap)."""
    started = time.monotonic()
    jobs = [(tag, name, instructions, *stand_in_tarball(name, recipe))
            for tag, name, recipe, instructions in wanted]
    for tag, name, instructions, tarball, process in jobs:
        finish_tarball(tarball, process)
        rootfs = f"covfefe-stand-in/{name}"
        engine.client.api.import_image_from_file(str(tarball), repository=rootfs, tag="rootfs")
        # The image's settings (ENV, CMD, STOPSIGNAL...) as a Dockerfile on top of the tree.
        dockerfile = io.BytesIO(f"FROM {rootfs}:rootfs\n{instructions}".encode())
        engine.client.images.build(fileobj=dockerfile, tag=tag, rm=True)
        made = "made" if process else "cached"
        report(request, f"stand-in {tag}: {made} {tarball.relative_to(ROOT)}")
    report(request, f"stand-ins ready in {time.monotonic() - started:.0f} s")
    return [tag for tag, *_ in wanted]


@pytest.fixture(scope="session")
def base_images(engine, request):
    """The base images of the Dockerfiles and the stack's Redis and PostgreSQL, as stand-ins,
    made together: on a cold cache their downloads overlap the unpacking (the stack's two
    alone took three minutes one after the other, later in the run)."""
    wanted = [(PYTHON_BASE, "python-3.11-slim", PYTHON_RECIPE, PYTHON_IMAGE)]
    if WEB_DOCKERFILE.exists():
        wanted.append((NGINX_BASE, "nginx-1.27-bookworm", NGINX_RECIPE, NGINX_IMAGE))
    wanted += [(REDIS_BASE, "redis-7.2-bookworm", REDIS_RECIPE, REDIS_IMAGE),
               (POSTGRES_BASE, "postgres-15-bookworm", POSTGRES_RECIPE, POSTGRES_IMAGE)]
    return import_stand_ins(engine, request, wanted)


@pytest.fixture(scope="session")
def redis_image(base_images):
    """The stack's Redis image, as a stand-in."""
    return REDIS_BASE


@pytest.fixture(scope="session")
def postgres_image(base_images):
    """The stack's PostgreSQL image, as a stand-in."""
    return POSTGRES_BASE


# ---------------------------------------------------------------- a package index for the builds


def requirements(python_version: str, extra: str) -> list[str]:
    """What pip needs to build covfefe and install it with an extra, as the Dockerfiles do: the
    build system, and the locked versions of requirements/EXTRA.txt (exported from uv.lock)
    whose markers hold for the image's Python."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = list(project["build-system"]["requires"])
    environment = {"python_full_version": python_version,
                   "python_version": ".".join(python_version.split(".")[:2])}
    for line in (ROOT / "requirements" / f"{extra}.txt").read_text().splitlines():
        if not line or line[0] in "# ":
            continue
        pin, _, marker = line.rstrip(" \\").partition(";")
        if not marker.strip() or Marker(marker.strip()).evaluate(environment):
            wanted.append(pin.strip())
    return sorted(set(wanted))


def wheelhouse(python_version: str, extra: str) -> Path:
    """Wheels of covfefe[extra]'s locked requirements on the image's Python, downloaded once by
    the host's pip (its configuration knows how this machine reaches PyPI); a folder per set
    of requirements."""
    wanted = requirements(python_version, extra)
    key = hashlib.sha256(json.dumps([python_version, wanted]).encode()).hexdigest()[:12]
    folder = CACHE / f"wheels-{extra}-{key}"
    if (folder / ".complete").exists():
        return folder
    for stale in CACHE.glob(f"wheels-{extra}-*"):  # older requirements
        shutil.rmtree(stale)
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet",
                             "--only-binary=:all:", "--python-version", python_version,
                             "--dest", str(folder), *wanted],
                            capture_output=True, text=True, timeout=1200)
    if result.returncode:
        pytest.fail(f"pip could not download the wheels for covfefe[{extra}]:\n"
                    f"{tail(result.stdout + result.stderr)}")
    (folder / ".complete").write_text("\n".join(wanted) + "\n")
    return folder


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class IndexHandler(http.server.BaseHTTPRequestHandler):
    """A read-only PEP 503 "simple" index over flat folders of wheels."""

    folders: list[Path] = []

    def log_message(self, format, *args):
        pass

    def files(self) -> dict[str, Path]:
        return {path.name: path for folder in self.folders for path in folder.glob("*.whl")}

    def do_GET(self):
        parts = [part for part in urllib.parse.urlsplit(self.path).path.split("/") if part]
        files = self.files()
        if parts[:1] == ["simple"] and len(parts) == 2:
            project = normalize(parts[1])
            links = [f'<a href="/files/{name}">{name}</a><br>' for name in sorted(files)
                     if normalize(name.split("-")[0]) == project]
            if links:
                return self.send(200, "text/html", "\n".join(["<html><body>", *links,
                                                                  "</body></html>"]).encode())
        elif parts[:1] == ["files"] and len(parts) == 2 and parts[1] in files:
            return self.send(200, "application/octet-stream", files[parts[1]].read_bytes())
        self.send(404, "text/plain", b"not here\n")

    def send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def package_index(engine, base_images):
    """A package index on 127.0.0.1 for the builds; returns a function extras -> its URL.
    Its wheels suit the stand-in's Python (Debian's 3.11.2, where the host may have a later
    3.11 that some releases require)."""
    _, python_version, _ = engine.run(PYTHON_BASE, ["python", "-c",
                                      "import platform; print(platform.python_version())"],
                                      network_mode="none")
    handler = type("Handler", (IndexHandler,), {"folders": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serving(extra: str) -> str:
        folder = wheelhouse(python_version.strip(), extra)
        if folder not in handler.folders:
            handler.folders.append(folder)
        return f"http://127.0.0.1:{server.server_address[1]}/simple/"

    yield serving
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def build(engine, request, dockerfile: Path, tag: str, index_url: str | None = None,
          **buildargs: str) -> dict:
    """Build an image from the repository (host network, the local index, any other build
    arguments); return its inspect record. A failed build fails the test with the end of its
    log."""
    started = time.monotonic()
    if index_url:
        buildargs["PIP_INDEX_URL"] = index_url
    try:
        image, _ = engine.client.images.build(
            path=str(ROOT), dockerfile=str(dockerfile.relative_to(ROOT)), tag=tag,
            network_mode="host", buildargs=buildargs or None, rm=True, forcerm=True)
    except docker.errors.BuildError as error:
        output = "".join(str(step.get("stream") or step.get("error") or "")
                         for step in error.build_log)
        pytest.fail(f"building {tag} failed: {error.msg}\n{tail(output)}")
    report(request, f"{tag}: built in {time.monotonic() - started:.0f} s, "
                    f"{image.attrs['Size'] / 1e6:.0f} MB")
    return image.attrs


@pytest.fixture(scope="session")
def serve_image(engine, base_images, package_index, request):
    return build(engine, request, SERVE_DOCKERFILE, SERVE_IMAGE, package_index("serve"))


@pytest.fixture(scope="session")
def mlflow_image(engine, base_images, package_index, request):
    """The MLflow tracking server's image (deploy/mlflow/), from its own lock."""
    return build(engine, request, MLFLOW_DOCKERFILE, MLFLOW_IMAGE,
                 package_index("mlflow-server"))


@pytest.fixture(scope="session")
def web_image(engine, base_images, request):
    if not WEB_DOCKERFILE.exists():
        pytest.skip("deploy/web/Dockerfile does not exist yet")
    return build(engine, request, WEB_DOCKERFILE, WEB_IMAGE)

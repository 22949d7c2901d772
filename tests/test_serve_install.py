"""The light install: a fresh virtualenv with ``pip install '.[serve]'`` and nothing else gives a
``covfefe`` command whose ``--help``, ``generate`` and ``serve`` work (no pandas, no TensorFlow).

Slow-ish (it creates a virtualenv and installs Flask, gunicorn and NumPy from the package index,
or pip's cache): it runs in ``make test`` like every other test.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, stop_process

pytestmark = pytest.mark.network

BUNDLED_MODEL = ROOT / "models" / "covfefe"


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory) -> Path:
    """A virtualenv holding covfefe with the serve extra only; returns its bin folder."""
    folder = tmp_path_factory.mktemp("serve-venv")
    # pip builds a local project in place (build/, *.egg-info); a copy keeps the checkout clean.
    source = folder / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("covfefe", "serve"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True,
                   timeout=300)
    bin_dir = folder / "venv" / "bin"
    install = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{source}[serve]"], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    return bin_dir


def light_environment(tmp_path: Path) -> dict:
    """The environment of a user of the light install: no PYTHONPATH into this checkout (the
    installed package must do on its own), run from an unrelated folder."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("PYTHONPATH", "COVFEFE_HOME", "COVFEFE_MODEL")}
    return {**environment, "HOME": str(tmp_path)}


def run(bin_dir: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / "covfefe"), *args], cwd=tmp_path,
                          env=light_environment(tmp_path), capture_output=True, text=True,
                          timeout=300)


def test_the_serve_extra_installs_no_training_stack(serve_venv, tmp_path):
    probe = subprocess.run(
        [str(serve_venv / "python"), "-c",
         "import importlib.util as u; print([m for m in ('pandas', 'tensorflow', 'keras', "
         "'matplotlib', 'tweepy', 'yaml') if u.find_spec(m)])"],
        cwd=tmp_path, env=light_environment(tmp_path), capture_output=True, text=True,
        timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_help_lists_every_command_on_the_serve_extra(serve_venv, tmp_path):
    result = run(serve_venv, tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("collect", "train", "evaluate", "generate", "serve"):
        assert command in result.stdout
    assert "``" not in result.stdout
    train_help = run(serve_venv, tmp_path, "train", "--help")  # lists the parameters, no pandas
    assert train_help.returncode == 0, train_help.stderr
    assert "--finetune-since" in train_help.stdout


def test_generate_works_on_the_serve_extra(serve_venv, tmp_path):
    result = run(serve_venv, tmp_path, "generate", "Make America ", "-n", "2", "--seed", "3",
                 "--model", str(BUNDLED_MODEL))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("Make America ") for line in lines)
    assert result.stderr == ""


def test_serve_works_on_the_serve_extra(serve_venv, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(serve_venv / "covfefe"), "serve", "--port", str(port), "--workers", "1",
             "--model", str(BUNDLED_MODEL)], cwd=tmp_path, env=light_environment(tmp_path),
            stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/health", timeout=1)
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"no answer in 90 s:\n{log.read_text()}"
                time.sleep(0.2)
        request = urllib.request.Request(
            f"{base}/api/generate", data=json.dumps({"prefix": "The ", "seed": 1}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
        assert body["completions"][0]["text"].startswith("The ")
    finally:
        stop_process(process)

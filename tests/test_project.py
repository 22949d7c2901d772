"""The repository itself: layout, set-up files that agree, the Makefile, the CI script."""

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.helpers import ROOT

REQUIRED_TOP_LEVEL = ["notebooks", "covfefe", "serve", "webapp", "deploy", "Dockerfile.train",
                      "Dockerfile.serve", "tests", "environment.yml", "pyproject.toml",
                      "Makefile", "README.md", ".ci/run"]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment():
    return yaml.safe_load((ROOT / "environment.yml").read_text())


@pytest.mark.parametrize("name", REQUIRED_TOP_LEVEL)
def test_required_layout_exists(name):
    assert (ROOT / name).exists()


def test_environment_python_satisfies_requires_python():
    conda = [d for d in _environment()["dependencies"] if isinstance(d, str)]
    python = next(d for d in conda if d.startswith("python"))
    version = python.split("=", 1)[1]
    assert version in SpecifierSet(_pyproject()["project"]["requires-python"])
    # The images use the same Python as the conda environment.
    for dockerfile in ("Dockerfile.train", "Dockerfile.serve"):
        assert f"FROM python:{version}-" in (ROOT / dockerfile).read_text()


def test_environment_installs_this_package_with_extras_that_exist():
    pip = next(d["pip"] for d in _environment()["dependencies"] if isinstance(d, dict))
    extras = {extra for line in pip
              for extra in re.fullmatch(r"(?:--editable |-e )?\.\[([\w,]+)\]", line)[1].split(",")}
    defined = set(_pyproject()["project"]["optional-dependencies"])
    assert extras <= defined
    # What the environment installs covers every extra (directly or through `dev`).
    covered = set(extras)
    for extra in extras:
        for requirement in _pyproject()["project"]["optional-dependencies"][extra]:
            match = re.fullmatch(r"covfefe\[([\w,]+)\]", requirement)
            if match:
                covered |= set(match[1].split(","))
    assert covered == defined


def test_required_packages_are_declared():
    declared = " ".join(
        requirement for group in _pyproject()["project"]["optional-dependencies"].values()
        for requirement in group
    ).lower()
    for package in ("jupyterlab", "papermill", "tensorflow", "tweepy", "pandas", "flask",
                    "docker", "pyyaml"):
        assert re.search(rf"\b{package}\b", declared), package


def test_make_help_lists_every_target_with_a_description():
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed (.ci/apt-packages.txt lists it)")
    output = subprocess.run([make, "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    targets = re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE)
    for target in targets:
        assert re.search(rf"^  {target}\s+\S", output, re.MULTILINE), target


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    ci = (ROOT / ".ci/run").read_text()
    assert "COVFEFE_REQUIRE_ALL=1" in ci
    assert re.search(r"^make test$", ci, re.MULTILINE)


def _git_ignores(path: str) -> bool:
    check = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
    return check.returncode == 0


def test_data_runs_and_secrets_are_git_ignored_but_the_code_is_not():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("data/tweets.parquet", "runs/x/train.ipynb", ".env", "deploy/prod.secrets.env"):
        assert _git_ignores(path), path
    for path in ("covfefe/data/store.py", "tests/test_store.py",
                 "notebooks/params/ci/03-train-model.yaml"):
        assert not _git_ignores(path), path


def test_archive_files_are_not_committed():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    assert not [f for f in files if re.search(r"(^|/)tweets_\d{4}\.json$", f)]

"""The repository itself: layout, set-up files that agree, the Makefile, the CI script."""

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from covfefe import config
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


def test_environment_installs_the_lock_of_every_extra():
    pip = next(d["pip"] for d in _environment()["dependencies"] if isinstance(d, dict))
    assert pip == ["--requirement requirements/dev.txt"]
    # The dev extra, which that file was exported for, covers every extra.
    assert _extra_closure("dev") == set(_pyproject()["project"]["optional-dependencies"])


def _extra_closure(extra: str) -> set[str]:
    """The extra and every extra it names (covfefe[a,b]), directly or not."""
    optional = _pyproject()["project"]["optional-dependencies"]
    todo, seen = [extra], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            for requirement in optional[name]:
                match = re.fullmatch(r"covfefe\[([\w,]+)\]", requirement)
                if match:
                    todo.extend(match[1].split(","))
    return seen


def _lock() -> dict[str, str]:
    """uv.lock's packages: name -> version."""
    packages = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    return {canonicalize_name(p["name"]): p["version"] for p in packages}


def test_the_lock_was_made_from_pyproject_as_it_stands():
    """uv.lock records what it resolved: `make lock` after every change of the requirements."""
    packages = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    recorded = next(p for p in packages if p["name"] == "covfefe")["metadata"]["requires-dist"]
    recorded = {(r["name"], r.get("specifier", ""), tuple(r.get("extras", ())),
                 r.get("marker", "")) for r in recorded}
    project = _pyproject()["project"]
    declared = [(None, r) for r in project["dependencies"]] + [
        (extra, r) for extra, group in project["optional-dependencies"].items() for r in group]
    wanted = set()
    for extra, line in declared:
        requirement = Requirement(line)
        wanted.add((canonicalize_name(requirement.name), str(requirement.specifier),
                    tuple(requirement.extras) if requirement.extras else (),
                    f"extra == '{extra}'" if extra else ""))
    normalize = {(canonicalize_name(n), str(SpecifierSet(s)), tuple(sorted(e)), m)
                 for n, s, e, m in recorded}
    assert normalize == {(n, s, tuple(sorted(e)), m) for n, s, e, m in wanted}


def test_declared_ranges_hold_the_locked_versions():
    locked = _lock()
    project = _pyproject()["project"]
    for line in [*project["dependencies"],
                 *(r for group in project["optional-dependencies"].values() for r in group)]:
        requirement = Requirement(line)
        if requirement.name != "covfefe":
            assert locked[canonicalize_name(requirement.name)] in requirement.specifier, line


@pytest.mark.parametrize("extra", ["serve", "notebooks", "dev"])
def test_each_requirements_file_is_the_lock_of_its_extra(extra):
    """requirements/EXTRA.txt (what pip installs in make install/demo and the images) pins the
    versions of uv.lock, with hashes, and holds every package the extra declares."""
    text = (ROOT / "requirements" / f"{extra}.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9][\w.-]*)==([^\s;\\]+)", text, re.MULTILINE))
    assert pins and text.count("--hash=sha256:") >= len(pins)
    locked = _lock()
    assert {n: v for n, v in pins.items() if locked[canonicalize_name(n)] != v} == {}
    optional = _pyproject()["project"]["optional-dependencies"]
    declared = {canonicalize_name(Requirement(r).name) for r in _pyproject()["project"][
        "dependencies"]} | {canonicalize_name(Requirement(r).name)
                           for name in _extra_closure(extra) for r in optional[name]}
    assert declared - {"covfefe"} <= {canonicalize_name(n) for n in pins}


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


# Where settings are read: the package, the API and its gunicorn config, the deploy scripts and
# images, CI and the tests. `window.COVFEFE_CONFIG` (the page's JavaScript) is not a setting.
_SETTING = re.compile(r"(?<![\w.])COVFEFE_[A-Z0-9_]*[A-Z0-9]")
_SETTING_FILES = ["covfefe/**/*.py", "serve/**/*.py", "deploy/**/*.sh", "deploy/*.py",
                  "deploy/*.yml", "deploy/**/Dockerfile", "Dockerfile.*", ".ci/run", "Makefile",
                  "tests/**/*.py"]
# serve.create_app's MODEL_DIR is the test_config key for the model; COVFEFE_MODEL sets it.
# COVFEFE_RATE_LIMT is the misspelt name the settings tests expect to be refused.
_NOT_SETTINGS = {"COVFEFE_MODEL_DIR", "COVFEFE_RATE_LIMT"}


def _settings_in_code() -> set[str]:
    names = {name for pattern in _SETTING_FILES for path in ROOT.glob(pattern)
             for name in _SETTING.findall(path.read_text())}
    # The API's settings are the keys of one table (covfefe.config.SERVE_SETTINGS), and the
    # other names the server accepts are listed beside it.
    names |= {f"{config.SETTING_PREFIX}{key}"
              for key in (*config.SERVE_SETTINGS, *config.OTHER_SETTINGS)}
    return names - _NOT_SETTINGS


def test_the_readme_table_lists_every_setting_the_code_reads_and_no_other():
    readme = (ROOT / "README.md").read_text()
    table = re.findall(r"^\| `(COVFEFE_[A-Z0-9_]+)` \|", readme, re.MULTILINE)
    assert len(table) == len(set(table)), "a setting listed twice"
    assert set(table) == _settings_in_code()


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10_000
    for link in re.findall(r"\]\(([^)#]+)\)|src=\"([^\"]+)\"", readme):
        path = link[0] or link[1]
        if not path.startswith("http"):
            assert (ROOT / path).exists(), path


@pytest.mark.parametrize(("settings", "flags"), [
    ([], ""), (["PORT=8081"], "--port 8081"), (["HOST=0.0.0.0", "PORT=8081"],
                                                "--host 0.0.0.0 --port 8081")])
def test_make_demo_passes_only_the_host_and_port_it_is_given(settings, flags):
    """Without HOST or PORT, covfefe serve decides (COVFEFE_BIND, else 127.0.0.1:8000)."""
    result = subprocess.run(["make", "-n", "demo", *settings],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    serve = [line for line in result.stdout.splitlines() if "covfefe serve" in line]
    expected = f".venv/bin/covfefe serve {flags}".strip()
    assert [" ".join(line.split()) for line in serve] == [expected]

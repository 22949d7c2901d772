"""The notebooks, run as a user runs them: plain ``papermill NOTEBOOK OUT -f FILE`` with each
notebook's file of the ci profile (``notebooks/params/ci/``), in order; then their hygiene.

This is the one run of the notebooks in ``make test``: papermill fails on any cell that raises,
and the tests below read what the executed notebooks show.
"""

import ast
import base64
import io
import json
import os
import re
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
PROFILES = sorted(path for path in (NOTEBOOK_DIR / "params").iterdir() if path.is_dir())
PARAMETER_FILES = sorted((NOTEBOOK_DIR / "params").glob("*/*.yaml"))
CI = NOTEBOOK_DIR / "params" / "ci"
PAPERMILL = Path(sys.executable).with_name("papermill")  # the console script the venv installed
COLLECT = NOTEBOOK_DIR / "01-collect-tweets.ipynb"
EXPLORE = NOTEBOOK_DIR / "02-explore-tweets.ipynb"
TRAIN = NOTEBOOK_DIR / "03-train-model.ipynb"
EVALUATE = NOTEBOOK_DIR / "04-evaluate-model.ipynb"
EXPLORE_PLOTS = 5  # tweets per year, lengths, characters, hashtags, mentions


def notebook_parameters(profile: Path, notebook: Path) -> dict:
    """Return a notebook's parameters in a profile (its flat file)."""
    return dict(yaml.safe_load((profile / f"{notebook.stem}.yaml").read_text()) or {})


def run_notebook(notebook: Path, output: Path, parameters: dict) -> nbformat.NotebookNode:
    """Execute a notebook with papermill from the project root; return the executed notebook."""
    return papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters, kernel_name="python3",
        cwd=str(ROOT), progress_bar=False,
    )


def cell(notebook: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    """Return the cell of an executed notebook with this id."""
    return next(c for c in notebook.cells if c.get("id") == cell_id)


def stdout(code_cell) -> str:
    """Return what a code cell printed."""
    return "".join(o.text for o in code_cell.outputs if o.output_type == "stream"
                   and o.name == "stdout")


@dataclass
class CiRun:
    home: Path
    collect_parameters: dict
    dataset: Path
    collected: nbformat.NotebookNode
    explored: nbformat.NotebookNode
    trained: nbformat.NotebookNode
    evaluated: nbformat.NotebookNode
    model: Path


def ci_environment(home: Path) -> dict:
    """The environment of a ci run in its own folder: relative paths of the parameter files
    (runs/ci) resolve in ``home``, the dataset and runs go there too."""
    return {**os.environ, "COVFEFE_HOME": str(home), "COVFEFE_DATA_DIR": str(home / "data"),
            "COVFEFE_RUNS_DIR": str(home / "runs")}


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory) -> CiRun:
    """Every notebook run in order with plain ``papermill NB OUT -f notebooks/params/ci/NB.yaml``
    from the checkout, as the README says, its data and runs in a temporary project folder."""
    home = tmp_path_factory.mktemp("ci-home")
    executed = home / "executed"
    executed.mkdir()
    ci_files = sorted(CI.glob("*.yaml"))
    assert [path.stem for path in ci_files] == [path.stem for path in NOTEBOOKS]
    for parameters in ci_files:
        result = subprocess.run(
            [str(PAPERMILL), f"notebooks/{parameters.stem}.ipynb",
             str(executed / f"{parameters.stem}.ipynb"), "-f", str(parameters.relative_to(ROOT))],
            cwd=ROOT, env=ci_environment(home), capture_output=True, text=True, timeout=900,
        )
        assert result.returncode == 0, f"{parameters.stem}:\n{result.stderr[-3000:]}"
    collected, explored, trained, evaluated, _updated = (
        nbformat.read(executed / f"{path.stem}.ipynb", as_version=4) for path in NOTEBOOKS)
    return CiRun(home, notebook_parameters(CI, COLLECT), home / "data" / "tweets.parquet",
                 collected, explored, trained, evaluated, home / "runs" / "ci" / "model")


def _archive_records(archive_dir: Path) -> list[dict]:
    return [record for path in sorted(archive_dir.glob("*.json"))
            for record in json.loads(path.read_text(encoding="utf-8"))]


def _utc_date(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _expected_ids(records: list[dict], since: datetime, until: datetime) -> set[int]:
    """The collection rules restated on the raw JSON: in [since, until), no retweet (flagged or
    ``RT @``), not just a link. (Cleaning can empty other tweets too, emoji-only ones say; the CI
    slice has none.)"""
    ids = set()
    for record in records:
        created = datetime.strptime(record["created_at"], "%a %b %d %H:%M:%S %z %Y")
        text = record["text"]
        if not since <= created < until or record.get("is_retweet"):
            continue
        if re.match(r"\s*RT @\w", text) or not re.sub(r"https?://\S+", "", text).strip():
            continue
        ids.add(int(record["id_str"]))
    return ids


def test_the_executed_notebooks_pass_nbval(ci_run):
    """nbval re-runs each executed notebook (the ci parameters papermill injected included)
    cell by cell in the same project folder: every cell runs again without an error."""
    executed = sorted((ci_run.home / "executed").glob("*.ipynb"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
         *map(str, executed)],
        cwd=ci_run.home, env=ci_environment(ci_run.home), capture_output=True, text=True,
        timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    cells = sum(sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
                for path in executed)
    assert re.search(rf"\b{cells} passed", result.stdout), result.stdout[-500:]


def test_ci_profile_uses_the_same_small_slice_in_every_notebook():
    parameters = notebook_parameters(CI, COLLECT)
    assert parameters["archive"] == ""  # the environment's archive: no path baked into CI
    assert _utc_date(parameters["until"]) > _utc_date(parameters["since"])
    # Explore and train say which tweets they use, so ci stays small on a full dataset.
    for notebook in (EXPLORE, TRAIN):
        other = notebook_parameters(CI, notebook)
        assert (other["since"], other["until"]) == (parameters["since"], parameters["until"])
    assert notebook_parameters(CI, EVALUATE)["model"] == (
        notebook_parameters(CI, TRAIN)["run_dir"] + "/model")


def test_collect_notebook_writes_exactly_the_slice(ci_run, archive_dir):
    since = _utc_date(ci_run.collect_parameters["since"])
    until = _utc_date(ci_run.collect_parameters["until"])
    expected = _expected_ids(_archive_records(archive_dir), since, until)
    assert 100 < len(expected) < 2000  # a small slice, but not an empty one

    tweets = pd.read_parquet(ci_run.dataset)
    assert len(tweets) == len(expected)
    assert set(tweets["id"]) == expected
    assert tweets["created_at"].between(since, until, inclusive="left").all()
    assert not tweets["text"].str.startswith("RT @").any()


def test_collect_notebook_prints_the_report_and_the_newest_tweets(ci_run, archive_dir):
    read = len(_archive_records(archive_dir))
    tweets = pd.read_parquet(ci_run.dataset)
    summary = stdout(cell(ci_run.collected, "collect"))
    assert summary.startswith(f"read {read} tweets\n")
    assert f"kept {len(tweets)}: {len(tweets)} new, 0 already in the dataset" in summary
    assert f"dataset {ci_run.dataset} now holds {len(tweets)} tweets" in summary

    (table,) = [o for o in cell(ci_run.collected, "newest").outputs
                if o.output_type == "execute_result"]
    newest = tweets["created_at"].max()
    assert str(newest) in table.data["text/plain"]
    assert "text/html" in table.data


def test_explore_notebook_summarises_the_profiles_tweets(ci_run):
    tweets = pd.read_parquet(ci_run.dataset)
    (summary,) = [o for o in cell(ci_run.explored, "load").outputs
                  if o.output_type == "execute_result"]
    text = summary.data["text/plain"]
    assert re.search(rf"^tweets\s+{len(tweets)}$", text, re.MULTILINE)
    assert str(tweets["created_at"].min()) in text
    assert str(tweets["created_at"].max()) in text


def test_explore_notebook_draws_every_plot(ci_run):
    images = [o.data["image/png"] for c in ci_run.explored.cells if c.cell_type == "code"
              for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == EXPLORE_PLOTS
    for image in images:
        assert base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n")
    for code_cell in ci_run.explored.cells:
        if code_cell.cell_type == "code":
            assert not [o for o in code_cell.outputs if o.output_type == "error"]


def images(notebook) -> list[bytes]:
    return [base64.b64decode(o.data["image/png"]) for c in notebook.cells
            if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]


def test_train_notebook_trains_exports_and_shows_curves_and_samples(ci_run):
    from covfefe.inference.artifact import load_artifact

    artifact = load_artifact(ci_run.model)
    parameters = notebook_parameters(CI, TRAIN)
    assert artifact.metadata["training"]["epochs_trained"] == (parameters["epochs"]
                                                              + parameters["finetune_epochs"])
    assert artifact.metadata["data"]["tweets"] == len(pd.read_parquet(ci_run.dataset))
    summary = stdout(cell(ci_run.trained, "train"))
    assert f"validation bits_per_char={artifact.metrics['validation_bits_per_char']:.4f}" in summary
    assert len(images(ci_run.trained)) == 1  # the learning curves
    (samples,) = [o for o in cell(ci_run.trained, "samples").outputs
                  if o.output_type == "execute_result"]
    text = samples.data["text/plain"]
    assert "Make America " in text and "0.8" in text
    assert f"exported to {ci_run.model}" in stdout(cell(ci_run.trained, "export"))


def test_evaluate_notebook_compares_the_model_with_the_baselines(ci_run):
    from covfefe.inference.artifact import load_artifact

    artifact = load_artifact(ci_run.model)
    (table,) = [o for o in cell(ci_run.evaluated, "compare").outputs
                if o.output_type == "execute_result"]
    text = table.data["text/plain"]
    # The model as served first, its network alone (what training measured) beside it.
    model_bits = float(re.search(r"^model\s+([\d.]+)", text, re.MULTILINE).group(1))
    network_bits = float(re.search(r"^network alone\s+([\d.]+)", text, re.MULTILINE).group(1))
    assert network_bits == pytest.approx(artifact.metrics["validation_bits_per_char"], abs=1e-3)
    assert model_bits < float("inf")
    for order in notebook_parameters(CI, EVALUATE)["baseline_orders"]:
        assert f"kneser-ney-{order}gram" in text
    assert len(images(ci_run.evaluated)) == 3  # by length, by year, the sample figures
    (samples,) = [o for o in cell(ci_run.evaluated, "quality").outputs
                  if o.output_type == "execute_result"]
    rows = samples.data["text/plain"]
    parameters = notebook_parameters(CI, EVALUATE)
    for temperature in parameters["quality_temperatures"]:
        assert re.search(rf"^\d+\s+model\s+{parameters['quality_samples']}\s+{temperature}\b",
                         rows, re.MULTILINE), rows
    assert re.search(r"kneser-ney-5gram alone", rows) and "model at its defaults" in rows
    for notebook in (ci_run.trained, ci_run.evaluated):
        for code_cell in notebook.cells:
            if code_cell.cell_type == "code":
                assert not [o for o in code_cell.outputs if o.output_type == "error"]


def test_collect_notebook_rejects_an_unknown_source(tmp_path):
    dataset = tmp_path / "tweets.parquet"
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        run_notebook(COLLECT, tmp_path / "out.ipynb",
                     {"source": "carrier-pigeon", "output": str(dataset)})
    assert failure.value.ename == "UserError"
    assert "source='carrier-pigeon' is not one of 'archive', 'twitter'" in failure.value.evalue
    assert not dataset.exists()


def test_every_profile_has_a_file_for_every_notebook():
    assert [path.name for path in PROFILES] == ["ci", "full"]
    for profile in PROFILES:
        assert sorted(path.stem for path in profile.glob("*.yaml")) == [
            path.stem for path in NOTEBOOKS]


def test_the_notebooks_record_no_tensorflow_noise_nor_progress_bars(ci_run):
    for notebook in (ci_run.collected, ci_run.explored, ci_run.trained, ci_run.evaluated):
        for code_cell in notebook.cells:
            for output in code_cell.get("outputs", []):
                text = output.get("text", "")
                for noise in ("absl::InitializeLog", "cuInit", "cuda drivers", "oneDNN",
                              "INFO:tensorflow", "\b", "\x1b[", "0%|"):
                    assert noise not in text, f"{code_cell.id}: {text[:300]!r}"
    train_output = stdout(cell(ci_run.trained, "train"))
    assert "a new run" in train_output and "resumed" not in train_output
    # Keras counts on across phases; the notebook says so before its "Epoch 3/3".
    assert "fine-tuning: epochs 3 to 3 on " in train_output


def test_make_train_runs_a_profiles_notebooks_in_order(tmp_path):
    """What ``make train PARAMS=ci`` runs (``python -m covfefe.notebooks ci``), limited to the
    collect notebook to stay quick: its executed copy lands in the output folder."""
    result = subprocess.run(
        [sys.executable, "-m", "covfefe.notebooks", "ci", "01-collect-tweets",
         "--output-dir", str(tmp_path / "executed")],
        env={**os.environ, "COVFEFE_DATA_DIR": str(tmp_path / "data")}, capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"executed notebooks: {tmp_path / 'executed'}" in result.stdout
    # The kernel's traffic is encrypted (covfefe.notebooks.EncryptedKernelManager), so
    # ipykernel has no warning about it.
    assert "without encryption" not in result.stderr
    collected = nbformat.read(tmp_path / "executed" / "01-collect-tweets.ipynb", as_version=4)
    assert "now holds" in stdout(cell(collected, "collect"))
    assert (tmp_path / "data" / "tweets.parquet").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["nosuch"], "there is no parameter profile 'nosuch'"),
    (["ci", "05-nothing"], "has no 05-nothing.yaml"),
])
def test_make_train_names_a_bad_profile_or_notebook(argv, message):
    result = subprocess.run([sys.executable, "-m", "covfefe.notebooks", *argv],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_with_outputs_cleared(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    assert "papermill" not in notebook.metadata, "an executed copy, not the source notebook"
    for code_cell in notebook.cells:
        if code_cell.cell_type == "code":
            assert code_cell.outputs == [], f"cell {code_cell.id} has outputs"
            assert code_cell.execution_count is None, f"cell {code_cell.id} has a count"


def _parameters_cell(notebook) -> nbformat.NotebookNode:
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells are tagged 'parameters'"
    return tagged[0]


def _declared_parameters(path: Path) -> dict:
    """Return the parameters cell's names and default values, checking its shape on the way."""
    source = _parameters_cell(nbformat.read(path, as_version=4)).source
    comments = {token.start[0] for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    declared = {}
    for statement in ast.parse(source).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1
        assert isinstance(statement.targets[0], ast.Name), ast.unparse(statement)
        assert statement.lineno == statement.end_lineno, f"{ast.unparse(statement)}: one line"
        assert statement.lineno in comments, f"{ast.unparse(statement)} has no comment"
        declared[statement.targets[0].id] = ast.literal_eval(statement.value)
    return declared


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_has_one_parameters_cell_of_commented_literals(path):
    declared = _declared_parameters(path)
    assert declared
    # papermill reads the same cell its own way (`--help-notebook`); both must see every one.
    inspected = papermill.inspect_notebook(str(path))
    assert list(inspected) == list(declared), "papermill cannot parse a line (an '=' in a comment?)"
    for name, parameter in inspected.items():
        assert parameter["help"], f"papermill sees no help for {name}"


@pytest.mark.parametrize("parameter_file", PARAMETER_FILES,
                         ids=lambda path: f"{path.parent.name}/{path.name}")
def test_parameter_files_are_flat_and_only_hold_parameters_the_notebook_declares(parameter_file):
    parameters = yaml.safe_load(parameter_file.read_text())
    assert isinstance(parameters, dict) and parameters
    notebook = NOTEBOOK_DIR / f"{parameter_file.stem}.ipynb"
    assert notebook in NOTEBOOKS, f"{parameter_file}: no notebook {notebook.name}"
    declared = _declared_parameters(notebook)
    for name, value in parameters.items():
        # papermill would inject an unknown name anyway, with only a log line to say so.
        assert name in declared, f"{parameter_file}: {notebook.stem} has no parameter {name}"
        assert type(value) is type(declared[name]), f"{parameter_file}: {name}={value!r}"


def test_explore_notebook_ends_an_empty_selection_in_one_sentence(tiny_tweets, tmp_path):
    """The newcomer's run: plain papermill with a period the dataset does not hold."""
    output = tmp_path / "02-explore-tweets.ipynb"
    result = subprocess.run([str(PAPERMILL), str(EXPLORE), str(output), "-p", "dataset",
                             str(tiny_tweets), "-p", "since", "2019-01-01"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    sentence = (f"UserError: no tweets since 2019-01-01 to explore in {tiny_tweets}, which holds "
                f"{len(pd.read_parquet(tiny_tweets))} from 2016-01-01 to 2016-02-29: choose since "
                "and until in that period, or collect this one first "
                "(notebooks/01-collect-tweets.ipynb)")
    assert result.stderr.rstrip().endswith(sentence), result.stderr[-2000:]
    assert "log-scaled" not in result.stderr
    errors = [o for c in nbformat.read(output, as_version=4).cells if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert [error.traceback for error in errors] == [[sentence]]


def test_update_notebook_builds_compares_and_registers_a_challenger(ci_run):
    """Notebook 05 under plain papermill: the ci model updated with its newest tweets, each
    step scored on the future, the decision with its interval, the challenger registered."""
    updated = nbformat.read(ci_run.home / "executed" / "05-update-model.ipynb", as_version=4)
    text = "\n".join(output.get("text", "") + json.dumps(output.get("data", {}))
                      for cell in updated.cells if cell.cell_type == "code"
                      for output in cell.get("outputs", []))
    assert "decision:" in text and "interval" in text
    assert "+ mixture weight refit (challenger)" in text
    assert "registered the challenger as version" in text
    assert "image/png" in text  # the fine-tuning curve and the steps, drawn
    from covfefe.inference.artifact import load_artifact

    first = sorted((ci_run.home / "runs").glob("update-*/model"))[0]  # papermill's, then nbval's
    challenger = load_artifact(first)
    assert challenger.metadata["lineage"] == [challenger.metadata["update"]["champion"]]
    assert challenger.mixture["ngram_order"] == 5  # the ci model had no table: one was counted

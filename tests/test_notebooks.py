"""The notebooks, run as notebooks: papermill with ``notebooks/params/ci.yaml``, and their hygiene.

``pytest --nbval-lax notebooks/`` (part of ``make test``) runs them once more with their defaults.
"""

import ast
import base64
import io
import json
import re
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
PARAMETER_SETS = sorted((NOTEBOOK_DIR / "params").glob("*.yaml"))
CI_PARAMETERS = NOTEBOOK_DIR / "params" / "ci.yaml"
COLLECT = NOTEBOOK_DIR / "01-collect-tweets.ipynb"
EXPLORE = NOTEBOOK_DIR / "02-explore-tweets.ipynb"
TRAIN = NOTEBOOK_DIR / "03-train-model.ipynb"
EVALUATE = NOTEBOOK_DIR / "04-evaluate-model.ipynb"
EXPLORE_PLOTS = 5  # tweets per year, lengths, characters, hashtags, mentions


def notebook_parameters(parameter_set: Path, notebook: Path) -> dict:
    """Return a notebook's section of a parameter set ({} when it has none)."""
    return dict(yaml.safe_load(parameter_set.read_text())[notebook.stem] or {})


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
    collect_parameters: dict
    dataset: Path
    collected: nbformat.NotebookNode
    explored: nbformat.NotebookNode
    trained: nbformat.NotebookNode
    evaluated: nbformat.NotebookNode
    model: Path


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory) -> CiRun:
    """The notebooks run in order with ci.yaml, the dataset and runs in a temporary folder."""
    from covfefe.notebooks import run_notebooks

    folder = tmp_path_factory.mktemp("notebooks")
    dataset, model = folder / "data" / "tweets.parquet", folder / "model"
    overrides = {
        COLLECT.stem: {"output": str(dataset)},
        EXPLORE.stem: {"dataset": str(dataset)},
        TRAIN.stem: {"dataset": str(dataset), "run_dir": str(folder / "run"),
                     "export_dir": str(model)},
        EVALUATE.stem: {"dataset": str(dataset), "model": str(model)},
    }
    stems = (COLLECT.stem, EXPLORE.stem, TRAIN.stem, EVALUATE.stem)
    executed = run_notebooks(CI_PARAMETERS, stems, output_dir=folder / "executed",
                             overrides=overrides, progress=False)
    collected, explored, trained, evaluated = (nbformat.read(path, as_version=4)
                                               for path in executed)
    collect_parameters = {**notebook_parameters(CI_PARAMETERS, COLLECT), **overrides[COLLECT.stem]}
    return CiRun(collect_parameters, dataset, collected, explored, trained, evaluated, model)


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


def test_ci_parameters_collect_a_small_slice():
    parameters = notebook_parameters(CI_PARAMETERS, COLLECT)
    assert parameters["archive"] == ""  # the environment's archive: no path baked into CI
    assert _utc_date(parameters["until"]) > _utc_date(parameters["since"])


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


def test_explore_notebook_summarises_the_dataset(ci_run):
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
    from covfefe.artifact import load_artifact

    artifact = load_artifact(ci_run.model)
    parameters = notebook_parameters(CI_PARAMETERS, TRAIN)
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
    from covfefe.artifact import load_artifact

    artifact = load_artifact(ci_run.model)
    (table,) = [o for o in cell(ci_run.evaluated, "compare").outputs
                if o.output_type == "execute_result"]
    text = table.data["text/plain"]
    model_bits = float(re.search(r"^model\s+([\d.]+)", text, re.MULTILINE).group(1))
    assert model_bits == pytest.approx(artifact.metrics["validation_bits_per_char"], abs=1e-3)
    for order in notebook_parameters(CI_PARAMETERS, EVALUATE)["baseline_orders"]:
        assert f"kneser-ney-{order}gram" in text
    assert len(images(ci_run.evaluated)) == 2  # by length, by year
    for notebook in (ci_run.trained, ci_run.evaluated):
        for code_cell in notebook.cells:
            if code_cell.cell_type == "code":
                assert not [o for o in code_cell.outputs if o.output_type == "error"]


def test_collect_notebook_rejects_an_unknown_source(tmp_path):
    dataset = tmp_path / "tweets.parquet"
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        run_notebook(COLLECT, tmp_path / "out.ipynb",
                     {"source": "carrier-pigeon", "output": str(dataset)})
    assert failure.value.ename == "ValueError"
    assert "source='carrier-pigeon' is not one of \"archive\", \"twitter\"" in failure.value.evalue
    assert not dataset.exists()


def test_there_are_notebooks_and_parameter_sets():
    assert COLLECT in NOTEBOOKS and EXPLORE in NOTEBOOKS
    assert CI_PARAMETERS in PARAMETER_SETS


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


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS, ids=lambda path: path.name)
def test_parameter_sets_only_hold_parameters_the_notebooks_declare(parameter_set):
    sections = yaml.safe_load(parameter_set.read_text())
    assert isinstance(sections, dict) and sections
    notebooks = {path.stem: path for path in NOTEBOOKS}
    for stem, parameters in sections.items():
        assert stem in notebooks, f"{parameter_set.name}: no notebook {stem}.ipynb"
        declared = _declared_parameters(notebooks[stem])
        for name, value in (parameters or {}).items():
            # papermill would inject an unknown name anyway, with only a log line to say so.
            assert name in declared, f"{parameter_set.name}: {stem} has no parameter {name}"
            assert type(value) is type(declared[name]), f"{stem}.{name}: {value!r}"

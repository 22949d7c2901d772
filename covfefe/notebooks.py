"""Run the notebooks headless with papermill, each with its own section of a parameter set.

``python -m covfefe.notebooks notebooks/params/full.yaml`` (what ``make train`` runs) executes
collect -> train -> evaluate into a new ``$COVFEFE_RUNS_DIR/<time>/`` folder; the executed
notebooks stay there as the record of the run (parameters, curves, metrics).
"""

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from covfefe import config
from covfefe.errors import UserError

PIPELINE = ("01-collect-tweets", "03-train-model", "04-evaluate-model")


def notebook_dir() -> Path:
    return config.home() / "notebooks"


def read_sections(parameter_set: str | Path) -> dict[str, dict]:
    """Return a parameter set's sections: notebook name -> parameters."""
    import yaml

    path = config.resolve(parameter_set)
    try:
        sections = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"parameter set {path} does not exist") from None
    if not isinstance(sections, dict):
        raise UserError(f"parameter set {path} must map notebook names to parameters")
    return {name: dict(values or {}) for name, values in sections.items()}


def run_notebooks(parameter_set: str | Path, notebooks: tuple[str, ...] = PIPELINE, *,
                  output_dir: str | Path | None = None,
                  overrides: dict[str, dict] | None = None, progress: bool = True) -> list[Path]:
    """Execute each notebook in order with its section (plus ``overrides``); return the
    executed copies. A failing notebook stops the run; its executed copy shows where."""
    import papermill

    sections = read_sections(parameter_set)
    output_dir = Path(output_dir) if output_dir else (
        config.runs_dir() / datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = []
    for name in notebooks:
        source = notebook_dir() / f"{name}.ipynb"
        if not source.exists():
            raise UserError(f"there is no notebook {source}")
        parameters = {**sections.get(name, {}), **(overrides or {}).get(name, {})}
        output = output_dir / source.name
        if progress:
            print(f"running {source.name} -> {output}", flush=True)
        papermill.execute_notebook(str(source), str(output), parameters=parameters,
                                   kernel_name="python3", cwd=str(config.home()),
                                   progress_bar=progress)
        executed.append(output)
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m covfefe.notebooks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("parameter_set", help="e.g. notebooks/params/full.yaml")
    parser.add_argument("notebooks", nargs="*", default=list(PIPELINE),
                        help=f"notebook names, in order (default: {' '.join(PIPELINE)})")
    parser.add_argument("--output-dir", help="default: $COVFEFE_RUNS_DIR/<time>")
    args = parser.parse_args(argv)
    try:
        executed = run_notebooks(args.parameter_set, tuple(args.notebooks),
                                 output_dir=args.output_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"executed notebooks: {executed[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

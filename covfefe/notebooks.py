"""Run a parameter profile's notebooks headless with papermill, in order.

``python -m covfefe.notebooks full`` (what ``make train`` runs) executes, for each file of
``notebooks/params/full/`` in name order (01-collect-tweets.yaml, 02-..., 03-..., 04-...), the
notebook of that name with that file's parameters into a new ``$COVFEFE_RUNS_DIR/full-<time>/``
folder: the same as ``papermill notebooks/NAME.ipynb OUT -f notebooks/params/full/NAME.yaml``
for each. The executed notebooks stay there as the record of the run (parameters, curves,
metrics). A failing notebook stops the run; its executed copy shows where.
"""

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import papermill
from jupyter_client import AsyncKernelManager
from traitlets import default

from covfefe import config, tracking
from covfefe.errors import UserError
from covfefe.parameters import profile_dir, profile_files, read_parameters


class EncryptedKernelManager(AsyncKernelManager):
    """jupyter_client's kernel manager, with transport encryption on where the kernel says it
    supports it (ipykernel does): the kernel's sockets use CurveZMQ keys, so ipykernel has no
    "running over TCP without encryption" warning to print on every run."""

    @default("transport_encryption")
    def _transport_encryption_default(self) -> str:
        return "auto"


def notebook_dir() -> Path:
    return config.home() / "notebooks"


def run_notebooks(profile: str | Path, notebooks: tuple[str, ...] = (), *,
                  output_dir: str | Path | None = None, progress: bool = True) -> list[Path]:
    """Execute a profile's notebooks (``notebooks``: some of them, in that order; default:
    every one) with their parameter files; return the executed copies."""
    files = profile_files(profile)
    missing = [name for name in notebooks if name not in files]
    if missing:
        raise UserError(f"parameter profile {profile_dir(profile)} has no "
                        f"{', '.join(name + '.yaml' for name in missing)}; it holds "
                        f"{', '.join(path.name for path in files.values())}")
    output_dir = Path(output_dir) if output_dir else (
        config.runs_dir()
        / f"{profile_dir(profile).name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}")
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = []
    for name in notebooks or tuple(files):
        source = notebook_dir() / f"{name}.ipynb"
        if not source.exists():
            raise UserError(f"{files[name]} is for a notebook {source} that does not exist")
        output = output_dir / source.name
        if progress:
            print(f"running {source.name} with {files[name]} -> {output}", flush=True)
        started_ms = int(time.time() * 1000)
        papermill.execute_notebook(str(source), str(output),
                                   parameters=read_parameters(files[name]),
                                   kernel_name="python3", cwd=str(config.home()),
                                   progress_bar=progress,
                                   kernel_manager_class=EncryptedKernelManager)
        # The executed notebook is the run's record: kept with the MLflow runs it made.
        tracking.attach_notebook(output, started_ms)
        executed.append(output)
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m covfefe.notebooks", allow_abbrev=False,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="a folder of notebooks/params (ci, full) or a path")
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="run only these notebooks of the profile, in this order "
                        "(default: every one it has a file for)")
    parser.add_argument("--output-dir", help="default: $COVFEFE_RUNS_DIR/<profile>-<time>")
    args = parser.parse_args(argv)
    try:
        executed = run_notebooks(args.profile, tuple(args.notebooks), output_dir=args.output_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"executed notebooks: {executed[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

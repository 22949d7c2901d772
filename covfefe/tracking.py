"""Experiment tracking and the model registry, in MLflow.

Every `covfefe train`, `update`, `mix` and `evaluate --samples` run is an MLflow run of the
experiment ``covfefe`` with its parameters, metrics (per epoch where there are epochs) and,
where it made one, the model artifact. Each artifact is a version of one registered model,
``covfefe``; its aliases ``champion`` (what is served) and ``challenger`` (the last candidate)
say which is which, and the tag ``previous_champion`` what `rollback` returns to.

The store is ``MLFLOW_TRACKING_URI`` when set (a shared tracking server), else a SQLite file
beside the dataset, ``$COVFEFE_DATA_DIR/mlflow.db``, with the runs' files in
``$COVFEFE_DATA_DIR/mlartifacts``: nothing to start. MLflow is in the training extra; where it
is not installed (the serving image) a run is not tracked and says so once, and the registry
commands explain what to install.

The served model follows the champion through a link, ``$COVFEFE_DATA_DIR/models/champion``,
to the champion's artifact folder (downloaded from the store once). `promote` replaces the link
in one atomic rename, so a crash at any moment leaves the old model or the new one served,
never none; serving reads ``COVFEFE_MODEL`` pointing at the link.
"""

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from covfefe import config
from covfefe.errors import UserError

EXPERIMENT = "covfefe"
MODEL_NAME = "covfefe"
CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS = "previous_champion"  # a tag of the registered model: where rollback goes
SERVED_LINK = "champion"  # $COVFEFE_DATA_DIR/models/champion -> the champion's folder

_warned = False


def tracking_uri() -> str:
    """The MLflow store: ``MLFLOW_TRACKING_URI``, else the SQLite file beside the dataset."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{config.data_dir() / 'mlflow.db'}"


def available() -> bool:
    """Whether MLflow is installed (the training extra)."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def _mlflow():
    """MLflow, pointed at the store, with the experiment made (its files beside the dataset
    for a local store, not in a ./mlruns of whatever folder the command ran in)."""
    try:
        import mlflow
    except ImportError:
        raise UserError("MLflow is not installed: pip install 'covfefe[train]' (the registry "
                        "and run tracking need it)") from None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per download
    mlflow.set_tracking_uri(tracking_uri())
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None
        if tracking_uri().startswith("sqlite:"):
            location = (config.data_dir() / "mlartifacts").resolve().as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def client():
    """An `mlflow.MlflowClient` of the store."""
    return _mlflow().MlflowClient()


@contextlib.contextmanager
def run(kind: str, params: dict | None = None, *, tags: dict | None = None):
    """An MLflow run named ``kind`` (train, update, mix, evaluate), its parameters logged;
    yields the run, or None (after one line on stderr) where MLflow is not installed."""
    global _warned
    if not available():
        if not _warned:
            print("MLflow is not installed: this run is not tracked (pip install "
                  "'covfefe[train]')", file=sys.stderr)
            _warned = True
        yield None
        return
    mlflow = _mlflow()
    with mlflow.start_run(run_name=kind, tags={"kind": kind, **(tags or {})}) as active:
        if params:
            mlflow.log_params({key: _loggable(value) for key, value in params.items()})
        yield active


def _loggable(value):
    """A parameter value MLflow keeps (it caps a value's length at 6,000 characters)."""
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


def log_metrics(active, metrics: dict, step: int | None = None) -> None:
    """Log the numeric ``metrics`` to a run from `run` (nothing when it is None)."""
    if active is None:
        return
    numbers = {key: float(value) for key, value in metrics.items()
               if isinstance(value, int | float) and not isinstance(value, bool)}
    _mlflow().log_metrics(numbers, step=step)


def log_file(active, path, folder: str | None = None) -> None:
    """Attach a file (an executed notebook, a record) to a run from `run`."""
    if active is not None and Path(path).is_file():
        _mlflow().log_artifact(str(path), folder)


def log_history(active, history) -> None:
    """Log a training history (one row per epoch, as `covfefe.training.train.load_history`
    reads it) as per-epoch metrics."""
    if active is None:
        return
    for row in history.to_dict(orient="records"):
        epoch = int(row.pop("epoch"))
        log_metrics(active, row, step=epoch)


def attach_notebook(path, since_ms: int) -> int:
    """Attach an executed notebook to every run of the experiment that started since
    ``since_ms`` (while the notebook ran); return how many. Nothing without MLflow."""
    if not available() or not Path(path).is_file():
        return 0
    mlflow = _mlflow()
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id], filter_string=f"attributes.start_time >= {since_ms}")
    for found in runs:
        mlflow.MlflowClient().log_artifact(found.info.run_id, str(path), "notebook")
    return len(runs)


def register(active, artifact) -> str:
    """Store a model artifact with a run from `run` and register it as the next version of
    the model; return that version (a string, MLflow's)."""
    mlflow = _mlflow()
    if active is None:
        raise UserError("registering a model needs MLflow: pip install 'covfefe[train]'")
    mlflow.log_artifacts(str(artifact.path), "model")
    mlflow_client = mlflow.MlflowClient()
    with contextlib.suppress(Exception):  # already registered: RESOURCE_ALREADY_EXISTS
        mlflow_client.create_registered_model(MODEL_NAME)
    version = mlflow_client.create_model_version(
        MODEL_NAME, f"{active.info.artifact_uri}/model", run_id=active.info.run_id,
        tags={"artifact_version": artifact.version, "name": artifact.name})
    return str(version.version)


def alias(name: str):
    """The model version an alias points at, or None."""
    mlflow_client = client()
    try:
        return mlflow_client.get_model_version_by_alias(MODEL_NAME, name)
    except Exception:  # no such model or alias: MlflowException (RESOURCE_DOES_NOT_EXIST)
        return None


def set_alias(name: str, version: str) -> None:
    client().set_registered_model_alias(MODEL_NAME, name, str(version))


def versions() -> list:
    """Every registered version, newest first."""
    try:
        found = client().search_model_versions(f"name='{MODEL_NAME}'")
    except Exception:
        return []
    return sorted(found, key=lambda version: int(version.version), reverse=True)


def models_dir() -> Path:
    return config.data_dir() / "models"


def served_link() -> Path:
    """The link the served model follows (`COVFEFE_MODEL` points at it in production)."""
    return models_dir() / SERVED_LINK


def local_copy(version) -> Path:
    """The artifact folder of a registered version on this machine, downloaded from the store
    the first time (into a temporary folder renamed into place: never half there)."""
    tag = version.tags.get("artifact_version") or f"v{version.version}"
    folder = models_dir() / tag
    if folder.is_dir():
        return folder
    models_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{tag}.", dir=models_dir()))
    try:
        downloaded = _mlflow().artifacts.download_artifacts(artifact_uri=version.source,
                                                            dst_path=str(staging))
        os.replace(downloaded, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def point_served_link(folder: Path) -> Path:
    """Point the served link at ``folder`` in one atomic rename and return the link."""
    link = served_link()
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(os.path.relpath(folder.resolve(), link.parent.resolve()))
    os.replace(temporary, link)  # rename(2): the link is the old one or the new one
    return link


def ensure_champion(load) -> str:
    """The champion's version; on a first run, the artifact ``load()`` returns (the bundled
    model, or the one an update starts from) is registered as the first champion."""
    current = alias(CHAMPION)
    if current is not None:
        return current.version
    artifact = load()
    with run("register", {"model": str(artifact.path),
                          "artifact_version": artifact.version}) as active:
        version = register(active, artifact)
    set_alias(CHAMPION, version)
    return version


def find_version(spec: str):
    """A registered version by MLflow number, artifact version or alias."""
    spec = str(spec)
    mlflow_client = client()
    if spec in (CHAMPION, CHALLENGER):
        found = alias(spec)
        if found is None:
            raise UserError(f"no model version has the alias {spec!r} yet")
        return found
    for version in versions():
        if spec in (str(version.version), version.tags.get("artifact_version")):
            return mlflow_client.get_model_version(MODEL_NAME, version.version)
    known = ", ".join(f"{v.version} ({v.tags.get('artifact_version')})" for v in versions())
    raise UserError(f"no registered version {spec!r} of model {MODEL_NAME!r}; known: "
                    f"{known or 'none'}")


def promote(spec: str, verify) -> tuple[str, Path]:
    """Make a registered version the champion: its artifact on this machine, checked by
    ``verify(folder)`` (`covfefe.inference.artifact.load_artifact`: a damaged download is
    refused before it is served), the served link pointed at it (atomically), then the alias
    moved and the previous champion remembered. Returns the version and the served link."""
    version = find_version(spec)
    folder = local_copy(version)
    verify(folder)
    link = point_served_link(folder)
    previous = alias(CHAMPION)
    mlflow_client = client()
    if previous is not None and previous.version != version.version:
        mlflow_client.set_registered_model_tag(MODEL_NAME, PREVIOUS, previous.version)
    set_alias(CHAMPION, version.version)
    return version.version, link


def rollback(verify) -> tuple[str, Path]:
    """Make the previous champion the champion again (``verify``: as for `promote`)."""
    model = client().get_registered_model(MODEL_NAME)
    previous = model.tags.get(PREVIOUS)
    if not previous:
        raise UserError("there is no previous champion to roll back to")
    return promote(previous, verify)


def signal_reload(pidfile: Path) -> int:
    """Send SIGHUP to the process whose pid ``pidfile`` holds (a gunicorn master); its pid."""
    import signal

    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except FileNotFoundError:
        raise UserError(f"pid file {pidfile} does not exist: is the server running with "
                        "--pid there?") from None
    except ValueError:
        raise UserError(f"pid file {pidfile} does not hold a process id") from None
    except ProcessLookupError:
        raise UserError(f"no process {pidfile.read_text().strip()} (from {pidfile}): the "
                        "server has stopped") from None
    return pid

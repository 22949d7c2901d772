"""Run tracking and the registry against a real `mlflow server` process on localhost (the
shared tracking server a team points MLFLOW_TRACKING_URI at), as well as the default local
store (tests/test_update.py)."""

import json
import os
import subprocess
import urllib.parse
import urllib.request

import pytest

from covfefe.inference.artifact import load_artifact
from tests.helpers import ROOT, covfefe, free_port, require_all, stop_process, wait_for
from tests.test_update import newer  # noqa: F401  (the fixture: a week of newer tweets)

MLFLOW_SERVER = ROOT / ".cache" / "mlflow-server" / "bin" / "mlflow"


def _get(base: str, path: str, **query) -> dict:
    url = f"{base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server (SQLite store, artifacts served through it) on
    127.0.0.1; its base URL."""
    if not MLFLOW_SERVER.exists():
        message = f"{MLFLOW_SERVER} is missing: `make test` (or `make mlflow`) installs it"
        if require_all():
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(MLFLOW_SERVER), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            # No job runner (8 more processes of 230 MB each; covfefe runs no MLflow jobs).
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(base), "mlflow server", process, log, timeout=120)
        yield base
    finally:
        stop_process(process, group=True)


@pytest.mark.network  # a real `mlflow server` on 127.0.0.1
def test_update_tracks_and_registers_on_a_tracking_server(tiny_model, newer, mlflow_server,  # noqa: F811
                                                          tmp_path):
    data, _ = newer
    env = {"COVFEFE_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": mlflow_server}
    out = tmp_path / "challenger"
    result = covfefe("update", "--model", str(tiny_model.path), "--out", str(out),
                     "--run-dir", str(tmp_path / "run"), "--epochs", "2", "--order", "5",
                     "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    challenger = load_artifact(out)

    model = _get(mlflow_server, "registered-models/get", name="covfefe")["registered_model"]
    aliases = {alias["alias"]: alias["version"] for alias in model["aliases"]}
    assert aliases == {"champion": "1", "challenger": "2"}
    versions = _get(mlflow_server, "model-versions/search", filter="name='covfefe'")
    tags = {version["version"]: {tag["key"]: tag["value"] for tag in version.get("tags", [])}
            for version in versions["model_versions"]}
    assert tags["1"]["artifact_version"] == tiny_model.version
    assert tags["2"]["artifact_version"] == challenger.version

    experiment = _get(mlflow_server, "experiments/get-by-name", experiment_name="covfefe")
    runs = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{mlflow_server}/api/2.0/mlflow/runs/search", method="POST",
        data=json.dumps({"experiment_ids": [experiment["experiment"]["experiment_id"]]}).encode(),
        headers={"Content-Type": "application/json"}), timeout=30).read())["runs"]
    update_run = next(run for run in runs if run["info"]["run_name"] == "update")
    metrics = {metric["key"] for metric in update_run["data"]["metrics"]}
    assert {"future_difference", "future_interval_low", "fit_bits_per_char"} <= metrics
    history = _get(mlflow_server, "metrics/get-history", run_id=update_run["info"]["run_id"],
                   metric_key="fit_bits_per_char")["metrics"]
    assert sorted(point["step"] for point in history) == [0, 1, 2]  # per epoch, 0: champion

    # The registered challenger's files come back from the server whole, and are served.
    promoted = covfefe("promote", "2", env=env)
    assert promoted.returncode == 0, promoted.stderr
    assert load_artifact(data / "models" / "champion").version == challenger.version

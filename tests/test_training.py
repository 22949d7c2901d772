"""Training for real on a slice of the archive: metrics, artifact, resume after a kill, seeds."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from covfefe.errors import UserError
from covfefe.inference.artifact import load_artifact
from covfefe.training.scoring import score_model
from covfefe.training.train import TrainConfig, load_history, train
from tests.helpers import ROOT, TINY_PARAMS

CI_PARAMETERS = ROOT / "notebooks" / "params" / "ci" / "03-train-model.yaml"


def test_training_reports_bits_per_char_every_epoch(tiny_training):
    history = tiny_training.history
    assert history["epoch"].tolist() == [1, 2]
    assert {"bits_per_char", "val_bits_per_char", "learning_rate"} <= set(history.columns)
    assert np.allclose(history["val_bits_per_char"], history["val_xent"] / np.log(2))
    assert history["bits_per_char"].iloc[1] < history["bits_per_char"].iloc[0]  # it learns


def test_the_artifact_records_data_parameters_and_both_metrics(tiny_training, tiny_model):
    metadata = tiny_model.metadata
    assert metadata["format"] == "covfefe-model" and metadata["version"]
    assert metadata["model"]["units"] == TINY_PARAMS["units"]
    assert metadata["model"]["vocab_size"] == len(tiny_model.vocabulary)
    data = metadata["data"]
    assert data["tweets"] == data["train_tweets"] + data["validation_tweets"]
    assert data["first_tweet"] < data["validation_since"] <= data["last_tweet"]
    assert len(data["sha256"]) == 64
    metrics = metadata["metrics"]
    assert metrics["baseline"]["name"].startswith("kneser-ney-")
    assert metrics["baseline"]["validation_bits_per_char"] == min(
        b["validation_bits_per_char"] for b in metrics["baselines"])
    assert {"model.keras", "vocabulary.json"} <= set(metadata["files"])
    assert any(name.startswith("saved_model/") for name in metadata["files"])


def test_the_exported_score_is_the_best_epochs_validation_score(tiny_training, tiny_model):
    """Two computations of one number: Keras's weighted metric during training, and the
    evaluation module's own per-tweet scoring of the exported model."""
    from covfefe.data.store import load_dataset
    from covfefe.training.corpus import Corpus

    history = tiny_training.history
    best = history.loc[history["val_bits_per_char"].idxmin()]
    assert tiny_model.metrics["best_epoch"] == best["epoch"]
    assert tiny_model.metrics["validation_bits_per_char"] == pytest.approx(
        best["val_bits_per_char"], abs=1e-3)
    config = json.loads((tiny_training.run_dir / "config.json").read_text())
    corpus = Corpus.from_tweets(load_dataset(config["dataset"]), config["validation_fraction"])
    again = score_model(tiny_model.load_model(), tiny_model.vocabulary, corpus.validation["text"])
    assert again.bits_per_char == pytest.approx(tiny_model.metrics["validation_bits_per_char"],
                                                abs=1e-3)
    assert int(again.chars.sum()) == tiny_model.metrics["validation_chars"]


def test_the_saved_model_serves_the_same_logits(tiny_model):
    import tensorflow as tf

    ids = np.array([[1, *tiny_model.vocabulary.encode("Make America")]], dtype=np.int32)
    keras_logits = np.asarray(tiny_model.load_model()(ids))
    loaded = tf.saved_model.load(str(tiny_model.path / "saved_model"))
    signature = loaded.signatures["serving_default"]
    served = list(signature(tf.constant(ids)).values())[0].numpy()
    np.testing.assert_allclose(served, keras_logits, atol=1e-5)


def test_a_finished_run_resumes_without_training_again(tiny_training, tmp_path):
    # A copy: exporting again in place would replace the session's tiny model under the tests
    # that serve it.
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_training.run_dir, run_dir)
    config = {**json.loads((run_dir / "config.json").read_text()), "run_dir": str(run_dir),
              "export_dir": ""}
    again = train(TrainConfig(**config), progress=False)
    assert again.resumed_from_epoch == 2 and len(again.history) == 2
    assert again.artifact.metrics["validation_bits_per_char"] == pytest.approx(
        tiny_training.artifact.metrics["validation_bits_per_char"])


def test_changing_the_architecture_of_a_run_is_refused(tiny_training):
    config = json.loads((tiny_training.run_dir / "config.json").read_text())
    config["units"] = 48
    with pytest.raises(UserError, match=r"started with other units \(units=32\)"):
        train(TrainConfig(**config), progress=False)


def test_a_run_started_from_weights_resumes_whether_their_path_is_relative_or_not(
        tiny_model, tmp_path, monkeypatch):
    """The long run's script names the bundled model relatively; a run first started with its
    absolute path resumes (it was refused as "other init_from")."""
    from covfefe.training.train import _check_run

    monkeypatch.setenv("COVFEFE_HOME", str(tiny_model.path.parent))
    absolute = TrainConfig(run_dir=str(tmp_path), init_from=str(tiny_model.path))
    _check_run(tmp_path, absolute, {"sha256": "x"})
    relative = TrainConfig(run_dir=str(tmp_path), init_from=tiny_model.path.name)
    _check_run(tmp_path, relative, {"sha256": "x"})  # the same file: accepted
    other = TrainConfig(run_dir=str(tmp_path), init_from=str(tmp_path))
    with pytest.raises(UserError, match="started with other init_from"):
        _check_run(tmp_path, other, {"sha256": "x"})


def test_the_same_seed_gives_the_same_model(tiny_tweets, tmp_path):
    runs = []
    for name in ("a", "b"):
        config = TrainConfig(run_dir=str(tmp_path / name), dataset=str(tiny_tweets),
                             **{**TINY_PARAMS, "epochs": 1, "saved_model": False})
        runs.append(train(config, progress=False))
    weights = [run.artifact.load_model().get_weights() for run in runs]
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert runs[0].artifact.metrics == runs[1].artifact.metrics


def test_a_fine_tuning_phase_continues_from_the_best_epoch_on_the_recent_tweets(
        tiny_training, tmp_path):
    import shutil

    from covfefe.files import read_json

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_training.run_dir, run_dir)  # a finished 2-epoch run
    config = {**json.loads((run_dir / "config.json").read_text()), "run_dir": str(run_dir),
              "export_dir": "", "saved_model": False}
    recent_since = "2016-02-15"
    finetune = {"finetune_epochs": 2, "finetune_since": recent_since,
                "finetune_learning_rate": 0.002}
    tuned = train(TrainConfig(**{**config, **finetune}), progress=False)
    state = read_json(run_dir / "state.json")
    assert state["phase"] == "fine-tune" and state["finetune_from"] == 2
    assert state["epochs_done"] == 4 and state["stop_reason"] == "4 epochs"
    assert list(tuned.history["epoch"]) == [1, 2, 3, 4]
    # The phase starts at its own learning rate, from the best epoch of the main phase.
    assert tuned.history["learning_rate"].iloc[2] == pytest.approx(0.002)
    best = tuned.history["val_bits_per_char"].min()
    assert tuned.artifact.metrics["validation_bits_per_char"] == pytest.approx(best, abs=1e-4)
    # Rerunning the same finished run trains nothing more.
    again = train(TrainConfig(**{**config, **finetune}), progress=False)
    assert again.resumed_from_epoch == 4 and len(again.history) == 4
    with pytest.raises(UserError, match="no training tweets since finetune_since=2030-01-01"):
        train(TrainConfig(**{**config, "finetune_epochs": 3, "finetune_since": "2030-01-01"}),
              progress=False)


@pytest.mark.parametrize("field, value, message", [
    ("cell", "rnn", "cell must be one of lstm, gru, not 'rnn'"),
    ("units", 0, "units must be a positive whole number, not 0"),
    ("dropout", 1.0, "dropout must be at least 0 and below 1"),
    ("epochs", 2.5, "epochs must be a positive whole number, not 2.5"),
    ("learning_rate", 0, "learning_rate must be above 0"),
    ("finetune_epochs", -1, "finetune_epochs must be a whole number of epochs, at least 0"),
    ("finetune_epochs", 2, "finetune_epochs needs finetune_since"),
    ("finetune_learning_rate", 0, "finetune_learning_rate must be above 0"),
])
def test_bad_parameters_are_refused_before_anything_runs(field, value, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**{field: value})


def test_an_unknown_parameter_is_named():
    with pytest.raises(UserError, match="unknown training parameter.*: unitz"):
        TrainConfig.from_dict({"unitz": 3})


def covfefe_train(run_dir, dataset, *extra):
    # The ci profile's file of notebook 03 (its notebook-only parameters are skipped), then
    # options, which win.
    args = [sys.executable, "-m", "covfefe", "train", "--params", str(CI_PARAMETERS),
            "--run-dir", str(run_dir), "--dataset", str(dataset), "--no-progress",
            "--saved-model", "false"]
    schedule = {"learning_rate": 0.005, "lr_decay": 0.5, "lr_decay_after": 1, "finetune_epochs": 0}
    for name, value in {**TINY_PARAMS, "epochs": 4, **schedule}.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args + list(extra)


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_tweets, tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "first-run.log"
    with log.open("w") as output:
        process = subprocess.Popen(covfefe_train(run_dir, tiny_tweets), stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    state_file = run_dir / "state.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if state_file.exists() and json.loads(state_file.read_text())["epochs_done"] >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before it could be killed:\n{log.read_text()}"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = json.loads(state_file.read_text())["epochs_done"]
    assert 1 <= killed_at < 4
    assert not (run_dir / "model").exists()  # killed before the export

    # The rerun also exports a SavedModel, whose INFO lines ("Assets written to") are noise too.
    rerun = subprocess.run(covfefe_train(run_dir, tiny_tweets, "--saved-model", "true"),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"epochs=4 (resumed after epoch {killed_at}, 4 epochs)" in rerun.stdout
    for noise in ("absl::InitializeLog", "cuInit", "cuda drivers", "Assets written"):
        assert noise not in rerun.stderr + rerun.stdout  # TensorFlow's lines are filtered out
    assert (run_dir / "model" / "saved_model").is_dir()
    history = load_history(run_dir)
    assert history["epoch"].tolist() == [1, 2, 3, 4]  # each epoch once: not restarted
    # The learning-rate schedule went on across the kill: halved every epoch after the first
    # (further lowered when validation stalls).
    rates = history["learning_rate"].tolist()
    assert rates[0] == pytest.approx(0.005)
    assert all(later <= earlier * 0.5 * (1 + 1e-6)
               for earlier, later in zip(rates[:-1], rates[1:], strict=True))
    artifact = load_artifact(run_dir / "model")
    assert artifact.metadata["training"]["epochs_trained"] == 4


def test_a_damaged_artifact_is_refused(tiny_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model.path, copy)
    load_artifact(copy)  # intact
    with (copy / "model.keras").open("r+b") as stream:
        stream.seek(100)
        stream.write(b"\0\0\0\0")
    with pytest.raises(UserError, match="is damaged: model.keras does not match its checksum"):
        load_artifact(copy)
    (copy / "model.keras").unlink()
    with pytest.raises(UserError, match="is incomplete: model.keras is missing"):
        load_artifact(copy)
    (copy / "metadata.json").unlink()
    with pytest.raises(UserError, match="is incomplete: metadata.json is missing"):
        load_artifact(copy)
    (copy / "metadata.json").write_text('{"format": "something-else"}')
    with pytest.raises(UserError, match="is not a covfefe model artifact"):
        load_artifact(copy)
    with pytest.raises(UserError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")


def test_no_export_trains_only_and_a_rerun_exports(tiny_tweets, tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.run(covfefe_train(run_dir, tiny_tweets, "--epochs", "1", "--no-export"),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "not exported: rerun without --no-export" in first.stdout
    assert json.loads((run_dir / "state.json").read_text())["epochs_done"] == 1
    assert not (run_dir / "model").exists()
    rerun = subprocess.run(covfefe_train(run_dir, tiny_tweets, "--epochs", "1"),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "epochs=1 (resumed after epoch 1, 1 epochs)" in rerun.stdout
    assert load_artifact(run_dir / "model").metadata["training"]["epochs_trained"] == 1


def test_the_gpu_script_trains_side_by_side_stops_on_time_and_packs_for_export(tiny_tweets,
                                                                                tmp_path):
    """models/train-gpu.sh, here on TensorFlow and the CPU: one run finishes, one is stopped
    by the time limit and keeps its epochs; both fine-tune and are packed; one is exported."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHON": sys.executable,
           "PARAMS": str(CI_PARAMETERS), "COVFEFE_DATA_DIR": str(tiny_tweets.parent),
           "FINETUNE_EPOCHS": "1"}
    endless = "--epochs 1000 --patience 1000 --lr-patience 1000"
    result = subprocess.run(["bash", str(ROOT / "models" / "train-gpu.sh"), str(out), "75", "120",
                             "quick --units 16 --epochs 1", f"endless --units 8 {endless}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr
    quick, endless_log = (out / "quick.log").read_text(), (out / "endless.log").read_text()
    assert "main phase exit 0" in quick and "fine-tuning exit 0" in quick
    assert "main phase exit 124" in endless_log, endless_log  # stopped by the time limit
    assert "fine-tuning exit 0" in endless_log
    runs = tmp_path / "unpacked"
    runs.mkdir()
    subprocess.run(["tar", "-xJf", str(out / "endless.tar.xz"), "-C", str(runs)], check=True)
    run_dir = runs / "gpu-endless"
    assert sorted(p.name for p in run_dir.rglob("*") if p.is_file()) == [
        "best.keras", "config.json", "data.json", "history.csv", "state.json", "vocabulary.json"]
    state = json.loads((run_dir / "state.json").read_text())
    main_epochs = state["finetune_from"]
    assert main_epochs >= 1 and state["epochs_done"] == main_epochs + 1 and state["finished"]
    # Exported here as the script's header says: the same options, the epochs it trained.
    export = subprocess.run(
        [sys.executable, "-m", "covfefe", "train", "--params", str(CI_PARAMETERS),
         "--run-dir", str(run_dir), "--units", "8", *endless.split(), "--epochs", str(main_epochs),
         "--finetune-epochs", "1", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr
    artifact = load_artifact(run_dir / "model")
    assert artifact.metadata["training"]["epochs_trained"] == main_epochs + 1


def test_the_patience_callbacks_start_from_the_saved_counters():
    from covfefe.training.callbacks import ResumableEarlyStopping, ResumableReduceLROnPlateau
    from covfefe.training.run_state import Patience

    stop = ResumableEarlyStopping(Patience(wait=2, best=1.5), monitor="val_xent", patience=5)
    reduce = ResumableReduceLROnPlateau(Patience(wait=1, best=1.25, cooldown_counter=3),
                                        monitor="val_xent", cooldown=4)
    fresh = ResumableReduceLROnPlateau(Patience(), monitor="val_xent")
    for callback in (stop, reduce, fresh):
        callback.on_train_begin()
    assert stop.counters() == Patience(wait=2, best=1.5)
    assert reduce.counters() == Patience(wait=1, best=1.25, cooldown_counter=3)
    assert fresh.counters().wait == 0 and fresh.counters().cooldown_counter == 0  # Keras' own

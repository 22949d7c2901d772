"""Training beyond one device: `distribute="mirrored:..."` (tf.distribute.MirroredStrategy).

This machine has no GPU, so TensorFlow splits its one CPU into two logical devices and the same
tiny run trains twice, each in a fresh process (the devices are fixed before TensorFlow starts):
on one device, and mirrored over the two, each taking half of every batch. The whole batch and
the summed gradients are the same, so the two runs must agree up to rounding: the losses of
every epoch within 0.2%, much closer than the same run with another seed.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from covfefe.errors import UserError
from covfefe.training.train import TrainConfig
from tests.helpers import ROOT, TINY_PARAMS

RUN = """
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
replicas = []
mirrored = tf.distribute.MirroredStrategy


def counted(*args, **kwargs):  # records the strategy that training makes
    strategy = mirrored(*args, **kwargs)
    replicas.append(strategy.num_replicas_in_sync)
    return strategy


tf.distribute.MirroredStrategy = counted
import keras
import numpy as np
from covfefe.training.train import TrainConfig, train

result = train(TrainConfig(**json.loads(sys.argv[1])), progress=False, export=False)
model = keras.saving.load_model(result.run_dir / "checkpoints" / "last.keras")
np.savez(result.run_dir / "weights.npz", *model.get_weights())
print(json.dumps({"replicas": replicas,
                  "history": result.history[["loss", "val_xent"]].to_dict("list")}))
"""


def run_training(tiny_tweets, run_dir, distribute: str, seed: int = TINY_PARAMS["seed"]) -> dict:
    params = {**TINY_PARAMS, "run_dir": str(run_dir), "dataset": str(tiny_tweets),
              "saved_model": False, "distribute": distribute, "seed": seed}
    result = subprocess.run([sys.executable, "-c", RUN, json.dumps(params)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    with np.load(run_dir / "weights.npz") as weights:
        outcome["weights"] = [weights[name] for name in weights.files]
    return outcome


def test_mirrored_over_two_devices_matches_one_device(tiny_tweets, tmp_path, capsys):
    single = run_training(tiny_tweets, tmp_path / "one", "")
    mirrored = run_training(tiny_tweets, tmp_path / "two", "mirrored:CPU:0,CPU:1")
    assert single["replicas"] == [] and mirrored["replicas"] == [2]
    # The same model up to rounding: the split batches' sums come in another order, and a
    # bucket's last, odd-sized batch splits unevenly.
    for column in ("loss", "val_xent"):
        np.testing.assert_allclose(mirrored["history"][column], single["history"][column],
                                   rtol=2e-3, err_msg=column)
    # Close means much closer than another seed of the same run on one device.
    other_seed = run_training(tiny_tweets, tmp_path / "seed", "", seed=TINY_PARAMS["seed"] + 1)
    final = {name: run["history"]["val_xent"][-1]
             for name, run in (("one", single), ("two", mirrored), ("seed", other_seed))}
    with capsys.disabled():
        print(f"\n[training] final val_xent: one device {final['one']:.4f}, mirrored over two "
              f"{final['two']:.4f}, one device with another seed {final['seed']:.4f}")
    assert abs(final["two"] - final["one"]) < abs(final["seed"] - final["one"])
    assert len(mirrored["weights"]) == len(single["weights"])
    for ours, theirs in zip(mirrored["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3)


@pytest.mark.parametrize("value", ["mirror", "mirrored:", "tpu:0"])
def test_an_unknown_distribution_is_refused(value):
    with pytest.raises(UserError, match="distribute must be"):
        TrainConfig(distribute=value)

#!/usr/bin/env bash
# Train several networks at once on one GPU with `covfefe train` under Keras's JAX backend (the
# GPU machine has JAX but no TensorFlow), each in its own run directory, then pack each run for
# export on a CPU machine.
#
#   models/train-gpu.sh OUT MAIN_SECONDS FINETUNE_SECONDS 'NAME ARGS...' ['NAME ARGS...' ...]
#
# Every run takes notebook 03's full parameters, then its ARGS (e.g. '--units 256 --dropout
# 0.1'). The main phase runs for at most MAIN_SECONDS: a run still going then is stopped and
# keeps its epochs (every epoch is checkpointed), and its main phase is declared done at the
# epochs it finished. The fine-tuning phase then runs from the best epoch for at most
# FINETUNE_SECONDS. Runs live in ./runs/gpu-NAME. OUT/NAME.tar.xz holds the run directory
# without the optimizer's state (best.keras, state.json, history.csv, config.json, data.json,
# vocabulary.json) and OUT/NAME.log the run's output. Export it on a CPU machine with the same
# ARGS, the main phase's epochs (state.json's finetune_from) and no --no-export:
#
#   tar -xJf NAME.tar.xz -C runs && covfefe train --params notebooks/params/full/03-train-model.yaml \
#       --run-dir runs/gpu-NAME ARGS... --epochs <finetune_from> --finetune-epochs 8
#
# (tests/test_training.py runs this script, and such an export, on TensorFlow and the CPU.)
#
# The dataset is $COVFEFE_DATA_DIR/tweets.parquet (default ./data: carry it). PARAMS names
# another parameter file, FINETUNE_EPOCHS the fine-tuning epochs (8), PYTHON the interpreter
# (python3), KERAS_BACKEND another backend (tests run it on TensorFlow).
set -u
out=$1 main_seconds=$2 finetune_seconds=$3
shift 3
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
export COVFEFE_DATA_DIR=${COVFEFE_DATA_DIR:-$PWD/data}
# Each run takes a share of the GPU's memory, not JAX's default 75%.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.1}
params=${PARAMS:-notebooks/params/full/03-train-model.yaml}
python=${PYTHON:-python3}
finetune_epochs=${FINETUNE_EPOCHS:-8}

epochs_done() {
    "$python" -c "import json, sys; print(json.load(open(sys.argv[1]))['epochs_done'])" \
        "$1/state.json" 2>/dev/null || echo 0
}

one_run() {
    local name=$1 dir=$PWD/runs/gpu-$1 log=$out/$1.log epochs
    shift
    # shellcheck disable=SC2086  # ARGS are words
    timeout "$main_seconds" "$python" -m covfefe train --params "$params" --run-dir "$dir" \
        --export-dir "" "$@" --finetune-epochs 0 --no-export >"$log" 2>&1
    echo "main phase exit $? after $SECONDS s" >>"$log"
    epochs=$(epochs_done "$dir")
    if [ "$epochs" -gt 0 ]; then
        timeout "$finetune_seconds" "$python" -m covfefe train --params "$params" --run-dir "$dir" \
            --export-dir "" "$@" --epochs "$epochs" --finetune-epochs "$finetune_epochs" \
            --no-export >>"$log" 2>&1
        echo "fine-tuning exit $? after $SECONDS s" >>"$log"
    fi
    "$python" - "$dir" >>"$log" 2>&1 <<'EOF'
import sys
from pathlib import Path

import keras

run = Path(sys.argv[1])
best = run / "checkpoints" / "best.keras"
keras.saving.load_model(best, compile=False).save(run / "checkpoints" / "weights-only.keras")
(run / "checkpoints" / "weights-only.keras").replace(best)
(run / "checkpoints" / "last.keras").unlink(missing_ok=True)
print("packed", best, best.stat().st_size, "bytes")
EOF
    (cd "$PWD/runs" && tar -cJf "$out/$name.tar.xz" "gpu-$name/checkpoints/best.keras" \
        "gpu-$name"/*.json "gpu-$name/history.csv")
}

for spec in "$@"; do
    # shellcheck disable=SC2086  # the spec's words: a name, then covfefe train's options
    one_run $spec &
done
wait
ls -la "$out"

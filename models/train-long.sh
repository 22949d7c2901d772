#!/usr/bin/env bash
# Issue 29's long run on the 2-core CPU: one core (the other is left to the day's work), nice,
# every epoch checkpointed in RUN_DIR; rerun the same command the next working day and it
# resumes from the last epoch (optimizer state included). Output appends to RUN_DIR.log.
#
#   models/train-long.sh [RUN_DIR]     # default: $COVFEFE_RUNS_DIR/long29-a, else runs/long29-a
#
# From the bundled model's weights (LSTM 2x384), dropout 0.05, AdamW (weight decay 0.01),
# half an epoch of warm-up to 1e-3, then a cosine to 1e-4 over 12 epochs (models/EXPERIMENTS.md,
# "The long run"). Export and score it when it is done: the same command without --no-export.
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
cd "$(dirname "$0")/.."
run_dir=${1:-${COVFEFE_RUNS_DIR:-runs}/long29-a}
mkdir -p "$(dirname "$run_dir")"
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
nohup taskset -c 1 nice -n 5 .venv/bin/python -m covfefe train \
  --params notebooks/params/full/03-train-model.yaml --run-dir "$run_dir" \
  --export-dir "$run_dir/model" --init-from models/covfefe \
  --schedule cosine --learning-rate 0.001 --warmup-epochs 0.5 --min-learning-rate 0.0001 \
  --dropout 0.05 --weight-decay 0.01 --epochs 12 --patience 12 --lr-patience 100 \
  --finetune-epochs 0 --no-export >>"$run_dir.log" 2>&1 &
echo "training in the background (pid $!): tail -f $run_dir.log"

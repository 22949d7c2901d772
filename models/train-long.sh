#!/usr/bin/env bash
# Issue 29's CPU run, sized to one working session on the 2-core CPU: one core (the other is
# left to the day's work), nice, every epoch checkpointed in RUN_DIR (rerun the same command to
# resume within the session; runs/ does not outlive a session on the project's machine, so a
# run that must add up across days has to start from weights that were committed).
#
#   models/train-long.sh [RUN_DIR]     # default: $COVFEFE_RUNS_DIR/long29-b, else runs/long29-b
#
# From the bundled model's weights (LSTM 2x384): one epoch on every training tweet at a low
# rate (0.1 epoch of warm-up to 3e-4, cosine to 5e-5), then fine-tuning on the 2019 tweets at
# 3e-4 until validation stops improving for 2 epochs (at most 10): about 55 minutes, then the
# export into RUN_DIR/model. models/EXPERIMENTS.md ("The long run") has its curve: 1.7139
# bits/char on validation against the bundled 1.7211; mixed (covfefe mix) 0.04% better served.
# Output appends to RUN_DIR.log.
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
cd "$(dirname "$0")/.."
run_dir=${1:-${COVFEFE_RUNS_DIR:-runs}/long29-b}
mkdir -p "$(dirname "$run_dir")"
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
nohup taskset -c 1 nice -n 5 .venv/bin/python -m covfefe train \
  --params notebooks/params/full/03-train-model.yaml --run-dir "$run_dir" \
  --export-dir "$run_dir/model" --init-from models/covfefe \
  --schedule cosine --learning-rate 0.0003 --warmup-epochs 0.1 --min-learning-rate 0.00005 \
  --epochs 1 --patience 2 --lr-patience 100 \
  --finetune-epochs 10 --finetune-learning-rate 0.0003 >>"$run_dir.log" 2>&1 &
echo "training in the background (pid $!): tail -f $run_dir.log"

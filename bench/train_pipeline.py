"""Benchmark: training input pipeline and step throughput, ours vs the v1 one-hot windows.

v1 (the original covfefe-flow) cut the corpus into every 50-character window, one-hot encoded
all of them up front (a bool array of windows x 50 x vocabulary) and trained a 2x128 LSTM to
predict the one character after each window. Ours feeds whole tweets as integer ids through
tf.data, and every character is a target. Both train the same recurrent layers (2x128 LSTM by
default) on the same tweets, each in a fresh process, so peak RSS is each method's own.

    python bench/train_pipeline.py                 # or: make bench
    python bench/train_pipeline.py --tweets 2000 --units 256

Prints target characters per second and peak RSS per method, then the ratios; also the peak
RSS of our pipeline on the full corpus, and what v1's one-hot array would take for it.

``--settings`` instead trains the real network (the full profile's LSTM 2x384, embedding 64,
dropout 0.1, Adam with clipping) on our pipeline under each of `SETTINGS` (backend, XLA,
oneDNN, batch size, sequence width, threads), each in a fresh process pinned with ``taskset``,
in interleaved rounds, and prints target chars/s and the ratio against today's setting (the
first row) in the same round, with the achieved GFLOP/s (`flops_per_char`):

    python bench/train_pipeline.py --settings --rounds 2 --seconds 30
    python bench/train_pipeline.py --settings --units 64 --seconds 5 --rounds 1  # a smoke run
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

WINDOW = 50
JAX_PYTHON = Path(__file__).resolve().parent.parent / ".cache/jax-venv/bin/python"


@dataclass(frozen=True)
class Setting:
    """One way to run the same training step: what differs from today's (the defaults)."""

    name: str
    label: str
    batch_size: int = 64  # tweets per batch: the full profile's
    width: int = 160  # padded sequence width of the timed batches (tweets of 129-160 chars)
    jit_compile: bool = False  # XLA on TensorFlow (Keras's "auto" leaves it off on a CPU)
    backend: str = "tensorflow"
    intra_op_threads: int = 0  # 0: TensorFlow's default (one per core the process may use)
    cpus: str = ""  # taskset's core list; "" uses --cpus
    env: dict = field(default_factory=dict)
    against: str = "today"  # the setting its ratio is taken against, in the same round


SETTINGS = [
    Setting("today", "today: TF, oneDNN on, float32, batch 64, width 160"),
    Setting("batch32", "batch 32", batch_size=32),
    Setting("batch128", "batch 128", batch_size=128),
    Setting("width96", "width 96 (tweets of 65-96 chars)", width=96),
    Setting("width288", "width 288 (tweets of 257-288 chars)", width=288),
    Setting("xla", "XLA: jit_compile=True", jit_compile=True),
    Setting("onednn-off", "oneDNN off: TF_ENABLE_ONEDNN_OPTS=0",
            env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
    Setting("jax", "JAX backend (XLA), Keras 3.15.1", backend="jax"),
    Setting("2cores", "today on both cores (2 intra-op threads)", cpus="0,1"),
    Setting("2cores-1thread", "both cores, 1 intra-op thread", cpus="0,1", intra_op_threads=1,
            against="2cores"),
]


def flops_per_char(units: int, layers: int, embedding_dim: int, vocab_size: int) -> float:
    """Floating-point operations the training step spends per (padded) character.

    Per LSTM layer the four gates multiply [input, state] by a (input + units) x 4 units
    matrix: 2 * 4 * units * (input + units) operations forward (a multiply and an add each),
    and the backward pass costs about twice the forward (gradients for the inputs and for the
    weights), so 3x in all; the logits layer likewise 2 * units * vocabulary * 3. Element-wise
    gate arithmetic, the softmax and the optimizer are left out (a few percent at 384 units).
    """
    total, inputs = 0, embedding_dim
    for _ in range(layers):
        total += 2 * 4 * units * (inputs + units) * 3
        inputs = units
    return total + 2 * units * vocab_size * 3


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def load_texts(tweets: int | None) -> list[str]:
    """The most recent ``tweets`` cleaned tweets of the dataset (None: all of them)."""
    from covfefe.data.store import load_dataset
    from covfefe.training.corpus import Corpus

    corpus = Corpus.from_tweets(load_dataset(), 0.05)
    texts = list(corpus.train["text"])
    return texts[-tweets:] if tweets else texts


def run_v1(args) -> dict:
    """v1: every 50-char window one-hot encoded up front; one target per window."""
    import keras
    import numpy as np

    from covfefe.text import Vocabulary

    started = time.perf_counter()
    texts = load_texts(args.tweets)
    vocabulary = Vocabulary.from_texts(texts, 1)
    ids = vocabulary.encode("\n".join(texts))
    n = len(ids) - WINDOW
    x = np.zeros((n, WINDOW, len(vocabulary)), dtype=bool)
    y = np.zeros((n, len(vocabulary)), dtype=bool)
    for start in range(n):
        x[start, np.arange(WINDOW), ids[start:start + WINDOW]] = True
        y[start, ids[start + WINDOW]] = True
    prepared = time.perf_counter() - started
    model = keras.Sequential([keras.Input((WINDOW, len(vocabulary))),
                              keras.layers.LSTM(args.units, return_sequences=True),
                              keras.layers.LSTM(args.units),
                              keras.layers.Dense(len(vocabulary), activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    batch = args.batch_size
    order = np.random.default_rng(0).permutation(n)

    def step(index):
        rows = order[(index * batch) % (n - batch):][:batch]
        model.train_on_batch(x[rows].astype("float32"), y[rows].astype("float32"))

    for index in range(3):  # compile
        step(index)
    started = time.perf_counter()
    steps = 0
    while time.perf_counter() - started < args.seconds:
        step(steps)
        steps += 1
    elapsed = time.perf_counter() - started
    return {"method": "v1 one-hot windows", "targets_per_s": steps * batch / elapsed,
            "prepare_s": prepared, "peak_rss_mb": peak_rss_mb(), "windows": n,
            "onehot_mb": (x.nbytes + y.nbytes) / 2**20}


def run_ours(args) -> dict:
    """Ours: integer id sequences, length-bucketed batches through tf.data, every char a target."""
    from covfefe.text import Vocabulary
    from covfefe.training.corpus import SequenceBatches, encode_tweets
    from covfefe.training.model import ModelConfig, build_model, compile_model

    started = time.perf_counter()
    texts = load_texts(None if args.full else args.tweets)
    vocabulary = Vocabulary.from_texts(texts, 1)
    batches = SequenceBatches(encode_tweets(texts, vocabulary), args.batch_size // 2, seed=0)
    dataset = batches.to_tf_dataset()
    prepared = time.perf_counter() - started
    model = compile_model(build_model(ModelConfig(units=args.units, embedding_dim=64,
                                                  dropout=0.0), len(vocabulary)), 0.002)
    import numpy as np

    from covfefe.training.corpus import PAD_MULTIPLE

    widest = int(batches.lengths.max())
    for width in range(PAD_MULTIPLE, widest + PAD_MULTIPLE, PAD_MULTIPLE):  # compile each shape
        zeros = np.zeros((batches.batch_size, width), dtype=np.int32)
        model.train_on_batch(zeros, zeros, sample_weight=zeros.astype(np.float32))
    iterator = dataset.repeat().as_numpy_iterator()
    started = time.perf_counter()
    targets = 0
    while time.perf_counter() - started < args.seconds:
        inputs, labels, weights = next(iterator)
        model.train_on_batch(inputs, labels, sample_weight=weights)
        targets += int(weights.sum())
    elapsed = time.perf_counter() - started
    return {"method": "ours (full corpus)" if args.full else "ours id sequences",
            "targets_per_s": targets / elapsed, "prepare_s": prepared,
            "peak_rss_mb": peak_rss_mb(), "tweets": len(texts), "chars": batches.targets,
            "vocabulary": len(vocabulary)}


def epoch_fill(batches, multiple: int) -> float:
    """The share of an epoch's padded cells that are real targets, padding to ``multiple``."""
    cells = sum(len(indices) * multiple * math.ceil(int(batches.lengths[indices].max()) / multiple)
                for indices in batches.batch_indices(0))
    return batches.targets / cells


def run_setting(args, setting: Setting) -> dict:
    """Train the real network on full batches of one width under ``setting``; steady state.

    Only full batches of ``setting.width`` are timed, so each setting compiles one shape (XLA
    compiles one program per shape) and every setting times the same kind of batch: real
    tweets, our pipeline's padding within that width. Two untimed steps first (tracing or
    compiling). The epoch's fill (real targets over padded cells) is reported beside it.
    """
    from covfefe.backend import import_keras
    from covfefe.text import Vocabulary
    from covfefe.training.corpus import PAD_MULTIPLE, SequenceBatches, encode_tweets
    from covfefe.training.model import ModelConfig, build_model, compile_model

    keras = import_keras()
    if setting.intra_op_threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(setting.intra_op_threads)
    texts = load_texts(None)
    vocabulary = Vocabulary.from_texts(texts)
    batches = SequenceBatches(encode_tweets(texts, vocabulary), setting.batch_size, seed=0)
    config = ModelConfig(units=args.units, layers=2, embedding_dim=64, dropout=0.1)
    model = compile_model(build_model(config, len(vocabulary)), 0.002)
    model.jit_compile = setting.jit_compile

    def epochs():
        while True:
            yield from batches

    source = (batches.to_tf_dataset().repeat().as_numpy_iterator()
              if keras.backend.backend() == "tensorflow" else epochs())
    shape = (setting.batch_size, setting.width)
    timed = (batch for batch in source if batch[0].shape == shape)
    started = time.perf_counter()
    for _ in range(2):
        inputs, labels, weights = next(timed)
        model.train_on_batch(inputs, labels, sample_weight=weights)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    targets = cells = steps = 0
    while time.perf_counter() - started < args.seconds:
        inputs, labels, weights = next(timed)
        model.train_on_batch(inputs, labels, sample_weight=weights)
        targets += int(weights.sum())
        cells += weights.size
        steps += 1
    elapsed = time.perf_counter() - started
    return {"name": setting.name, "targets_per_s": targets / elapsed,
            "cells_per_s": cells / elapsed, "steps": steps, "warmup_s": warmup,
            "backend": keras.backend.backend(),
            "vocabulary": len(vocabulary), "load": os.getloadavg()[0],
            "flops_per_char": flops_per_char(args.units, 2, 64, len(vocabulary)),
            "epoch_fill": {m: epoch_fill(batches, m) for m in (16, PAD_MULTIPLE, 64)},
            "affinity": sorted(os.sched_getaffinity(0))}


def setting_child(setting: Setting, args) -> dict:
    python = str(JAX_PYTHON) if setting.backend == "jax" else sys.executable
    command = ["taskset", "-c", setting.cpus or args.cpus, python, __file__, "--child", "setting",
               "--setting", json.dumps(asdict(setting)), "--seconds", str(args.seconds),
               "--units", str(args.units)]
    # The side environment has no covfefe installed: it imports this checkout's.
    path = os.pathsep.join(filter(None, [str(JAX_PYTHON.parents[3]), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": setting.backend,
           "PYTHONPATH": path, **setting.env}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        print(f"  {setting.name} failed: {result.stderr.strip().splitlines()[-1:]}", flush=True)
        return {"name": setting.name, "failed": result.stderr[-3000:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def compare_settings(args) -> None:
    """Run each setting in interleaved rounds; print medians and ratios against today's."""
    settings = [s for s in SETTINGS if not args.only or s.name in args.only]
    if not JAX_PYTHON.exists():
        print(f"(no {JAX_PYTHON}: the JAX row is skipped; see bench/README.md to make it)")
        settings = [s for s in settings if s.backend != "jax"]
    flags = cpu_flags()
    half = sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16"})
    print(f"CPU: {os.cpu_count()} cores; bfloat16 instructions: {', '.join(half) or 'none'} "
          f"(avx2: {'avx2' in flags}, fma: {'fma' in flags}, avx512f: {'avx512f' in flags})"
          + ("" if half else "; mixed_bfloat16 would be emulated, so it is not measured"))
    rows = {s.name: [] for s in settings}
    for round_ in range(args.rounds):
        for setting in settings:
            row = setting_child(setting, args)
            rows[setting.name].append(row)
            if "failed" not in row:
                print(f"  round {round_ + 1} {setting.name:<15} {row['targets_per_s']:>8,.0f} "
                      f"target chars/s  {row['steps']} steps  warm-up {row['warmup_s']:.0f} s  "
                      f"load {row['load']:.1f}", flush=True)
    first = next(r for r in rows[settings[0].name] if "failed" not in r)
    print(f"\nLSTM 2x{args.units}, vocabulary {first['vocabulary']}, {args.seconds:.0f} s timed "
          f"per setting and round, {args.rounds} rounds, taskset -c {args.cpus} unless noted; "
          f"{first['flops_per_char'] / 1e6:.2f} MFLOP per padded char")
    print(f"{'setting':<52} {'chars/s':>8} {'ratio (each round)':>26} {'GFLOP/s':>8} {'load':>9}")
    for setting in settings:
        base = rows.get(setting.against, rows[settings[0].name])
        ok = [(r, b) for r, b in zip(rows[setting.name], base, strict=True)
              if "failed" not in r and "failed" not in b]
        if not ok:
            print(f"{setting.label:<52} failed")
            continue
        ratios = [r["targets_per_s"] / b["targets_per_s"] for r, b in ok]
        speed = statistics.median(r["targets_per_s"] for r, _ in ok)
        gflops = statistics.median(r["cells_per_s"] * r["flops_per_char"] / 1e9 for r, _ in ok)
        loads = [r["load"] for r, _ in ok]
        cpus = (f" [cores {setting.cpus}]" if setting.cpus else "") + (
            f" vs {setting.against}" if setting.against != settings[0].name else "")
        print(f"{setting.label + cpus:<52} {speed:>8,.0f} {statistics.median(ratios):>6.2f}x "
              f"({', '.join(f'{x:.2f}' for x in ratios):>16}) {gflops:>8.1f} "
              f"{min(loads):>4.1f}-{max(loads):<4.1f}")
    fill = first["epoch_fill"]
    print("epoch fill (real targets / padded cells) at batch 64, padding to a multiple of "
          + ", ".join(f"{m}: {f:.3f}" for m, f in fill.items()))


def child(method: str, args) -> dict:
    command = [sys.executable, __file__, "--child", method, "--tweets", str(args.tweets),
               "--seconds", str(args.seconds), "--units", str(args.units),
               "--batch-size", str(args.batch_size)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        sys.exit(f"{method} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tweets", type=int, default=1000, help="most recent tweets to use")
    parser.add_argument("--seconds", type=float, default=20, help="timed training per method")
    parser.add_argument("--units", type=int, default=128, help="LSTM units (2 layers)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="v1 windows per batch (ours: half as many tweets, ~60x the targets)")
    parser.add_argument("--settings", action="store_true",
                        help="compare training settings on the real network instead")
    parser.add_argument("--rounds", type=int, default=2, help="--settings: interleaved rounds")
    parser.add_argument("--cpus", default="0", help="--settings: taskset core list per child")
    parser.add_argument("--only", nargs="+", help="--settings: these settings only (today first)")
    parser.add_argument("--child", choices=["v1", "ours", "ours-full", "setting"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "setting":
        print(json.dumps(run_setting(args, Setting(**json.loads(args.setting)))))
        return
    if args.settings:
        if args.units == parser.get_default("units"):
            args.units = 384  # the full profile's network
        compare_settings(args)
        return
    if args.child:
        args.full = args.child == "ours-full"
        print(json.dumps(run_v1(args) if args.child == "v1" else run_ours(args)))
        return

    v1, ours, full = child("v1", args), child("ours", args), child("ours-full", args)
    print(f"2x{args.units} LSTM, {args.tweets} most recent tweets, {args.seconds:.0f} s of "
          f"training each, CPU threads: {os.cpu_count()}")
    for row in (v1, ours, full):
        print(f"  {row['method']:<22} {row['targets_per_s']:>10,.0f} target chars/s  "
              f"peak RSS {row['peak_rss_mb']:>7,.0f} MB  (prepare {row['prepare_s']:.1f} s)")
    print(f"  (v1's one-hot arrays for {v1['windows']:,} windows: {v1['onehot_mb']:,.0f} MB)")
    print(f"ratio ours/v1 target chars/s: {ours['targets_per_s'] / v1['targets_per_s']:.1f}x")
    print(f"ratio ours/v1 peak RSS on the same tweets: "
          f"{ours['peak_rss_mb'] / v1['peak_rss_mb']:.2f}x")
    windows_full = full["chars"]  # about one window per character of the corpus
    vocab = full["vocabulary"]
    print(f"full corpus ({full['tweets']:,} tweets, {full['chars']:,} target chars): ours peak "
          f"RSS {full['peak_rss_mb']:,.0f} MB; v1's one-hot arrays alone would need about "
          f"{windows_full * (WINDOW + 1) * vocab / 2**30:,.1f} GiB "
          f"({windows_full:,} windows x {WINDOW + 1} x {vocab} symbols, one byte each)")


if __name__ == "__main__":
    main()

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
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

WINDOW = 50


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
    parser.add_argument("--child", choices=["v1", "ours", "ours-full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
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

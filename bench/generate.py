"""Benchmark: generating tweets, the v1 method vs our stateful generator; 1 vs 16 candidates,
alone and through the serving engine; a serving worker's cold start and memory.

v1 (the original covfefe-flow) ran the last 50 characters through the network from a zero state
for every new character. Ours runs the prefix once, then one recurrent step per character with
the state carried forward, for all candidates in one batch. Both use the same model and the
same NumPy runtime here, so the ratio is the method's alone.

    python bench/generate.py [--model models/covfefe] [--tweets 5] [--length 140]
"""

import argparse
import json
import subprocess
import sys
import time

import numpy as np

WINDOW = 50


def v1_tweet(generator, prefix: str, length: int, rng) -> int:
    """One tweet the v1 way: the last WINDOW characters from a zero state, per character.
    Returns the number of characters generated."""
    from covfefe.inference.generate import sample
    from covfefe.text import END_ID

    vocabulary, network = generator.vocabulary, generator.network
    ids = [END_ID, *vocabulary.encode(prefix)]
    while len(ids) - 1 < length:
        state = network.initial_state(1)
        for symbol in ids[-WINDOW:]:
            logits, state = network.step(np.array([symbol]), state)
        symbol = int(sample(logits.astype(np.float64), rng)[0])
        if symbol == END_ID:
            break
        ids.append(symbol)
    return len(ids) - 1 - len(prefix)


def stateful_steps(generator, length: int, n: int, seed: int) -> int:
    """Generate n candidates our way; return the number of steps (characters per candidate)."""
    return sum(kind == "chars" for kind, _ in generator.stream(
        "", max_length=length, n=n, seed=seed, temperature=0.8))


def engine_steps(engine, length: int, n: int, seed: int) -> int:
    """Generate n candidates through the serving engine, alone in it; return the steps (the
    longest candidate's characters). Finished candidates leave the batch there."""
    completions = engine.complete("", max_length=length, n=n, seed=seed, temperature=0.8)
    return max(len(c.generated) + c.finished for c in completions)


def sampling_per_step(generator, rows: int, repeat: int = 200) -> tuple[float, float]:
    """Seconds to draw one symbol for each of ``rows`` rows with their own parameters: the
    compiled sampling (covfefe.inference.sampling), against the NumPy `sample` called once per
    row."""
    from covfefe.inference.generate import sample
    from covfefe.inference.sampling import sample_rows

    logits, _ = generator.network.step(np.arange(rows) % 80 + 3,
                                       generator.network.initial_state(rows))
    logits = logits.astype(np.float64)
    rng = np.random.default_rng(0)
    temperature, top_k = rng.uniform(0.5, 1.5, rows), rng.choice([0, 40], rows)
    top_p = rng.choice([1.0, 0.9], rows)
    started = time.perf_counter()
    for _ in range(repeat):
        sample_rows(logits.copy(), rng.random(rows), temperature, top_k, top_p)
    together = (time.perf_counter() - started) / repeat
    started = time.perf_counter()
    for _ in range(repeat):
        for row in range(rows):
            sample(logits[row:row + 1], rng, temperature=temperature[row], top_k=top_k[row],
                   top_p=top_p[row])
    return together, (time.perf_counter() - started) / repeat


def layers_per_step(model: str, rows: int, tweets: int = 64) -> dict[str, float] | None:
    """Seconds per step of each layer of the served model (`LexiconConstraint(MixedModel(
    network, n-gram table))`) on its own, stepping ``rows`` of the model's own tweets part by
    part (`LexiconConstraint.step_parts`): a layer's time is its step less the step of what it
    wraps; and the whole step as served, in one compiled call (`covfefe.inference.fused`, "fused").
    None
    for a model without both."""
    from covfefe.inference.generate import TweetGenerator
    from covfefe.lm.lexicon import LexiconConstraint
    from covfefe.lm.mixture import MixedModel
    from covfefe.text import END_ID

    generator = TweetGenerator.from_artifact(model)  # its own: its steps get timed
    constraint = generator.network
    if not (isinstance(constraint, LexiconConstraint)
            and isinstance(constraint.model, MixedModel)):
        return None
    mixture = constraint.model
    spent = dict.fromkeys(("network", "table", "mixture", "constraint"), 0.0)

    def timed(layer, method: str, name: str) -> None:
        step = getattr(layer, method)

        def timed_step(*args):
            started = time.perf_counter()
            result = step(*args)
            spent[name] += time.perf_counter() - started
            return result
        setattr(layer, method, timed_step)

    timed(mixture.network, "step", "network")
    timed(mixture.ngram, "step_probs", "table")
    timed(mixture, "step", "mixture")
    timed(constraint, "step_parts", "constraint")
    texts = [c.text for seed in range(max(tweets // rows, 4))
             for c in generator.complete("", n=rows, seed=seed, temperature=0.8)]
    for name in spent:
        spent[name] = 0.0
    batches = []
    for first in range(0, len(texts), rows):
        encoded = [[END_ID, *generator.vocabulary.encode(text)]
                   for text in texts[first:first + rows]]
        length = min(len(ids) for ids in encoded)
        batches.append(np.array([row[:length] for row in encoded]).T)
    steps = sum(len(ids) for ids in batches)
    for ids in batches:
        state = constraint.initial_state(rows)
        for symbols in ids:
            _, state = constraint.step_parts(symbols, state)
    started = time.perf_counter()
    for ids in batches:
        state = constraint.initial_state(rows)
        for symbols in ids:
            _, state = constraint.step(symbols, state)
    fused = (time.perf_counter() - started) / steps
    return {"fused": fused, "parts": spent["constraint"] / steps,
            "network": spent["network"] / steps, "table": spent["table"] / steps,
            "mixing": (spent["mixture"] - spent["network"] - spent["table"]) / steps,
            "lexicon": (spent["constraint"] - spent["mixture"]) / steps}


def products_alone(generator, repeat: int = 300) -> tuple[int, dict[int, float]] | None:
    """The multiply-adds per row (one per weight) and the seconds per step, by rows, of the
    served network's integer products alone (`covfefe.inference.fixedpoint`: both LSTM layers and
    the
    output layer, no gates, table, lexicon or draw) for 1, 8 and 16 rows, best of 5 rounds in
    one thread: one row reads every weight once and waits on memory, more rows multiply each
    weight they load, so this is the floor under the ratio of a batch to one row. None without
    the one-call step."""
    from covfefe.inference.fixedpoint import COLUMNS, sums_into

    fused = getattr(generator.network, "fused", None)
    if fused is None:
        return None
    layouts = [*fused.stack.layers.layouts, fused.stack.dense_layout]
    rng = np.random.default_rng(0)
    seconds = {}
    for rows in (1, 8, 16):
        inputs = [rng.integers(-4096, 4096, (rows, 2 * layout.shape[1]), dtype=np.int16
                               ).view(np.int32) for layout in layouts]
        outputs = [np.empty((rows, layout.shape[0] * COLUMNS), np.int32) for layout in layouts]
        work = list(zip(inputs, layouts, outputs, strict=True))

        def step(_seed, work=work) -> int:
            for x, layout, out in work:
                sums_into(x, layout, out)
            return 1  # one step: per_char then gives seconds per step

        step(0)
        seconds[rows] = per_char(step, repeat, rounds=5)
    return sum(layout.size for layout in layouts), seconds


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: VmHWM, which starts anew at exec (the
    rusage maximum does not: a child forked from this benchmark reported the parent's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def per_char(function, repeat: int, rounds: int = 3) -> float:
    """Return the seconds per generated character (per step for a batch) over ``repeat`` runs,
    the best of ``rounds`` rounds (as timeit does: the others were slowed by something else)."""
    best = float("inf")
    for _ in range(rounds):
        started, chars = time.perf_counter(), 0
        for seed in range(repeat):
            chars += function(seed)
        best = min(best, (time.perf_counter() - started) / max(chars, 1))
    return best


def cold_start(model: str, network_alone: bool = False) -> dict:
    """Run in a fresh process: import, load the model (as served, or its network alone),
    generate one tweet."""
    started = time.perf_counter()
    from covfefe.inference.generate import TweetGenerator

    generator = TweetGenerator.from_artifact(model, mixture=not network_alone,
                                             lexicon=not network_alone)
    loaded = time.perf_counter() - started
    generator.complete("Make America ", seed=1)
    return {"load_s": loaded, "first_tweet_s": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb(),
            "modules": sorted(m for m in ("tensorflow", "keras", "pandas") if m in sys.modules)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="artifact (default: the bundled model)")
    parser.add_argument("--tweets", type=int, default=5, help="tweets per measurement")
    parser.add_argument("--length", type=int, default=140, help="characters per tweet")
    parser.add_argument("--cold-start", help=argparse.SUPPRESS)
    parser.add_argument("--network-alone", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from covfefe import config

    model = str(config.resolve(args.model) if args.model else config.model_dir())
    if args.cold_start:
        print(json.dumps(cold_start(args.cold_start, args.network_alone)))
        return
    from covfefe.inference.generate import TweetGenerator

    generator = TweetGenerator.from_artifact(model)
    generator.novelty = None  # time the generation alone (the novelty check is measured apart)
    # Tweets end when the model says so: compare time per character (per step for a batch),
    # then scale to a tweet of --length characters.
    v1 = per_char(lambda seed: v1_tweet(generator, "", args.length,
                                        np.random.default_rng(seed)), args.tweets) * args.length
    # The stateful runs are short: 10x as many tweets, for steadier timings.
    ours = per_char(lambda seed: stateful_steps(generator, args.length, 1, seed),
                    args.tweets * 10) * args.length
    sixteen = per_char(lambda seed: stateful_steps(generator, args.length, 16, seed),
                       args.tweets * 10) * args.length
    # What the n-gram table and the lexicon cost per tweet: the same run, network alone.
    plain = TweetGenerator.from_artifact(model, mixture=False, lexicon=False)
    plain.novelty = None
    network_alone = per_char(lambda seed: stateful_steps(plain, args.length, 1, seed),
                             args.tweets * 10) * args.length
    from covfefe.serving.engine import Engine

    engine = Engine(generator)
    engine_one = per_char(lambda seed: engine_steps(engine, args.length, 1, seed),
                          args.tweets * 10) * args.length
    engine_sixteen = per_char(lambda seed: engine_steps(engine, args.length, 16, seed),
                              args.tweets * 10) * args.length
    engine.stop()
    products = products_alone(generator)
    rows_sampling, one_by_one = sampling_per_step(generator, 32)
    layers = {rows: layers_per_step(model, rows) for rows in (1, 16)}
    index = TweetGenerator.from_artifact(model).novelty
    novelty = None
    if index is not None:
        started = time.perf_counter()
        for _ in range(200):
            index.longest_shared("x" * args.length)
        novelty = (time.perf_counter() - started) / 200
    child = subprocess.run([sys.executable, __file__, "--cold-start", model],
                           capture_output=True, text=True, check=True)
    start = json.loads(child.stdout.strip().splitlines()[-1])
    child = subprocess.run([sys.executable, __file__, "--cold-start", model, "--network-alone"],
                           capture_output=True, text=True, check=True)
    plain_start = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"model {model}; {args.tweets} tweets for v1, {args.tweets * 10} for ours, best of 3 "
          f"rounds, timed per character and scaled to a {args.length}-character tweet")
    print(f"  v1 method (re-run {WINDOW} chars per char): {v1 * 1000:9.1f} ms per tweet")
    print(f"  stateful, 1 candidate:                {ours * 1000:9.1f} ms per tweet")
    print(f"  stateful, 16 candidates in one batch: {sixteen * 1000:9.1f} ms for all 16")
    print(f"  serving engine, 1 candidate alone:    {engine_one * 1000:9.1f} ms per tweet")
    print(f"  serving engine, 16 candidates alone:  {engine_sixteen * 1000:9.1f} ms for all 16 "
          f"(ended candidates leave)")
    print(f"  the network alone, 1 candidate:       {network_alone * 1000:9.1f} ms per tweet")
    print(f"ratio v1/stateful per tweet: {v1 / ours:.0f}x faster")
    print(f"ratio as served (n-gram table, lexicon) / network alone: "
          f"{ours / network_alone:.2f}x the time")
    print(f"ratio 16 candidates / 1 candidate: {sixteen / ours:.2f}x the time")
    print(f"ratio engine / stateful, 1 candidate: {engine_one / ours:.2f}x the time")
    print(f"ratio engine, 16 candidates / 1 candidate: {engine_sixteen / engine_one:.2f}x the "
          f"time")
    if products is not None:
        weights, products = products
        steps = ", ".join(f"{rows} row(s) {spent * 1e6:.0f} us ({rows * weights / spent / 1e9:.0f}"
                          f" billion multiply-adds a second)" for rows, spent in products.items())
        print(f"the network's integer products alone (no gates, table or draw), per step: {steps}"
              f"; one row reads its {2 * weights / 1e6:.1f} MB of weights at "
              f"{2 * weights / products[1] / 1e9:.0f} GB/s; 8 rows cost "
              f"{products[8] / products[1]:.1f}x one row's")
    print(f"sampling 32 rows with their own temperature, top-k, top-p: "
          f"{rows_sampling * 1000:.2f} ms per step vectorised, {one_by_one * 1000:.2f} ms row by "
          f"row ({one_by_one / rows_sampling:.0f}x)")
    for rows, layer in layers.items():
        if layer is not None:
            print(f"layers around the network per step, {rows} rows: n-gram table "
                  f"{layer['table'] * 1e6:.0f} us, mixing {layer['mixing'] * 1e6:.0f} us, "
                  f"lexicon {layer['lexicon'] * 1e6:.0f} us: together "
                  f"{(layer['table'] + layer['mixing'] + layer['lexicon']) / layer['network']:.2f}x"
                  f" the network's step "
                  f"({layer['network'] * 1e6:.0f} us); the whole step part by part "
                  f"{layer['parts'] * 1e6:.0f} us, in one compiled call "
                  f"{layer['fused'] * 1e6:.0f} us ({layer['parts'] / layer['fused']:.2f}x faster)")
    if novelty is not None:
        print(f"novelty check: {novelty * 1000:.2f} ms per tweet")
    print(f"cold start (fresh process: import, load, first tweet): {start['first_tweet_s']:.2f} s"
          f" (load {start['load_s']:.2f} s), peak RSS {start['peak_rss_mb']:.0f} MB, "
          f"heavy modules imported: {start['modules'] or 'none'}")
    print(f"cold start of the network alone: {plain_start['first_tweet_s']:.2f} s, peak RSS "
          f"{plain_start['peak_rss_mb']:.0f} MB: the table and lexicon cost "
          f"{start['first_tweet_s'] - plain_start['first_tweet_s']:.2f} s and "
          f"{start['peak_rss_mb'] - plain_start['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()

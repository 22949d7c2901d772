"""What a training or evaluation run shows a person: the model card, learning curves, breakdowns.

Like `covfefe.data.explore`, each ``plot_*`` function draws on a new `matplotlib.figure.Figure`
without pyplot and returns it; notebooks display it, scripts save it.
"""

import pandas as pd
from matplotlib.figure import Figure

MODEL_COLOR, BASELINE_COLOR, TRAIN_COLOR = "tab:blue", "tab:orange", "tab:gray"


def model_card(metadata: dict) -> pd.Series:
    """Return a model's card at a glance: name, version, size, data, and both scores."""
    model, data, metrics = metadata["model"], metadata["data"], metadata["metrics"]
    baseline = metrics["baseline"]
    return pd.Series({
        "model": f"{metadata['name']} {metadata['version']}",
        "architecture": f"{model['cell'].upper()} {model['layers']}x{model['units']}, "
                        f"embedding {model['embedding_dim']}, {model['parameters']:,} parameters",
        "vocabulary": f"{model['vocab_size']} symbols",
        "trained on": f"{data['train_tweets']:,} tweets, {data['first_tweet'][:10]} to "
                      f"{data['validation_since'][:10]}",
        "validated on": f"{data['validation_tweets']:,} tweets from "
                        f"{data['validation_since'][:10]} to {data['last_tweet'][:10]}",
        "epochs": f"{metadata['training']['epochs_trained']} "
                  f"(best {metrics['best_epoch']}; {metadata['training']['stop_reason']})",
        "validation bits/char": f"{metrics['validation_bits_per_char']:.4f}",
        f"baseline bits/char ({baseline['name']})": f"{baseline['validation_bits_per_char']:.4f}",
    }, name="model card", dtype=object)


def plot_learning_curves(history: pd.DataFrame, baseline_bits: float | None = None,
                         baseline_name: str = "n-gram baseline",
                         finetune_from: int | None = None) -> Figure:
    """Return training and validation bits/char per epoch, with the baseline as a line (and
    where fine-tuning on the recent tweets began, when it did: training bits/char after it are
    on those tweets only)."""
    figure = Figure(figsize=(9, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(history["epoch"], history["bits_per_char"], "o-", color=TRAIN_COLOR,
              label="training (with dropout)")
    axes.plot(history["epoch"], history["val_bits_per_char"], "o-", color=MODEL_COLOR,
              label="validation")
    if baseline_bits is not None:
        axes.axhline(baseline_bits, color=BASELINE_COLOR, linestyle="--",
                     label=f"{baseline_name} (validation)")
    if finetune_from is not None:
        axes.axvline(finetune_from + 0.5, color="0.5", linestyle=":",
                     label="fine-tuning on the recent tweets starts")
    axes.set(title="Learning curves", xlabel="epoch", ylabel="bits per character")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend()
    return figure


def plot_bits_by(tables: dict[str, pd.DataFrame], title: str, xlabel: str) -> Figure:
    """Return bits/char per group (rows of each table) for several scorers side by side."""
    figure = Figure(figsize=(9, 4), layout="constrained")
    axes = figure.add_subplot()
    colors = [MODEL_COLOR, BASELINE_COLOR, TRAIN_COLOR]
    width = 0.8 / max(len(tables), 1)
    for index, (name, table) in enumerate(tables.items()):
        positions = [i + index * width for i in range(len(table))]
        axes.bar(positions, table["bits_per_char"], width=width, label=name,
                 color=colors[index % len(colors)])
    first = next(iter(tables.values()))
    axes.set_xticks([i + width * (len(tables) - 1) / 2 for i in range(len(first))],
                    first.index, rotation=30)
    axes.set(title=title, xlabel=xlabel, ylabel="bits per character")
    axes.legend()
    return figure


def sample_table(generator, prefixes: list[str], temperatures: list[float], *, n: int = 2,
                 seed: int = 0) -> pd.DataFrame:
    """Return ``n`` completions of each prefix at each temperature, with their log-probability."""
    rows = []
    for prefix in prefixes:
        for temperature in temperatures:
            for completion in generator.complete(prefix, temperature=temperature, n=n,
                                                 seed=seed):
                rows.append({"prefix": prefix, "temperature": temperature,
                             "tweet": completion.text,
                             "bits/char": -completion.log_prob / 0.6931471805599453
                             / max(len(completion.generated) + completion.finished, 1)})
    return pd.DataFrame(rows)


def plot_sample_quality(results: dict[str, list], validation_lengths: list[int],
                        chosen=None, validation_non_words: float | None = None) -> Figure:
    """Return the sample figures against temperature, per generator (``covfefe.evaluation.quality``
    sweeps at one top-p): non-word share (the validation tweets' own as a line), near-copy
    share, and the length distribution of the chosen setting's tweets against the validation
    tweets'."""
    figure = Figure(figsize=(13, 4), layout="constrained")
    words, copies, lengths = figure.subplots(1, 3)
    colors = [MODEL_COLOR, BASELINE_COLOR, TRAIN_COLOR]
    for index, (name, sweep) in enumerate(results.items()):
        temperatures = [r.temperature for r in sweep]
        color = colors[index % len(colors)]
        words.plot(temperatures, [100 * r.non_word_share for r in sweep], "o-", color=color,
                   label=name)
        copies.plot(temperatures, [100 * r.near_copy_share for r in sweep], "o-", color=color,
                    label=name)
    copies.axhline(2, color="grey", linestyle=":", label="at most 2%")
    words.axhline(1.5, color="grey", linestyle=":", label="at most 1.5%")
    if validation_non_words is not None:
        words.axhline(100 * validation_non_words, color=TRAIN_COLOR, linestyle="--",
                      label="validation tweets")
    words.set(title="Non-words (not in the training tweets nor a dictionary)",
              xlabel="temperature", ylabel="% of words")
    copies.set(title="Near copies (40+ characters)", xlabel="temperature",
               ylabel="% of tweets")
    words.legend()
    copies.legend()
    bins = list(range(0, 300, 20))
    lengths.hist(validation_lengths, bins=bins, density=True, alpha=0.5, color=TRAIN_COLOR,
                 label="validation tweets")
    if chosen is not None:
        lengths.hist(chosen.lengths, bins=bins, density=True, alpha=0.5, color=MODEL_COLOR,
                     label=f"samples (T {chosen.temperature:g}, top-p {chosen.top_p:g})")
    lengths.set(title="Tweet length", xlabel="characters", ylabel="density")
    lengths.legend()
    return figure


def plot_update(history: list[dict], steps: pd.DataFrame) -> Figure:
    """Return an update's two pictures side by side: the fine-tuning's bits/char per epoch
    (on the learn and replay tweets, and on the fit tweets it did not train on), and the
    future tweets' bits/char after each step of the update."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    curve, ladder = figure.subplots(1, 2)
    frame = pd.DataFrame(history)
    if "train_bits_per_char" in frame:
        trained = frame.dropna(subset=["train_bits_per_char"])
        curve.plot(trained["epoch"], trained["train_bits_per_char"], "o-", color=TRAIN_COLOR,
                   label="learn + replay tweets (dropout on)")
    curve.plot(frame["epoch"], frame["fit_bits_per_char"], "o-", color=MODEL_COLOR,
               label="fit tweets (not trained on)")
    curve.set(title="Fine-tuning (epoch 0: the champion)", xlabel="epoch",
              ylabel="bits per character")
    curve.xaxis.get_major_locator().set_params(integer=True)
    curve.legend()
    ladder.barh(steps["step"][::-1], steps["bits_per_char"][::-1], color=MODEL_COLOR)
    low, high = steps["bits_per_char"].min(), steps["bits_per_char"].max()
    ladder.set_xlim(low - (high - low) * 0.5 - 0.01, high + (high - low) * 0.2 + 0.01)
    for position, value in enumerate(steps["bits_per_char"][::-1]):
        ladder.text(value, position, f" {value:.4f}", va="center")
    ladder.set(title="The future tweets, step by step", xlabel="bits per character")
    return figure

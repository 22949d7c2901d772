"""The loop, one turn: update the champion with new tweets, compare, register, promote.

`covfefe update` and notebook 05 both call `update_and_compare`: a challenger is built
(`covfefe.training.update`), scored against the champion on the held-out newest tweets
(`covfefe.evaluation.compare`), the run tracked in MLflow with its figures and the challenger
registered with the alias ``challenger`` (`covfefe.tracking`); with ``promote`` it becomes the
champion when the comparison says so.
"""

from dataclasses import dataclass

import pandas as pd

from covfefe import config, tracking
from covfefe.evaluation.compare import Comparison, compare
from covfefe.inference.artifact import load_artifact
from covfefe.lm.lexicon import words_of
from covfefe.training.train_config import UpdateConfig
from covfefe.training.update import UpdateResult, update


@dataclass
class LoopTurn:
    """What one turn of the loop did."""

    result: UpdateResult
    comparison: Comparison
    version: str | None  # the challenger's registered version (None: MLflow not installed)
    promoted: bool

    def summary(self) -> str:
        lines = [self.result.summary(), self.comparison.summary()]
        if self.version is not None:
            lines.append(f"registered the challenger as version {self.version} of model "
                         f"{tracking.MODEL_NAME} (alias {tracking.CHALLENGER})")
        if self.promoted:
            lines.append(f"promoted version {self.version}: {tracking.served_link()} -> "
                         f"{tracking.served_link().resolve()}")
        return "\n".join(lines)


def update_and_compare(update_config: UpdateConfig, *, promote: bool = False,
                       progress: bool = True, notebook=None) -> LoopTurn:
    """Run one turn of the loop (see the module doc); ``notebook``: a file to keep with the
    MLflow run (the executed notebook)."""
    params = {key: value for key, value in vars(update_config).items()}
    if tracking.available():  # a first run: the model it starts from is the first champion
        tracking.ensure_champion(lambda: load_artifact(
            config.resolve(update_config.model) if update_config.model else config.model_dir()))
    with tracking.run("update", params) as active:
        result = update(update_config, progress=progress)
        seen = result.tweets  # what the challenger learned from: the older and the new tweets
        known = (words_of(pd.concat([seen.older["text"], seen.learn["text"], seen.fit["text"]]))
                 if update_config.samples else None)  # only the samples' figures need them
        comparison = compare(result.champion, result.challenger, seen.future["text"],
                             samples=update_config.samples, known_words=known)
        for row in result.history:
            tracking.log_metrics(active, {k: v for k, v in row.items() if k != "epoch"},
                                 step=row["epoch"])
        tracking.log_metrics(active, {
            "future_champion_bits_per_char": comparison.champion_bits_per_char,
            "future_challenger_bits_per_char": comparison.challenger_bits_per_char,
            "future_difference": comparison.difference,
            "future_interval_low": comparison.interval[0],
            "future_interval_high": comparison.interval[1],
            "new_tweets_learned": len(result.tweets.learn) + len(result.tweets.fit),
            "new_words": result.new_words, "new_chars": len(result.new_chars),
            **result.timings})
        for role, figures in (comparison.samples or {}).items():
            tracking.log_metrics(active, {
                f"samples_{role}_{name}": getattr(figures, name)
                for name in ("non_word_share", "near_copy_share", "mean_length",
                             "at_limit_share")})
        for row in result.steps.itertuples():
            tracking.log_metrics(active, {f"step_{row.Index}_bits_per_char":
                                          row.bits_per_char})
        tracking.log_file(active, result.run_dir / "update.json")
        if notebook is not None:
            tracking.log_file(active, notebook, "notebook")
        version = None
        if active is not None:
            version = tracking.register(active, result.challenger)
            tracking.set_alias(tracking.CHALLENGER, version)
    promoted = False
    if promote and comparison.promote and version is not None:
        tracking.promote(version, load_artifact)
        promoted = True
    return LoopTurn(result, comparison, version, promoted)

"""Screen ways of mixing the network with a Kneser-Ney table (models/EXPERIMENTS.md, rows 3-11).

On the model's validation tweets: the network and tables of orders 5-9 alone; their linear mix
with one weight fitted on one half of the tweets and scored on the other (2-fold, a screening
figure: the weight sees validation tweets, never those it scores); a weight per longest context
the table has seen; and weights fitted on held-out training tweets (the newest ones, which the
network was fine-tuned on, and those before its fine-tuning window), scored on all of
validation. Prints one line per configuration, bits per character.

    python bench/mixtures.py [--model models/covfefe] [--archive PATH]
"""

import argparse
import math

import numpy as np

from covfefe import config
from covfefe.evaluation.evaluate import mixture_holdout, split_like_model, tweets_to_score
from covfefe.inference.artifact import NUMPY_WEIGHTS, load_artifact
from covfefe.inference.numpy_network import NumpyNetwork
from covfefe.lm.mixture import fit_weight, mix_log_probs, network_log_probs
from covfefe.lm.ngram import KneserNeyModel
from covfefe.training.corpus import encode_tweets

LN2 = math.log(2)


def bits(log_probs: np.ndarray) -> float:
    return float(-np.mean(log_probs) / LN2)


def two_fold(network: np.ndarray, ngram: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Bits/char of the mix, each half scored with the weight(s) fitted on the other half."""
    half = np.arange(len(network)) >= len(network) // 2
    groups = np.zeros(len(network), dtype=int) if groups is None else groups
    mixed = np.empty(len(network))
    for scored in (False, True):
        fit = half != scored
        for group in np.unique(groups):
            into, out = (half == scored) & (groups == group), fit & (groups == group)
            weight = fit_weight(network[out], ngram[out]) if out.sum() > 50 else 0.5
            mixed[into] = mix_log_probs(network[into], ngram[into], weight)
    return bits(mixed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="artifact (default: the bundled model)")
    parser.add_argument("--archive", default="", help="archive (default: $COVFEFE_ARCHIVE)")
    args = parser.parse_args()
    artifact = load_artifact(config.resolve(args.model) if args.model else config.model_dir())
    vocabulary = artifact.vocabulary
    train, validation = split_like_model(artifact.metadata, tweets_to_score(args.archive, None))
    train_sequences = encode_tweets(train["text"], vocabulary)
    valid_sequences = encode_tweets(validation["text"], vocabulary)
    network = NumpyNetwork.load(artifact.path / NUMPY_WEIGHTS)
    net = network_log_probs(network, valid_sequences)
    print(f"network alone: {bits(net):.4f}")
    tables = {}
    for order in (5, 7, 8, 9):
        tables[order] = KneserNeyModel(order, len(vocabulary)).fit(train_sequences)
        table = tables[order].log_probs(valid_sequences)
        print(f"{tables[order].name}: alone {bits(table):.4f}, linear mix (2-fold) "
              f"{two_fold(net, table):.4f}, {tables[order].ngrams:,} n-grams")
    table9 = tables[9].log_probs(valid_sequences)
    print(f"kneser-ney-9gram, a weight per longest context seen (2-fold): "
          f"{two_fold(net, table9, tables[9].longest_context(valid_sequences)):.4f}")
    newest = np.arange(len(train))
    for name, held in [("the newest 1,450 training tweets", newest[-1450:]),
                       ("the newest 3,000 training tweets", newest[-3000:]),
                       ("1,500 before the fine-tuning window",
                        mixture_holdout(artifact.metadata, train, 1500)),
                       ("3,000 before the fine-tuning window",
                        mixture_holdout(artifact.metadata, train, 3000))]:
        kept = np.ones(len(train), dtype=bool)
        kept[held] = False
        without = KneserNeyModel(9, len(vocabulary)).fit(
            [train_sequences[i] for i in np.flatnonzero(kept)])
        held_sequences = [train_sequences[i] for i in held]
        weight = fit_weight(network_log_probs(network, held_sequences),
                            without.log_probs(held_sequences))
        print(f"kneser-ney-9gram, weight fitted on {name}: {weight:.3f}, validation "
              f"{bits(mix_log_probs(net, table9, weight)):.4f}")


if __name__ == "__main__":
    main()

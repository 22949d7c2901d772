"""covfefe-flow: collect tweets, train a model, evaluate it, generate tweets, serve the API.

Each command imports what it needs when it runs, and only that (training pulls in TensorFlow,
collecting pandas and the X client), so ``covfefe serve`` and ``covfefe generate`` work with the
serve extra alone, and ``--help`` is quick.

A user mistake (a missing file, a malformed archive, a missing token, a bad option value) is
printed as one sentence and exits with status 2; an interrupted run exits with status 130
after saying that what it collected or trained is kept and that rerunning resumes.
"""

import argparse
import dataclasses
import inspect
import os
import re
import shutil
import sys
from datetime import datetime
from pathlib import Path

from covfefe import __version__, config
from covfefe.errors import UserError
from covfefe.training.train_config import TrainConfig, UpdateConfig

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the bad value, then exit 2, and
    that takes no abbreviations (``--temp`` is not ``--temperature``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _date(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid date {value!r}: use YYYY-MM-DD or an ISO 8601 timestamp"
        ) from None


def _run_collect(args) -> None:
    from covfefe.data.collect import collect

    report = collect("twitter" if args.twitter else "archive", archive=args.archive,
                     screen_name=args.twitter, output=args.output,
                     keep_replies=not args.drop_replies, keep_retweets=args.keep_retweets,
                     since=args.since, until=args.until, progress=not args.no_progress)
    print(report.summary())


# Notebook 03's parameters that `covfefe train --params` skips: they only shape its samples.
NOTEBOOK_ONLY_PARAMETERS = ("sample_prefixes", "sample_temperatures")
INTERRUPTED = {
    "collect": "everything collected so far is kept and the next run resumes",
    "train": "every finished epoch is checkpointed and rerunning with the same --run-dir resumes",
    "update": "every finished epoch is checkpointed and rerunning with the same --run-dir "
              "resumes",
}


def _parameter_help(cls) -> dict[str, str]:
    """Return each dataclass field's trailing ``# comment``: the one place parameters are
    documented (the notebooks' parameters cells follow the same convention)."""
    pattern = re.compile(r"^\s+(\w+): [^=]+= .*?  # (.+)$")
    return {m.group(1): m.group(2) for line in inspect.getsource(cls).splitlines()
            if (m := pattern.match(line))}


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {value!r}: use true or false")


def _model(args) -> Path:
    """The model artifact folder a command uses (--model, else $COVFEFE_MODEL or the bundled)."""
    path = config.resolve(args.model) if args.model else config.model_dir()
    if path.is_file():
        raise UserError(f"model {path} is a file: give the model's folder, the one that "
                        "holds metadata.json")
    return path


def _run_train(args) -> None:
    from covfefe.parameters import read_parameters
    from covfefe.training.train import train

    values = {}
    if args.params:
        parameters = read_parameters(Path(args.params).absolute())
        values = {name: value for name, value in parameters.items()
                  if name not in NOTEBOOK_ONLY_PARAMETERS}
    names = [field.name for field in dataclasses.fields(TrainConfig)]
    values.update({name: getattr(args, name) for name in names
                   if getattr(args, name) is not None})
    result = train(TrainConfig.from_dict(values), progress=not args.no_progress,
                   export=not args.no_export)
    print(result.summary())


def _run_evaluate(args) -> None:
    from covfefe import tracking
    from covfefe.evaluation.evaluate import evaluate_command

    options = dict(
        model=str(_model(args)), text=args.text, clean=args.clean, archive=args.archive,
        dataset=args.dataset,
        since=args.since, until=args.until, everything=args.all,
        baseline_order=args.baseline_order, samples=args.samples,
        temperature=args.temperature, top_p=args.top_p, sweep=args.sweep,
        save_defaults=args.save_defaults, progress=not args.no_progress,
    )
    if args.samples is None:  # a score is quick and read on the screen: not a tracked run
        print(evaluate_command(**options))
        return
    with tracking.run("evaluate", options) as active:
        report = evaluate_command(**options)
        print(report)
        tracking.log_metrics(active, _figures(report))


def _figures(report: str) -> dict:
    """The name=value figures of a command's report (``real_words=99.1%``...), as numbers,
    prefixed with the report line's subject (``model``, ``9-gram``...)."""
    figures = {}
    for line in report.splitlines():
        subject = re.sub(r"\W+", "_", line.split("(")[0].strip()).strip("_")[:40]
        for name, value in re.findall(r"(\w+)=([-+0-9.]+)", line):
            figures[f"{subject}.{name}"] = float(value)
    return figures


def _run_mix(args) -> None:
    from covfefe import tracking
    from covfefe.evaluation.evaluate import mix_command
    from covfefe.inference.artifact import load_artifact

    options = dict(model=args.model, order=args.order, holdout=args.holdout,
                   output=args.output, archive=args.archive, dataset=args.dataset)
    with tracking.run("mix", options) as active:
        report = mix_command(**options, progress=not args.no_progress)
        print(report)
        mixed = load_artifact(config.resolve(args.output) if args.output else _model(args))
        tracking.log_metrics(active, {"validation_bits_per_char":
                                      mixed.metrics["validation_bits_per_char"],
                                      "network_weight": mixed.mixture["network_weight"]})
        if active is not None:
            print(f"registered as version {tracking.register(active, mixed)} of model "
                  f"{tracking.MODEL_NAME}")


def _champion_dir() -> Path:
    """The champion an update starts from by default: the registry's, else $COVFEFE_MODEL or
    the bundled model (registered as the first champion when MLflow is installed)."""
    from covfefe import tracking

    if not tracking.available():
        return config.model_dir()
    _ensure_champion()
    return tracking.local_copy(tracking.alias(tracking.CHAMPION))


def _ensure_champion() -> None:
    """Register the model in service ($COVFEFE_MODEL, else the bundled one) as the first
    champion when the registry has none."""
    from covfefe import tracking
    from covfefe.inference.artifact import load_artifact

    tracking.ensure_champion(lambda: load_artifact(config.model_dir()))


def _run_update(args) -> None:
    from covfefe.evaluation.loop import update_and_compare

    names = [field.name for field in dataclasses.fields(UpdateConfig)]
    values = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if not values.get("model"):
        values["model"] = str(_champion_dir())
    turn = update_and_compare(UpdateConfig(**values), promote=args.promote,
                              progress=not args.no_progress)
    print(turn.summary())
    if turn.promoted:
        _reload(args.reload)


def _run_compare(args) -> None:
    from covfefe.evaluation.compare import compare
    from covfefe.evaluation.evaluate import read_text_file
    from covfefe.inference.artifact import load_artifact

    champion = load_artifact(config.resolve(args.champion))
    challenger = load_artifact(config.resolve(args.challenger))
    comparison = compare(champion, challenger, read_text_file(args.text, clean=args.clean),
                         samples=args.samples, progress=not args.no_progress)
    print(comparison.summary())
    if comparison.left_out and not args.clean:  # update's tweets are cleaned: not there
        print("raw tweets? --clean cleans them as training does")


def _run_promote(args) -> None:
    from covfefe import tracking
    from covfefe.inference.artifact import load_artifact

    _ensure_champion()
    version, link = tracking.promote(args.version, load_artifact)
    print(f"version {version} is the champion: {link} -> {link.resolve()}")
    _reload(args.reload)


def _run_rollback(args) -> None:
    from covfefe import tracking
    from covfefe.inference.artifact import load_artifact

    version, link = tracking.rollback(load_artifact)
    print(f"rolled back: version {version} is the champion again: {link} -> {link.resolve()}")
    _reload(args.reload)


def _reload(pidfile: str | None) -> None:
    """Ask the gunicorn master whose pid ``pidfile`` holds to reload its workers (SIGHUP: the
    old ones serve until the new ones have loaded the model the link now names)."""
    if not pidfile:
        return
    from covfefe import tracking

    pid = tracking.signal_reload(Path(pidfile))
    print(f"asked the server (gunicorn master {pid}) to reload its workers")


def _run_models(args) -> None:
    from covfefe import tracking

    _ensure_champion()
    aliases = {}
    for name in (tracking.CHAMPION, tracking.CHALLENGER):
        if (found := tracking.alias(name)) is not None:
            aliases.setdefault(found.version, []).append(name)
    print(f"model {tracking.MODEL_NAME} in {tracking.tracking_uri()}:")
    for version in tracking.versions():
        print(f"  {version.version:>4}  {version.tags.get('artifact_version', '?'):<22}"
              f"{', '.join(aliases.get(version.version, []))}")


def _run_generate(args) -> None:
    from covfefe.inference.generate import TweetGenerator

    generator = TweetGenerator.from_artifact(_model(args))
    completions = generator.complete(args.prefix, temperature=args.temperature, n=args.n,
                                     max_length=args.max_length, seed=args.seed,
                                     top_k=args.top_k, top_p=args.top_p)
    for completion in completions:
        print(completion.text)
        if args.details:
            shared = completion.longest_shared
            print(f"  log_prob={completion.log_prob:.2f} "
                  f"ended={'yes' if completion.finished else 'no (length limit)'} "
                  f"longest_shared={'?' if shared is None else shared}")


def _run_serve(args) -> None:
    from covfefe.inference.artifact import load_artifact

    model = _model(args)
    artifact = load_artifact(model)  # a clear error now rather than in every worker
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable)) or shutil.which(
        "gunicorn")
    if gunicorn is None:
        raise UserError("gunicorn is not installed: pip install 'covfefe[serve]'")
    # A flag given wins over the setting; a flag not given leaves the setting alone.
    bind = config.bind_address(args.host, args.port)
    os.environ.update(COVFEFE_MODEL=str(model), COVFEFE_BIND=bind)
    if args.workers is not None:
        os.environ["COVFEFE_WORKERS"] = str(args.workers)
    workers = os.environ.get("COVFEFE_WORKERS", "2")  # serve/gunicorn_conf.py's default
    where = f"http://{bind}/" if ":" in bind and not bind.startswith("unix:") else bind
    print(f"serving {artifact.name} {artifact.version} on {where} "
          f"({workers} workers; Ctrl-C stops)", flush=True)
    os.execv(gunicorn, [gunicorn, "-c", "python:serve.gunicorn_conf", "serve:create_app()"])


def _add_command(commands, name: str, run, **texts) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` (``help=``, ``description=``), which calls ``run(args)``."""
    command = commands.add_parser(name, **texts)
    command.set_defaults(run=run)
    return command


def _add_no_progress(parser, what: str = "progress bars") -> None:
    """--no-progress, shared by the commands that show progress."""
    parser.add_argument("--no-progress", action="store_true", help=f"hide {what}")


def _add_model_option(parser) -> None:
    """--model, shared by the commands that use a trained model."""
    parser.add_argument("--model", metavar="DIR", help="model artifact folder (default: "
                        f"$COVFEFE_MODEL, else {config.BUNDLED_MODEL})")


def _add_serve(commands) -> None:
    serve = _add_command(commands, "serve", _run_serve,
                         help="serve the API (and web page) with gunicorn on this machine",
                         description="Run gunicorn with serve/gunicorn_conf.py: each worker loads "
                         "the model once.")
    serve.add_argument("--host", help="address (default: $COVFEFE_BIND's, else "
                       f"{config.DEFAULT_BIND.rpartition(':')[0]})")
    serve.add_argument("--port", type=int, help="port (default: $COVFEFE_BIND's, else "
                       f"{config.DEFAULT_BIND.rpartition(':')[2]})")
    serve.add_argument("--workers", type=int, help="worker processes (default: "
                       "$COVFEFE_WORKERS, else 2)")
    _add_model_option(serve)


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return number


def _add_generate(commands) -> None:
    generate = _add_command(commands, "generate", _run_generate,
                            help="complete the beginning of a tweet with a trained model",
                            description="Print tweets that the model writes after PREFIX, one per "
                            "line.")
    generate.add_argument("prefix", nargs="?", default="", help="the beginning (may be empty)")
    generate.add_argument("-t", "--temperature", type=_positive_float,
                          help="below 1: safer, above 1: wilder (default: the model's, "
                          "else 1.0)")
    generate.add_argument("-n", type=int, default=1, help="how many tweets (default: 1)")
    generate.add_argument("--seed", type=int, help="the same seed gives the same tweets")
    generate.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest "
                          "characters (default: 0, all)")
    generate.add_argument("--top-p", type=float, help="sample among the likeliest "
                          "characters that make up this probability (default: the model's, "
                          "else 1.0, all)")
    generate.add_argument("--max-length", type=int, default=280,
                          help="most characters per tweet, prefix included (default: 280)")
    _add_model_option(generate)
    generate.add_argument("--details", action="store_true",
                          help="also print each tweet's log-probability and novelty")


def _add_parameters(parser, cls) -> None:
    """An option for each field of a parameter dataclass, its comment as the help."""
    helps = _parameter_help(cls)
    for field in dataclasses.fields(cls):
        kind = type(field.default)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", dest=field.name, metavar=field.name.upper(),
            type=_bool if kind is bool else kind,
            help=f"{helps.get(field.name, field.name)} (default: {field.default!r})",
        )


def _add_train(commands) -> None:
    train = _add_command(commands, "train", _run_train,
                         help="train (or resume) a model and export it as an artifact",
                         description="""
                         Train the character-level network on the dataset, checkpointing every epoch
                         into --run-dir (rerun the same command to resume after a crash or kill),
                         then score it and the Kneser-Ney n-gram baseline on the most recent tweets
                         and export the model artifact. Parameters come from the defaults, then
                         --params, then the options.
                         """)
    train.add_argument("--params", metavar="YAML",
                       help="a flat file of notebook 03's parameters, e.g. "
                       "notebooks/params/full/03-train-model.yaml")
    _add_parameters(train, TrainConfig)
    train.add_argument("--no-export", action="store_true",
                       help="train only; rerun without it to score and export (on a GPU "
                       "machine: the scoring and the n-gram baselines are CPU work)")
    _add_no_progress(train)


def _add_update(commands) -> None:
    update = _add_command(commands, "update", _run_update,
                          help="build a challenger from the champion and the newest tweets",
                          description="""
                          From the champion artifact and the dataset's tweets newer than its data:
                          the n-gram table counts them, the vocabulary and word list grow, the
                          network is fine-tuned (with a replay of older tweets), the mixture weight
                          is refit. The newest tweets are held out: champion and challenger are
                          scored on them and the decision printed. With MLflow installed the run is
                          tracked and the challenger registered.
                          """)
    _add_parameters(update, UpdateConfig)
    update.add_argument("--promote", action="store_true",
                        help="promote the challenger when it wins (better, and the interval "
                        "excludes zero)")
    update.add_argument("--reload", metavar="PIDFILE",
                        help="after a promotion, have the server whose gunicorn master's pid "
                        "this file holds reload")
    _add_no_progress(update, "progress lines")

    compare = _add_command(commands, "compare", _run_compare,
                           help="champion against challenger on tweets: paired, with an interval",
                           description="Score each line of FILE with both models as they serve, "
                           "and print both bits/char, their difference with a 95% "
                           "bootstrap interval, and the decision.")
    compare.add_argument("--champion", required=True, metavar="DIR")
    compare.add_argument("--challenger", required=True, metavar="DIR")
    compare.add_argument("--text", required=True, metavar="FILE",
                         help="one tweet per line, newer than both models' data")
    _add_clean_option(compare)
    compare.add_argument("--samples", type=int, default=200, metavar="N",
                         help="tweets each model writes for the sample figures, which guard "
                         "the promotion (0: none; default %(default)s)")
    _add_no_progress(compare)

    promote = _add_command(commands, "promote", _run_promote,
                           help="make a registered model version the champion (what is served)",
                           description="Point the served link ($COVFEFE_DATA_DIR/models/champion) "
                           "at the version's artifact in one atomic rename and move "
                           "the champion alias in MLflow.")
    promote.add_argument("version", help="MLflow version number, artifact version, or "
                         "'challenger'")
    rollback = _add_command(commands, "rollback", _run_rollback,
                            help="make the previous champion the champion")
    for parser in (promote, rollback):
        parser.add_argument("--reload", metavar="PIDFILE",
                            help="then have the server whose gunicorn master's pid this file "
                            "holds (gunicorn --pid FILE) reload, without a stall")
    _add_command(commands, "models", _run_models, help="list the registered versions and aliases")


def _add_tweet_source(group) -> None:
    """Add the tweets' source (--archive or --dataset) to a mutually exclusive group."""
    group.add_argument("--archive", nargs="?", const="", metavar="SOURCE",
                       help="an archive file, folder, glob or URL (no value: $COVFEFE_ARCHIVE)")
    group.add_argument("--dataset", metavar="PATH",
                       help="a collected dataset (the default source: "
                       "$COVFEFE_DATA_DIR/tweets.parquet)")


def _add_clean_option(parser) -> None:
    parser.add_argument("--clean", action="store_true",
                        help="clean each line of --text as training cleans tweets (HTML "
                        "entities, curly quotes, URLs, emoji) before scoring it")


def _add_evaluate(commands) -> None:
    evaluate = _add_command(commands, "evaluate", _run_evaluate,
                            help="bits per character of a model (and the n-gram baseline) on "
                            "tweets",
                            description="""
                            Print bits_per_char=... chars=... tweets=... for a model artifact on a
                            set of tweets: every character after the first plus the end of the
                            tweet, each given the characters before it. Tweets from the dataset or
                            an archive are cleaned as for training and default to the model's
                            validation period; --text scores each line exactly as written.
                            """)
    _add_model_option(evaluate)
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--text", metavar="FILE", help="one tweet per line, scored as written")
    _add_clean_option(evaluate)
    _add_tweet_source(source)
    evaluate.add_argument("--since", type=_date, metavar="DATE",
                          help="only tweets from this UTC date on (default: the start of the "
                          "model's validation period)")
    evaluate.add_argument("--until", type=_date, metavar="DATE",
                          help="only tweets before this UTC date")
    evaluate.add_argument("--all", action="store_true",
                          help="every tweet of the dataset or archive, training tweets included")
    evaluate.add_argument("--baseline-order", type=int, metavar="N",
                          help="also score a Kneser-Ney N-gram model fitted on the dataset's "
                          "tweets before the model's validation period")
    samples = evaluate.add_argument_group(
        "sample quality", "With --samples N: generate N tweets from fixed prefixes and seeds, "
        "and print the share of real words, of near copies (40+ characters from one training "
        "tweet), the mean length and the share cut at 280, for the model and for an n-gram "
        "table alone (the model's own, else one of --baseline-order, default 9).")
    samples.add_argument("--samples", type=int, metavar="N", help="tweets to generate")
    samples.add_argument("--temperature", type=float, metavar="T",
                         help="sampling temperature (default: the model's default)")
    samples.add_argument("--top-p", type=float, metavar="P",
                         help="nucleus size (default: the model's default)")
    samples.add_argument("--sweep", action="store_true",
                         help="temperatures 0.7-1.1 and top-p 1, 0.95; pick the best")
    samples.add_argument("--save-defaults", action="store_true",
                         help="with --sweep: save the best setting as the model's defaults")
    _add_no_progress(evaluate)


def _add_mix(commands) -> None:
    mix = _add_command(commands, "mix", _run_mix,
                       help="add a Kneser-Ney table to a model, mixed with its network",
                       description="""
                       Count a Kneser-Ney n-gram table on the model's training tweets and mix it
                       with the network (p = w p_network + (1 - w) p_table): w is fitted on held-out
                       training tweets (the last --holdout before the fine-tuning window) by a table
                       counted without them. Writes the model with the table as a new version (in
                       place, or into --output); generation and evaluation then use the mixture.
                       """)
    _add_model_option(mix)
    _add_tweet_source(mix.add_mutually_exclusive_group())
    mix.add_argument("--order", type=int, default=9, metavar="N",
                     help="the n-gram order (default: 9)")
    mix.add_argument("--holdout", type=int, default=1500, metavar="TWEETS",
                     help="training tweets held out to fit the weight (default: 1500)")
    mix.add_argument("--output", "-o", metavar="FOLDER",
                     help="write the mixed model here (default: replace the model)")
    _add_no_progress(mix)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole command line."""
    parser = _Parser(prog="covfefe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"covfefe {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                     parser_class=_Parser)
    commands.required = True

    collect = _add_command(commands, "collect", _run_collect,
                           help="import an archive or collect a timeline into the dataset",
                           description=f"""
                           Import a Trump Twitter Archive export (JSON or CSV; a file, folder, glob
                           or http(s) URL) or collect new tweets of an account from the X API v2
                           (bearer token in ${config.TWITTER_TOKEN_ENV}), and merge them into the
                           dataset, deduplicated by id.
                           """)
    source = collect.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--archive", nargs="?", const="", metavar="SOURCE",
        help="archive file, folder, glob or URL (no value: $COVFEFE_ARCHIVE, "
        "default ../shared/data/trump-twitter-archive)",
    )
    source.add_argument("--twitter", metavar="SCREEN_NAME",
                        help="collect this account's new tweets from the X API v2")
    collect.add_argument("--output", "-o", metavar="PATH",
                         help="dataset to merge into (default: $COVFEFE_DATA_DIR/tweets.parquet)")
    collect.add_argument("--drop-replies", action="store_true",
                         help="drop replies (tweets that start with @user)")
    collect.add_argument("--keep-retweets", action="store_true",
                         help="keep retweets (archive only; dropped by default)")
    collect.add_argument("--since", type=_date, metavar="DATE",
                         help="keep only tweets from this UTC date on")
    collect.add_argument("--until", type=_date, metavar="DATE",
                         help="keep only tweets before this UTC date")
    _add_no_progress(collect)
    _add_train(commands)
    _add_evaluate(commands)
    _add_mix(commands)
    _add_update(commands)
    _add_generate(commands)
    _add_serve(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as error:
        print(f"covfefe {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"covfefe {args.command}: interrupted; "
              f"{INTERRUPTED.get(args.command, 'nothing was lost')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``covfefe`` command line: ``covfefe collect`` (more subcommands arrive with training).

A user mistake (a missing file, a malformed archive, a missing token, a bad option value) is
printed as one sentence and exits with status 2; an interrupted run exits with status 130
after saying that what it collected is kept.
"""

import argparse
import sys
from datetime import datetime

from covfefe import __version__, config
from covfefe.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the bad value, then exit 2."""

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
    from covfefe.data.collect import collect_archive, collect_twitter

    options = dict(
        output=args.output, keep_replies=not args.drop_replies, since=args.since,
        until=args.until, progress=not args.no_progress,
    )
    if args.twitter:
        report = collect_twitter(args.twitter, **options)
    else:
        report = collect_archive(args.archive, keep_retweets=args.keep_retweets, **options)
    print(report.summary())


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole command line."""
    parser = _Parser(prog="covfefe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"covfefe {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                     parser_class=_Parser)
    commands.required = True

    collect = commands.add_parser(
        "collect", help="import an archive or collect a timeline into the dataset",
        description="Import a Trump Twitter Archive export (JSON or CSV; a file, folder, glob "
        "or http(s) URL) or collect new tweets of an account from the X API v2 (bearer token "
        f"in ${config.TWITTER_TOKEN_ENV}), and merge them into the dataset, deduplicated by id.",
    )
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
    collect.add_argument("--no-progress", action="store_true", help="hide progress bars")
    collect.set_defaults(run=_run_collect)
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
        print(f"covfefe {args.command}: interrupted; everything collected so far is kept "
              "and the next run resumes", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

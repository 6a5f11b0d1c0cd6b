"""`foldflow cache info|clear`: the cache home's size by kind, or emptied (tasks.cache_home)."""

from __future__ import annotations

import argparse
from typing import TextIO

from tasks.errors import FoldflowError


def add_cache_command(commands) -> None:
    """The `cache` command and its `info` and `clear` subcommands."""
    cache = commands.add_parser(
        "cache",
        help="the cache home ($FOLDFLOW_CACHE, else $FOLDFLOW_HOME/cache, else the user's "
        "cache folder): downloads, converted data, fits, checkpoints, compiled programs",
    )
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    cache_commands.add_parser("info", help="where the cache is and its size by kind")
    clear = cache_commands.add_parser("clear", help="empty the cache (refused while a run uses it)")
    clear.add_argument(
        "--older-than",
        type=_days,
        metavar="DAYS",
        help="only files not modified for DAYS days",
    )


def cache_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`foldflow cache info|clear`: the cache home's size by kind, or emptied (its files not
    modified for --older-than DAYS only), refused while a run uses it."""
    from tasks.cache_home import cache_home, clear_cache, info_lines, size_text

    folder = cache_home()
    if args.cache_command == "info":
        print("\n".join(info_lines(folder)), file=out)
        return 0
    try:
        removed, freed = clear_cache(folder, args.older_than)
    except FoldflowError as error:
        print(f"foldflow: error: {error}", file=err)
        return 2
    older = "" if args.older_than is None else f" not modified for {args.older_than:g} days"
    print(f"removed {removed} file(s){older}, {size_text(freed)}, from {folder}", file=out)
    return 0


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"--older-than takes a number of days >= 0, got {text!r}")
    return days

"""``taskengine import``: load a JSON Lines file into a collection, all or nothing.

The loading itself (two passes, every bad line, flat memory) is
:mod:`taskengine.cli._importer`; this module is the command around it (see docs/cli.md).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from taskengine.cli._common import (
    DB_HELP,
    EXIT_BAD_INPUT,
    EXIT_OK,
    CommandError,
    check_db_path,
    count,
    format_duration,
    is_postgres,
    open_input,
    open_storage,
)

if TYPE_CHECKING:
    from taskengine.storage.base import CollectionInfo

__all__ = ["IMPORT_BUSY_TIMEOUT", "add_command", "run_command"]

IMPORT_BUSY_TIMEOUT = 5.0
"""Seconds ``taskengine import`` waits for another process's write lock before giving up."""


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``import`` and its options to the ``taskengine`` subcommands."""
    imp = commands.add_parser(
        "import",
        help="load a JSON Lines file into a collection",
        description="Load items (one JSON object per line, each with a string _id) into a "
        "collection, creating it if needed. All or nothing: every bad line is reported "
        "(the first 100 by line number and JSON path, then a count) and nothing is imported. "
        "The file is checked before the database is locked, then written in one "
        "transaction; memory stays flat however long the file is (the checked lines are "
        "staged in a temporary file).",
        epilog="--sandbox and --publish-plugin apply only when the import creates the "
        "collection; naming one for an existing collection that lacks it is an error (exit "
        "2), since neither can be added later. --environment SANDBOX needs a sandbox: "
        "--sandbox for a new collection. If another process holds the write lock for more "
        f"than {IMPORT_BUSY_TIMEOUT:g} s, the import stops with 'database is busy' (exit 5).",
    )
    imp.add_argument(
        "--db", required=True, help=DB_HELP.replace("file", "file (created if missing)", 1)
    )
    imp.add_argument("--collection", required=True, help="the collection name")
    imp.add_argument(
        "--environment",
        choices=("LIVE", "SANDBOX"),
        default="LIVE",
        help="default LIVE; SANDBOX needs a collection with a sandbox",
    )
    imp.add_argument(
        "--sandbox",
        action="store_true",
        help="create the collection with a sandbox (error for an existing one without)",
    )
    imp.add_argument(
        "--publish-plugin",
        action="store_true",
        help="create the collection with the publish plugin (error for an existing one without)",
    )
    imp.add_argument("file", metavar="FILE.jsonl", help="the JSON Lines file ('-' = stdin)")
    imp.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``taskengine import`` with parsed ``args``; returns the exit code.

    Bad lines are listed on ``err`` (exit 2); bad flags raise :class:`CommandError`.
    """
    from taskengine.cli._importer import ImportRejected

    environment = args.environment
    postgres = is_postgres(args.db)
    if not postgres:
        check_db_path(args.db)
    source = open_input(args.file)
    stack = contextlib.ExitStack()
    try:
        opened = open_storage(args.db, create=True, timeout=IMPORT_BUSY_TIMEOUT)
        storage, _store = stack.enter_context(opened)
        started = time.monotonic()
        try:
            imported, created = _importer(postgres)(
                storage,
                enumerate(source, start=1),
                args.collection,
                environment,
                sandbox=args.sandbox,
                publish_plugin=args.publish_plugin,
            )
        except ImportRejected as exc:
            if not exc.total:
                raise CommandError(str(exc)) from None
            err.write(f"taskengine: error: {args.file}: {exc}\n")
            for problem in exc.problems:
                err.write(f"  {problem}\n")
            if exc.total > len(exc.problems):
                err.write(f"  ... and {exc.total - len(exc.problems):,} more bad line(s)\n")
            return EXIT_BAD_INPUT
        elapsed = time.monotonic() - started
        if created is not None:
            err.write(
                f"Created collection {created.name!r} (sandbox: "
                f"{_yes(created.sandbox_enabled)}, publish plugin: "
                f"{_yes(created.publish_plugin)})\n"
            )
        out.write(
            f"Imported {count(imported, 'item')} into {args.collection} ({environment}) "
            f"in {format_duration(elapsed)}\n"
        )
        return EXIT_OK
    finally:
        stack.close()
        if source is not sys.stdin.buffer:
            source.close()


def _importer(postgres: bool) -> Callable[..., tuple[int, CollectionInfo | None]]:
    # SQLite has its own bulk path (a staging file); PostgreSQL goes through the protocol.
    if postgres:
        from taskengine.cli._itemimport import import_items

        return import_items
    from taskengine.cli._importer import import_jsonl

    return import_jsonl


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"

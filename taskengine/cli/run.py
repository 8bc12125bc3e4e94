"""``taskengine run``: create a task from a JSON file, run it here, print the final task.

The file holds the request body ``{"task": {...}}`` or the bare task object (see
docs/task-types.md); the exit code tells the task's outcome (see docs/cli.md).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from taskengine._jsonio import dumps, parse_json_object
from taskengine.cli._common import (
    EXIT_OK,
    CommandError,
    count_unfinished,
    exit_codes_epilog,
    open_engine,
    positive,
    read_input,
)
from taskengine.cli._progress import ProgressPrinter, ctrl_c_cancels, exit_code_for, follow_task
from taskengine.errors import CollectionNotFound, InvalidRequest, Violation

if TYPE_CHECKING:
    from taskengine.storage.sqlite import SQLiteStorage

__all__ = ["add_command", "load_task_spec", "run_command"]

_DESCRIPTION = """\
Create a task from a JSON file, run it here with a live progress line, and print the
final task as JSON. The file holds the reference request body {"task": {...}} or the
bare task object, for example:

  {"type": "EDIT_FIELD_DATA",
   "editFieldDataOptions": {"dataCollectionId": "products", "fieldKey": "tags",
                            "operations": {"addItems": ["sale"]}}}

Unfinished tasks already in the file run first. Ctrl-C cancels the task (a second
Ctrl-C stops waiting); the exit code tells the outcome."""


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` and its options to the ``taskengine`` subcommands."""
    run = commands.add_parser(
        "run",
        help="run a task from a JSON file, with progress",
        description=_DESCRIPTION,
        epilog=exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--db", required=True, help="the SQLite file")
    run.add_argument("task_file", metavar="TASK.json", help="the task ('-' = stdin)")
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="only queue the task and print it; it runs when an engine next opens the file",
    )
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--batch-size", type=positive, default=500, help=argparse.SUPPRESS)
    run.set_defaults(handler=run_command)


def load_task_spec(data: bytes | str, source: str) -> dict[str, Any]:
    """The task spec in a task file: ``{"task": {...}}`` (a request body) or the bare task.

    Raises:
        InvalidRequest: not JSON (with line and column), not an object, or ``task`` not an
            object.
    """
    body = parse_json_object(data, source=source)
    if "task" in body and "type" not in body:
        if len(body) != 1:
            extra = sorted(key for key in body if key != "task")
            raise InvalidRequest([Violation(key, "unknown field") for key in extra])
        inner = body["task"]
        if not isinstance(inner, dict):
            raise InvalidRequest([Violation("task", "must be an object")])
        return {"task": inner}
    return {"task": body}


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``taskengine run`` with parsed ``args``; returns the exit code."""
    spec = load_task_spec(read_input(args.task_file), args.task_file)
    # The Ctrl-C handler covers opening and closing the engine too: before the task exists
    # a Ctrl-C still means "stop, nothing created" (130), and once the outcome is known a
    # Ctrl-C during shutdown cannot turn it into 130.
    with ctrl_c_cancels() as pressed, open_engine(
        args.db, workers=1, batch_size=args.batch_size
    ) as (engine, storage):
        collection = _task_collection(spec)
        if collection is not None:
            _check_collection(storage, collection)
        if args.no_wait:
            _stop_if(pressed)
            task = engine.create_task(spec)
            out.write(dumps(task.to_json(), indent=2) + "\n")
            err.write(
                f"Queued task {task.id}; it runs when an engine next opens {args.db} "
                "('taskengine serve' or 'taskengine run').\n"
            )
            return EXIT_OK
        ahead = count_unfinished(engine)  # before the engine starts and resumes them
        if ahead:
            err.write(f"{ahead} earlier unfinished task(s) in {args.db} run first.\n")
        engine.start()
        _stop_if(pressed)
        task = engine.create_task(spec)
        err.write(f"Created task {task.id} ({task.type}); Ctrl-C cancels it.\n")
        err.flush()
        printer = None if args.quiet else ProgressPrinter(err, task.type)
        final = follow_task(engine, task.id, printer, interrupt=pressed)
        out.write(dumps(final.to_json(), indent=2) + "\n")
        out.flush()
        return exit_code_for(final)


def _task_collection(spec: Mapping[str, Any]) -> str | None:
    from taskengine._taskjson import collection_of

    return collection_of(spec.get("task"))


def _check_collection(storage: SQLiteStorage, name: str) -> None:
    try:
        storage.collection_info(name)
    except CollectionNotFound:
        known = [info.name for info in storage.list_collections()]
        listed = ", ".join(known) if known else "none yet: use 'taskengine import'"
        raise CommandError(
            f"unknown collection {name!r} in {storage.database.path!r} (collections: {listed})"
        ) from None


def _stop_if(pressed: threading.Event) -> None:
    """Honour a Ctrl-C pressed before the task exists: stop with nothing created."""
    if pressed.is_set():
        raise KeyboardInterrupt

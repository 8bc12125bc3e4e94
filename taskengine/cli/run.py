"""``taskengine run``: create a task from a JSON file, run it here, print the final task.

The file holds the request body ``{"task": {...}}`` or the bare task object (see
docs/task-types.md); the exit code tells the task's outcome (see docs/cli.md). ``run``
runs only the task it creates (its engine does not adopt others), and says which
unfinished tasks it leaves alone; ``run --resume`` creates none and runs the unfinished
tasks no live engine owns, one after the other.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from taskengine._jsonio import dumps, parse_json_object
from taskengine.cli._common import (
    DB_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandError,
    count,
    display_db,
    exit_codes_epilog,
    open_engine,
    positive,
    read_input,
)
from taskengine.cli._owners import take_census
from taskengine.cli._progress import ProgressPrinter, ctrl_c_cancels, exit_code_for, follow_task
from taskengine.cli._watch import Event, Watch, stop_signals
from taskengine.errors import CollectionNotFound, InvalidRequest, Violation

if TYPE_CHECKING:
    from taskengine.storage.base import Storage
    from taskengine.task import Task

__all__ = ["add_command", "load_task_spec", "resume", "run_command"]

_LOOK_EVERY = 0.1  # seconds between looks at what --resume runs (as follow_task polls)

_DESCRIPTION = """\
Create a task from a JSON file, run it here with a live progress line, and print the
final task as JSON. The file holds the reference request body {"task": {...}} or the
bare task object, for example:

  {"type": "EDIT_FIELD_DATA",
   "editFieldDataOptions": {"dataCollectionId": "products", "fieldKey": "tags",
                            "operations": {"addItems": ["sale"]}}}

Only this task runs here: unfinished tasks already in the file are left alone (run
by the engine that owns them, or waiting for 'taskengine run --resume' or a
'taskengine worker'), and run says how many there are. Ctrl-C cancels the task (a
second Ctrl-C stops waiting); the exit code tells the outcome.

With --resume and no task file, run creates nothing: it runs, one after the other,
the unfinished tasks no live engine owns (tasks other engines hold are left alone),
prints each finished task as one line of JSON, and exits when none is left, with the
highest exit code of their outcomes. Ctrl-C (or SIGTERM) then stops after the current
batch: the task stays RUNNING, checkpointed and released for any engine to continue,
and the exit code is 130."""


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` and its options to the ``taskengine`` subcommands."""
    run = commands.add_parser(
        "run",
        help="run a task from a JSON file, with progress",
        description=_DESCRIPTION,
        epilog=exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--db", required=True, help=DB_HELP)
    run.add_argument("task_file", metavar="TASK.json", nargs="?", help="the task ('-' = stdin)")
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="only queue the task and print it; a 'taskengine worker', 'serve' or "
        "'run --resume' on the file runs it",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="create no task: run the unfinished ones no live engine owns, then exit",
    )
    run.add_argument(
        "--slices",
        type=int,
        default=1,
        metavar="N",
        help="run the task as N _id ranges (1..64) that this and any 'taskengine worker' "
        "process on the file run at once, with one combined progress (docs/slices.md)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--batch-size", type=positive, default=None, help=argparse.SUPPRESS)
    run.set_defaults(handler=run_command, check=_check_arguments)


def _check_arguments(args: argparse.Namespace) -> str | None:
    """A task file, or ``--resume`` (which takes neither a file nor ``--no-wait``)."""
    if args.resume and args.task_file is not None:
        return "argument --resume: not allowed with a task file"
    if args.resume and args.no_wait:
        return "argument --resume: not allowed with argument --no-wait"
    if args.resume and args.slices != 1:
        return "argument --resume: not allowed with argument --slices"
    if not args.resume and args.task_file is None:
        return "the following arguments are required: TASK.json (or --resume)"
    return None


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
    if args.resume:
        return resume(args.db, args.batch_size, quiet=args.quiet, out=out, err=err)
    spec = load_task_spec(read_input(args.task_file), args.task_file)
    # The Ctrl-C handler covers opening and closing the engine too: before the task exists
    # a Ctrl-C still means "stop, nothing created" (130), and once the outcome is known a
    # Ctrl-C during shutdown cannot turn it into 130.
    with (
        ctrl_c_cancels() as pressed,
        open_engine(args.db, workers=1, batch_size=args.batch_size, adopt=False) as (
            engine,
            storage,
        ),
    ):
        collection = _task_collection(spec)
        if collection is not None:
            _check_collection(storage, args.db, collection)
        if args.no_wait:
            _stop_if(pressed)
            task = engine.create_task(spec, slices=args.slices)
            out.write(dumps(task.to_json(), indent=2) + "\n")
            err.write(
                f"Queued task {task.id}; a 'taskengine worker', 'taskengine serve' or "
                f"'taskengine run --resume' on {display_db(args.db)} runs it.\n"
            )
            return EXIT_OK
        notice = take_census(engine).left_alone()
        if notice is not None:
            err.write(notice + "\n")
        engine.start()
        _stop_if(pressed)
        task = engine.create_task(spec, slices=args.slices)
        err.write(f"Created task {task.id} ({task.type}); Ctrl-C cancels it.\n")
        err.flush()
        printer = None if args.quiet else ProgressPrinter(err, task.type)
        final = follow_task(engine, task.id, printer, interrupt=pressed)
        out.write(dumps(final.to_json(), indent=2) + "\n")
        out.flush()
        return exit_code_for(final)


def resume(db: str, batch_size: int | None, *, quiet: bool, out: TextIO, err: TextIO) -> int:
    """``taskengine run --resume``: run the unfinished tasks no live engine owns, one at
    a time, until none is left; returns the highest exit code of their outcomes, or
    :data:`EXIT_INTERRUPTED` when SIGINT or SIGTERM stopped it first."""
    with (
        stop_signals() as stop,
        open_engine(db, workers=1, batch_size=batch_size) as (
            engine,
            _storage,
        ),
    ):
        census = take_census(engine)
        note = census.owned_note()
        if note is not None:
            err.write(note + "\n")
        if not census.waiting:
            err.write(
                f"Nothing to resume in {display_db(db)}: no unfinished task waits for an owner.\n"
            )
            return EXIT_OK
        err.write(
            f"Resuming {count(len(census.waiting), 'unfinished task')} from {display_db(db)}, "
            "one at a time; Ctrl-C stops, leaving them resumable.\n"
        )
        err.flush()
        watch = Watch(engine, waiting=[task.id for task in census.waiting])
        engine.start()
        shown = _Resumed(out, err, quiet=quiet)
        while True:
            shown.show(watch.look())
            if stop.is_set():
                break
            if watch.idle():
                return shown.code
            stop.wait(_LOOK_EVERY)
        engine.stop()  # after the current batch; the task is released, resumable
        shown.show(watch.look())
        left = shown.released
        err.write(
            f"Stopped: {count(left, 'task')} left unfinished, checkpointed and released; "
            f"'taskengine run --resume --db {display_db(db)}' or a 'taskengine worker' continues.\n"
        )
        return EXIT_INTERRUPTED


class _Resumed:
    """What ``run --resume`` shows of the events of its engine, and its exit code so far."""

    def __init__(self, out: TextIO, err: TextIO, *, quiet: bool) -> None:
        self.out = out
        self.err = err
        self.quiet = quiet
        self.code = EXIT_OK
        self.released = 0
        self._printers: dict[str, ProgressPrinter] = {}

    def show(self, events: list[Event]) -> None:
        for event in events:
            task = event.task
            if event.kind == "started":
                where = (
                    f"resuming at {_done(task):,}/{count(task.estimated_item_count, 'item')}"
                    if task.status.value == "RUNNING"
                    else "starting"
                )
                self.err.write(f"Task {task.id} ({task.type}): {where}.\n")
                self.err.flush()
                if not self.quiet:
                    self._printers[task.id] = ProgressPrinter(
                        self.err, task.type, done_before=_done(task)
                    )
            elif event.kind == "running":
                printer = self._printers.get(task.id)
                if printer is not None:
                    printer.update(task)
            elif event.kind == "ended":
                printer = self._printers.pop(task.id, None)
                if printer is None and not self.quiet:
                    printer = ProgressPrinter(self.err, task.type)
                if printer is not None:
                    printer.finish(task)
                self.out.write(dumps(task.to_json()) + "\n")
                self.out.flush()
                self.code = max(self.code, exit_code_for(task))
            else:
                printer = self._printers.pop(task.id, None)
                if printer is not None:
                    printer.end_line()
                if event.kind == "released":
                    self.released += 1
                    what = "released unfinished"
                else:
                    what = "taken by another engine first; left to it"
                self.err.write(f"Task {task.id} ({task.type}): {what}.\n")
                self.err.flush()


def _done(task: Task) -> int:
    return task.items_succeeded + task.items_failed


def _task_collection(spec: Mapping[str, Any]) -> str | None:
    from taskengine._taskjson import collection_of

    return collection_of(spec.get("task"))


def _check_collection(storage: Storage, db: str, name: str) -> None:
    try:
        storage.collection_info(name)
    except CollectionNotFound:
        known = [info.name for info in storage.list_collections()]
        listed = ", ".join(known) if known else "none yet: use 'taskengine import'"
        raise CommandError(
            f"unknown collection {name!r} in {display_db(db)!r} (collections: {listed})"
        ) from None


def _stop_if(pressed: threading.Event) -> None:
    """Honour a Ctrl-C pressed before the task exists: stop with nothing created."""
    if pressed.is_set():
        raise KeyboardInterrupt

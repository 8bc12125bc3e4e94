"""``taskengine worker``: run the file's tasks, with no HTTP, until SIGINT or SIGTERM.

Its engine adopts tasks: every unfinished task no live engine owns, and every task other
processes create (``run --no-wait``, ``serve``), found by polling the file. Several
workers (and ``serve``) may run on one file: each task runs in one of them at a time. On
SIGINT (Ctrl-C) or SIGTERM the worker stops after the current batches and releases its
tasks, checkpointed, so another engine continues them at once (see docs/cli.md).
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, TextIO, cast

from taskengine.cli._common import (
    DB_HELP,
    EXIT_OK,
    count,
    display_db,
    format_duration,
    open_engine,
    positive,
    seconds,
)
from taskengine.cli._owners import take_census
from taskengine.cli._watch import Event, Watch, stop_signals
from taskengine.cli._workers import LossyOutput, parent_gone, supervise

if TYPE_CHECKING:
    from taskengine.task import Task

__all__ = ["add_command", "run_command"]

_LOOK_EVERY = 0.1  # seconds between looks at what the engine runs (for the task lines)

_DESCRIPTION = """\
Run tasks from a SQLite file (or PostgreSQL database), with no HTTP server: every
unfinished task no live engine owns, and every task other processes create on it (for
example with 'taskengine run --no-wait'), found by polling. Each task runs in one engine at a time:
the worker claims it with a lease in the file and renews it while it runs; if the
worker dies, another engine takes the task over from its last checkpoint once the
lease runs out (at once on the same host). Prints a line when it starts and one per
task it starts and finishes. Ctrl-C or SIGTERM stops it after the current batches and
releases its tasks, checkpointed, so another engine continues them at once (exit 0).

With --workers N (N > 1) it starts N worker processes, each an engine of its own
running --threads tasks at once, so independent tasks use several cores; their lines
are prefixed [1]..[N], a process that dies is restarted, and Ctrl-C or SIGTERM stops
them all the same way."""


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``worker`` and its options to the ``taskengine`` subcommands."""
    worker = commands.add_parser(
        "worker",
        help="run the file's tasks (no HTTP) until Ctrl-C or SIGTERM",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("--db", required=True, help=DB_HELP)
    worker.add_argument(
        "--workers",
        type=positive,
        default=1,
        help="worker processes (default 1): each runs its own engine on its own core; "
        "more than 1 starts them under this process, which restarts one that dies",
    )
    worker.add_argument(
        "--threads",
        type=positive,
        default=2,
        help="tasks each worker process runs at once (default 2)",
    )
    worker.add_argument(
        "--lease",
        type=seconds(0.01, 86_400),
        default=30.0,
        help="seconds a claim on a task lasts without renewal: how soon another engine "
        "takes over the tasks of a worker that died (default 30; longer than a batch)",
    )
    worker.add_argument(
        "--poll",
        type=seconds(0.01, 3600),
        default=0.5,
        help="seconds between looks for new or abandoned tasks (default 0.5)",
    )
    worker.add_argument("--quiet", action="store_true", help="no line per task")
    worker.add_argument("--batch-size", type=positive, default=None, help=argparse.SUPPRESS)
    worker.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)
    worker.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``taskengine worker`` with parsed ``args`` until SIGINT or SIGTERM; returns 0
    (1 when a worker process of several did not stop cleanly)."""
    if args.workers > 1:
        return supervise(args, out, err)
    if args.parent is not None:
        out = cast("TextIO", LossyOutput(out))  # one of several: the supervisor may go
    with (
        stop_signals() as stop,
        open_engine(
            args.db,
            workers=args.threads,
            batch_size=args.batch_size,
            lease=args.lease,
            poll=args.poll,
        ) as (engine, _storage),
    ):
        census = take_census(engine)
        watch = Watch(engine, waiting=[task.id for task in census.waiting])
        engine.start()
        out.write(
            f"Worker {engine.owner} running tasks from {display_db(args.db)} "
            f"({_threads(args.threads)}, "
            f"lease {args.lease:g} s, poll {args.poll:g} s); Ctrl-C or SIGTERM stops.\n"
        )
        if census.waiting:
            out.write(f"Found {count(len(census.waiting), 'unfinished task')} to resume.\n")
        note = census.owned_note()
        if note is not None:
            out.write(note + "\n")
        out.flush()
        lines = _TaskLines(out, quiet=args.quiet)
        while True:
            lines.show(watch.look())  # a last look before stopping: what it held, it releases
            if stop.is_set() or parent_gone(args.parent):
                break
            stop.wait(_LOOK_EVERY)
        held = len(engine.owned())
        engine.stop()  # after the current batches; releases every task it holds
        lines.show(watch.look())
        out.write(
            f"Stopped. Released {count(held, 'unfinished task')} (checkpointed) for another "
            f"engine on {display_db(args.db)} to continue at once.\n"
            if held
            else "Stopped. No task was running.\n"
        )
        return EXIT_OK


def _threads(n: int) -> str:
    return "1 task at a time" if n == 1 else f"{n} tasks at a time"


class _TaskLines:
    """One line per task the worker starts, finishes or gives up."""

    def __init__(self, out: TextIO, *, quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self._started: dict[str, float] = {}

    def show(self, events: list[Event]) -> None:
        if self.quiet:
            return
        for event in events:
            task = event.task
            if event.kind == "running":
                continue
            if event.kind == "started":
                self._started[task.id] = time.monotonic()
                self._line(task, "started", f"at {_counts(task)}")
            elif event.kind == "ended":
                began = self._started.pop(task.id, None)
                took = "" if began is None else f" in {format_duration(time.monotonic() - began)}"
                self._line(task, "finished", f"{_outcome(task)}, {_counts(task)}{took}")
            elif event.kind == "released":
                self._started.pop(task.id, None)
                self._line(task, "released", f"at {_counts(task)}, checkpointed")
        self.out.flush()

    def _line(self, task: Task, what: str, detail: str) -> None:
        separator = " " if detail.startswith("at ") else ": "
        self.out.write(f"{what} {task.id} {task.type}{separator}{detail}\n")


def _done(task: Task) -> int:
    return task.items_succeeded + task.items_failed


def _counts(task: Task) -> str:
    text = f"{_done(task):,}/{count(task.estimated_item_count, 'item')}"
    return f"{text} ({task.items_failed:,} failed)" if task.items_failed else text


def _outcome(task: Task) -> str:
    if task.failures and task.failures[0].code == "CANCELLED" and task.status.value == "FAILED":
        return "CANCELLED"
    return task.status.value

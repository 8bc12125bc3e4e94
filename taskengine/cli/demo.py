"""``taskengine demo``: a sample collection and one task of each type, with live progress.

The demo builds a collection ``products`` in a SQLite file (a temporary one unless
``--db`` names one), with a sandbox and the publish plugin, fills it with generated items
(``--items``, default 100,000, in LIVE; a tenth of that in SANDBOX), and runs, one after the
other, the four task types of the reference API:

1. ``COPY_FIELD_DATA``: ``title`` -> ``titleBackup`` on every LIVE item;
2. ``EDIT_FIELD_DATA``: on items tagged ``Goob`` or ``outdated``, replace ``Goob`` by
   ``Good``, remove ``outdated``, add ``sale`` and drop duplicates;
3. ``UPDATE_PUBLISH_STATUS``: ``SET_DRAFT_STATUS`` on the ``seasonal`` category;
4. ``DELETE_BY_QUERY``: in the SANDBOX, delete the published items whose ``holidays``
   is ``Halloween`` (the reference's own example; drafts are kept).

Then it prints a summary: one line per task with what it did and where, how many items
its filter matched, how many it changed, how many failed, and how long it took.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from taskengine.cli._common import (
    EXIT_CANCELLED,
    EXIT_OK,
    CommandError,
    display_db,
    format_duration,
    format_table,
    open_engine,
    positive,
)
from taskengine.cli._progress import ProgressPrinter, ctrl_c_cancels, exit_code_for, follow_task
from taskengine.errors import CollectionNotFound

if TYPE_CHECKING:
    from taskengine.storage.base import Storage, WriteResult
    from taskengine.storage.changes import ItemChange, SQLChange
    from taskengine.task import Task
    from taskengine.tasktype import BatchChanges, Executor, Plan, TaskOptions, TaskType
    from taskengine.tasktypes import BuiltinTypes

__all__ = ["COLLECTION", "DEMO_TASKS", "add_command", "generate_items", "run_command", "run_demo"]

COLLECTION = "products"
"""The demo collection's name."""

_CATEGORIES = ("books", "toys", "garden", "seasonal", "kitchen")
_TAG_SETS = (
    ("new", "Goob", "outdated", "new"),
    ("new",),
    ("bestseller", "outdated"),
    (),
    ("Goob",),
)
_HOLIDAYS = ("Halloween", "Christmas", "", "Halloween", "", "")

DEMO_TASKS: tuple[dict[str, Any], ...] = (
    {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": COLLECTION,
            "environment": "LIVE",
            "sourceFieldKey": "title",
            "targetFieldKey": "titleBackup",
        },
    },
    {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": COLLECTION,
            "environment": "LIVE",
            "filter": {"tags": {"$hasSome": ["Goob", "outdated"]}},
            "fieldKey": "tags",
            "operations": {
                "addItems": ["sale"],
                "removeItems": ["outdated"],
                "replaceItems": [{"from": "Goob", "to": "Good"}],
                "removeDuplicates": True,
            },
        },
    },
    {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": COLLECTION,
            "environment": "LIVE",
            "filter": {"category": "seasonal"},
            "operation": "SET_DRAFT_STATUS",
        },
    },
    {
        "type": "DELETE_BY_QUERY",
        "deleteByQueryOptions": {
            "dataCollectionId": COLLECTION,
            "environment": "SANDBOX",
            "filter": {"holidays": {"$in": ["Halloween"]}},
        },
    },
)
"""The four task specs the demo runs, in order (bare task objects, see docs/task-types.md)."""

_WHAT = (
    "title -> titleBackup",
    "tags: Goob -> Good, -outdated, +sale",
    "seasonal -> draft",
    "published Halloween",
)
"""What each of :data:`DEMO_TASKS` does, in the summary's words."""


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` and its options to the ``taskengine`` subcommands."""
    demo = commands.add_parser(
        "demo",
        help="build a sample collection and run every task type with live progress",
        description="Create a sample collection (with a sandbox and the publish plugin) in a "
        "SQLite file and run each of the four task types on it, then print a summary.",
    )
    demo.add_argument(
        "--db",
        help="keep the sample data in this SQLite file, or postgresql:// database "
        "(default: a temporary file)",
    )
    demo.add_argument(
        "--items", type=positive, default=100_000, help="items to generate (default 100000)"
    )
    demo.add_argument(
        "--replace",
        action="store_true",
        help="delete an existing 'products' collection in --db and rebuild it",
    )
    demo.add_argument("--batch-size", type=positive, default=1000, help=argparse.SUPPRESS)
    demo.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``taskengine demo`` with parsed ``args``; returns :func:`run_demo`'s exit code."""
    return run_demo(
        db=args.db, items=args.items, out=out, batch_size=args.batch_size, replace=args.replace
    )


class _CountingExecutor:
    """Delegates to a built-in executor and counts the items its committed batches wrote."""

    def __init__(self, inner: Executor) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.written = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def plan(self, options: TaskOptions, storage: Storage) -> Plan:
        return self._inner.plan(options, storage)

    def apply(self, plan: Plan, items: list[dict[str, Any]]) -> BatchChanges:
        return self._inner.apply(plan, items)

    def item_change(self, plan: Plan) -> ItemChange | None:
        make = getattr(self._inner, "item_change", None)
        change = None if make is None else make(plan)
        return None if change is None else _WithIds(change)

    def committed(self, plan: Plan, changes: BatchChanges, written: WriteResult) -> None:
        with self._lock:
            self.written += len(written.done)
        self._inner.committed(plan, changes, written)


class _WithIds:
    """A built-in change that asks for the ids it writes (the demo counts them)."""

    needs_ids = True

    def __init__(self, inner: ItemChange) -> None:
        self._inner = inner
        self.deletes = inner.deletes

    def __call__(self, item: dict[str, Any], /) -> dict[str, Any] | str | None:
        return self._inner(item)

    def to_sql(self, backend: str, document: str) -> SQLChange | None:
        return self._inner.to_sql(backend, document)


def _counting_task_types(
    builtin: BuiltinTypes,
) -> tuple[list[TaskType], dict[str, _CountingExecutor]]:
    """The built-in task types, each with an executor that counts the items it wrote."""
    types: list[TaskType] = []
    counters: dict[str, _CountingExecutor] = {}
    for task_type in builtin.task_types:
        counter = _CountingExecutor(task_type.executor)
        counters[task_type.name] = counter
        types.append(attrs.evolve(task_type, executor=counter))
    return types, counters


def generate_items(count: int, prefix: str = "item") -> Iterator[dict[str, Any]]:
    """``count`` deterministic sample items with ids ``<prefix>-000000`` upwards."""
    categories, tag_sets, holidays = _CATEGORIES, _TAG_SETS, _HOLIDAYS
    width = max(6, len(str(count)))
    for i in range(count):
        yield {
            "_id": f"{prefix}-{i:0{width}d}",
            "title": f"Product {i}",
            "price": (i * 37) % 500 / 4,
            "category": categories[i % 5],
            "tags": list(tag_sets[i % 5]),
            "holidays": holidays[i % 6],
            "_publishStatus": "DRAFT" if i % 7 == 0 else "PUBLISHED",
        }


def _fill(storage: Storage, environment: str, count: int, batch: int = 5000) -> None:
    chunk: list[dict[str, Any]] = []
    with storage.atomic():
        for item in generate_items(count):
            chunk.append(item)
            if len(chunk) >= batch:
                storage.insert_items(COLLECTION, environment, chunk)
                chunk = []
        if chunk:
            storage.insert_items(COLLECTION, environment, chunk)


def _prepare(storage: Storage, db: str, items: int, out: TextIO, replace: bool) -> None:
    try:
        info = storage.collection_info(COLLECTION)
    except CollectionNotFound:
        pass
    else:
        if not replace:
            count = storage.count(COLLECTION, "LIVE").value
            raise CommandError(
                f"{display_db(db)} already has a collection {COLLECTION!r} "
                f"({count:,} LIVE items); pass --replace to delete it and rebuild the demo "
                "data, or use another --db"
            )
        storage.drop_collection(info.name)
    storage.create_collection(COLLECTION, sandbox=True, publish_plugin=True)
    sandbox_items = max(1, items // 10)
    started = time.monotonic()
    _fill(storage, "LIVE", items)
    _fill(storage, "SANDBOX", sandbox_items)
    out.write(
        f"Created collection {COLLECTION!r} (sandbox and publish plugin enabled): "
        f"{items:,} LIVE items, {sandbox_items:,} SANDBOX items "
        f"in {format_duration(time.monotonic() - started)}\n\n"
    )
    out.flush()


def run_demo(
    db: str | None = None,
    items: int = 100_000,
    out: TextIO | None = None,
    *,
    batch_size: int = 1000,
    tty: bool | None = None,
    replace: bool = False,
) -> int:
    """Run the demo; returns the exit code (0, or 4 when Ctrl-C cancelled a task).

    Args:
        db: the SQLite file, or the ``postgresql://`` DSN, to build the data in;
            ``None`` = a temporary SQLite file removed at the end.
        items: how many LIVE items to generate (the sandbox gets a tenth).
        out: where to write (default ``sys.stdout``).
        batch_size: the engine's batch size.
        tty: draw live progress bars; ``None`` = when ``out`` is a terminal.
        replace: delete an existing ``products`` collection in ``db`` and rebuild it;
            without it, an existing one is left alone and the demo refuses to run.

    Raises:
        CommandError: ``db`` already has a ``products`` collection and ``replace`` is
            false (exit code 2; nothing is changed).
    """
    import sys

    stream = sys.stdout if out is None else out
    if items < 1:
        raise ValueError(f"items must be at least 1, got {items}")
    with contextlib.ExitStack() as stack:
        if db is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="taskengine-demo-"))
            path = os.path.join(folder, "demo.db")
        else:
            path = db
        return _run(path, items, stream, batch_size, tty, keep=db is not None, replace=replace)
    raise AssertionError("unreachable")  # pragma: no cover - for type checkers


def _run(
    path: str,
    items: int,
    out: TextIO,
    batch_size: int,
    tty: bool | None,
    keep: bool,
    replace: bool,
) -> int:
    results: list[_Result] = []
    from taskengine.tasktypes import default_task_types

    builtin = default_task_types()
    types, counters = _counting_task_types(builtin)
    opened = open_engine(path, create=True, batch_size=batch_size, task_types=types)
    with opened as (engine, storage):
        for service in builtin.services:
            engine.register_service(service)
        _prepare(storage, path, items, out, replace)  # before the engine resumes any old task
        engine.start()
        for spec, what in zip(DEMO_TASKS, _WHAT, strict=True):
            started = time.monotonic()
            counter = counters[spec["type"]]
            with ctrl_c_cancels() as pressed:
                task = engine.create_task({"task": spec})
                written_before = counter.written
                printer = ProgressPrinter(out, task.type, tty=tty)
                final = follow_task(engine, task.id, printer, interrupt=pressed)
            changed = counter.written - written_before
            results.append(_Result(final, what, changed, time.monotonic() - started))
            if exit_code_for(final) == EXIT_CANCELLED:
                out.write("\nCancelled; stopping the demo.\n")
                _summary(results, out)
                return EXIT_CANCELLED
        out.write("\n")
        _summary(results, out)
        live = storage.count(COLLECTION, "LIVE").value
        sandbox = storage.count(COLLECTION, "SANDBOX").value
        out.write(f"\n{COLLECTION}: {live:,} LIVE items, {sandbox:,} SANDBOX items left.\n")
    if keep:
        out.write(
            f"The data and the tasks are in {display_db(path)}; try:\n"
            f"  taskengine tasks list --db {_quoted(display_db(path))}\n"
        )
    else:
        out.write("(The database was temporary; pass --db demo.db to keep it.)\n")
    out.flush()
    return EXIT_OK


def _quoted(db: str) -> str:
    # A DSN holds '?' and '&', which a shell would take for its own.
    return f"'{db}'" if any(c in db for c in "?&;* ") else db


@attrs.frozen
class _Result:
    """One demo task's outcome for the summary."""

    task: Task
    what: str
    changed: int
    seconds: float


def _summary(results: list[_Result], out: TextIO) -> None:
    rows = []
    for result in results:
        task = result.task
        options = task.options.to_json()
        status = task.status.value
        if task.failures and status == "FAILED":
            status += f" ({task.failures[0].code})"
        rows.append(
            (
                task.type,
                result.what,
                f"{options.get('dataCollectionId', COLLECTION)}/"
                f"{options.get('environment', 'LIVE')}",
                f"{task.items_succeeded + task.items_failed:,}",
                f"{result.changed:,}",
                f"{task.items_failed:,}",
                format_duration(result.seconds),
                status,
            )
        )
    headers = ("TASK", "WHAT", "WHERE", "MATCHED", "CHANGED", "FAILED", "TIME", "STATUS")
    out.write(format_table(headers, rows) + "\n")

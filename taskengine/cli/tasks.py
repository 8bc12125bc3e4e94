"""``taskengine tasks list|get|cancel``: look at the stored tasks, or cancel one.

``list`` and ``get`` open the file read-only (see docs/cli.md); the JSON printed is the
API's task object (docs/http.md). The ``list`` table also says who holds each unfinished
task (:mod:`taskengine.cli._owners`); the JSON does not (a lease is not part of a task).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TextIO

from taskengine._jsonio import dumps
from taskengine._lease import shown_holder
from taskengine.cli._common import DB_HELP, EXIT_OK, format_table, open_engine
from taskengine.cli._owners import task_holder
from taskengine.errors import InvalidRequest, Violation

__all__ = ["add_command", "run_command"]


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tasks`` and its three actions to the ``taskengine`` subcommands."""
    tasks = commands.add_parser(
        "tasks",
        help="list, show or cancel tasks",
        description="Look at the tasks stored in a database file, or cancel one. 'list' and "
        "'get' open the file read-only: they never change it, work on a read-only file, and "
        "answer at once while another process writes. Finished tasks disappear when their "
        "expiresAt passes.",
        epilog="examples:\n  taskengine tasks list --db shop.db\n"
        "  taskengine tasks get --db shop.db 3f2c...\n"
        "  taskengine tasks cancel --db shop.db 3f2c...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = tasks.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser(
        "list",
        help="list tasks, newest first",
        description="List the stored tasks, newest first, one page at a time: id, type, "
        "status (a cancelled task shows as 'FAILED (cancelled)', a pending cancel as "
        "'(cancel requested)'), who runs it (OWNER: host/pid of the live engine holding "
        "an unfinished task, or 'waiting', 'waiting (lease ran out)', 'waiting (owner "
        "exited)' when none does), items succeeded and failed, and when it was created. "
        "--json prints the API's JSON, which has no owner.",
    )
    listing.add_argument("--db", required=True, help=DB_HELP)
    listing.add_argument("--limit", type=int, default=30, help="tasks per page, 1-100 (default 30)")
    listing.add_argument("--offset", type=int, default=0, help="tasks to skip (default 0)")
    listing.add_argument(
        "--json", action="store_true", help="print the API's JSON (tasks and paging metadata)"
    )
    for name, text, description in (
        ("get", "show one task as JSON", "Print one task as the API's JSON task object."),
        (
            "cancel",
            "cancel a task",
            "Cancel a task and print it as JSON. A NEW task ends at once as FAILED with a "
            "CANCELLED failure; a RUNNING one shows cancelRequested and stops after its "
            "current batch, in whichever process runs it. A finished task is printed "
            "unchanged.",
        ),
    ):
        action = actions.add_parser(name, help=text, description=description)
        action.add_argument("task_id", metavar="ID", help="the task's id")
        action.add_argument("--db", required=True, help=DB_HELP)
    tasks.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run ``taskengine tasks`` with parsed ``args``; returns the exit code."""
    with open_engine(args.db, read_only=args.action != "cancel") as (engine, storage):
        if args.action == "get":
            out.write(dumps(engine.get_task(args.task_id).to_json(), indent=2) + "\n")
            return EXIT_OK
        if args.action == "cancel":
            # One transaction around the read-modify-write, so that a batch committed by
            # another process running the task cannot slip in between (and be undone).
            with storage.atomic():
                task = engine.cancel_task(args.task_id)
            out.write(dumps(task.to_json(), indent=2) + "\n")
            return EXIT_OK
        try:
            page = engine.list_tasks(limit=args.limit, offset=args.offset)
        except InvalidRequest as exc:  # name the command's options, not the API's fields
            raise InvalidRequest(
                Violation(_OPTIONS.get(v.field, v.field), v.description) for v in exc.violations
            ) from None
        body = _list_json(page, args.offset)
        if args.json:
            out.write(dumps(body, indent=2) + "\n")
            return EXIT_OK
        now = engine.clock.now()
        owners = {task.id: task_holder(engine.task_store, task, now) for task in page.tasks}
        rows = [
            (
                t["id"],
                t["type"],
                _status_label(t),
                _owner_cell(owners.get(t["id"])),
                f"{t['itemsSucceeded']:,}/{t['estimatedItemCount']:,}",
                f"{t['itemsFailed']:,}",
                t.get("createdAt", ""),
            )
            for t in body["tasks"]
        ]
        headers = ("ID", "TYPE", "STATUS", "OWNER", "SUCCEEDED", "FAILED", "CREATED")
        out.write(format_table(headers, rows) + "\n")
        meta = body["metadata"]
        out.write(f"{meta['count']} of {meta['total']} task(s), offset {meta['offset']}\n")
        return EXIT_OK


def _status_label(task: Mapping[str, Any]) -> str:
    """A task's status for a table: ``FAILED (cancelled)``, ``RUNNING (cancel requested)``."""
    status = str(task["status"])
    if status == "FAILED":
        codes = {failure.get("code") for failure in task.get("failures", ())}
        return "FAILED (cancelled)" if "CANCELLED" in codes else status
    if task.get("cancelRequested"):
        return f"{status} (cancel requested)"
    return status


def _owner_cell(held_by: str | None) -> str:
    """The OWNER column: ``host/pid`` of a live owner, why an unfinished task waits, or
    ``-`` for a finished one."""
    shown = shown_holder(held_by)
    return "-" if shown is None else shown


_OPTIONS = {"paging.limit": "--limit", "paging.offset": "--offset"}
"""The API's paging fields by the ``tasks list`` options that set them."""


def _list_json(page: Any, offset: int) -> dict[str, Any]:
    """``{"tasks", "metadata"}`` from what ``engine.list_tasks`` returned."""
    to_json = getattr(page, "to_json", None)
    if callable(to_json):
        body = to_json()
        if isinstance(body, dict):
            return body
    tasks = list(getattr(page, "tasks", page))
    total = getattr(page, "total", len(tasks))
    return {
        "tasks": [task.to_json() for task in tasks],
        "metadata": {"count": len(tasks), "offset": offset, "total": total},
    }

"""The ``taskengine`` command (also ``python -m taskengine``).

Subcommands::

    taskengine demo    [--db PATH] [--items N] [--replace]
    taskengine import  --db PATH --collection NAME [--environment LIVE|SANDBOX]
                       [--sandbox] [--publish-plugin] FILE.jsonl
    taskengine run     --db PATH TASK.json [--no-wait]
    taskengine run     --db PATH --resume
    taskengine tasks   list|get ID|cancel ID --db PATH
    taskengine worker  --db PATH [--workers N] [--lease S] [--poll S]
    taskengine serve   --db PATH [--host H] [--port P] [--token T] [--threads N] [--timeout S]

Every command that takes ``--db`` keeps items *and* tasks in that one SQLite file (or
PostgreSQL database, for a ``postgresql://`` DSN: see ``_common.open_storage``), so
``run`` in one terminal and ``tasks get`` in another see the same task. Several processes
may run tasks from one file: each task runs in one engine at a time (it holds a lease on
the task). ``run`` runs only the task it creates; ``worker``, ``serve`` and ``run
--resume`` also take the unfinished tasks no live engine owns.

Exit codes (:data:`EXIT_CODES`): 0 the task COMPLETED without item failures (or the
command succeeded), 1 COMPLETED with item failures, 2 bad input (usage, files, JSON, task
spec, unknown collection or task), 3 the task FAILED, 4 the task was CANCELLED, 5 a
storage or internal error.

One module per command (``demo``, ``import_``, ``run``, ``tasks``, ``worker``, ``serve``),
each adding its own subparser; ``_parser`` builds the tree, ``_common``, ``_progress``,
``_owners`` and ``_watch`` hold what they share (see docs/cli.md). This module is
:func:`main` and the names it re-exports.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import TextIO

from taskengine.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_ITEM_FAILURES,
    EXIT_OK,
    CommandError,
    check_db_path,
    count,
    format_duration,
    format_table,
    open_engine,
)
from taskengine.cli._parser import build_parser
from taskengine.cli._progress import ProgressPrinter, ctrl_c_cancels, exit_code_for, follow_task
from taskengine.cli.run import load_task_spec
from taskengine.errors import (
    CollectionNotFound,
    InvalidRequest,
    SandboxNotEnabled,
    StorageError,
    TaskNotFound,
    printable,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CANCELLED",
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_ITEM_FAILURES",
    "EXIT_OK",
    "ProgressPrinter",
    "check_db_path",
    "count",
    "ctrl_c_cancels",
    "exit_code_for",
    "follow_task",
    "format_duration",
    "format_table",
    "load_task_spec",
    "main",
    "open_engine",
]


def main(argv: list[str] | None = None) -> int:
    """Run the ``taskengine`` command; returns the exit code (see :data:`EXIT_CODES`).

    Never raises: a Ctrl-C before a task exists gives 130, an unexpected error one line on
    stderr and :data:`EXIT_ERROR` (the traceback too with ``--debug``). The engine is
    imported only in here, so a Ctrl-C while it loads is caught too.
    """
    out, err = sys.stdout, sys.stderr
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version, usage errors
            return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
        debug = bool(getattr(args, "debug", False))
        code: int = args.handler(args, out, err)
        return code
    except CommandError as exc:
        err.write(f"taskengine: error: {exc}\n")
        return exc.code
    except InvalidRequest as exc:
        noun = "task" if exc.kind == "task" else "input"
        err.write(f"taskengine: error: invalid {noun} ({len(exc.violations)} violation(s)):\n")
        for violation in exc.violations:
            err.write(f"  {violation.field}: {violation.description}\n")
        return EXIT_BAD_INPUT
    except (TaskNotFound, CollectionNotFound, SandboxNotEnabled) as exc:
        err.write(f"taskengine: error: {exc}\n")
        return EXIT_BAD_INPUT
    except StorageError as exc:
        err.write(f"taskengine: storage error: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _write_safely(err, "taskengine: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        # Exit 1 means "COMPLETED with item failures": a bug must not look like that.
        if debug:
            _write_safely(err, "".join(traceback.format_exception(exc)))
        message = printable(str(exc))
        hint = "" if debug else " (run with --debug for the traceback)"
        _write_safely(err, f"taskengine: internal error: {type(exc).__name__}: {message}{hint}\n")
        return EXIT_ERROR
    finally:
        with contextlib.suppress(Exception):
            out.flush()


def _write_safely(stream: TextIO, text: str) -> None:
    """Write to ``stream`` ignoring a closed pipe or a second Ctrl-C: the exit code says it."""
    with contextlib.suppress(Exception, KeyboardInterrupt):
        stream.write(text)
        stream.flush()

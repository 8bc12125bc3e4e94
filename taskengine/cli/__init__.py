"""The ``taskengine`` command (also ``python -m taskengine``).

Subcommands::

    taskengine demo    [--db PATH] [--items N] [--replace]
    taskengine import  --db PATH --collection NAME [--environment LIVE|SANDBOX]
                       [--sandbox] [--publish-plugin] FILE.jsonl
    taskengine run     --db PATH TASK.json [--no-wait]
    taskengine tasks   list|get ID|cancel ID --db PATH
    taskengine serve   --db PATH [--host H] [--port P] [--token T] [--threads N] [--timeout S]

Every command that takes ``--db`` keeps items *and* tasks in that one SQLite file, so
``run`` in one terminal and ``tasks get`` in another see the same task, and ``serve``
after a crash resumes unfinished tasks.

Exit codes (:data:`EXIT_CODES`): 0 the task COMPLETED without item failures (or the
command succeeded), 1 COMPLETED with item failures, 2 bad input (usage, files, JSON, task
spec, unknown collection or task), 3 the task FAILED, 4 the task was CANCELLED, 5 a
storage or internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TextIO

from taskengine._jsonio import dumps, parse_json_object
from taskengine.errors import (
    CollectionNotFound,
    InvalidRequest,
    SandboxNotEnabled,
    StorageError,
    TaskEngineError,
    TaskNotFound,
    Violation,
    printable,
)

if TYPE_CHECKING:
    from taskengine.engine import TaskEngine
    from taskengine.storage.sqlite import SQLiteStorage
    from taskengine.task import Task
    from taskengine.tasktype import TaskType

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

EXIT_OK = 0
EXIT_ITEM_FAILURES = 1
EXIT_BAD_INPUT = 2
EXIT_FAILED = 3
EXIT_CANCELLED = 4
EXIT_ERROR = 5
EXIT_INTERRUPTED = 130

EXIT_CODES: Mapping[int, str] = {
    EXIT_OK: "the task COMPLETED without item failures (or the command succeeded)",
    EXIT_ITEM_FAILURES: "the task COMPLETED, and some items failed",
    EXIT_BAD_INPUT: "bad input: usage, file, JSON, task spec, unknown collection or task",
    EXIT_FAILED: "the task FAILED",
    EXIT_CANCELLED: "the task was CANCELLED",
    EXIT_ERROR: "a storage or internal error (one line on stderr; --debug shows the traceback)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C before a task was created (after: it is cancelled, 4)",
}
"""What each exit code of ``taskengine`` means."""


class CommandError(TaskEngineError):
    """A command-line failure with the exit code it should produce."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_db_path(db: str) -> None:
    """Refuse a ``--db`` path that cannot be a SQLite database (bad input, exit 2).

    A missing or empty file is fine (SQLite creates it); a directory, or a file that does
    not start with the SQLite header, is a :class:`CommandError` rather than a storage
    error, since the user named the wrong file.
    """
    if os.path.isdir(db):
        raise CommandError(f"{db!r} is a directory, not a SQLite database file")
    try:
        with open(db, "rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CommandError(f"cannot read {db!r}: {exc.strerror or exc}") from None
    if head and head != _SQLITE_HEADER:
        raise CommandError(f"{db!r} is not a SQLite database file")


# -- progress ------------------------------------------------------------------------------


class ProgressPrinter:
    """Shows how far a task has got: a redrawn bar on a terminal, plain lines otherwise.

    Args:
        stream: where to write (the command's stderr for ``run``, stdout for ``demo``).
        label: what is running (``"DELETE_BY_QUERY"``).
        tty: draw a bar redrawn in place; ``None`` = ``stream.isatty()``.
        interval: seconds between plain lines when not on a terminal.
    """

    def __init__(
        self, stream: TextIO, label: str, *, tty: bool | None = None, interval: float = 1.0
    ) -> None:
        self.stream = stream
        self.label = label
        self.tty = _isatty(stream) if tty is None else tty
        self.interval = interval
        self._started = time.monotonic()
        self._last_line = self._started  # the first plain line comes after one interval
        self._drawn = False

    def update(self, task: Task) -> None:
        """Show ``task``'s counters (at most once per ``interval`` off a terminal)."""
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self._text(task, now) + "\x1b[K")
            self.stream.flush()
            self._drawn = True
        elif now - self._last_line >= self.interval and not task.is_finished:
            self._last_line = now
            self.stream.write(self._text(task, now) + "\n")
            self.stream.flush()

    def finish(self, task: Task) -> None:
        """Show the final state and end the line."""
        now = time.monotonic()
        text = self._text(task, now)
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _text(self, task: Task, now: float) -> str:
        done = task.items_succeeded + task.items_failed
        total = max(task.estimated_item_count, done)
        elapsed = max(now - self._started, 1e-9)
        if task.is_finished:
            fraction = 1.0 if task.status.value == "COMPLETED" else (done / total if total else 0)
        else:
            fraction = done / total if total else 0.0
        state = task.status.value
        if task.cancel_requested and not task.is_finished:
            state = "CANCELLING"
        elif task.is_finished and _is_cancelled(task):
            state = "CANCELLED"
        counts = f"{done:,}/{count(total, 'item')}"
        if task.items_failed:
            counts += f" ({task.items_failed:,} failed)"
        rate = f"{done / elapsed:,.0f} items/s"
        if self.tty:
            width = 28
            filled = round(fraction * width)
            bar = "#" * filled + "-" * (width - filled)
            return f"{self.label:<22} [{bar}] {fraction * 100:5.1f}%  {counts}  {rate}  {state}"
        return f"{self.label}: {fraction * 100:.0f}% {counts}, {rate}, {state}"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _is_cancelled(task: Task) -> bool:
    failures = task.failures
    return task.status.value == "FAILED" and bool(failures) and failures[0].code == "CANCELLED"


def exit_code_for(task: Task) -> int:
    """The exit code for a task's outcome (see :data:`EXIT_CODES`); NEW/RUNNING give 0."""
    status = task.status.value
    if status == "COMPLETED":
        return EXIT_ITEM_FAILURES if task.items_failed else EXIT_OK
    if status == "FAILED":
        return EXIT_CANCELLED if _is_cancelled(task) else EXIT_FAILED
    return EXIT_OK


def follow_task(
    engine: TaskEngine,
    task_id: str,
    printer: ProgressPrinter | None,
    *,
    poll: float = 0.1,
    interrupt: threading.Event | None = None,
) -> Task:
    """Poll ``task_id`` until it is finished, showing progress; return the final task.

    A Ctrl-C while waiting (``interrupt`` set by :func:`ctrl_c_cancels`, or a
    ``KeyboardInterrupt``) cancels the task and keeps waiting for it to end; a second
    Ctrl-C gives up waiting and raises ``KeyboardInterrupt``.
    """
    cancelling = False
    while True:
        try:
            if interrupt is not None and interrupt.is_set() and not cancelling:
                raise KeyboardInterrupt
            task = engine.get_task(task_id)
            if printer is not None:
                printer.update(task)
            if task.is_finished:
                if printer is not None:
                    printer.finish(task)
                return task
            engine.wait(task_id, timeout=poll)
        except KeyboardInterrupt:
            if cancelling:
                raise
            cancelling = True
            if printer is not None:
                printer.stream.write("\nCtrl-C: cancelling the task (Ctrl-C again to quit)\n")
                printer.stream.flush()
            engine.cancel_task(task_id)


@contextlib.contextmanager
def ctrl_c_cancels() -> Iterator[threading.Event]:
    """While active, a first Ctrl-C only sets the yielded event (a second one raises).

    This keeps a Ctrl-C from landing between creating a task and following it: the
    follower sees the event and cancels the task. Outside the main thread (where signal
    handlers cannot be set) the event is never set and Ctrl-C behaves as usual.
    """
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def handler(signum: int, frame: object) -> None:
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


# -- opening the database ------------------------------------------------------------------


@contextlib.contextmanager
def open_engine(
    db: str,
    *,
    create: bool = False,
    start: bool = False,
    workers: int = 1,
    batch_size: int = 500,
    read_only: bool = False,
    task_types: Iterable[TaskType] | None = None,
) -> Iterator[tuple[TaskEngine, SQLiteStorage]]:
    """An engine over the SQLite file ``db`` (items and tasks in the one file).

    Args:
        create: create the file when it does not exist (else a missing file is an error).
        start: start the engine's workers (which resumes unfinished tasks).
        read_only: open the file with SQLite's ``mode=ro`` for commands that only read
            (``tasks list|get``): nothing in the file changes, a read-only file works,
            and a process writing the file never makes the command wait.
        task_types: the engine's task types (``None``: the built-in four).

    Raises:
        CommandError: the file does not exist and ``create`` is false.
    """
    from taskengine.engine import TaskEngine
    from taskengine.storage.sqlite import SQLiteStorage
    from taskengine.taskstore import SQLiteTaskStore

    if read_only:
        with _open_read_only(db) as storage:
            store = SQLiteTaskStore(storage)
            engine = TaskEngine(storage, task_store=store)
            yield engine, storage
        return

    if not create and not os.path.exists(db):
        raise CommandError(
            f"no database at {db!r} (create one with 'taskengine import' or "
            f"'taskengine demo --db {db}')"
        )
    check_db_path(db)
    storage = SQLiteStorage(db)
    try:
        store = SQLiteTaskStore(storage)
        engine = TaskEngine(
            storage,
            task_store=store,
            workers=workers,
            batch_size=batch_size,
            task_types=task_types,
        )
        try:
            if start:
                engine.start()
            yield engine, storage
        finally:
            engine.stop()
            store.close()
    finally:
        storage.close()


@contextlib.contextmanager
def _open_read_only(db: str) -> Iterator[SQLiteStorage]:
    from taskengine.storage._database import Database
    from taskengine.storage.sqlite import SQLiteStorage

    if not os.path.exists(db):
        raise CommandError(
            f"no database at {db!r} (create one with 'taskengine import' or "
            f"'taskengine demo --db {db}')"
        )
    check_db_path(db)
    database = Database(db, read_only=True)
    try:
        yield SQLiteStorage(database)
    finally:
        database.close()


# -- commands -------------------------------------------------------------------------------


def _status_label(task: Mapping[str, Any]) -> str:
    """A task's status for a table: ``FAILED (cancelled)``, ``RUNNING (cancel requested)``."""
    status = str(task["status"])
    if status == "FAILED":
        codes = {failure.get("code") for failure in task.get("failures", ())}
        return "FAILED (cancelled)" if "CANCELLED" in codes else status
    if task.get("cancelRequested"):
        return f"{status} (cancel requested)"
    return status


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from taskengine.cli.demo import run_demo

    return run_demo(
        db=args.db, items=args.items, out=out, batch_size=args.batch_size, replace=args.replace
    )


def _read_text(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror or exc}") from None


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


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    spec = load_task_spec(_read_text(args.task_file), args.task_file)
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
        ahead = _count_unfinished(engine)  # before the engine starts and resumes them
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


def _stop_if(pressed: threading.Event) -> None:
    """Honour a Ctrl-C pressed before the task exists: stop with nothing created."""
    if pressed.is_set():
        raise KeyboardInterrupt


def _count_unfinished(engine: TaskEngine, pages: int = 10, size: int = 100) -> int:
    """How many tasks are NEW or RUNNING (looking at the newest ``pages * size`` only)."""
    total = 0
    for page in range(pages):
        listed = engine.list_tasks(limit=size, offset=page * size).tasks
        total += sum(1 for task in listed if not task.is_finished)
        if len(listed) < size:
            break
    return total


def _open_jsonl(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror or exc}") from None


IMPORT_BUSY_TIMEOUT = 5.0
"""Seconds ``taskengine import`` waits for another process's write lock before giving up."""


def _cmd_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from taskengine.cli._import import ImportRejected, import_jsonl
    from taskengine.storage.sqlite import SQLiteStorage

    environment = args.environment
    check_db_path(args.db)
    source = _open_jsonl(args.file)
    storage = None
    try:
        storage = SQLiteStorage(args.db, timeout=IMPORT_BUSY_TIMEOUT)
        started = time.monotonic()
        try:
            imported, created = import_jsonl(
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
        if storage is not None:
            storage.close()
        if source is not sys.stdin.buffer:
            source.close()


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _cmd_tasks(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
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
        page = engine.list_tasks(limit=args.limit, offset=args.offset)
        body = _list_json(page, args.offset)
        if args.json:
            out.write(dumps(body, indent=2) + "\n")
            return EXIT_OK
        rows = [
            (
                t["id"],
                t["type"],
                _status_label(t),
                f"{t['itemsSucceeded']:,}/{t['estimatedItemCount']:,}",
                f"{t['itemsFailed']:,}",
                t.get("createdAt", ""),
            )
            for t in body["tasks"]
        ]
        out.write(
            format_table(("ID", "TYPE", "STATUS", "SUCCEEDED", "FAILED", "CREATED"), rows) + "\n"
        )
        meta = body["metadata"]
        out.write(f"{meta['count']} of {meta['total']} task(s), offset {meta['offset']}\n")
        return EXIT_OK


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


def count(n: int, noun: str) -> str:
    """``n`` things in words: ``1 item``, ``2,000 items``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def format_duration(seconds: float) -> str:
    """A duration as people write it: ``850 ms`` under a second, ``2.4 s``, ``3 min 05 s``."""
    if seconds < 0.001:
        return "<1 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns under a header line and a rule."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(lines)


def _cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from taskengine.http import (
        is_loopback,
        make_app,
        make_waitress_server,
        stop_waitress_server,
    )

    try:
        import waitress  # noqa: F401
    except ImportError:
        raise CommandError(
            "'taskengine serve' runs on the waitress server, which is not installed: "
            "pip install 'taskengine[server]'"
        ) from None
    token = args.token or os.environ.get("TASKENGINE_TOKEN") or None
    if token is None and not is_loopback(args.host):
        raise CommandError(
            f"refusing to serve on {args.host} without a token: anyone who can reach it could "
            "create and cancel tasks; pass --token (or TASKENGINE_TOKEN), or use the default "
            "--host 127.0.0.1"
        )
    if args.quiet:
        logging.getLogger("waitress").setLevel(logging.ERROR)
    with open_engine(args.db, workers=args.workers) as (engine, _storage):
        resumed = _count_unfinished(engine)  # before the engine starts and resumes them
        app = make_app(engine, token=token)
        try:
            server = make_waitress_server(
                app if args.quiet else _access_log(app, err),
                args.host,
                args.port,
                threads=args.threads,
                timeout=args.timeout,
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CommandError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
        engine.start()
        previous = _install_sigterm()
        loop = threading.Thread(target=server.run, name="taskengine-http", daemon=True)
        try:
            # Ctrl-C and SIGTERM raise KeyboardInterrupt in this thread; the server's loop
            # runs in another one, so wherever the signal lands it stops the same way.
            loop.start()
            host = str(server.effective_host)
            shown = f"[{host}]" if ":" in host else host
            out.write(
                f"Resumed {resumed} unfinished task(s) from {args.db}.\n"
                f"Serving the task API on http://{shown}:{server.effective_port}/cms/v1/tasks "
                f"({'token required' if token else 'no token, loopback only'}); "
                "Ctrl-C stops.\n"
            )
            out.flush()
            while loop.is_alive():
                loop.join(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            stop_waitress_server(server)
            loop.join(10)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        engine.stop()
        left = _count_unfinished(engine)
        out.write(
            f"Stopped. {left} unfinished task(s) were checkpointed; they resume when "
            f"'taskengine serve' or 'taskengine run' next opens {args.db}.\n"
        )
        return EXIT_OK


def _access_log(app: Any, err: TextIO) -> Any:
    """``app`` writing one line per request to ``err`` (method, path, status)."""

    def logged(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            err.write(
                f"{environ.get('REMOTE_ADDR', '-')} {environ.get('REQUEST_METHOD', '?')} "
                f"{environ.get('PATH_INFO', '')} {status.split(' ', 1)[0]}\n"
            )
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return logged


def _install_sigterm() -> Any:
    """On SIGTERM, stop serving like Ctrl-C does (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


# -- argument parsing -----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2.

    A command that takes a subcommand and got none (``taskengine``, ``taskengine tasks``)
    shows its usage, which lists the subcommands, above that line.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and where to find help; exit 2."""
        usage = ""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and str(action.metavar) in message:
                usage = self.format_usage()
        line = f"{self.prog}: error: {message} (see '{self.prog} --help')\n"
        self.exit(EXIT_BAD_INPUT, usage + line)


_RUN_DESCRIPTION = """\
Create a task from a JSON file, run it here with a live progress line, and print the
final task as JSON. The file holds the reference request body {"task": {...}} or the
bare task object, for example:

  {"type": "EDIT_FIELD_DATA",
   "editFieldDataOptions": {"dataCollectionId": "products", "fieldKey": "tags",
                            "operations": {"addItems": ["sale"]}}}

Unfinished tasks already in the file run first. Ctrl-C cancels the task (a second
Ctrl-C stops waiting); the exit code tells the outcome."""


def build_parser() -> argparse.ArgumentParser:
    """The ``taskengine`` argument parser."""
    codes = EXIT_CODES.items()
    epilog = "exit codes:\n" + "\n".join(f"  {code:<3}  {text}" for code, text in codes)
    parser = _Parser(
        prog="taskengine",
        description="Run bulk data operations as background tasks over a SQLite database.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from taskengine import __version__

    parser.add_argument("--version", action="version", version=f"taskengine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="build a sample collection and run every task type with live progress",
        description="Create a sample collection (with a sandbox and the publish plugin) in a "
        "SQLite file and run each of the four task types on it, then print a summary.",
    )
    demo.add_argument(
        "--db", help="keep the sample data in this SQLite file (default: a temporary file)"
    )
    demo.add_argument(
        "--items", type=_positive, default=100_000, help="items to generate (default 100000)"
    )
    demo.add_argument(
        "--replace",
        action="store_true",
        help="delete an existing 'products' collection in --db and rebuild it",
    )
    demo.add_argument("--batch-size", type=_positive, default=1000, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_cmd_demo)

    imp = sub.add_parser(
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
    imp.add_argument("--db", required=True, help="the SQLite file (created if missing)")
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
        help="create the collection with the publish plugin (error for an existing one "
        "without)",
    )
    imp.add_argument("file", metavar="FILE.jsonl", help="the JSON Lines file ('-' = stdin)")
    imp.set_defaults(handler=_cmd_import)

    run = sub.add_parser(
        "run",
        help="run a task from a JSON file, with progress",
        description=_RUN_DESCRIPTION,
        epilog=epilog,
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
    run.add_argument("--batch-size", type=_positive, default=500, help=argparse.SUPPRESS)
    run.set_defaults(handler=_cmd_run)

    tasks = sub.add_parser(
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
        "'(cancel requested)'), items succeeded and failed, and when it was created.",
    )
    listing.add_argument("--db", required=True, help="the SQLite file")
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
        action.add_argument("--db", required=True, help="the SQLite file")
    tasks.set_defaults(handler=_cmd_tasks)

    from taskengine.http import DEFAULT_THREADS, DEFAULT_TIMEOUT

    serve = sub.add_parser(
        "serve",
        help="serve the REST API (and run tasks) over a SQLite file",
        description="Serve the Background Tasks REST API on the waitress server (the "
        "'taskengine[server]' extra). Unfinished tasks in the file resume; on Ctrl-C or "
        "SIGTERM running tasks are checkpointed and resume on the next start. Without a token "
        "only loopback addresses are allowed.",
    )
    serve.add_argument("--db", required=True, help="the SQLite file")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    serve.add_argument(
        "--port", type=_port, default=8080, help="0-65535, default 8080; 0 = any free port"
    )
    serve.add_argument(
        "--token", help="require 'Authorization: Bearer TOKEN' (default: $TASKENGINE_TOKEN)"
    )
    serve.add_argument("--workers", type=_positive, default=2, help="task workers (default 2)")
    serve.add_argument(
        "--threads",
        type=_positive,
        default=DEFAULT_THREADS,
        help=f"requests handled at once (default {DEFAULT_THREADS})",
    )
    serve.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        help="close a connection idle, or still sending its request, after this many seconds "
        f"(default {DEFAULT_TIMEOUT})",
    )
    serve.add_argument("--quiet", action="store_true", help="do not log requests")
    serve.set_defaults(handler=_cmd_serve)
    _add_debug(parser)
    return parser


_DEBUG_HELP = "on an internal error, show the traceback (exit code 5 either way)"


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` before or after the command name (``taskengine --debug run``, ``run
    --debug``); a subcommand's copy defaults to "not given" so it never resets the other."""
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    child.add_argument(
                        "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
                    )
                    pending.append(child)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
        _write_safely(
            err, f"taskengine: internal error: {type(exc).__name__}: {message}{hint}\n"
        )
        return EXIT_ERROR
    finally:
        with contextlib.suppress(Exception):
            out.flush()


def _write_safely(stream: TextIO, text: str) -> None:
    """Write to ``stream`` ignoring a closed pipe or a second Ctrl-C: the exit code says it."""
    with contextlib.suppress(Exception, KeyboardInterrupt):
        stream.write(text)
        stream.flush()


def _entry() -> None:  # pragma: no cover - the console script path goes through main()
    raise SystemExit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()

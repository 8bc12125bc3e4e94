"""What every ``taskengine`` command shares: exit codes, errors, inputs, the engine, text.

Everything here imports only the standard library and :mod:`taskengine.errors` at module
import time; the engine and the SQLite adapter are imported inside :func:`open_engine`, so
``import taskengine.cli`` stays cheap and ``main()`` owns a Ctrl-C that lands while the
engine loads (see docs/cli.md). Following a running task (progress, Ctrl-C, its exit
code) is :mod:`taskengine.cli._progress`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote

from taskengine.errors import TaskEngineError

if TYPE_CHECKING:
    from taskengine.engine import TaskEngine
    from taskengine.storage.base import Storage
    from taskengine.storage.sqlite import SQLiteStorage
    from taskengine.taskstore import TaskStore
    from taskengine.tasktype import TaskType

__all__ = [
    "DB_HELP",
    "EXIT_BAD_INPUT",
    "EXIT_CANCELLED",
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_ITEM_FAILURES",
    "EXIT_OK",
    "CommandError",
    "check_db_path",
    "count",
    "count_unfinished",
    "display_db",
    "exit_codes_epilog",
    "format_duration",
    "format_table",
    "is_postgres",
    "open_engine",
    "open_input",
    "open_storage",
    "port",
    "positive",
    "read_input",
    "seconds",
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
    EXIT_INTERRUPTED: "interrupted by Ctrl-C before a task was created (after: it is cancelled, "
    "4), or 'run --resume' stopped before its end",
}
"""What each exit code of ``taskengine`` means."""


def exit_codes_epilog() -> str:
    """The ``exit codes:`` block that ends ``taskengine --help`` and ``run --help``."""
    codes = EXIT_CODES.items()
    return "exit codes:\n" + "\n".join(f"  {code:<3}  {text}" for code, text in codes)


class CommandError(TaskEngineError):
    """A command-line failure with the exit code it should produce."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


# -- inputs ---------------------------------------------------------------------------------

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


def open_input(path: str) -> BinaryIO:
    """The file a command reads (``-`` = stdin, which the caller must not close).

    Raises:
        CommandError: the file is missing, a directory, or unreadable (exit 2).
    """
    if path == "-":
        return sys.stdin.buffer
    with _input_errors(path):
        return open(path, "rb")
    raise AssertionError("unreachable")  # pragma: no cover - for type checkers


def read_input(path: str) -> bytes:
    """The whole content of the file a command reads (``-`` = stdin).

    Raises:
        CommandError: the file is missing, a directory, or unreadable (exit 2).
    """
    if path == "-":
        return sys.stdin.buffer.read()
    with _input_errors(path), open(path, "rb") as handle:
        return handle.read()
    raise AssertionError("unreachable")  # pragma: no cover - for type checkers


@contextlib.contextmanager
def _input_errors(path: str) -> Iterator[None]:
    """Turn the ``OSError`` of opening or reading ``path`` into a one-line bad input."""
    try:
        yield
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror or exc}") from None


def positive(text: str) -> int:
    """An argument that is a whole number of at least 1 (``--items``, ``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds(low: float, high: float) -> Callable[[str], float]:
    """An argument type: a number of seconds from ``low`` to ``high`` (``--lease``, ``--poll``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(
                f"must be from {low:g} to {high:g} seconds, got {text}"
            )
        return value

    return parse


def port(text: str) -> int:
    """An argument that is a TCP port, 0-65535 (``--port``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


# -- opening the database -------------------------------------------------------------------


DB_HELP = "the SQLite file, or a postgresql:// DSN (PostgreSQL: pip install 'taskengine[postgres]')"
"""The help of every ``--db`` option."""

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_URL_PASSWORD = re.compile(r"^([a-z]+://[^:@/?#]*):[^@/?#]*@", re.IGNORECASE)
_PARAM_PASSWORD = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


def is_postgres(db: str) -> bool:
    """Whether ``--db`` names a PostgreSQL database (a ``postgresql://`` DSN), not a file."""
    return db.lower().startswith(_POSTGRES_SCHEMES)


def display_db(db: str) -> str:
    """``--db`` as messages print it: a DSN's password (in the URL or a parameter) masked."""
    if not is_postgres(db):
        return db
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", db))


_QUERY_PASSWORD = re.compile(r"([?&])password=([^&#]*)&?", re.IGNORECASE)


def split_password(db: str) -> tuple[str, str | None]:
    """``--db`` without its password, and the password (decoded) or ``None``.

    For a child process: the DSN goes on its command line (which ``ps`` shows to every
    user) and the password into its environment as ``PGPASSWORD``, which libpq reads when
    the DSN has none. A SQLite file is returned as it is.
    """
    if not is_postgres(db):
        return db, None
    password: str | None = None
    url = _URL_PASSWORD.match(db)
    if url is not None:
        password = unquote(db[len(url.group(1)) + 1 : url.end() - 1])
        db = f"{url.group(1)}@{db[url.end() :]}"
    query = _QUERY_PASSWORD.search(db)
    if query is not None:
        password = unquote(query.group(2))
        db = (db[: query.start()] + query.group(1) + db[query.end() :]).rstrip("?&")
    return db, password


@contextlib.contextmanager
def open_storage(
    db: str, *, create: bool = False, read_only: bool = False, timeout: float | None = None
) -> Iterator[tuple[Storage, TaskStore]]:
    """The storage and task store of ``--db``, sharing one database; closed on exit.

    ``db`` is a SQLite file, or a ``postgresql://`` (``postgres://``) DSN, whose tables
    are created on first use. The one place that chooses the adapter.

    Args:
        create: create a missing SQLite file (else it is an error). A PostgreSQL
            database always exists: an empty one simply holds no collections or tasks.
        read_only: open a SQLite file with ``mode=ro`` (see :func:`open_engine`); a
            PostgreSQL database is just read.
        timeout: the SQLite busy timeout in seconds (``None``: the adapter's default).

    Raises:
        CommandError: the file does not exist and ``create`` is false, it is not a SQLite
            file (exit 2); psycopg is not installed, or the server cannot be reached (exit 5).
    """
    if is_postgres(db):
        with _open_postgres(db) as opened:
            yield opened
        return

    from taskengine.storage.sqlite import SQLiteStorage
    from taskengine.taskstore import SQLiteTaskStore

    if read_only:
        with _open_read_only(db) as storage:
            yield storage, SQLiteTaskStore(storage)
        return
    if not create and not os.path.exists(db):
        raise _no_database(db)
    check_db_path(db)
    storage = SQLiteStorage(db) if timeout is None else SQLiteStorage(db, timeout=timeout)
    try:
        store = SQLiteTaskStore(storage)
        try:
            yield storage, store
        finally:
            store.close()
    finally:
        storage.close()


@contextlib.contextmanager
def _open_postgres(db: str) -> Iterator[tuple[Storage, TaskStore]]:
    try:
        from taskengine import PostgresStorage, PostgresTaskStore
        from taskengine.storage._pgerrors import PostgresError
    except ModuleNotFoundError:
        raise CommandError(
            f"--db {display_db(db)} is a PostgreSQL database, which needs psycopg: "
            "pip install 'taskengine[postgres]'",
            EXIT_ERROR,
        ) from None
    try:
        storage = PostgresStorage(db)
    except PostgresError as exc:
        if exc.action not in ("connect", "parse the DSN"):
            raise
        # libpq's message spans lines (a hint after a tab): one line is the CLI's rule.
        detail = " ".join(exc.detail.split())
        raise CommandError(
            f"cannot connect to PostgreSQL at {display_db(db)}: {detail}", EXIT_ERROR
        ) from None
    try:
        store = PostgresTaskStore(storage)
        try:
            yield storage, store
        finally:
            store.close()
    finally:
        storage.close()


@contextlib.contextmanager
def open_engine(
    db: str,
    *,
    create: bool = False,
    start: bool = False,
    workers: int = 1,
    batch_size: int | None = None,
    read_only: bool = False,
    task_types: Iterable[TaskType] | None = None,
    adopt: bool = True,
    lease: float | None = None,
    poll: float | None = None,
) -> Iterator[tuple[TaskEngine, Storage]]:
    """An engine over ``--db`` (items and tasks in the one SQLite file or PostgreSQL database).

    Args:
        create: create the SQLite file when it does not exist (else a missing file is an
            error).
        start: start the engine's workers (with ``adopt``, which resumes unfinished tasks).
        read_only: open a SQLite file with SQLite's ``mode=ro`` for commands that only
            read (``tasks list|get``): nothing in the file changes, a read-only file
            works, and a process writing the file never makes the command wait.
        task_types: the engine's task types (``None``: the built-in four).
        adopt: the engine runs tasks it did not create (unfinished ones no live engine
            owns, and those other processes create); ``False`` for ``run``, which runs
            only its own task.
        lease: seconds an engine's claim on a task lasts unrenewed (``None``: the
            engine's default).
        poll: seconds between the engine's looks for work (``None``: its default).
        batch_size: rows per batch of either kind (scan-path and set-based batches;
            ``None``: the engine's defaults).

    Raises:
        CommandError: see :func:`open_storage`.
    """
    from taskengine.engine import TaskEngine

    if read_only:
        with open_storage(db, read_only=True) as (storage, store):
            yield TaskEngine(storage, task_store=store), storage
        return

    tuning: dict[str, Any] = {}
    if lease is not None:
        tuning["lease"] = timedelta(seconds=lease)
    if poll is not None:
        tuning["poll_interval"] = poll
    if batch_size is not None:
        tuning["batch_size"] = tuning["set_batch_size"] = batch_size
    with open_storage(db, create=create) as (storage, store):
        engine = TaskEngine(
            storage,
            task_store=store,
            workers=workers,
            task_types=task_types,
            adopt=adopt,
            **tuning,
        )
        try:
            if start:
                engine.start()
            yield engine, storage
        finally:
            engine.stop()


@contextlib.contextmanager
def _open_read_only(db: str) -> Iterator[SQLiteStorage]:
    from taskengine.storage._database import Database
    from taskengine.storage.sqlite import SQLiteStorage

    if not os.path.exists(db):
        raise _no_database(db)
    check_db_path(db)
    database = Database(db, read_only=True)
    try:
        yield SQLiteStorage(database)
    finally:
        database.close()


def _no_database(db: str) -> CommandError:
    return CommandError(
        f"no database at {db!r} (create one with 'taskengine import' or "
        f"'taskengine demo --db {db}')"
    )


def count_unfinished(engine: TaskEngine) -> int:
    """How many tasks in the engine's task store are NEW or RUNNING."""
    return len(engine.task_store.unfinished())


# -- text -----------------------------------------------------------------------------------


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

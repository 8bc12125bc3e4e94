"""``Database``: the one owner of a SQLite connection, shared by every SQLite-backed part.

Item storage (``SQLiteStorage``) and the task store (``SQLiteTaskStore``) may share one
``Database``, so that a batch's item writes and the task's checkpoint commit in one
transaction. Everything SQLite-specific about connections lives here:

* one connection (``check_same_thread=False``) guarded by an ``RLock``; every use holds
  the lock, so the connection is safe from several threads;
* WAL journal (not for ``":memory:"``), ``busy_timeout``, ``synchronous=NORMAL``;
* explicit transactions in one place (:meth:`Database.transaction`): ``BEGIN IMMEDIATE``
  outermost, a ``SAVEPOINT`` per nested level, so a failing inner block undoes only its
  own writes when its exception is caught, and everything when it is not;
* every ``sqlite3.Error`` leaving it becomes ``StorageError`` (raised ``from`` it);
* the file's format is versioned twice: ``PRAGMA user_version`` is the version of the
  file layout as a whole (:data:`FORMAT_VERSION`; a file written by a newer taskengine is
  refused, never modified), and each component's tables are versioned by a row in a
  ``taskengine_schema`` table (:meth:`Database.ensure_schema`), since ``user_version`` is
  one number per file and several components share a file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence

from taskengine.errors import StorageError

__all__ = ["FORMAT_VERSION", "Database"]

FORMAT_VERSION = 1
"""The ``PRAGMA user_version`` of a taskengine database file."""

_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS taskengine_schema ("
    "component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
)


class Database:
    """One SQLite connection with a lock, explicit transactions and typed errors.

    Args:
        path: a file path, or ``":memory:"`` for a private in-memory database.
        timeout: seconds to wait for another process's write lock (``busy_timeout``).

    Raises:
        StorageError: the file cannot be opened as a SQLite database.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path: str = os.fspath(path)
        self._lock = threading.RLock()
        self._depth = 0
        self._closed = False
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if self.path != ":memory:" and not self.path.startswith("file::memory:"):
                self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._init_format()
        except sqlite3.Error as exc:
            self._conn.close()
            self._closed = True
            raise StorageError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        except BaseException:
            self._conn.close()
            self._closed = True
            raise

    def _init_format(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if found > FORMAT_VERSION:
                raise StorageError(
                    f"SQLite database {self.path!r} has format version {found} "
                    f"(PRAGMA user_version), newer than this taskengine's {FORMAT_VERSION}; "
                    "it was left unchanged"
                )
            conn.execute(_SCHEMA_TABLE)
            if found < FORMAT_VERSION:
                conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Database {self.path!r} {state}>"

    def __enter__(self) -> Database:
        """Use as a context manager: the database is closed on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the database."""
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; reentrant in the same thread.

        The outermost level runs ``BEGIN IMMEDIATE`` and commits on a clean exit; nested
        levels are savepoints. An exception rolls back the level it leaves (and, if it
        propagates, every level above). The lock is held throughout.

        Raises:
            StorageError: the database is closed, or SQLite failed (from the original).
        """
        with self._lock:
            self._ensure_open()
            depth = self._depth
            savepoint = f"taskengine_{depth}"
            try:
                self._conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
            except sqlite3.Error as exc:
                raise self._error("begin a transaction", exc) from exc
            self._depth = depth + 1
            try:
                yield self._conn
            except BaseException as exc:
                self._depth = depth
                self._rollback(depth, savepoint)
                if isinstance(exc, sqlite3.Error):
                    raise self._error("write", exc) from exc
                raise
            self._depth = depth
            try:
                self._conn.execute("COMMIT" if depth == 0 else f"RELEASE {savepoint}")
            except sqlite3.Error as exc:
                self._rollback(depth, savepoint)
                raise self._error("commit", exc) from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads, with the lock held and no transaction opened.

        Raises:
            StorageError: the database is closed, or SQLite failed (from the original).
        """
        with self._lock:
            self._ensure_open()
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc

    def ensure_schema(self, component: str, version: int, statements: Sequence[str]) -> int:
        """Run a component's ``CREATE ... IF NOT EXISTS`` statements once per version.

        Records ``version`` for ``component`` in ``taskengine_schema`` and returns the
        version that was there before (0 for a new file), so the caller can migrate.

        Raises:
            StorageError: the file holds a newer version than this code knows.
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT version FROM taskengine_schema WHERE component = ?", (component,)
            ).fetchone()
            found = 0 if row is None else int(row[0])
            if found > version:
                raise StorageError(
                    f"{self.path!r} holds {component} schema version {found}, "
                    f"newer than this taskengine's {version}"
                )
            if found < version:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO taskengine_schema (component, version) VALUES (?, ?)",
                    (component, version),
                )
        return found

    def close(self) -> None:
        """Close the connection; later use raises ``StorageError``. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _ensure_open(self) -> None:
        if self._closed:
            raise StorageError(f"SQLite database {self.path!r} is closed")

    def _rollback(self, depth: int, savepoint: str) -> None:
        try:
            if depth == 0:
                self._conn.execute("ROLLBACK")
            else:
                self._conn.execute(f"ROLLBACK TO {savepoint}")
                self._conn.execute(f"RELEASE {savepoint}")
        except sqlite3.Error:
            # SQLite may already have rolled back on its own (e.g. SQLITE_FULL); the
            # original error is the one worth reporting.
            pass

    def _error(self, action: str, exc: sqlite3.Error) -> StorageError:
        return StorageError(f"SQLite could not {action} on {self.path!r}: {exc}")

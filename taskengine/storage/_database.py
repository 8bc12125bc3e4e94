"""``Database``: the one owner of a SQLite connection, shared by every SQLite-backed part.

Item storage (``SQLiteStorage``) and the task store (``SQLiteTaskStore``) may share one
``Database``, so that a batch's item writes and the task's checkpoint commit in one
transaction. Everything SQLite-specific about connections lives here:

* one connection (``check_same_thread=False``) guarded by an ``RLock``; every use holds
  the lock, so the connection is safe from several threads;
* WAL journal (not for ``":memory:"``), ``busy_timeout``, ``synchronous=NORMAL``;
  a writer that waits longer than ``busy_timeout`` for another process's write lock gets
  a ``StorageError`` that says so ("database is busy ... (waited 5 s)");
* ``read_only=True`` opens the file with SQLite's ``mode=ro``: nothing is written, not
  even the journal mode or the schema records, and no lock is taken that could make it
  wait for a writer (WAL readers read the last commit while a writer works);
* opening never takes the write lock when the file is already in WAL mode and at the
  current format and schema versions, so opening a file that another process is
  writing does not wait for it;
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
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from types import ModuleType

from taskengine.errors import StorageError

__all__ = ["FORMAT_VERSION", "Database"]

FORMAT_VERSION = 1
"""The ``PRAGMA user_version`` of a taskengine database file."""

# Primary result codes (``sqlite3.SQLITE_BUSY`` exists from Python 3.11 only, untyped).
_SQLITE_BUSY = 5
_fcntl: ModuleType | None
try:
    import fcntl as _fcntl_module
except ImportError:  # pragma: no cover - not POSIX: no fair turns
    _fcntl = None
else:
    _fcntl = _fcntl_module
_WRITE_POLL = 0.0002  # seconds between tries for another connection's write lock
_FAIR_AFTER = 0.01  # how long a waiting connection waits before busy writers stand back
_STAND_BACK = 0.05  # the longest a writer lets a waiting connection go first
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14

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

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 30.0, read_only: bool = False
    ) -> None:
        self.path: str = os.fspath(path)
        self.timeout = timeout
        self.read_only = read_only
        self._lock = threading.RLock()
        self._depth = 0
        self._closed = False
        self._turns: _Turns | None = None
        try:
            if read_only:
                self._conn = _connect_read_only(self.path, timeout)
            else:
                self._conn = sqlite3.connect(
                    self.path, timeout=timeout, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if not read_only:
                in_memory = self.path == ":memory:" or self.path.startswith("file::memory:")
                # Setting the journal mode needs the write lock even when it changes
                # nothing, so it is only set when the file is not in WAL mode yet.
                mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
                if not in_memory and str(mode).lower() != "wal":
                    self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
                self._conn.execute("PRAGMA synchronous = NORMAL")
                if not in_memory:
                    self._turns = _Turns.open(self.path)
            self._init_format()
        except sqlite3.Error as exc:
            self._conn.close()
            self._closed = True
            raise self._error("open the database", exc) from exc
        except BaseException:
            self._conn.close()
            self._closed = True
            raise

    def _init_format(self) -> None:
        conn = self._conn
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        self._check_format(found)
        if self.read_only or (found == FORMAT_VERSION and self._has_schema_table()):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
            self._check_format(found)
            conn.execute(_SCHEMA_TABLE)
            if found < FORMAT_VERSION:
                conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _check_format(self, found: int) -> None:
        if found > FORMAT_VERSION:
            raise StorageError(
                f"SQLite database {self.path!r} has format version {found} "
                f"(PRAGMA user_version), newer than this taskengine's {FORMAT_VERSION}; "
                "it was left unchanged"
            )

    def _has_schema_table(self) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'taskengine_schema'"
        ).fetchone()
        return row is not None

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
            StorageError: the database is closed or read-only, another process held the
                write lock for longer than ``timeout`` ("database is busy"), or SQLite
                failed (from the original).
        """
        with self._lock:
            self._ensure_open()
            if self.read_only:
                raise StorageError(f"SQLite database {self.path!r} was opened read-only")
            depth = self._depth
            savepoint = f"taskengine_{depth}"
            try:
                if depth == 0:
                    self._begin()
                else:
                    self._conn.execute(f"SAVEPOINT {savepoint}")
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

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``, waiting for another connection's write lock by polling
        every :data:`_WRITE_POLL` seconds (up to ``timeout``).

        SQLite's own busy handler sleeps ever longer between tries (up to 100 ms), so a
        waiter rarely hits the short gap between two transactions of a busy writer (an
        engine commits batch after batch): a cancel from another process could wait
        seconds. So a waiter polls often, and says that it waits (:class:`_Turns`): a
        writer about to begin lets a waiting connection go first.
        """
        conn = self._conn
        turns = self._turns
        queued = False
        # SQLite's busy handler is off while beginning (it would sleep, not poll).
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            if turns is not None:
                turns.wait_turn()
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or self.timeout <= 0:
                    raise
            deadline = time.monotonic() + self.timeout
            queued = turns is not None and turns.queue()
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc) or time.monotonic() >= deadline:
                        raise
                time.sleep(_WRITE_POLL)
        finally:
            if queued and turns is not None:
                turns.unqueue()
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

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
        When that version is already recorded, nothing is written and no write lock is
        taken; a read-only database is only checked (the caller must cope with a
        component that was never created: the returned 0).

        Raises:
            StorageError: the file holds a newer version than this code knows.
        """
        found = self.schema_version(component)
        self._check_schema(component, found, version)
        if found == version or self.read_only:
            return found
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT version FROM taskengine_schema WHERE component = ?", (component,)
            ).fetchone()
            found = 0 if row is None else int(row[0])
            self._check_schema(component, found, version)
            if found < version:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO taskengine_schema (component, version) VALUES (?, ?)",
                    (component, version),
                )
        return found

    def schema_version(self, component: str) -> int:
        """The schema version recorded for ``component`` (0: none), read without a lock."""
        with self.read() as conn:
            if not self._has_schema_table():
                return 0
            row = conn.execute(
                "SELECT version FROM taskengine_schema WHERE component = ?", (component,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def _check_schema(self, component: str, found: int, version: int) -> None:
        if found > version:
            raise StorageError(
                f"{self.path!r} holds {component} schema version {found}, "
                f"newer than this taskengine's {version}"
            )

    def close(self) -> None:
        """Close the connection; later use raises ``StorageError``. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                if self._turns is not None:
                    self._turns.close()

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
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_BUSY:
            return StorageError(
                f"database is busy: another process is writing {self.path!r} "
                f"(waited {self.timeout:g} s)"
            )
        if code == _SQLITE_READONLY:
            return StorageError(f"SQLite could not {action} on {self.path!r}: file is read-only")
        return StorageError(f"SQLite could not {action} on {self.path!r}: {exc}")


class _Turns:
    """Fair turns at a SQLite file's write lock between connections (POSIX only).

    A connection that found the write lock taken holds an exclusive ``flock`` on a side
    file (``<database>-writers``) while it waits for it, and writes there when it began
    waiting; every connection about to begin a write transaction first checks that lock
    and, once someone has waited :data:`_FAIR_AFTER` seconds, stands back (up to
    :data:`_STAND_BACK` seconds) so that the waiter gets the lock between two of its
    transactions. (Standing back at once, on every transaction, would hand the lock over
    after every batch of busy writers: fair, but a third slower with four processes.)
    Only non-blocking ``flock`` calls are made, so a waiter that is stopped
    (SIGSTOP, a debugger) delays other writers by at most that much per transaction and
    never blocks them.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, path: str) -> _Turns | None:
        """The side file of the database at ``path``; ``None`` where it cannot be used."""
        if _fcntl is None:
            return None
        try:
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(f"{path}-writers", flags, 0o666)
        except OSError:
            return None  # a read-only folder, say: unfair turns, as SQLite's own
        return cls(fd)

    def wait_turn(self) -> None:
        """Return once no connection waits for the write lock (or after :data:`_STAND_BACK`)."""
        fcntl = _fcntl
        assert fcntl is not None
        deadline = 0.0
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.monotonic()
                if not deadline:
                    if now - self._waiting_since() < _FAIR_AFTER:
                        return
                    deadline = now + _STAND_BACK
                elif now >= deadline:
                    return
                time.sleep(_WRITE_POLL / 2)
                continue
            except OSError:
                return
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            return

    def queue(self) -> bool:
        """Say that this connection waits for the write lock; whether it could."""
        fcntl = _fcntl
        assert fcntl is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another waiter said so already
        try:
            os.pwrite(self._fd, struct.pack("<d", time.monotonic()), 0)
        except OSError:
            pass
        return True

    def _waiting_since(self) -> float:
        """When the queued waiter began waiting (``time.monotonic()``, system-wide)."""
        try:
            data = os.pread(self._fd, 8, 0)
        except OSError:
            return 0.0
        return struct.unpack("<d", data)[0] if len(data) == 8 else 0.0

    def unqueue(self) -> None:
        """This connection stopped waiting."""
        fcntl = _fcntl
        assert fcntl is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass

    def close(self) -> None:
        """Close the side file."""
        try:
            os.close(self._fd)
        except OSError:
            pass


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _connect_read_only(path: str, timeout: float) -> sqlite3.Connection:
    """A ``mode=ro`` connection: SQLite refuses every write through it.

    A WAL file needs its ``-shm`` index, which a reader creates when it is missing; in a
    directory the reader cannot write, that fails. With no ``-wal`` file there is no
    commit outside the main file to read, so the file is then opened as ``immutable``
    (no index, no locks).
    """
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(
        uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code not in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or os.path.exists(path + "-wal"):
            raise
        conn = sqlite3.connect(
            uri + "&immutable=1",
            uri=True,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
        )
    return conn

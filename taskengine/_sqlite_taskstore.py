"""``SQLiteTaskStore``: tasks in a SQLite file, in the task store's own versioned rows.

The rows are written and read by :mod:`taskengine._taskrow` (the format, column by
column, is documented there and in docs/durability.md). The version is the ``taskstore``
component's entry in the file's ``taskengine_schema`` table
(:meth:`~taskengine.storage._database.Database.ensure_schema`):

* 0 — no task table yet: a writer creates it; a read-only view reads as empty;
* 1 — the public task JSON in one ``body`` column (releases before the row format): a
  writer upgrades the file in place, in one transaction (a crash during the upgrade
  leaves the file as it was); a read-only view reads it as it is, without upgrading;
* 2 — the current rows;
* newer — refused with ``StorageError``, and the file is left untouched.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskengine import _taskrow as rows
from taskengine._values import INT64_MAX, encodable
from taskengine.storage._database import Database
from taskengine.task import Task, TaskStatus, parse_timestamp

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = ["SQLiteTaskStore"]

_COMPONENT = "taskstore"
_VERSION = 2
_TABLE = "taskengine_tasks"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_TABLE} ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE,"
    " type TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " started_at TEXT,"
    " finished_at TEXT,"
    " expires_at TEXT,"
    " estimated_item_count INTEGER NOT NULL,"
    " items_succeeded INTEGER NOT NULL,"
    " items_failed INTEGER NOT NULL,"
    " cancel_requested INTEGER NOT NULL,"
    " checkpoint TEXT,"
    " options_key TEXT NOT NULL,"
    " options TEXT NOT NULL,"
    " failures TEXT NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_status ON {_TABLE} (status)",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_expiry ON {_TABLE} (expires_at)"
    " WHERE expires_at IS NOT NULL",
)
_MARKS = ", ".join("?" * len(rows.COLUMNS.split(",")))
_INSERT = f"INSERT INTO {_TABLE} ({rows.COLUMNS}) VALUES ({_MARKS})"
_UPDATE = (
    f"UPDATE {_TABLE} SET "
    + ", ".join(f"{column.strip()} = ?" for column in rows.COLUMNS.split(",")[1:])
    + " WHERE id = ?"
)
_SQLITE_INT_MAX = INT64_MAX


class SQLiteTaskStore:
    """Tasks in a SQLite database (durable across restarts and crashes).

    Args:
        source: a path (the store opens and owns its own :class:`Database`), a
            :class:`Database`, or anything with a ``.database`` attribute (a
            ``SQLiteStorage``); the last two are shared and not closed by :meth:`close`.
            Sharing the item storage's database makes each batch and its checkpoint
            commit in one transaction.

    Opening a file written by an earlier release upgrades its task rows in place, in
    one transaction (docs/durability.md). On a read-only :class:`Database`
    (``Database(path, read_only=True)``) the store is a view: nothing is written (an
    earlier format is read as it is), :meth:`delete` only hides the tasks from this
    store (the rows stay for a writer to sweep), and a file without a task table reads
    as empty.

    Raises:
        StorageError: the database cannot be opened, holds a newer schema, or holds a
            task the upgrade cannot read.
    """

    def __init__(self, source: str | os.PathLike[str] | Database | Any) -> None:
        if isinstance(source, Database):
            self.database, self._owned = source, False
        elif isinstance(getattr(source, "database", None), Database):
            self.database, self._owned = getattr(source, "database"), False  # noqa: B009
        elif isinstance(source, (str, os.PathLike)):
            self.database, self._owned = Database(source), True
        else:
            raise TypeError(
                "SQLiteTaskStore needs a path, a Database or a SQLiteStorage, "
                f"got {type(source).__name__}"
            )
        self._hidden: set[str] = set()
        # Per RUNNING task: its options and failures objects and their encoded columns,
        # so the save after every batch encodes only what changed (tasks are immutable).
        self._encoded: dict[str, tuple[object, str, object, str]] = {}
        try:
            found = self._open_schema()
        except BaseException:
            if self._owned:
                self.database.close()
            raise
        self._absent = found == 0
        self._columns: str = rows.COLUMNS_V1 if found == 1 else rows.COLUMNS
        self._decode: Callable[[tuple[Any, ...]], Task] = (
            rows.decode_v1 if found == 1 else rows.decode
        )

    def _open_schema(self) -> int:
        """Create, upgrade or check the task table; return the format it is read in."""
        database = self.database
        if database.read_only or database.schema_version(_COMPONENT) != 1:
            found = database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)
            return found if database.read_only else _VERSION
        with database.transaction() as conn:
            # Another process may have upgraded the file since the version was read.
            if database.schema_version(_COMPONENT) == 1:
                _upgrade_v1(database, conn)
        return _VERSION

    def __repr__(self) -> str:
        return f"<SQLiteTaskStore {self.database.path!r}>"

    def _row(self, task: Task) -> rows.Row:
        if task.status is not TaskStatus.RUNNING:
            self._encoded.pop(task.id, None)
            return rows.encode(task)
        cached = self._encoded.get(task.id)
        options = failures = None
        if cached is not None:
            if cached[0] is task.options:
                options = cached[1]
            if cached[2] is task.failures:
                failures = cached[3]
        row = rows.encode(task, options, failures)
        self._encoded[task.id] = (task.options, row[13], task.failures, row[14])
        return row

    def insert(self, task: Task) -> None:
        """Store a new task (see :meth:`TaskStore.insert`)."""
        row = self._row(task)
        with self.database.transaction() as conn:
            if conn.execute(f"SELECT 1 FROM {_TABLE} WHERE id = ?", (task.id,)).fetchone():
                raise ValueError(f"task {task.id!r} already stored")
            conn.execute(_INSERT, row)

    def save(self, task: Task) -> None:
        """Replace a stored snapshot (see :meth:`TaskStore.save`)."""
        row = self._row(task)
        with self.database.transaction() as conn:
            if conn.execute(_UPDATE, (*row[1:], row[0])).rowcount == 0:
                conn.execute(_INSERT, row)

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or ``None``."""
        if self._absent or task_id in self._hidden:
            return None
        if not _encodable(task_id):
            return None  # no stored id has a lone surrogate (SQLite could not bind it)
        with self.database.read() as conn:
            row = conn.execute(
                f"SELECT {self._columns} FROM {_TABLE} WHERE id = ?", (task_id,)
            ).fetchone()
        return None if row is None else self._decode(row)

    def page(self, limit: int, offset: int) -> tuple[list[Task], int]:
        """A page, newest first, and the total (see :meth:`TaskStore.page`)."""
        if self._absent:
            return [], 0
        # SQLite integers stop at 2**63 - 1; past that no row is left anyway, as in memory.
        offset = min(offset, _SQLITE_INT_MAX)
        limit = min(limit, _SQLITE_INT_MAX)
        if self._hidden:
            return self._page_without_hidden(limit, offset)
        with self.database.read() as conn:
            total = int(conn.execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()[0])
            found = conn.execute(
                f"SELECT {self._columns} FROM {_TABLE} ORDER BY seq DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [self._decode(row) for row in found], total

    def _page_without_hidden(self, limit: int, offset: int) -> tuple[list[Task], int]:
        hidden = self._hidden
        kept: list[tuple[Any, ...]] = []
        with self.database.read() as conn:
            total = int(conn.execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()[0])
            skip = offset
            cursor = conn.execute(f"SELECT id, {self._columns} FROM {_TABLE} ORDER BY seq DESC")
            for row in cursor:
                if row[0] in hidden:
                    total -= 1
                elif skip:
                    skip -= 1
                elif len(kept) < limit:
                    kept.append(row[1:])
        return [self._decode(row) for row in kept], total

    def delete(self, task_ids: Sequence[str]) -> int:
        """Remove tasks (see :meth:`TaskStore.delete`); on a read-only view, hide them."""
        if self.database.read_only:
            fresh = [task_id for task_id in task_ids if task_id not in self._hidden]
            self._hidden.update(fresh)
            return len(fresh)
        removed = 0
        with self.database.transaction() as conn:
            for start in range(0, len(task_ids), 500):
                chunk = [i for i in task_ids[start : start + 500] if _encodable(i)]
                if not chunk:
                    continue
                marks = ",".join("?" * len(chunk))
                cursor = conn.execute(f"DELETE FROM {_TABLE} WHERE id IN ({marks})", chunk)
                removed += max(0, cursor.rowcount)
        for task_id in task_ids:
            self._encoded.pop(task_id, None)
        return removed

    def unfinished(self) -> list[Task]:
        """Every NEW or RUNNING task, oldest first."""
        if self._absent:
            return []
        with self.database.read() as conn:
            found = conn.execute(
                f"SELECT {self._columns} FROM {_TABLE}"
                " WHERE status IN ('NEW', 'RUNNING') ORDER BY seq"
            ).fetchall()
        return [self._decode(row) for row in found]

    def expiring(self) -> list[tuple[datetime, str]]:
        """``(expires_at, id)`` of every finished task."""
        if self._absent:
            return []
        with self.database.read() as conn:
            found = conn.execute(
                f"SELECT expires_at, id FROM {_TABLE} WHERE expires_at IS NOT NULL"
            ).fetchall()
        return [(parse_timestamp(expires), task_id) for expires, task_id in found]

    def __len__(self) -> int:
        """How many tasks are stored."""
        if self._absent:
            return 0
        with self.database.read() as conn:
            total = int(conn.execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()[0])
        return total - len(self._hidden)

    def shares_transactions_with(self, storage: Storage) -> bool:
        """Whether ``storage`` writes through this store's :class:`Database`."""
        return getattr(storage, "database", None) is self.database

    def transaction(self) -> AbstractContextManager[Any]:
        """A write transaction on the store's database (reentrant)."""
        return self.database.transaction()

    def close(self) -> None:
        """Close the database if the store opened it itself. Idempotent."""
        if self._owned:
            self.database.close()


def _upgrade_v1(database: Database, conn: sqlite3.Connection) -> None:
    """Rewrite version-1 rows (the task JSON) as version-2 rows, inside the caller's
    transaction; ``seq`` (the creation order) and the AUTOINCREMENT high mark are kept.
    """
    old = f"{_TABLE}_v1"
    conn.execute(f"DROP INDEX IF EXISTS {_TABLE}_status")
    conn.execute(f"DROP INDEX IF EXISTS {_TABLE}_expiry")
    conn.execute(f"ALTER TABLE {_TABLE} RENAME TO {old}")
    database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)
    insert = f"INSERT INTO {_TABLE} (seq, {rows.COLUMNS}) VALUES (?, {_MARKS})"
    cursor = conn.execute(f"SELECT seq, {rows.COLUMNS_V1} FROM {old} ORDER BY seq")
    while batch := cursor.fetchmany(500):
        conn.executemany(insert, [(row[0], *rows.encode(rows.decode_v1(row[1:]))) for row in batch])
    mark = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (old,)).fetchone()
    if mark is not None:
        conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (_TABLE,))
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq)"
            f" SELECT ?, MAX(?, COALESCE((SELECT MAX(seq) FROM {_TABLE}), 0))",
            (_TABLE, mark[0]),
        )
    conn.execute(f"DROP TABLE {old}")


def _encodable(text: object) -> bool:
    return type(text) is not str or text.isascii() or encodable(text)

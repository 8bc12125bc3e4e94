"""``SQLiteTaskStore``: tasks in a SQLite file, in the task store's own versioned rows.

The rows are written and read by :mod:`taskengine._taskrow` (the format, column by
column, is documented there and in docs/durability.md); the tables, their versions and
the in-place upgrades from older files are :mod:`taskengine._sqlite_taskschema`. The
store's operations are one transaction each on its :class:`Database` (shared with
``SQLiteStorage`` when given one), so each is atomic across processes sharing the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskengine import _taskrow as rows
from taskengine._lease import (
    Lease,
    epoch_ms,
    fence_time,
)
from taskengine._sqlite_leases import CURRENT, FENCE, SQLiteLeases, bindable
from taskengine._sqlite_taskschema import MARKS, TABLE, open_schema
from taskengine._values import INT64_MAX
from taskengine.errors import LeaseLost
from taskengine.storage._database import Database
from taskengine.task import Task, TaskStatus, format_timestamp

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = ["SQLiteTaskStore"]

_INSERT = f"INSERT INTO {TABLE} ({rows.COLUMNS}) VALUES ({MARKS})"
_UPDATE = (
    f"UPDATE {TABLE} SET "
    + ", ".join(f"{column.strip()} = ?" for column in rows.COLUMNS.split(",")[1:])
    + " WHERE id = ?"
)
_SQLITE_INT_MAX = INT64_MAX
_TOP = "parent IS NULL"
_FENCED_UPDATE = f"{_UPDATE} AND {CURRENT} AND lease_expires > ?"


class SQLiteTaskStore(SQLiteLeases):
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
            found = open_schema(self.database)
        except BaseException:
            if self._owned:
                self.database.close()
            raise
        self._absent = found == 0
        self._leases = found >= 3  # a read-only view of an older file: no task is leased
        self._has_leaders = found >= 4  # ... and no role is led
        self._slices = found >= 5  # ... and no task is sliced
        self._columns: str = (
            rows.COLUMNS_V1 if found == 1 else rows.COLUMNS if self._slices else rows.COLUMNS_V2
        )
        self._top = f" WHERE {_TOP}" if self._slices else ""
        self._decode: Callable[[tuple[Any, ...]], Task] = (
            rows.decode_v1 if found == 1 else rows.decode
        )

    @property
    def keeps_slices(self) -> bool:
        """Whether the store keeps a task's slice fields and hides slices from pages (a
        current file; a read-only view of an older one does not): docs/slices.md."""
        return self._slices

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
            if conn.execute(f"SELECT 1 FROM {TABLE} WHERE id = ?", (task.id,)).fetchone():
                raise ValueError(f"task {task.id!r} already stored")
            conn.execute(_INSERT, row)

    def save(self, task: Task, fence: Lease | None = None, *, now: datetime | None = None) -> None:
        """Replace a stored snapshot; with a fence, only while it is current at ``now``
        (see :meth:`TaskStore.save`). The lease columns are never written here.

        Raises:
            LeaseLost: ``fence`` is not current and unexpired; nothing was written.
        """
        if fence is not None:
            self._save_fenced(task, fence, fence_time(fence, task.id, now))
            return
        row = self._row(task)
        with self.database.transaction() as conn:
            if conn.execute(_UPDATE, (*row[1:], row[0])).rowcount == 0:
                conn.execute(_INSERT, row)

    def _save_fenced(self, task: Task, fence: Lease, now: datetime) -> None:
        row = self._row(task)
        args = (*row[1:], row[0], fence.owner, fence.token, epoch_ms(now))
        with self.database.transaction() as conn:
            written = conn.execute(_FENCED_UPDATE, args).rowcount
        if not written:
            raise LeaseLost(fence.task_id, fence.owner, fence.token)

    def update(
        self,
        task_id: str,
        change: Callable[[Task], Task | None],
        fence: Lease | None = None,
        *,
        now: datetime | None = None,
    ) -> Task | None:
        """Replace a snapshot with ``change(stored)`` in one write transaction (see
        :meth:`TaskStore.update`): ``BEGIN IMMEDIATE`` holds the file's write lock from
        the read to the write, so no other process's write comes between them.

        Raises:
            LeaseLost: ``fence`` is not current and unexpired at ``now``.
        """
        at = None if fence is None else epoch_ms(fence_time(fence, task_id, now))
        if self._absent or task_id in self._hidden or not bindable(task_id):
            if fence is not None:
                raise LeaseLost(fence.task_id, fence.owner, fence.token)
            return None
        with self.database.transaction() as conn:
            if fence is not None and (
                not self._leases
                or conn.execute(FENCE, (task_id, fence.owner, fence.token, at)).fetchone() is None
            ):
                raise LeaseLost(fence.task_id, fence.owner, fence.token)
            found = conn.execute(
                f"SELECT {self._columns} FROM {TABLE} WHERE id = ?", (task_id,)
            ).fetchone()
            if found is None:
                return None
            stored = self._decode(found)
            updated = change(stored)
            if updated is None:
                return stored
            if not isinstance(updated, Task) or updated.id != task_id:
                raise ValueError(f"an update of task {task_id!r} must return that task or None")
            row = self._row(updated)
            conn.execute(_UPDATE, (*row[1:], row[0]))
            return updated

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or ``None``."""
        if self._absent or task_id in self._hidden:
            return None
        if not bindable(task_id):
            return None  # no stored id has a lone surrogate (SQLite could not bind it)
        with self.database.read() as conn:
            row = conn.execute(
                f"SELECT {self._columns} FROM {TABLE} WHERE id = ?", (task_id,)
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
        top = self._top
        with self.database.read() as conn:
            total = int(conn.execute(f"SELECT COUNT(*) FROM {TABLE}{top}").fetchone()[0])
            found = conn.execute(
                f"SELECT {self._columns} FROM {TABLE}{top} ORDER BY seq DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [self._decode(row) for row in found], total

    def _page_without_hidden(self, limit: int, offset: int) -> tuple[list[Task], int]:
        hidden = self._hidden
        kept: list[tuple[Any, ...]] = []
        with self.database.read() as conn:
            top = self._top
            total = int(conn.execute(f"SELECT COUNT(*) FROM {TABLE}{top}").fetchone()[0])
            skip = offset
            cursor = conn.execute(f"SELECT id, {self._columns} FROM {TABLE}{top} ORDER BY seq DESC")
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
                chunk = [i for i in task_ids[start : start + 500] if bindable(i)]
                if not chunk:
                    continue
                marks = ",".join("?" * len(chunk))
                cursor = conn.execute(f"DELETE FROM {TABLE} WHERE id IN ({marks})", chunk)
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
                f"SELECT {self._columns} FROM {TABLE}"
                " WHERE status IN ('NEW', 'RUNNING') ORDER BY seq"
            ).fetchall()
        return [self._decode(row) for row in found]

    def slice_counts(self, task_ids: Sequence[str]) -> dict[str, int]:
        """The ``slices`` of each of these tasks that has more than one (what the sweep
        removes with them, docs/slices.md): one indexed read per 500 ids."""
        if self._absent or not self._slices:
            return {}
        counts: dict[str, int] = {}
        with self.database.read() as conn:
            for start in range(0, len(task_ids), 500):
                chunk = [i for i in task_ids[start : start + 500] if bindable(i)]
                if chunk:
                    marks = ",".join("?" * len(chunk))
                    found = conn.execute(
                        f"SELECT id, slices FROM {TABLE} WHERE id IN ({marks}) AND slices > 1",
                        chunk,
                    )
                    counts.update((task_id, int(n)) for task_id, n in found)
        return counts

    def started_sliced(self) -> list[Task]:
        """Every sliced task that started and has not ended, oldest first (what the
        engine's slice housekeeping looks at: docs/slices.md): only those rows are read."""
        if self._absent or not self._slices:
            return []
        with self.database.read() as conn:
            found = conn.execute(
                f"SELECT {self._columns} FROM {TABLE}"
                " WHERE status = 'RUNNING' AND slices > 1 ORDER BY seq"
            ).fetchall()
        return [self._decode(row) for row in found]

    def expired(self, now: datetime, limit: int) -> list[str]:
        """Ids of tasks expired at ``now``, earliest first (see :meth:`TaskStore.expired`).

        One range read of the ``expires_at`` index: the ISO-8601 UTC text with
        milliseconds sorts as the instants do.
        """
        if self._absent:
            return []
        with self.database.read() as conn:
            found = conn.execute(
                f"SELECT id FROM {TABLE} WHERE expires_at IS NOT NULL AND expires_at <= ?"
                " ORDER BY expires_at, id LIMIT ?",
                (format_timestamp(now), max(0, int(limit))),
            ).fetchall()
        return [task_id for (task_id,) in found]

    def __len__(self) -> int:
        """How many tasks are stored."""
        if self._absent:
            return 0
        with self.database.read() as conn:
            total = int(conn.execute(f"SELECT COUNT(*) FROM {TABLE}{self._top}").fetchone()[0])
        return total - sum(1 for task_id in self._hidden if "~" not in task_id)

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

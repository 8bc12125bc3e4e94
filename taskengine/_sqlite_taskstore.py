"""``SQLiteTaskStore``: tasks in a SQLite file, in the task store's own versioned rows.

The rows are written and read by :mod:`taskengine._taskrow` (the format, column by
column, is documented there and in docs/durability.md). The version is the ``taskstore``
component's entry in the file's ``taskengine_schema`` table
(:meth:`~taskengine.storage._database.Database.ensure_schema`):

* 0 — no task table yet: a writer creates it; a read-only view reads as empty;
* 1 — the public task JSON in one ``body`` column (releases before the row format): a
  writer upgrades the file in place, in one transaction (a crash during the upgrade
  leaves the file as it was); a read-only view reads it as it is, without upgrading;
* 2 — the rows without lease columns: a writer adds them in place (``ALTER TABLE ADD
  COLUMN``, in one transaction); a read-only view reads the file as it is, with no task
  leased;
* 3 — version 2 plus the lease columns (``lease_owner``, ``lease_token``,
  ``lease_expires``): a writer adds the leaders table in place (in one transaction); a
  read-only view reads the file as it is, with no role led;
* 4 — version 3 plus the ``taskengine_leaders`` table of leader leases (``role``,
  ``owner``, ``token``, ``expires``): a writer adds the slice columns in place (in one
  transaction); a read-only view reads the file as it is, with no task sliced;
* 5 — the current schema: version 4 plus the slice columns (``parent``, ``slice_until``,
  ``slices``, ``split``; docs/slices.md) and an index of the tasks that are not slices;
* newer — refused with ``StorageError``, and the file is left untouched.

Every upgrade goes straight to the current version, so a file of version 1 to 4 ends at
version 5 too.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from taskengine import _taskrow as rows
from taskengine._lease import (
    Held,
    Lease,
    check_owner,
    check_role,
    epoch_ms,
    fence_time,
    from_epoch_ms,
    lease_until,
    next_term,
)
from taskengine._values import INT64_MAX, encodable
from taskengine.errors import LeaseLost
from taskengine.storage._database import Database
from taskengine.task import Task, TaskStatus, format_timestamp

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = ["SQLiteTaskStore"]

_COMPONENT = "taskstore"
_VERSION = 5
_TABLE = "taskengine_tasks"
_LEADERS = "taskengine_leaders"
# Lease expiry is an integer (epoch milliseconds), not ISO text like the task's dates: the
# claim compares it with ``now`` in SQL, and integers compare exactly whatever the text
# form of a date; the task's own dates stay text as the row format documents them.
_LEASE_COLUMNS = (
    "lease_owner TEXT",
    "lease_token INTEGER NOT NULL DEFAULT 0",
    "lease_expires INTEGER",
)
_SLICE_COLUMNS = (
    "parent TEXT",
    "slice_until TEXT",
    "slices INTEGER NOT NULL DEFAULT 1",
    "split TEXT",
)
# The tasks lists show (slices are hidden): a page and the total walk this index only.
_TOP_INDEX = f"CREATE INDEX IF NOT EXISTS {_TABLE}_top ON {_TABLE} (seq) WHERE parent IS NULL"
# A role's row stays when its leader resigns (owner and expires NULL), to keep its token.
_LEADERS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_LEADERS} ("
    "role TEXT PRIMARY KEY, owner TEXT, token INTEGER NOT NULL, expires INTEGER)"
)
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
    " failures TEXT NOT NULL, " + ", ".join((*_LEASE_COLUMNS, *_SLICE_COLUMNS)) + ")",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_status ON {_TABLE} (status)",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_expiry ON {_TABLE} (expires_at)"
    " WHERE expires_at IS NOT NULL",
    _LEADERS_SCHEMA,
    _TOP_INDEX,
)
_MARKS = ", ".join("?" * len(rows.COLUMNS.split(",")))
_INSERT = f"INSERT INTO {_TABLE} ({rows.COLUMNS}) VALUES ({_MARKS})"
_UPDATE = (
    f"UPDATE {_TABLE} SET "
    + ", ".join(f"{column.strip()} = ?" for column in rows.COLUMNS.split(",")[1:])
    + " WHERE id = ?"
)
_SQLITE_INT_MAX = INT64_MAX
_UNFINISHED = "status IN ('NEW', 'RUNNING')"
_FREE = "(lease_owner IS NULL OR lease_expires <= ?)"
# A sliced task that started runs as its slices: it is never claimed again.
_NOT_STARTED_SLICED = "NOT (status = 'RUNNING' AND slices > 1)"
_TOP = "parent IS NULL"
_CURRENT = "lease_owner = ? AND lease_token = ?"
_CLAIM = (
    f"UPDATE {_TABLE} SET lease_owner = ?, lease_token = lease_token + 1, lease_expires = ?"
    f" WHERE id = ? AND {_UNFINISHED} AND {_FREE}"
)
# RETURNING reads the new token in the claiming statement itself (SQLite 3.35+); before
# that, the token is read back in the same transaction, which is just as atomic.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
_RENEW = f"UPDATE {_TABLE} SET lease_expires = ? WHERE id = ? AND {_CURRENT} AND lease_expires > ?"
_RELEASE = (
    f"UPDATE {_TABLE} SET lease_owner = NULL, lease_expires = NULL WHERE id = ? AND {_CURRENT}"
)
_FENCE = f"SELECT 1 FROM {_TABLE} WHERE id = ? AND {_CURRENT} AND lease_expires > ?"
_FENCED_UPDATE = f"{_UPDATE} AND {_CURRENT} AND lease_expires > ?"
_LEADER = f"SELECT owner, token, expires FROM {_LEADERS} WHERE role = ?"
_SET_LEADER = f"INSERT OR REPLACE INTO {_LEADERS} (role, owner, token, expires) VALUES (?, ?, ?, ?)"
_RESIGN = (
    f"UPDATE {_LEADERS} SET owner = NULL, expires = NULL WHERE role = ? AND owner = ? AND token = ?"
)


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

    def _open_schema(self) -> int:
        """Create, upgrade or check the task table; return the format it is read in."""
        database = self.database
        if database.read_only:
            return database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)
        if database.schema_version(_COMPONENT) in _UPGRADES:
            with database.transaction() as conn:
                # Another process may have upgraded the file since the version was read.
                upgrade = _UPGRADES.get(database.schema_version(_COMPONENT))
                if upgrade is not None:
                    upgrade(database, conn)
        database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)
        return _VERSION

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
            if conn.execute(f"SELECT 1 FROM {_TABLE} WHERE id = ?", (task.id,)).fetchone():
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
        if self._absent or task_id in self._hidden or not _encodable(task_id):
            if fence is not None:
                raise LeaseLost(fence.task_id, fence.owner, fence.token)
            return None
        with self.database.transaction() as conn:
            if fence is not None and (
                not self._leases
                or conn.execute(_FENCE, (task_id, fence.owner, fence.token, at)).fetchone() is None
            ):
                raise LeaseLost(fence.task_id, fence.owner, fence.token)
            found = conn.execute(
                f"SELECT {self._columns} FROM {_TABLE} WHERE id = ?", (task_id,)
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

    # -- ownership (see TaskStore) -----------------------------------------------------

    def claim(self, task_id: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Take the task if it is unfinished and not leased (see :meth:`TaskStore.claim`)."""
        check_owner(owner)
        until = lease_until(now, duration)
        if not _encodable(task_id):
            return None
        args = (owner, until, task_id, epoch_ms(now))
        with self.database.transaction() as conn:
            if _RETURNING:
                found = conn.execute(f"{_CLAIM} RETURNING lease_token", args).fetchall()
                token = found[0][0] if found else None
            elif conn.execute(_CLAIM, args).rowcount:
                token = conn.execute(
                    f"SELECT lease_token FROM {_TABLE} WHERE id = ?", (task_id,)
                ).fetchone()[0]
            else:
                token = None
        return None if token is None else Lease(task_id, owner, int(token), from_epoch_ms(until))

    def claimable(self, now: datetime, limit: int) -> list[str]:
        """Unfinished, unleased task ids, oldest first (see :meth:`TaskStore.claimable`)."""
        if self._absent or limit <= 0:
            return []
        limit = min(limit + len(self._hidden), _SQLITE_INT_MAX)
        with self.database.read() as conn:
            if self._leases:
                sliced = f" AND {_NOT_STARTED_SLICED}" if self._slices else ""
                found = conn.execute(
                    f"SELECT id FROM {_TABLE} WHERE {_UNFINISHED} AND {_FREE}{sliced}"
                    " ORDER BY seq LIMIT ?",
                    (epoch_ms(now), limit),
                ).fetchall()
            else:
                found = conn.execute(
                    f"SELECT id FROM {_TABLE} WHERE {_UNFINISHED} ORDER BY seq LIMIT ?", (limit,)
                ).fetchall()
        ids = [row[0] for row in found if row[0] not in self._hidden]
        return ids[: limit - len(self._hidden)]

    def renew(self, lease: Lease, now: datetime, duration: timedelta) -> Lease:
        """Extend a current lease to ``now + duration`` (see :meth:`TaskStore.renew`).

        Raises:
            LeaseLost: the lease is not current and unexpired at ``now``.
        """
        until = lease_until(now, duration)
        renewed = 0
        if _encodable(lease.task_id):
            args = (until, lease.task_id, lease.owner, lease.token, epoch_ms(now))
            with self.database.transaction() as conn:
                renewed = conn.execute(_RENEW, args).rowcount
        if not renewed:
            raise LeaseLost(lease.task_id, lease.owner, lease.token)
        return attrs.evolve(lease, expires_at=from_epoch_ms(until))

    def release(self, lease: Lease) -> None:
        """Give the task up now if the lease is current (see :meth:`TaskStore.release`)."""
        if not _encodable(lease.task_id):
            return
        with self.database.transaction() as conn:
            conn.execute(_RELEASE, (lease.task_id, lease.owner, lease.token))

    def lease_of(self, task_id: str) -> Lease | None:
        """The task's lease, live or expired (see :meth:`TaskStore.lease_of`)."""
        if not self._leases or task_id in self._hidden or not _encodable(task_id):
            return None
        with self.database.read() as conn:
            row = conn.execute(
                f"SELECT lease_owner, lease_token, lease_expires FROM {_TABLE} WHERE id = ?",
                (task_id,),
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return Lease(task_id, row[0], int(row[1]), from_epoch_ms(int(row[2])))

    def check_fence(self, lease: Lease, now: datetime) -> None:
        """Raise unless the lease is current and unexpired (see :meth:`TaskStore.check_fence`).

        Inside :meth:`transaction` (or the shared storage's ``atomic()``) the check holds
        the write lock taken by ``BEGIN IMMEDIATE``, so no claim can come between it and
        the writes that follow, and they commit or roll back together.

        Raises:
            LeaseLost: it is not.
        """
        row = None
        if self._leases and _encodable(lease.task_id):
            args = (lease.task_id, lease.owner, lease.token, epoch_ms(now))
            with self.database.read() as conn:
                row = conn.execute(_FENCE, args).fetchone()
        if row is None:
            raise LeaseLost(lease.task_id, lease.owner, lease.token)

    def lead(self, role: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Lead the role unless another owner leads it live (see :meth:`TaskStore.lead`).

        The read and the write are one ``BEGIN IMMEDIATE`` transaction: it holds the
        file's write lock throughout, so processes sharing the file never both win. On a
        read-only view of a file older than version 4, ``None``.
        """
        check_role(role)
        check_owner(owner)
        until = lease_until(now, duration)
        if not self._has_leaders:
            return None
        with self.database.transaction() as conn:
            row = conn.execute(_LEADER, (role,)).fetchone()
            held: Held | None = None
            if row is not None:
                held = (row[0], int(row[1]), 0 if row[2] is None else int(row[2]))
            term = next_term(held, owner, epoch_ms(now), until)
            if term is not None:
                conn.execute(_SET_LEADER, (role, *term))
        return None if term is None else Lease(role, owner, term[1], from_epoch_ms(until))

    def resign(self, lease: Lease) -> None:
        """Give the role up now if the lease is current (see :meth:`TaskStore.resign`)."""
        if not self._has_leaders or not _encodable(lease.task_id):
            return
        with self.database.transaction() as conn:
            conn.execute(_RESIGN, (lease.task_id, lease.owner, lease.token))

    def leader_of(self, role: str) -> Lease | None:
        """The role's current term, live or expired (see :meth:`TaskStore.leader_of`)."""
        if not self._has_leaders or not _encodable(role):
            return None
        with self.database.read() as conn:
            row = conn.execute(_LEADER, (role,)).fetchone()
        if row is None or row[0] is None:
            return None
        return Lease(role, row[0], int(row[1]), from_epoch_ms(int(row[2])))

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
        top = self._top
        with self.database.read() as conn:
            total = int(conn.execute(f"SELECT COUNT(*) FROM {_TABLE}{top}").fetchone()[0])
            found = conn.execute(
                f"SELECT {self._columns} FROM {_TABLE}{top} ORDER BY seq DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [self._decode(row) for row in found], total

    def _page_without_hidden(self, limit: int, offset: int) -> tuple[list[Task], int]:
        hidden = self._hidden
        kept: list[tuple[Any, ...]] = []
        with self.database.read() as conn:
            top = self._top
            total = int(conn.execute(f"SELECT COUNT(*) FROM {_TABLE}{top}").fetchone()[0])
            skip = offset
            cursor = conn.execute(
                f"SELECT id, {self._columns} FROM {_TABLE}{top} ORDER BY seq DESC"
            )
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

    def slice_counts(self, task_ids: Sequence[str]) -> dict[str, int]:
        """The ``slices`` of each of these tasks that has more than one (what the sweep
        removes with them, docs/slices.md): one indexed read per 500 ids."""
        if self._absent or not self._slices:
            return {}
        counts: dict[str, int] = {}
        with self.database.read() as conn:
            for start in range(0, len(task_ids), 500):
                chunk = [i for i in task_ids[start : start + 500] if _encodable(i)]
                if chunk:
                    marks = ",".join("?" * len(chunk))
                    found = conn.execute(
                        f"SELECT id, slices FROM {_TABLE} WHERE id IN ({marks}) AND slices > 1",
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
                f"SELECT {self._columns} FROM {_TABLE}"
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
                f"SELECT id FROM {_TABLE} WHERE expires_at IS NOT NULL AND expires_at <= ?"
                " ORDER BY expires_at, id LIMIT ?",
                (format_timestamp(now), max(0, int(limit))),
            ).fetchall()
        return [task_id for (task_id,) in found]

    def __len__(self) -> int:
        """How many tasks are stored."""
        if self._absent:
            return 0
        with self.database.read() as conn:
            total = int(conn.execute(f"SELECT COUNT(*) FROM {_TABLE}{self._top}").fetchone()[0])
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


def _upgrade_v2(database: Database, conn: sqlite3.Connection) -> None:
    """Add the lease columns to version-2 rows (no task leased) and the leaders table,
    inside the caller's transaction, and record the current version.
    """
    for column in (*_LEASE_COLUMNS, *_SLICE_COLUMNS):
        conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN {column}")
    database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)


def _upgrade_v3(database: Database, conn: sqlite3.Connection) -> None:
    """Add the leaders table (no role led) to a version-3 file, inside the caller's
    transaction, and record the current version; rows and task leases are kept.
    """
    conn.execute(_LEADERS_SCHEMA)
    _upgrade_v4(database, conn)


def _upgrade_v4(database: Database, conn: sqlite3.Connection) -> None:
    """Add the slice columns (no task sliced) and the index of the tasks that are not
    slices, inside the caller's transaction, and record the current version."""
    for column in _SLICE_COLUMNS:
        conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN {column}")
    database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)


_UPGRADES: dict[int, Callable[[Database, sqlite3.Connection], None]] = {
    1: _upgrade_v1,
    2: _upgrade_v2,
    3: _upgrade_v3,
    4: _upgrade_v4,
}
"""The in-place upgrade from each older version to the current one."""


def _encodable(text: object) -> bool:
    return type(text) is not str or text.isascii() or encodable(text)

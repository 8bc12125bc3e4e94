"""Where tasks live: the ``TaskStore`` protocol and its two implementations.

* :class:`MemoryTaskStore` (the default) keeps :class:`~taskengine.task.Task` snapshots
  in process memory;
* :class:`SQLiteTaskStore` keeps them in a SQLite file (durable), and can share a
  :class:`~taskengine.storage._database.Database` with ``SQLiteStorage`` so that a batch's item
  writes and the task's checkpoint commit in one transaction.

A store is a dumb, thread-safe map from task id to snapshot with a creation order. The
engine decides every change (under its own lock) and only asks the store to keep it.
Stores hand back tasks whose options are :class:`~taskengine.task.RawOptions` when they
cannot keep typed ones (SQLite); the JSON form is the same either way.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from taskengine.errors import InvalidTask, StorageError
from taskengine.storage._database import Database
from taskengine.task import Task, format_timestamp, parse_timestamp

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = ["MemoryTaskStore", "SQLiteTaskStore", "TaskStore"]


@runtime_checkable
class TaskStore(Protocol):
    """A thread-safe home for task snapshots, in creation order."""

    def insert(self, task: Task) -> None:
        """Store a new task.

        Raises:
            ValueError: a task with this id is already stored.
        """
        ...

    def save(self, task: Task) -> None:
        """Replace the stored snapshot of ``task.id`` (store it if it is not there)."""
        ...

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or ``None``."""
        ...

    def page(self, limit: int, offset: int) -> tuple[list[Task], int]:
        """Up to ``limit`` tasks after skipping ``offset``, newest first, and the total."""
        ...

    def delete(self, task_ids: Sequence[str]) -> int:
        """Remove these tasks (unknown ids are ignored); return how many were removed."""
        ...

    def unfinished(self) -> list[Task]:
        """Every NEW or RUNNING task, oldest first (what a starting engine must run)."""
        ...

    def expiring(self) -> list[tuple[datetime, str]]:
        """``(expires_at, id)`` of every finished task (to rebuild the expiry index)."""
        ...

    def __len__(self) -> int:
        """How many tasks are stored."""
        ...

    def shares_transactions_with(self, storage: Storage) -> bool:
        """Whether writes made inside ``storage.atomic()`` commit together with ours."""
        ...

    def close(self) -> None:
        """Release resources the store opened itself."""
        ...


class MemoryTaskStore:
    """Tasks in process memory (the default): a dict plus a creation-ordered index."""

    process_private = True  # only this process writes it: the engine need not re-read it

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple[int, Task]] = {}
        self._order = SortedDict()  # seq -> id
        self._seq = 0
        self._peak = 0

    def __repr__(self) -> str:
        return f"<MemoryTaskStore {len(self)} task(s)>"

    def insert(self, task: Task) -> None:
        """Store a new task (see :meth:`TaskStore.insert`)."""
        with self._lock:
            if task.id in self._tasks:
                raise ValueError(f"task {task.id!r} already stored")
            self._seq += 1
            self._tasks[task.id] = (self._seq, task)
            self._order[self._seq] = task.id

    def save(self, task: Task) -> None:
        """Replace a stored snapshot (see :meth:`TaskStore.save`)."""
        with self._lock:
            entry = self._tasks.get(task.id)
            if entry is None:
                self._seq += 1
                self._order[self._seq] = task.id
                self._tasks[task.id] = (self._seq, task)
            else:
                self._tasks[task.id] = (entry[0], task)

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or ``None``."""
        entry = self._tasks.get(task_id)
        return None if entry is None else entry[1]

    def page(self, limit: int, offset: int) -> tuple[list[Task], int]:
        """A page, newest first, and the total (see :meth:`TaskStore.page`)."""
        with self._lock:
            total = len(self._order)
            keys = self._order.keys()
            stop = max(0, total - offset)
            start = max(0, stop - limit)
            ids = [self._order[key] for key in reversed(keys[start:stop])]
            return [self._tasks[task_id][1] for task_id in ids], total

    def delete(self, task_ids: Sequence[str]) -> int:
        """Remove tasks (see :meth:`TaskStore.delete`)."""
        removed = 0
        with self._lock:
            for task_id in task_ids:
                entry = self._tasks.pop(task_id, None)
                if entry is not None:
                    del self._order[entry[0]]
                    removed += 1
            self._peak = max(self._peak, len(self._tasks) + removed)
            if len(self._tasks) < self._peak // 4:
                # dicts never shrink on delete: rebuild so memory follows the live tasks.
                self._tasks = dict(self._tasks)
                self._order = SortedDict(self._order)
                self._peak = len(self._tasks)
        return removed

    def unfinished(self) -> list[Task]:
        """Every NEW or RUNNING task, oldest first."""
        with self._lock:
            entries = sorted(self._tasks.values(), key=lambda entry: entry[0])
        return [task for _, task in entries if not task.is_finished]

    def expiring(self) -> list[tuple[datetime, str]]:
        """``(expires_at, id)`` of every finished task."""
        with self._lock:
            return [
                (task.expires_at, task.id)
                for _, task in self._tasks.values()
                if task.expires_at is not None
            ]

    def __len__(self) -> int:
        """How many tasks are stored."""
        return len(self._tasks)

    def shares_transactions_with(self, storage: Storage) -> bool:
        """Always ``False``: memory has no transactions to share.

        With ``MemoryStorage`` the pair is still exact: the engine saves a batch's task
        only after the storage's ``atomic()`` block committed (a failed block rolled the
        items back and nothing was saved), and saving to memory cannot fail.
        """
        return False

    def close(self) -> None:
        """Nothing to release."""


_COMPONENT = "taskstore"
_VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS taskengine_tasks ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE,"
    " status TEXT NOT NULL,"
    " expires_at TEXT,"
    " checkpoint TEXT,"
    " body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS taskengine_tasks_status ON taskengine_tasks (status)",
    "CREATE INDEX IF NOT EXISTS taskengine_tasks_expiry ON taskengine_tasks (expires_at)"
    " WHERE expires_at IS NOT NULL",
)


class SQLiteTaskStore:
    """Tasks in a SQLite database (durable across restarts and crashes).

    Args:
        source: a path (the store opens and owns its own :class:`Database`), a
            :class:`Database`, or anything with a ``.database`` attribute (a
            ``SQLiteStorage``); the last two are shared and not closed by :meth:`close`.
            Sharing the item storage's database makes each batch and its checkpoint
            commit in one transaction.

    On a read-only :class:`Database` (``Database(path, read_only=True)``) the store is a
    view: nothing is written, :meth:`delete` only hides the tasks from this store (the
    rows stay for a writer to sweep), and a file without a task table reads as empty.

    Raises:
        StorageError: the database cannot be opened or holds a newer schema.
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
        try:
            self._absent = self.database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA) == 0
        except BaseException:
            if self._owned:
                self.database.close()
            raise
        self._absent = self._absent and self.database.read_only

    def __repr__(self) -> str:
        return f"<SQLiteTaskStore {self.database.path!r}>"

    def insert(self, task: Task) -> None:
        """Store a new task (see :meth:`TaskStore.insert`)."""
        with self.database.transaction() as conn:
            if conn.execute("SELECT 1 FROM taskengine_tasks WHERE id = ?", (task.id,)).fetchone():
                raise ValueError(f"task {task.id!r} already stored")
            conn.execute(
                "INSERT INTO taskengine_tasks (id, status, expires_at, checkpoint, body)"
                " VALUES (?, ?, ?, ?, ?)",
                _row(task),
            )

    def save(self, task: Task) -> None:
        """Replace a stored snapshot (see :meth:`TaskStore.save`)."""
        task_id, status, expires, checkpoint, body = _row(task)
        with self.database.transaction() as conn:
            cursor = conn.execute(
                "UPDATE taskengine_tasks SET status = ?, expires_at = ?, checkpoint = ?,"
                " body = ? WHERE id = ?",
                (status, expires, checkpoint, body, task_id),
            )
            if cursor.rowcount == 0:
                conn.execute(
                    "INSERT INTO taskengine_tasks (id, status, expires_at, checkpoint, body)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (task_id, status, expires, checkpoint, body),
                )

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or ``None``."""
        if self._absent or task_id in self._hidden:
            return None
        if not _encodable(task_id):
            return None  # no stored id has a lone surrogate (SQLite could not bind it)
        with self.database.read() as conn:
            row = conn.execute(
                "SELECT body, checkpoint FROM taskengine_tasks WHERE id = ?", (task_id,)
            ).fetchone()
        return None if row is None else _load(row[0], row[1])

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
            total = int(conn.execute("SELECT COUNT(*) FROM taskengine_tasks").fetchone()[0])
            rows = conn.execute(
                "SELECT body, checkpoint FROM taskengine_tasks ORDER BY seq DESC"
                " LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [_load(body, checkpoint) for body, checkpoint in rows], total

    def _page_without_hidden(self, limit: int, offset: int) -> tuple[list[Task], int]:
        hidden = self._hidden
        rows: list[tuple[str, str | None]] = []
        with self.database.read() as conn:
            total = int(conn.execute("SELECT COUNT(*) FROM taskengine_tasks").fetchone()[0])
            skip = offset
            cursor = conn.execute(
                "SELECT id, body, checkpoint FROM taskengine_tasks ORDER BY seq DESC"
            )
            for task_id, body, checkpoint in cursor:
                if task_id in hidden:
                    total -= 1
                elif skip:
                    skip -= 1
                elif len(rows) < limit:
                    rows.append((body, checkpoint))
        return [_load(body, checkpoint) for body, checkpoint in rows], total

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
                cursor = conn.execute(
                    f"DELETE FROM taskengine_tasks WHERE id IN ({marks})",
                    chunk,
                )
                removed += max(0, cursor.rowcount)
        return removed

    def unfinished(self) -> list[Task]:
        """Every NEW or RUNNING task, oldest first."""
        if self._absent:
            return []
        with self.database.read() as conn:
            rows = conn.execute(
                "SELECT body, checkpoint FROM taskengine_tasks"
                " WHERE status IN ('NEW', 'RUNNING') ORDER BY seq"
            ).fetchall()
        return [_load(body, checkpoint) for body, checkpoint in rows]

    def expiring(self) -> list[tuple[datetime, str]]:
        """``(expires_at, id)`` of every finished task."""
        if self._absent:
            return []
        with self.database.read() as conn:
            rows = conn.execute(
                "SELECT expires_at, id FROM taskengine_tasks WHERE expires_at IS NOT NULL"
            ).fetchall()
        return [(parse_timestamp(expires), task_id) for expires, task_id in rows]

    def __len__(self) -> int:
        """How many tasks are stored."""
        if self._absent:
            return 0
        with self.database.read() as conn:
            total = int(conn.execute("SELECT COUNT(*) FROM taskengine_tasks").fetchone()[0])
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


_SQLITE_INT_MAX = 2**63 - 1


def _encodable(text: object) -> bool:
    if type(text) is not str or text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_default(value: object) -> object:
    # A filter may hold datetimes (SPEC 5); their JSON form is the {"$date": ISO} wrapper,
    # which the filter language reads as the same date.
    if isinstance(value, datetime):
        return {"$date": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _row(task: Task) -> tuple[str, str, str | None, str | None, str]:
    expires = None if task.expires_at is None else format_timestamp(task.expires_at)
    body = json.dumps(
        task.to_json(), separators=(",", ":"), ensure_ascii=False, default=_json_default
    )
    return task.id, task.status.value, expires, task.checkpoint, body


def _load(body: str, checkpoint: str | None) -> Task:
    try:
        return Task.from_json(json.loads(body), checkpoint=checkpoint)
    except (ValueError, InvalidTask) as exc:
        raise StorageError(f"a stored task cannot be read back: {exc}") from exc

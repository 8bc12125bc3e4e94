"""Where tasks live: the ``TaskStore`` protocol and its two implementations.

* :class:`MemoryTaskStore` (the default) keeps :class:`~taskengine.task.Task` snapshots
  in process memory;
* :class:`SQLiteTaskStore` keeps them in a SQLite file (durable), and can share a
  :class:`~taskengine.storage._database.Database` with ``SQLiteStorage`` so that a batch's item
  writes and the task's checkpoint commit in one transaction. It lives in
  :mod:`taskengine._sqlite_taskstore`, in rows of its own versioned format
  (:mod:`taskengine._taskrow`, docs/durability.md).

A store is a dumb, thread-safe map from task id to snapshot with a creation order. The
engine decides every change (under its own lock) and only asks the store to keep it.
Stores hand back tasks whose options are :class:`~taskengine.task.RawOptions` when they
cannot keep typed ones (SQLite); the JSON form is the same either way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from taskengine._sqlite_taskstore import SQLiteTaskStore
from taskengine.task import Task

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

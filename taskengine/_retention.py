"""Retention: finished tasks expire, and an expired task is gone for every reader.

Owns the two ways an expired task leaves the task store (docs/retention.md):
:func:`sweep_expired`, the sweep ``TaskEngine.sweep`` runs (by the store's expiry
index, in chunks, so a sweep costs what it removes), and :func:`live_task`, the read
every engine call that names a task goes through, which removes an expired task it
meets and answers as if it never existed. A sliced task's slices go with it, first, so a
crash in between leaves no orphan slice.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from taskengine.errors import TaskNotFound

if TYPE_CHECKING:
    from taskengine._slices import Slices
    from taskengine.clock import Clock
    from taskengine.task import Task
    from taskengine.taskstore import TaskStore

__all__ = ["SWEEP_CHUNK", "live_task", "sweep_expired"]

SWEEP_CHUNK = 500
"""Expired tasks deleted per task store call in a sweep."""


def sweep_expired(task_store: TaskStore, slices: Slices, moment: datetime) -> int:
    """Remove every finished task whose ``expiresAt`` is at most ``moment`` (and the
    slices of each); return how many tasks were removed."""
    removed = 0
    while True:
        # The store finds them by its expiry index: a sweep costs what it removes.
        expired = task_store.expired(moment, SWEEP_CHUNK)
        if expired:
            # A task's slices go with it (first: a crash between leaves no orphan).
            if slices.enabled:
                task_store.delete(slices.slices_of(expired))
            removed += task_store.delete(expired)
        if len(expired) < SWEEP_CHUNK:
            return removed


def live_task(task_store: TaskStore, clock: Clock, task_id: str) -> Task:
    """The stored task, unless it has expired (then it is removed, slices and all).

    Raises:
        TaskNotFound: no such task (or ``task_id`` is not a string), or it has expired.
    """
    if not isinstance(task_id, str):
        raise TaskNotFound(repr(task_id))
    task = task_store.get(task_id)
    if task is None:
        raise TaskNotFound(task_id)
    if task.expires_at is not None and task.expires_at <= clock.now():
        task_store.delete([*task.slice_ids, task.id])  # its slices go with it
        raise TaskNotFound(task_id)
    return task

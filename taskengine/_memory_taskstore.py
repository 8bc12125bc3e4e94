"""``MemoryTaskStore``: tasks in process memory, the default store and the reference one.

Owns the in-memory implementation of the :class:`~taskengine.taskstore.TaskStore`
protocol (re-exported by :mod:`taskengine.taskstore` and the package): a dict of
``Task`` snapshots with a creation-ordered index, the unfinished tasks' index (what
``claimable`` and ``unfinished`` read), the finished tasks' expiry index, and the task
and leader leases (the millisecond expiry rule of :mod:`taskengine._lease`). One lock
guards all of it; each read or write holds it for its whole call, so each is atomic and
``update``'s function runs under it (it must not call the store back). The store is
private to its process (``process_private``), keeps slices (``keeps_slices``), and shares
no transaction with any storage.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs
from sortedcontainers import SortedDict, SortedList  # type: ignore[import-untyped]

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
from taskengine.errors import LeaseLost
from taskengine.task import Task, TaskStatus

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = ["MemoryTaskStore"]


class MemoryTaskStore:
    """Tasks in process memory (the default): a dict plus a creation-ordered index."""

    process_private = True  # only this process writes it (services need no resync)
    keeps_slices = True  # it keeps a task's slice fields and hides slices (docs/slices.md)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple[int, Task]] = {}
        self._order = SortedDict()  # seq -> id
        self._open = SortedDict()  # seq -> id of the unfinished tasks (claimable, unfinished)
        self._seq = 0
        self._peak = 0
        # task id -> (owner, or None once released; token; expiry in epoch ms)
        self._leases: dict[str, Held] = {}
        self._leaders: dict[str, Held] = {}  # role -> the same, for leader leases
        self._expiry = SortedList()  # (expires_at, id) of the finished tasks

    def __repr__(self) -> str:
        return f"<MemoryTaskStore {len(self)} task(s)>"

    def insert(self, task: Task) -> None:
        """Store a new task (see :meth:`TaskStore.insert`)."""
        with self._lock:
            if task.id in self._tasks:
                raise ValueError(f"task {task.id!r} already stored")
            self._seq += 1
            if task.parent is None:  # slices are hidden from pages and the total
                self._order[self._seq] = task.id
            self._put(self._seq, task)

    def save(self, task: Task, fence: Lease | None = None, *, now: datetime | None = None) -> None:
        """Replace a stored snapshot; with a fence, only while it is current at ``now``
        (see :meth:`TaskStore.save`).

        Raises:
            LeaseLost: ``fence`` is not current and unexpired; nothing was written.
        """
        if fence is not None:
            at = epoch_ms(fence_time(fence, task.id, now))
            with self._lock:
                entry = self._tasks.get(task.id)
                if entry is None or not self._current(fence, at):
                    raise LeaseLost(fence.task_id, fence.owner, fence.token)
                self._put(entry[0], task)
            return
        with self._lock:
            entry = self._tasks.get(task.id)
            if entry is None:
                self._seq += 1
                if task.parent is None:
                    self._order[self._seq] = task.id
                self._put(self._seq, task)
            else:
                self._put(entry[0], task)

    def update(
        self,
        task_id: str,
        change: Callable[[Task], Task | None],
        fence: Lease | None = None,
        *,
        now: datetime | None = None,
    ) -> Task | None:
        """Replace a snapshot with ``change(stored)`` under the store's lock (see
        :meth:`TaskStore.update`).

        Raises:
            LeaseLost: ``fence`` is not current and unexpired at ``now``.
        """
        at = None if fence is None else epoch_ms(fence_time(fence, task_id, now))
        with self._lock:
            if fence is not None and not self._current(fence, at):
                raise LeaseLost(fence.task_id, fence.owner, fence.token)
            entry = self._tasks.get(task_id)
            if entry is None:
                return None
            updated = change(entry[1])
            if updated is None:
                return entry[1]
            _check_same_id(updated, task_id)
            self._put(entry[0], updated)
            return updated

    def _put(self, seq: int, task: Task) -> None:
        """Store ``task`` at creation number ``seq`` and keep the unfinished and expiry
        indexes (lock held)."""
        old = self._tasks.get(task.id)
        if old is not None and old[1].expires_at is not None:
            self._expiry.discard((old[1].expires_at, task.id))
        if task.expires_at is not None:
            self._expiry.add((task.expires_at, task.id))
        self._tasks[task.id] = (seq, task)
        if task.is_finished:
            self._open.pop(seq, None)
        else:
            self._open[seq] = task.id

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
                    if entry[1].expires_at is not None:
                        self._expiry.discard((entry[1].expires_at, task_id))
                    self._order.pop(entry[0], None)
                    self._open.pop(entry[0], None)
                    self._leases.pop(task_id, None)
                    removed += 1
            self._peak = max(self._peak, len(self._tasks) + removed)
            if len(self._tasks) < self._peak // 4:
                # dicts never shrink on delete: rebuild so memory follows the live tasks.
                self._tasks = dict(self._tasks)
                self._order = SortedDict(self._order)
                self._open = SortedDict(self._open)
                self._peak = len(self._tasks)
        return removed

    def _current(self, lease: Lease, at: int | None) -> bool:
        """Whether ``lease`` is current (and, unless ``at`` is None, unexpired at ``at``)."""
        held = self._leases.get(lease.task_id)
        return (
            held is not None
            and held[0] == lease.owner
            and held[1] == lease.token
            and (at is None or at < held[2])
        )

    def claim(self, task_id: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Take the task if it is unfinished and not leased (see :meth:`TaskStore.claim`)."""
        check_owner(owner)
        until = lease_until(now, duration)
        at = epoch_ms(now)
        with self._lock:
            entry = self._tasks.get(task_id)
            if entry is None or entry[1].is_finished:
                return None
            held = self._leases.get(task_id)
            if held is not None and held[0] is not None and at < held[2]:
                return None
            token = 1 if held is None else held[1] + 1
            self._leases[task_id] = (owner, token, until)
        return Lease(task_id, owner, token, from_epoch_ms(until))

    def claimable(self, now: datetime, limit: int) -> list[str]:
        """Unfinished, unleased task ids, oldest first (see :meth:`TaskStore.claimable`).

        Walks the unfinished tasks only (an index kept on every write), in creation order.
        """
        at = epoch_ms(now)
        found: list[str] = []
        if limit <= 0:
            return found
        with self._lock:
            for task_id in self._open.values():
                held = self._leases.get(task_id)
                if held is None or held[0] is None or held[2] <= at:
                    if self._started_sliced(task_id):
                        continue
                    found.append(task_id)
                    if len(found) >= limit:
                        break
        return found

    def _started_sliced(self, task_id: str) -> bool:
        """Whether the task is a sliced one that started: it runs as its slices and is
        never claimed again (lock held)."""
        task = self._tasks[task_id][1]
        return task.slices > 1 and task.status is TaskStatus.RUNNING

    def renew(self, lease: Lease, now: datetime, duration: timedelta) -> Lease:
        """Extend a current lease to ``now + duration`` (see :meth:`TaskStore.renew`).

        Raises:
            LeaseLost: the lease is not current and unexpired at ``now``.
        """
        until = lease_until(now, duration)
        with self._lock:
            if not self._current(lease, epoch_ms(now)):
                raise LeaseLost(lease.task_id, lease.owner, lease.token)
            self._leases[lease.task_id] = (lease.owner, lease.token, until)
        return attrs.evolve(lease, expires_at=from_epoch_ms(until))

    def release(self, lease: Lease) -> None:
        """Give the task up now if the lease is current (see :meth:`TaskStore.release`)."""
        with self._lock:
            if self._current(lease, None):
                self._leases[lease.task_id] = (None, lease.token, 0)

    def lease_of(self, task_id: str) -> Lease | None:
        """The task's lease, live or expired (see :meth:`TaskStore.lease_of`)."""
        with self._lock:
            held = self._leases.get(task_id)
        if held is None or held[0] is None:
            return None
        return Lease(task_id, held[0], held[1], from_epoch_ms(held[2]))

    def check_fence(self, lease: Lease, now: datetime) -> None:
        """Raise unless the lease is current and unexpired (see :meth:`TaskStore.check_fence`).

        Memory has no transaction to hold the check and the item writes together: an
        expired lease can be taken over between them, so the fenced save checks again.

        Raises:
            LeaseLost: it is not.
        """
        with self._lock:
            if not self._current(lease, epoch_ms(now)):
                raise LeaseLost(lease.task_id, lease.owner, lease.token)

    def lead(self, role: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Lead the role unless another owner leads it live (see :meth:`TaskStore.lead`)."""
        check_role(role)
        check_owner(owner)
        until = lease_until(now, duration)
        with self._lock:
            term = next_term(self._leaders.get(role), owner, epoch_ms(now), until)
            if term is None:
                return None
            self._leaders[role] = term
        return Lease(role, owner, term[1], from_epoch_ms(until))

    def resign(self, lease: Lease) -> None:
        """Give the role up now if the lease is current (see :meth:`TaskStore.resign`)."""
        with self._lock:
            held = self._leaders.get(lease.task_id)
            if held is not None and held[0] == lease.owner and held[1] == lease.token:
                self._leaders[lease.task_id] = (None, lease.token, 0)

    def leader_of(self, role: str) -> Lease | None:
        """The role's current term, live or expired (see :meth:`TaskStore.leader_of`)."""
        with self._lock:
            held = self._leaders.get(role)
        if held is None or held[0] is None:
            return None
        return Lease(role, held[0], held[1], from_epoch_ms(held[2]))

    def slice_counts(self, task_ids: Sequence[str]) -> dict[str, int]:
        """The ``slices`` of each of these tasks that has more than one (what the sweep
        removes with them, docs/slices.md)."""
        with self._lock:
            found = [self._tasks.get(task_id) for task_id in task_ids]
        return {entry[1].id: entry[1].slices for entry in found if entry and entry[1].slices > 1}

    def unfinished(self) -> list[Task]:
        """Every NEW or RUNNING task, oldest first."""
        with self._lock:
            return [self._tasks[task_id][1] for task_id in self._open.values()]

    def expired(self, now: datetime, limit: int) -> list[str]:
        """Ids of tasks expired at ``now``, earliest first (see :meth:`TaskStore.expired`)."""
        found: list[str] = []
        with self._lock:
            for expires_at, task_id in self._expiry:
                if expires_at > now or len(found) >= limit:
                    break
                found.append(task_id)
        return found

    def __len__(self) -> int:
        """How many tasks are stored (slices are not counted: they are part of their task)."""
        return len(self._order)

    def shares_transactions_with(self, storage: Storage) -> bool:
        """Always ``False``: memory has no transactions to share.

        With ``MemoryStorage`` the pair is still exact: the engine saves a batch's task
        only after the storage's ``atomic()`` block committed (a failed block rolled the
        items back and nothing was saved), and saving to memory cannot fail.
        """
        return False

    def close(self) -> None:
        """Nothing to release."""


def _check_same_id(task: Task, task_id: str) -> None:
    if not isinstance(task, Task) or task.id != task_id:
        raise ValueError(f"an update of task {task_id!r} must return that task or None")

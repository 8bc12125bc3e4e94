"""Where tasks live: the ``TaskStore`` protocol and its implementations.

* :class:`MemoryTaskStore` (the default) keeps :class:`~taskengine.task.Task` snapshots
  in process memory;
* :class:`SQLiteTaskStore` keeps them in a SQLite file (durable), and can share a
  :class:`~taskengine.storage._database.Database` with ``SQLiteStorage`` so that a batch's item
  writes and the task's checkpoint commit in one transaction. It lives in
  :mod:`taskengine._sqlite_taskstore`, in rows of its own versioned format
  (:mod:`taskengine._taskrow`, docs/durability.md);
* ``PostgresTaskStore`` (:mod:`taskengine._pg_taskstore`, the ``postgres`` extra) keeps
  them in PostgreSQL, for engines on many machines, in the same row format.

A store is a dumb, thread-safe map from task id to snapshot with a creation order. The
engine decides every change and asks the store to keep it, atomically (``update``).
Besides the snapshots, a store keeps each task's :class:`Lease` (the ownership operations:
:meth:`TaskStore.claim` and the rest), so that several engines can share one store; the
lease is not part of the task or its JSON. It also keeps leader leases of named roles
(:meth:`TaskStore.lead`), for services that must run in one engine at a time.
Stores hand back tasks whose options are :class:`~taskengine.task.RawOptions` when they
cannot keep typed ones (SQLite); the JSON form is the same either way.

A store may also offer **notifications** (:class:`Notifying`, optional: ``PostgresTaskStore``
does, memory and SQLite do not): a started engine then learns of new tasks, cancel
requests and finished tasks as they commit instead of at its next poll.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

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
    new_owner_id,
    next_term,
)
from taskengine._sqlite_taskstore import SQLiteTaskStore
from taskengine.errors import LeaseLost
from taskengine.task import Task, TaskStatus

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = [
    "NOTICE_CANCEL",
    "NOTICE_DONE",
    "NOTICE_NEW",
    "Lease",
    "MemoryTaskStore",
    "Notice",
    "Notices",
    "Notifying",
    "SQLiteTaskStore",
    "TaskStore",
    "new_owner_id",
    "read_notice",
]

NOTICE_NEW = "new"
"""The kind of a notification whose payload is a bare task id: a task was inserted (or,
from a store that named no kinds, a cancel was requested)."""
NOTICE_CANCEL = "cancel"
"""The kind of ``"<id> cancel"``: a cancel of the RUNNING task was requested."""
NOTICE_DONE = "done"
"""The kind of ``"<id> done"``: the task was stored finished (COMPLETED or FAILED)."""


@runtime_checkable
class TaskStore(Protocol):
    """A thread-safe home for task snapshots, in creation order, and for their leases.

    **Ownership.** Several engines (threads sharing one store, or processes sharing one
    SQLite file) may use one store; a task is to be run only by the engine holding its
    :class:`Lease` (how the engine uses them: docs/durability.md, "Ownership"). The
    store keeps, per task, the current lease's owner, its expiry and
    a fencing token, apart from the snapshot (``save`` never changes them, and they are
    not in the task JSON). The rules, the same for every store:

    * a task is *claimable* at ``now`` when it is unfinished (NEW or RUNNING) and has no
      live lease: never leased, released, or ``expires_at <= now``. :meth:`claimable`
      never returns a RUNNING task with ``slices > 1`` (a sliced task runs as its
      slices once started);
    * :meth:`claim` is one atomic compare-and-set (also across processes for a shared
      file): of any number of concurrent claims of a claimable task exactly one wins;
    * the token is the previous claim's token plus one (1 for the first claim), on every
      claim, also when the same owner claims again after its lease expired, and release
      does not reset it: tokens of a task strictly increase;
    * a lease is *current* while the task's latest claim is still its own (same owner
      and token) and it was not released; it is current and unexpired at ``now`` while,
      in addition, ``now < expires_at``. At any moment at most one lease of a task is
      current and unexpired;
    * :meth:`renew`, :meth:`check_fence` and a fenced :meth:`save` succeed only for a
      lease that is current and unexpired at the ``now`` they are given, and raise
      :class:`~taskengine.errors.LeaseLost` otherwise, writing nothing;
    * every ``now`` comes from the caller (the engine's clock); a store never reads a
      clock. Expiries are kept to the millisecond (``now + duration`` rounded down);
    * an unknown task id is never claimable, has no lease, and fences nothing;
    * deleting a task deletes its lease.

    **Leadership.** A service that must run in exactly one engine at a time (the publish
    scheduler) holds a leader lease on a *role*, a name of its own: roles and tasks are
    separate namespaces, and a leader lease's ``task_id`` holds the role. :meth:`lead` is
    one atomic compare-and-set, like :meth:`claim`: of any number of concurrent leads of a
    role that nobody leads live, exactly one wins. A role's tokens grow by one on every new
    term (a renewal keeps the token; resigning does not reset it), so a leader's writes
    can be fenced as a task owner's are. The same ``now`` and millisecond rules hold.

    Every operation is atomic with respect to the others, as ``save`` is.
    """

    def insert(self, task: Task) -> None:
        """Store a new task.

        Raises:
            ValueError: a task with this id is already stored.
        """
        ...

    def save(self, task: Task, fence: Lease | None = None, *, now: datetime | None = None) -> None:
        """Replace the stored snapshot of ``task.id`` (store it if it is not there).

        The task's lease is never changed by a save. With a ``fence`` (the caller's
        lease on the task) the snapshot is replaced only if the fence is current and
        unexpired at ``now``, checked atomically with the write; a fenced save never
        stores a task that is not there.

        Raises:
            LeaseLost: ``fence`` is not current and unexpired at ``now``; nothing was
                written.
            TypeError: a fence without ``now``.
            ValueError: the fence is another task's lease.
        """
        ...

    def update(
        self,
        task_id: str,
        change: Callable[[Task], Task | None],
        fence: Lease | None = None,
        *,
        now: datetime | None = None,
    ) -> Task | None:
        """Replace the stored snapshot with ``change(stored)``, atomically.

        The read, ``change`` and the write are one step with respect to every other
        operation (also across processes for a shared file), so two engines changing
        one task (an owner's checkpoint, another process's cancel) never lose each
        other's change. ``change`` gets the stored snapshot and returns the new one (same
        id) or ``None`` to leave it as it is; it runs under the store's lock or inside its
        transaction, so it must be quick and must not call the store. An exception from
        it propagates and nothing is written. With a ``fence`` the step happens only
        while the fence is current and unexpired at ``now``.

        Returns:
            The stored snapshot afterwards (the new one, or the unchanged one), or
            ``None`` when no task ``task_id`` is stored (``change`` is not called).

        Raises:
            LeaseLost: ``fence`` is not current and unexpired at ``now`` (``change`` is
                not called, nothing is written).
            TypeError: a fence without ``now``.
            ValueError: the fence is another task's lease, or ``change`` returned a task
                with another id.
        """
        ...

    def claim(self, task_id: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Take the task for ``owner`` until ``now + duration``, if it is claimable at ``now``.

        One atomic compare-and-set: the task must be unfinished and have no live lease.

        Returns:
            The new lease (its token one more than the task's previous one), or ``None``
            when the task is finished, unknown, or someone (``owner`` too) holds a live
            lease on it.

        Raises:
            ValueError: ``owner`` is not a non-empty string, or ``duration`` is not
                positive.
        """
        ...

    def claimable(self, now: datetime, limit: int) -> list[str]:
        """Ids of the tasks claimable at ``now``, oldest first (creation order), at most
        ``limit`` of them (none when ``limit <= 0``)."""
        ...

    def renew(self, lease: Lease, now: datetime, duration: timedelta) -> Lease:
        """Extend a lease that is current and unexpired at ``now`` to ``now + duration``.

        Returns:
            The lease with its new ``expires_at`` (same token).

        Raises:
            LeaseLost: the lease is not current and unexpired at ``now``.
            ValueError: ``duration`` is not positive.
        """
        ...

    def release(self, lease: Lease) -> None:
        """Give the task up at once if ``lease`` is current (expired or not): another
        engine may claim it immediately. A stale lease is ignored (never raises)."""
        ...

    def lease_of(self, task_id: str) -> Lease | None:
        """The task's current lease, live or expired; ``None`` if the task was never
        leased, its lease was released, or the task is unknown."""
        ...

    def check_fence(self, lease: Lease, now: datetime) -> None:
        """Raise unless ``lease`` is current and unexpired at ``now``.

        Meant to be called inside the batch's transaction before its item writes: on a
        SQLite store sharing the items' database the check and the writes commit or roll
        back together, and no claim can come between them.

        Raises:
            LeaseLost: it is not.
        """
        ...

    def lead(self, role: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Lead ``role`` for ``owner`` until ``now + duration``, unless another owner leads it
        live at ``now``.

        One atomic compare-and-set. When nobody leads the role live (never led, resigned,
        or ``expires_at <= now``) a new term starts, its token one more than the role's
        previous one (1 the first time), also for an owner whose own term expired. When
        ``owner`` leads it live, the term is renewed: same token, new end.

        Returns:
            The leader lease (its ``task_id`` is ``role``), or ``None`` when another owner
            leads the role live at ``now``.

        Raises:
            ValueError: ``role`` or ``owner`` is not a non-empty string, or ``duration``
                is not positive.
        """
        ...

    def resign(self, lease: Lease) -> None:
        """Give the role up at once if ``lease`` is its current term (same owner and token,
        expired or not): another owner may lead it immediately. A stale lease is ignored
        (never raises)."""
        ...

    def leader_of(self, role: str) -> Lease | None:
        """The role's current term, live or expired; ``None`` if the role was never led or
        its leader resigned."""
        ...

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or ``None``."""
        ...

    def page(self, limit: int, offset: int) -> tuple[list[Task], int]:
        """Up to ``limit`` tasks after skipping ``offset``, newest first, and the total.

        Slices (tasks whose ``parent`` is set, docs/slices.md) are neither listed nor
        counted, at a cost of O(page), not O(slices stored).
        """
        ...

    def delete(self, task_ids: Sequence[str]) -> int:
        """Remove these tasks (unknown ids are ignored); return how many were removed."""
        ...

    def unfinished(self) -> list[Task]:
        """Every NEW or RUNNING task, oldest first (what a starting engine must run)."""
        ...

    def expired(self, now: datetime, limit: int) -> list[str]:
        """Ids of finished tasks whose ``expiresAt`` is at or before ``now``, earliest
        first, at most ``limit`` (what the engine's retention sweep deletes).

        The store answers from an index on ``expiresAt``, so a sweep costs the tasks it
        finds, not every stored task.
        """
        ...

    def __len__(self) -> int:
        """How many tasks are stored, slices not counted."""
        ...

    def shares_transactions_with(self, storage: Storage) -> bool:
        """Whether writes made inside ``storage.atomic()`` commit together with ours."""
        ...

    def close(self) -> None:
        """Release resources the store opened itself."""
        ...


class Notice(Protocol):
    """One notification of a :class:`Notifying` store."""

    @property
    def payload(self) -> str:
        """What happened to which task (see :class:`Notifying` and :func:`read_notice`)."""
        ...


class Notices(Protocol):
    """A store's notifications as they arrive, on a connection of their own."""

    def get(self, timeout: float | None = None) -> Notice | None:
        """The next notification, waiting up to ``timeout`` seconds (``None``: until one
        comes); ``None`` when none came in time or :meth:`close` was called.

        Raises:
            StorageError: the connection was lost (notifications may have been missed);
                the engine closes this object and calls ``listen()`` again.
        """
        ...

    def close(self) -> None:
        """Stop listening and release the connection; callable from any thread, it ends a
        :meth:`get` in progress promptly. Idempotent."""
        ...


class Notifying(Protocol):
    """The optional notification capability of a task store (duck-typed: a ``listen()``
    method).

    Every engine sharing the store hears, once each change commits (never for one rolled
    back), a notice whose payload is one of:

    * ``"<id>"``: the task was inserted (kind :data:`NOTICE_NEW`);
    * ``"<id> cancel"``: an update requested a cancel of the RUNNING task;
    * ``"<id> done"``: the task was stored finished (at least once; a save of an already
      finished task may say it again).

    Notices are hints, never the truth: a listener reads the store before acting on one,
    and a notice may be lost (a dropped connection), so engines keep polling as well.
    :func:`read_notice` parses a payload; one it cannot place is a bare id, whose kind
    ``new`` also covers a cancel notified by a store that named no kinds.
    """

    def listen(self) -> Notices:
        """Start receiving notifications (what is committed after this call returns).

        Raises:
            StorageError: the store cannot listen now (the engine tries again later).
        """
        ...


def read_notice(payload: str) -> tuple[str, str]:
    """``(task id, kind)`` of a notice's payload (see :class:`Notifying`).

    A payload whose last word is not a kind is a bare task id (kind :data:`NOTICE_NEW`),
    spaces and all. So a task whose own id ends in ``" done"`` or ``" cancel"`` is misread
    when it is created: its wake-up then waits for the next poll, nothing worse (notices
    are hints).
    """
    task_id, space, kind = payload.rpartition(" ")
    if space and task_id and kind in (NOTICE_CANCEL, NOTICE_DONE):
        return task_id, kind
    return payload, NOTICE_NEW


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

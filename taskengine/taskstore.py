"""Where tasks live: the ``TaskStore`` protocol and its implementations.

* :class:`MemoryTaskStore` (the default, :mod:`taskengine._memory_taskstore`) keeps
  :class:`~taskengine.task.Task` snapshots in process memory;
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

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from taskengine._lease import (
    Lease,
    new_owner_id,
)
from taskengine._memory_taskstore import MemoryTaskStore
from taskengine._sqlite_taskstore import SQLiteTaskStore
from taskengine.task import Task

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

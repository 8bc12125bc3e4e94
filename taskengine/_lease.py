"""Leases: an engine's claim on one task or on a role, and the rules both task stores share.

A lease names its holder (``owner``, an engine id from :func:`new_owner_id`), its end
(``expires_at``) and its fencing token, which grows by one on every claim of the task, so
a write fenced by an older token is refused even while its owner still believes it holds
the task. A *leader lease* is the same record for a role (a service that must run in one
engine at a time) instead of a task; :func:`next_term` decides who leads. The ownership
contract itself is in the ``TaskStore`` protocol's docstring (taskengine/taskstore.py)
and docs/durability.md.

Expiry is kept and compared in whole milliseconds since the Unix epoch, the precision of
every timestamp the engine records: a lease taken at ``now`` for ``duration`` ends at
``epoch_ms(now + duration)`` (rounded down), and it is live at ``now`` while
``epoch_ms(now) < expiry``. Both stores decide with these integers, so they agree to the
millisecond (and SQLite compares plain integers, with no text format to get wrong).
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Protocol

import attrs

from taskengine._values import as_utc, encodable

if TYPE_CHECKING:
    from taskengine.task import Task

__all__ = [
    "LEASE_RAN_OUT",
    "OWNER_EXITED",
    "WAITING",
    "Held",
    "Lease",
    "LeaseOf",
    "TasksAndLeases",
    "check_owner",
    "check_role",
    "epoch_ms",
    "fence_time",
    "from_epoch_ms",
    "holder",
    "is_waiting",
    "lease_until",
    "new_owner_id",
    "next_term",
    "owner_is_gone",
    "owner_label",
    "shown_holder",
    "task_holder",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


@attrs.frozen
class Lease:
    """An engine's claim on one task (or leadership of one role): who holds it, until
    when, and its fencing token.

    Attributes:
        task_id: the leased task; for a leader lease (``TaskStore.lead``), the role.
            Roles and tasks are separate namespaces: a role may share a task's name.
        owner: the holder's engine id (see :func:`new_owner_id`).
        token: the fencing token: 1 for the task's first claim, one more on every claim
            after it (also when the same owner claims again after its lease expired);
            for a role, one more on every new term of leadership (a renewal keeps it).
        expires_at: when the lease ends, aware UTC in whole milliseconds; it is live at
            ``now`` while ``now < expires_at``.
    """

    task_id: str
    owner: str
    token: int
    expires_at: datetime

    def is_live(self, now: datetime) -> bool:
        """Whether the lease has not expired at ``now`` (it may have been superseded)."""
        return epoch_ms(now) < epoch_ms(self.expires_at)


def new_owner_id() -> str:
    """A fresh engine id, ``host:pid:8-hex``: readable, and unique per call."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def check_owner(owner: object) -> str:
    """``owner`` if it can name a lease holder (a non-empty, storable string).

    Raises:
        ValueError: it cannot.
    """
    if type(owner) is not str or not owner or not encodable(owner):
        raise ValueError(f"a lease owner must be a non-empty string, got {owner!r}")
    return owner


def check_role(role: object) -> str:
    """``role`` if it can name a leader role (a non-empty, storable string).

    Raises:
        ValueError: it cannot.
    """
    if type(role) is not str or not role or not encodable(role):
        raise ValueError(f"a leader role must be a non-empty string, got {role!r}")
    return role


Held = tuple[str | None, int, int]
"""A stored lease: owner (``None`` once released or resigned), token, expiry in epoch ms."""


def next_term(held: Held | None, owner: str, at: int, until: int) -> Held | None:
    """The leadership of a role after ``owner`` asks to lead it at ``at`` until ``until``
    (both epoch ms), given the stored one (``None``: never held); ``None`` if refused.

    Nobody leads live (never held, resigned, or expired at ``at``): a new term for
    ``owner``, token previous + 1. ``owner`` itself leads live: renewed to ``until``,
    same token. Another owner leads live: refused.
    """
    if held is None:
        return (owner, 1, until)
    holder, token, expires = held
    if holder is None or expires <= at:
        return (owner, token + 1, until)
    return (owner, token, until) if holder == owner else None


def epoch_ms(moment: datetime) -> int:
    """``moment`` (naive = UTC) in whole milliseconds since the Unix epoch, rounded down."""
    return (as_utc(moment) - _EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    """The aware UTC datetime of ``ms`` milliseconds since the Unix epoch."""
    return _EPOCH + ms * _MS


def lease_until(now: datetime, duration: timedelta) -> int:
    """The expiry (epoch ms) of a lease taken or renewed at ``now`` for ``duration``.

    Raises:
        ValueError: ``duration`` is not positive.
    """
    if not isinstance(duration, timedelta) or duration <= timedelta(0):
        raise ValueError(f"a lease duration must be a positive timedelta, got {duration!r}")
    return epoch_ms(as_utc(now) + duration)


def fence_time(fence: Lease, task_id: str, now: datetime | None) -> datetime:
    """``now`` for a fenced save of task ``task_id``, checked against the fence.

    Raises:
        TypeError: no ``now`` (a store has no clock: the engine's decides expiry).
        ValueError: the fence is another task's lease.
    """
    if now is None:
        raise TypeError("a fenced save needs now= (the engine's clock decides expiry)")
    if fence.task_id != task_id:
        raise ValueError(f"the fence is for task {fence.task_id!r}, not {task_id!r}")
    return now


# -- who holds a task, as people read it (the CLI's OWNER column, the dashboard) --------


class LeaseOf(Protocol):
    """What :func:`holder` needs of a task store: the lease on a task."""

    def lease_of(self, task_id: str) -> Lease | None:
        """The lease on ``task_id``, or ``None``."""
        ...


class TasksAndLeases(LeaseOf, Protocol):
    """What :func:`task_holder` needs of a task store: tasks by id and their leases."""

    def get(self, task_id: str) -> Task | None:
        """The task ``task_id``, or ``None``."""
        ...


WAITING = "waiting"
"""The holder of an unfinished task no engine has claimed (or one released it)."""
LEASE_RAN_OUT = "waiting (lease ran out)"
"""The holder of an unfinished task whose lease ran out (its owner died elsewhere, or hung)."""
OWNER_EXITED = "waiting (owner exited)"
"""The holder of an unfinished task whose owner is a process of this host that exited."""


def owner_label(owner: str) -> str:
    """An engine id ``host:pid:hex`` as people name a process: ``host/pid``."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return owner
    return f"{parts[0]}/{parts[1]}"


def holder(store: LeaseOf, task: Task, now: datetime) -> str | None:
    """Who holds an unfinished task at ``now``: the owner's engine id (a live lease), or
    the reason it waits (:data:`WAITING`, :data:`LEASE_RAN_OUT`, :data:`OWNER_EXITED`).
    ``None`` for a finished task. The command line's OWNER column and the dashboard show
    it."""
    if task.is_finished:
        return None
    lease = store.lease_of(task.id)
    if lease is None:
        return WAITING
    if not lease.is_live(now):
        return LEASE_RAN_OUT
    if owner_is_gone(lease.owner):
        return OWNER_EXITED
    return lease.owner


def task_holder(store: TasksAndLeases, task: Task, now: datetime) -> str | None:
    """:func:`holder` of a task, or for a sliced task that started, of its slices: the
    first one a live engine holds, else the first unfinished one's waiting reason."""
    if not task.is_sliced or task.is_finished:
        return holder(store, task, now)
    reason: str | None = None
    for part_id in task.slice_ids:
        part = store.get(part_id)
        if part is None or part.is_finished:
            continue
        held_by = holder(store, part, now)
        if not is_waiting(held_by):
            return held_by
        reason = reason or held_by
    return reason or WAITING


def is_waiting(held_by: str | None) -> bool:
    """Whether a :func:`holder` answer means that any adopting engine may take the task."""
    return held_by in (WAITING, LEASE_RAN_OUT, OWNER_EXITED)


def shown_holder(held_by: str | None) -> str | None:
    """A :func:`holder` answer as people read it: an owner as ``host/pid``, why a task
    waits as it is, ``None`` for a finished task."""
    if held_by is None or is_waiting(held_by):
        return held_by
    return owner_label(held_by)


def owner_is_gone(owner: str) -> bool:
    """Whether ``owner`` (``host:pid:hex``) names a process of this host that has exited.

    Only a certain answer is ``True``: another host, this very process, a live process
    (or one we may not signal), or an id of another form all count as alive.
    """
    parts = owner.rsplit(":", 2)
    if len(parts) != 3:
        return False
    host, pid_text, _ = parts
    if host != socket.gethostname() or not pid_text.isascii() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError, OverflowError):
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A process that exited but was not reaped yet (Linux ``/proc``; ``False`` elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return bool(fields) and fields[0] in ("Z", "X")

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

import attrs

from taskengine._values import as_utc, encodable

__all__ = [
    "Held",
    "Lease",
    "check_owner",
    "check_role",
    "epoch_ms",
    "fence_time",
    "from_epoch_ms",
    "lease_until",
    "new_owner_id",
    "next_term",
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

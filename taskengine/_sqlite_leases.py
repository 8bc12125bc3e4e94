"""The SQLite task store's ownership operations: task leases and leader leases.

:class:`SQLiteLeases` is the part of :class:`~taskengine._sqlite_taskstore.SQLiteTaskStore`
that keeps who holds what (the ownership operations of the
:class:`~taskengine.taskstore.TaskStore` protocol: ``claim``, ``claimable``, ``renew``,
``release``, ``lease_of``, ``check_fence``, ``lead``, ``resign``, ``leader_of``), in the
task rows' lease columns and the leaders table (:mod:`taskengine._sqlite_taskschema`).
Lease expiries are epoch milliseconds compared in SQL, by the rule of
:mod:`taskengine._lease`. Each write is one ``BEGIN IMMEDIATE`` transaction on the store's
:class:`~taskengine.storage._database.Database`, so a read and the write that depends on
it are never split by another process; inside the shared storage's ``atomic()`` they join
its transaction. A read-only view of a file too old for leases (or for leaders) answers
as if nothing were held.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import attrs

from taskengine._lease import (
    Held,
    Lease,
    check_owner,
    check_role,
    epoch_ms,
    from_epoch_ms,
    lease_until,
    next_term,
)
from taskengine._sqlite_taskschema import LEADERS, TABLE
from taskengine._values import INT64_MAX, encodable
from taskengine.errors import LeaseLost
from taskengine.storage._database import Database

__all__ = ["CURRENT", "FENCE", "UNFINISHED", "SQLiteLeases", "bindable"]

UNFINISHED = "status IN ('NEW', 'RUNNING')"
"""The condition of an unfinished task's row."""
_FREE = "(lease_owner IS NULL OR lease_expires <= ?)"
# A sliced task that started runs as its slices: it is never claimed again.
_NOT_STARTED_SLICED = "NOT (status = 'RUNNING' AND slices > 1)"
CURRENT = "lease_owner = ? AND lease_token = ?"
"""The condition of a row leased by ``(owner, token)``."""
_CLAIM = (
    f"UPDATE {TABLE} SET lease_owner = ?, lease_token = lease_token + 1, lease_expires = ?"
    f" WHERE id = ? AND {UNFINISHED} AND {_FREE}"
)
# RETURNING reads the new token in the claiming statement itself (SQLite 3.35+); before
# that, the token is read back in the same transaction, which is just as atomic.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
_RENEW = f"UPDATE {TABLE} SET lease_expires = ? WHERE id = ? AND {CURRENT} AND lease_expires > ?"
_RELEASE = f"UPDATE {TABLE} SET lease_owner = NULL, lease_expires = NULL WHERE id = ? AND {CURRENT}"
FENCE = f"SELECT 1 FROM {TABLE} WHERE id = ? AND {CURRENT} AND lease_expires > ?"
"""A row iff ``(id, owner, token)`` holds a lease unexpired at ``(epoch ms)``."""
_LEADER = f"SELECT owner, token, expires FROM {LEADERS} WHERE role = ?"
_SET_LEADER = f"INSERT OR REPLACE INTO {LEADERS} (role, owner, token, expires) VALUES (?, ?, ?, ?)"
_RESIGN = (
    f"UPDATE {LEADERS} SET owner = NULL, expires = NULL WHERE role = ? AND owner = ? AND token = ?"
)


def bindable(text: object) -> bool:
    """Whether SQLite can bind ``text`` as an id (a non-string is left to the caller); no
    stored id has a lone surrogate, which SQLite cannot bind."""
    return type(text) is not str or text.isascii() or encodable(text)


class SQLiteLeases:
    """The ownership operations of ``SQLiteTaskStore`` (a base class of it: see the
    :class:`~taskengine.taskstore.TaskStore` protocol for each operation's contract).

    Attributes:
        database: the store's database.
    """

    database: Database
    _absent: bool  # no task table (a read-only view of a file without one)
    _hidden: set[str]  # tasks deleted from a read-only view
    _leases: bool  # the file has the lease columns
    _has_leaders: bool  # the file has the leaders table
    _slices: bool  # the file has the slice columns

    def claim(self, task_id: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Take the task if it is unfinished and not leased (see :meth:`TaskStore.claim`)."""
        check_owner(owner)
        until = lease_until(now, duration)
        if not bindable(task_id):
            return None
        args = (owner, until, task_id, epoch_ms(now))
        with self.database.transaction() as conn:
            if _RETURNING:
                found = conn.execute(f"{_CLAIM} RETURNING lease_token", args).fetchall()
                token = found[0][0] if found else None
            elif conn.execute(_CLAIM, args).rowcount:
                token = conn.execute(
                    f"SELECT lease_token FROM {TABLE} WHERE id = ?", (task_id,)
                ).fetchone()[0]
            else:
                token = None
        return None if token is None else Lease(task_id, owner, int(token), from_epoch_ms(until))

    def claimable(self, now: datetime, limit: int) -> list[str]:
        """Unfinished, unleased task ids, oldest first (see :meth:`TaskStore.claimable`)."""
        if self._absent or limit <= 0:
            return []
        limit = min(limit + len(self._hidden), INT64_MAX)
        with self.database.read() as conn:
            if self._leases:
                sliced = f" AND {_NOT_STARTED_SLICED}" if self._slices else ""
                found = conn.execute(
                    f"SELECT id FROM {TABLE} WHERE {UNFINISHED} AND {_FREE}{sliced}"
                    " ORDER BY seq LIMIT ?",
                    (epoch_ms(now), limit),
                ).fetchall()
            else:
                found = conn.execute(
                    f"SELECT id FROM {TABLE} WHERE {UNFINISHED} ORDER BY seq LIMIT ?", (limit,)
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
        if bindable(lease.task_id):
            args = (until, lease.task_id, lease.owner, lease.token, epoch_ms(now))
            with self.database.transaction() as conn:
                renewed = conn.execute(_RENEW, args).rowcount
        if not renewed:
            raise LeaseLost(lease.task_id, lease.owner, lease.token)
        return attrs.evolve(lease, expires_at=from_epoch_ms(until))

    def release(self, lease: Lease) -> None:
        """Give the task up now if the lease is current (see :meth:`TaskStore.release`)."""
        if not bindable(lease.task_id):
            return
        with self.database.transaction() as conn:
            conn.execute(_RELEASE, (lease.task_id, lease.owner, lease.token))

    def lease_of(self, task_id: str) -> Lease | None:
        """The task's lease, live or expired (see :meth:`TaskStore.lease_of`)."""
        if not self._leases or task_id in self._hidden or not bindable(task_id):
            return None
        with self.database.read() as conn:
            row = conn.execute(
                f"SELECT lease_owner, lease_token, lease_expires FROM {TABLE} WHERE id = ?",
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
        if self._leases and bindable(lease.task_id):
            args = (lease.task_id, lease.owner, lease.token, epoch_ms(now))
            with self.database.read() as conn:
                row = conn.execute(FENCE, args).fetchone()
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
        if not self._has_leaders or not bindable(lease.task_id):
            return
        with self.database.transaction() as conn:
            conn.execute(_RESIGN, (lease.task_id, lease.owner, lease.token))

    def leader_of(self, role: str) -> Lease | None:
        """The role's current term, live or expired (see :meth:`TaskStore.leader_of`)."""
        if not self._has_leaders or not bindable(role):
            return None
        with self.database.read() as conn:
            row = conn.execute(_LEADER, (role,)).fetchone()
        if row is None or row[0] is None:
            return None
        return Lease(role, row[0], int(row[1]), from_epoch_ms(int(row[2])))

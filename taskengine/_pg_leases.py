"""The PostgreSQL task store's ownership operations: task leases and leader leases.

:class:`PgLeases` is the part of :class:`~taskengine._pg_taskstore.PostgresTaskStore` that
keeps who holds what (the ownership operations of the
:class:`~taskengine.taskstore.TaskStore` protocol: ``claim``, ``claimable``, ``renew``,
``release``, ``lease_of``, ``check_fence``, ``lead``, ``resign``, ``leader_of``), in the
task rows' lease columns and the leaders table (:mod:`taskengine._pg_taskschema`). Each
is one statement whose conditions PostgreSQL checks on the row it changes (the
compare-and-set described in :mod:`taskengine._pg_taskstore`); ``check_fence`` locks the
task's row (``FOR NO KEY UPDATE``), so inside a transaction no claim can take the task
until it ends; ``claimable`` skips rows a transaction in progress is changing. Lease
expiries are epoch milliseconds compared in SQL, by the rule of :mod:`taskengine._lease`.
An id, owner or role PostgreSQL text cannot hold (:func:`storable`) matches nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from taskengine._lease import (
    Lease,
    check_owner,
    check_role,
    epoch_ms,
    from_epoch_ms,
    lease_until,
)
from taskengine._pg_taskschema import LEADERS, TABLE
from taskengine._values import INT64_MAX, encodable
from taskengine.errors import LeaseLost
from taskengine.storage._pgdatabase import PgDatabase

__all__ = ["CURRENT", "LIVE", "UNFINISHED", "PgLeases", "storable"]

UNFINISHED = "status IN ('NEW', 'RUNNING')"
"""The condition of an unfinished task's row."""
CURRENT = "lease_owner = %s AND lease_token = %s"
"""The condition of a row leased by ``(owner, token)``."""
LIVE = f"{CURRENT} AND lease_expires > %s"
"""The condition of a row leased by ``(owner, token)``, unexpired at ``(epoch ms)``."""
_FENCE = f"SELECT 1 FROM {TABLE} WHERE id = %s AND {LIVE} FOR NO KEY UPDATE"
_CLAIM = (
    f"UPDATE {TABLE} SET lease_owner = %s, lease_token = lease_token + 1, lease_expires = %s"
    f" WHERE id = %s AND {UNFINISHED} AND (lease_owner IS NULL OR lease_expires <= %s)"
    " RETURNING lease_token"
)
_CLAIMABLE = (
    f"SELECT id FROM {TABLE} WHERE {UNFINISHED}"
    " AND (lease_owner IS NULL OR lease_expires <= %s)"
    # A sliced task that started runs as its slices: it is never claimed again.
    " AND NOT (status = 'RUNNING' AND slices > 1)"
    " ORDER BY seq LIMIT %s FOR SHARE SKIP LOCKED"
)
_RENEW = f"UPDATE {TABLE} SET lease_expires = %s WHERE id = %s AND {LIVE}"
_RELEASE = (
    f"UPDATE {TABLE} SET lease_owner = NULL, lease_expires = NULL WHERE id = %s AND {CURRENT}"
)
_LEASE = f"SELECT lease_owner, lease_token, lease_expires FROM {TABLE} WHERE id = %s"
# A new term (token + 1) unless ``owner`` leads live already (a renewal keeps the token);
# refused (no row) while another owner leads live. SET reads the row as it was.
_LEAD = (
    f"INSERT INTO {LEADERS} AS held (role, owner, token, expires)"
    " VALUES (%(role)s, %(owner)s, 1, %(until)s)"
    " ON CONFLICT (role) DO UPDATE SET"
    " token = CASE WHEN held.owner = EXCLUDED.owner AND held.expires > %(at)s"
    " THEN held.token ELSE held.token + 1 END,"
    " owner = EXCLUDED.owner, expires = EXCLUDED.expires"
    " WHERE held.owner IS NULL OR held.expires <= %(at)s OR held.owner = EXCLUDED.owner"
    " RETURNING token"
)
_RESIGN = (
    f"UPDATE {LEADERS} SET owner = NULL, expires = NULL"
    " WHERE role = %s AND owner = %s AND token = %s"
)
_LEADER = f"SELECT owner, token, expires FROM {LEADERS} WHERE role = %s"


def storable(text: object) -> bool:
    """Whether ``text`` is a string PostgreSQL text can hold (no NUL, no lone surrogate):
    any other id, owner or role is never stored, so it matches nothing."""
    return type(text) is str and "\x00" not in text and (text.isascii() or encodable(text))


def _check_name(name: str, kind: str) -> None:
    """Refuse an owner or role with a NUL, which PostgreSQL text cannot hold.

    Raises:
        ValueError: it has one.
    """
    if "\x00" in name:
        raise ValueError(f"a {kind} must not contain NUL for PostgreSQL, got {name!r}")


class PgLeases:
    """The ownership operations of ``PostgresTaskStore`` (a base class of it: see the
    :class:`~taskengine.taskstore.TaskStore` protocol for each operation's contract).

    Attributes:
        database: the store's database.
    """

    database: PgDatabase

    def claim(self, task_id: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Take the task if it is unfinished and not leased, in one ``UPDATE ...
        RETURNING`` (see :meth:`TaskStore.claim`)."""
        _check_name(check_owner(owner), "lease owner")
        until = lease_until(now, duration)
        if not storable(task_id):
            return None
        with self.database.transaction() as conn:
            found = conn.execute(_CLAIM, (owner, until, task_id, epoch_ms(now))).fetchone()
        return None if found is None else Lease(task_id, owner, int(found[0]), from_epoch_ms(until))

    def claimable(self, now: datetime, limit: int) -> list[str]:
        """Unfinished, unleased task ids, oldest first (see :meth:`TaskStore.claimable`).

        Rows a transaction in progress is changing (a claim, an update, a batch past its
        fence check) are skipped. Called inside a transaction, the rows listed stay
        share-locked (no claim can take them) until it ends.
        """
        if limit <= 0:
            return []
        with self.database.read() as conn:
            found = conn.execute(_CLAIMABLE, (epoch_ms(now), min(limit, INT64_MAX))).fetchall()
        return [row[0] for row in found]

    def renew(self, lease: Lease, now: datetime, duration: timedelta) -> Lease:
        """Extend a current lease to ``now + duration`` (see :meth:`TaskStore.renew`).

        Raises:
            LeaseLost: the lease is not current and unexpired at ``now``.
        """
        until = lease_until(now, duration)
        renewed = 0
        if storable(lease.task_id) and storable(lease.owner):
            args = (until, lease.task_id, lease.owner, lease.token, epoch_ms(now))
            with self.database.transaction() as conn:
                renewed = conn.execute(_RENEW, args).rowcount
        if not renewed:
            raise LeaseLost(lease.task_id, lease.owner, lease.token)
        return attrs.evolve(lease, expires_at=from_epoch_ms(until))

    def release(self, lease: Lease) -> None:
        """Give the task up now if the lease is current (see :meth:`TaskStore.release`)."""
        if not (storable(lease.task_id) and storable(lease.owner)):
            return
        with self.database.transaction() as conn:
            conn.execute(_RELEASE, (lease.task_id, lease.owner, lease.token))

    def lease_of(self, task_id: str) -> Lease | None:
        """The task's lease, live or expired (see :meth:`TaskStore.lease_of`)."""
        if not storable(task_id):
            return None
        with self.database.read() as conn:
            row = conn.execute(_LEASE, (task_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        return Lease(task_id, row[0], int(row[1]), from_epoch_ms(int(row[2])))

    def check_fence(self, lease: Lease, now: datetime) -> None:
        """Raise unless the lease is current and unexpired (see :meth:`TaskStore.check_fence`).

        The check locks the task's row: inside a transaction (or the shared storage's
        ``atomic()``) no claim can take the task until it ends, so the check and the
        writes that follow commit or roll back together.

        Raises:
            LeaseLost: it is not.
        """
        row = None
        if storable(lease.task_id) and storable(lease.owner):
            args = (lease.task_id, lease.owner, lease.token, epoch_ms(now))
            with self.database.read() as conn:
                row = conn.execute(_FENCE, args).fetchone()
        if row is None:
            raise LeaseLost(lease.task_id, lease.owner, lease.token)

    def lead(self, role: str, owner: str, now: datetime, duration: timedelta) -> Lease | None:
        """Lead the role unless another owner leads it live, in one ``INSERT ... ON
        CONFLICT DO UPDATE`` (see :meth:`TaskStore.lead`)."""
        _check_name(check_role(role), "leader role")
        _check_name(check_owner(owner), "lease owner")
        until = lease_until(now, duration)
        args = {"role": role, "owner": owner, "until": until, "at": epoch_ms(now)}
        with self.database.transaction() as conn:
            found = conn.execute(_LEAD, args).fetchone()
        return None if found is None else Lease(role, owner, int(found[0]), from_epoch_ms(until))

    def resign(self, lease: Lease) -> None:
        """Give the role up now if the lease is current (see :meth:`TaskStore.resign`)."""
        if not (storable(lease.task_id) and storable(lease.owner)):
            return
        with self.database.transaction() as conn:
            conn.execute(_RESIGN, (lease.task_id, lease.owner, lease.token))

    def leader_of(self, role: str) -> Lease | None:
        """The role's current term, live or expired (see :meth:`TaskStore.leader_of`)."""
        if not storable(role):
            return None
        with self.database.read() as conn:
            row = conn.execute(_LEADER, (role,)).fetchone()
        if row is None or row[0] is None:
            return None
        return Lease(role, row[0], int(row[1]), from_epoch_ms(int(row[2])))

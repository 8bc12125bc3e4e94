"""``PostgresTaskStore``: tasks in a PostgreSQL database, shared by engines on many machines.

The tasks are rows of ``taskengine_tasks`` in the SQLite task store's row format
(:mod:`taskengine._taskrow`), with the lease in three columns beside them; leader leases
are rows of ``taskengine_leaders``, one per role: the tables and their versions are
:mod:`taskengine._pg_taskschema`, the ownership operations :mod:`taskengine._pg_leases`.

Every operation is one statement, or one transaction, whose conditions PostgreSQL
checks on the row it changes: under ``READ COMMITTED`` a statement that finds the row
locked by another transaction waits for it and evaluates its ``WHERE`` again on the row as
that transaction left it, so two engines never both win a compare-and-set:

* ``claim``, ``renew``, ``release``, ``resign`` and a fenced ``save`` are one ``UPDATE`` each,
  conditioned on status, owner, token and expiry (``claim`` reads the new token with
  ``RETURNING``); ``lead`` is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``;
* ``update`` locks the row (``SELECT ... FOR NO KEY UPDATE``, with the fence's conditions
  in its ``WHERE``), runs ``change`` and writes, in one transaction;
* ``check_fence`` locks the row the same way: inside a transaction (the engine's batch in
  ``storage.atomic()`` on a shared :class:`PgDatabase`) no claim can take the task until
  that transaction ends, so the check and the batch's writes commit or roll back
  together;
* ``claimable`` skips rows a transaction in progress is changing (``FOR SHARE SKIP
  LOCKED``): a poller never waits for, nor then tries to claim, a task a claim in flight
  or a batch holds; pollers do not hide tasks from each other (share locks do not
  conflict), so a task is never missed for a poll interval just because another engine
  looked at it;
* ``delete`` locks its rows in id order first, so two deletes of overlapping ids cannot
  deadlock.

**Notifications.** Writes send ``NOTIFY taskengine_tasks`` (:data:`CHANNEL`) when their
transaction commits (never for one rolled back), with the payloads of the task store's
notification protocol (:class:`taskengine.taskstore.Notifying`): ``insert`` the task id;
an ``update`` that requests a cancel (the stored task had no ``cancel_requested``, the new
one has) ``"<id> cancel"``; an ``update`` that finishes the task, and a ``save`` of a
finished one, ``"<id> done"``. So an idle engine starts a new task, an owner sees a
cancel, and ``wait()`` in any process returns, without waiting for a poll
(:meth:`PostgresTaskStore.listen`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taskengine import _taskrow as rows
from taskengine._lease import (
    Lease,
    epoch_ms,
    fence_time,
)
from taskengine._pg_leases import LIVE, UNFINISHED, PgLeases, storable
from taskengine._pg_taskschema import TABLE, open_schema
from taskengine._values import INT64_MAX
from taskengine.errors import LeaseLost, StorageError
from taskengine.storage._pgdatabase import Listener, PgDatabase
from taskengine.task import Task, TaskStatus, format_timestamp

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = ["CHANNEL", "PostgresTaskStore"]

CHANNEL = "taskengine_tasks"
"""The ``NOTIFY`` channel of new tasks, cancel requests and finished tasks; payloads
``"<id>"``, ``"<id> cancel"`` and ``"<id> done"`` (:class:`taskengine.taskstore.Notifying`)."""

# The kinds of taskengine.taskstore.Notifying (a layer above: the payloads are written here).
_CANCELLED = " cancel"
_DONE = " done"

_CHECKPOINT = 11  # the checkpoint's index in a row (rows.COLUMNS order)
_BYTES = (_CHECKPOINT, rows.UNTIL)  # item ids: UTF-8 bytes (an id may hold NUL)
_NAMES = [column.strip() for column in rows.COLUMNS.split(",")]
_MARKS = ", ".join(["%s"] * len(_NAMES))
_SET = ", ".join(f"{name} = %s" for name in _NAMES[1:])
_INSERT = (
    f"WITH added AS (INSERT INTO {TABLE} ({rows.COLUMNS}) VALUES ({_MARKS})"
    " ON CONFLICT (id) DO NOTHING RETURNING id)"
    f" SELECT pg_notify('{CHANNEL}', id) FROM added"
)
_UPSERT = (
    f"INSERT INTO {TABLE} ({rows.COLUMNS}) VALUES ({_MARKS}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in _NAMES[1:])
)
_UPDATE = f"UPDATE {TABLE} SET {_SET} WHERE id = %s"
_FENCED_SAVE = f"{_UPDATE} AND {LIVE}"
_LOCK = f"SELECT {rows.COLUMNS} FROM {TABLE} WHERE id = %s"
_FENCED_LOCK = f"{_LOCK} AND {LIVE}"
_DELETE = (
    f"DELETE FROM {TABLE} WHERE id IN"
    f" (SELECT id FROM {TABLE} WHERE id = ANY(%s) ORDER BY id FOR UPDATE)"
)


class PostgresTaskStore(PgLeases):
    """Tasks in a PostgreSQL database: durable, and shared by engines on many machines.

    Args:
        source: a DSN (``postgresql://user@host/db``: the store opens and owns its own
            :class:`PgDatabase`), a :class:`PgDatabase`, or anything with a ``.database``
            attribute holding one (a ``PostgresStorage``); the last two are shared and not
            closed by :meth:`close`. Sharing the item storage's database makes each batch
            and its checkpoint commit in one transaction.

    The first use of a database creates the tables (once, also when many processes start
    together). Every operation is atomic across processes and machines (the module
    docstring says how); the ownership rules are the ``TaskStore`` contract's.

    Raises:
        TypeError: ``source`` is none of these.
        PostgresError: the server cannot be reached, or the database holds a newer task
            store schema (it is left untouched).
    """

    channel = CHANNEL
    """The ``NOTIFY`` channel of new tasks, cancel requests and finished tasks."""
    keeps_slices = True
    """It keeps a task's slice fields and hides slices from pages (docs/slices.md)."""

    def __init__(self, source: str | PgDatabase | Any) -> None:
        if isinstance(source, PgDatabase):
            self.database, self._owned = source, False
        elif isinstance(shared := getattr(source, "database", None), PgDatabase):
            self.database, self._owned = shared, False
        elif isinstance(source, str):
            self.database, self._owned = PgDatabase(source), True
        else:
            raise TypeError(
                "PostgresTaskStore needs a DSN, a PgDatabase or a PostgresStorage, "
                f"got {type(source).__name__}"
            )
        # Per RUNNING task: its options and failures objects and their encoded columns,
        # so the update after every batch encodes only what changed (tasks are immutable).
        self._encoded: dict[str, tuple[object, str, object, str]] = {}
        try:
            open_schema(self.database)
        except BaseException:
            if self._owned:
                self.database.close()
            raise

    def __repr__(self) -> str:
        return f"<PostgresTaskStore {self.database.location}>"

    def _row(self, task: Task) -> list[Any]:
        """The row of ``task`` as query parameters (the checkpoint as UTF-8 bytes)."""
        if not storable(task.id):
            raise StorageError(f"a task id PostgreSQL cannot store: {task.id!r}")
        if task.status is not TaskStatus.RUNNING:
            self._encoded.pop(task.id, None)
            row = rows.encode(task)
        else:
            cached = self._encoded.get(task.id)
            options = failures = None
            if cached is not None:
                if cached[0] is task.options:
                    options = cached[1]
                if cached[2] is task.failures:
                    failures = cached[3]
            row = rows.encode(task, options, failures)
            self._encoded[task.id] = (task.options, row[13], task.failures, row[14])
        params: list[Any] = list(row)
        for index in _BYTES:
            if params[index] is not None:
                params[index] = params[index].encode("utf-8", "surrogatepass")
        return params

    def insert(self, task: Task) -> None:
        """Store a new task and notify :data:`CHANNEL` when it commits (see
        :meth:`TaskStore.insert`).

        Raises:
            ValueError: a task with this id is already stored.
            StorageError: the id holds NUL or a lone surrogate (PostgreSQL text cannot).
        """
        params = self._row(task)
        with self.database.transaction() as conn:
            if conn.execute(_INSERT, params).fetchone() is None:
                raise ValueError(f"task {task.id!r} already stored")

    def save(self, task: Task, fence: Lease | None = None, *, now: datetime | None = None) -> None:
        """Replace a stored snapshot, or store it; with a fence, only while it is current
        at ``now``, checked by the ``UPDATE`` itself (see :meth:`TaskStore.save`). The
        lease columns are never written here. Saving a finished task notifies
        :data:`CHANNEL` (``"<id> done"``, also when it was finished before).

        Raises:
            LeaseLost: ``fence`` is not current and unexpired; nothing was written.
            StorageError: unfenced, the id holds NUL or a lone surrogate.
        """
        if fence is None:
            params = self._row(task)
            with self.database.transaction() as conn:
                conn.execute(_UPSERT, params)
                if task.is_finished:
                    self.database.notify(CHANNEL, task.id + _DONE)
            return
        at = epoch_ms(fence_time(fence, task.id, now))
        written = 0
        if storable(task.id) and storable(fence.owner):
            args = (*self._row(task)[1:], task.id, fence.owner, fence.token, at)
            with self.database.transaction() as conn:
                written = conn.execute(_FENCED_SAVE, args).rowcount
                if written and task.is_finished:
                    self.database.notify(CHANNEL, task.id + _DONE)
        if not written:
            raise LeaseLost(fence.task_id, fence.owner, fence.token)

    def update(
        self,
        task_id: str,
        change: Callable[[Task], Task | None],
        fence: Lease | None = None,
        *,
        now: datetime | None = None,
    ) -> Task | None:
        """Replace a snapshot with ``change(stored)`` in one transaction holding the row's
        lock from the read to the write (see :meth:`TaskStore.update`); a change that
        requests a cancel, or finishes the task, notifies :data:`CHANNEL`.

        Raises:
            LeaseLost: ``fence`` is not current and unexpired at ``now``.
        """
        at = None if fence is None else epoch_ms(fence_time(fence, task_id, now))
        if not storable(task_id) or (fence is not None and not storable(fence.owner)):
            if fence is not None:
                raise LeaseLost(fence.task_id, fence.owner, fence.token)
            return None
        with self.database.transaction() as conn:
            if fence is None:
                found = conn.execute(f"{_LOCK} FOR NO KEY UPDATE", (task_id,)).fetchone()
            else:
                args = (task_id, fence.owner, fence.token, at)
                found = conn.execute(f"{_FENCED_LOCK} FOR NO KEY UPDATE", args).fetchone()
                if found is None:
                    raise LeaseLost(fence.task_id, fence.owner, fence.token)
            if found is None:
                return None
            stored = _decode(found)
            updated = change(stored)
            if updated is None:
                return stored
            if not isinstance(updated, Task) or updated.id != task_id:
                raise ValueError(f"an update of task {task_id!r} must return that task or None")
            params = self._row(updated)
            conn.execute(_UPDATE, (*params[1:], task_id))
            if updated.is_finished and not stored.is_finished:
                self.database.notify(CHANNEL, task_id + _DONE)
            elif updated.cancel_requested and not stored.cancel_requested:
                self.database.notify(CHANNEL, task_id + _CANCELLED)
            return updated

    # -- reads and housekeeping ----------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        """The stored snapshot, or ``None``."""
        if not storable(task_id):
            return None
        with self.database.read() as conn:
            row = conn.execute(_LOCK, (task_id,)).fetchone()
        return None if row is None else _decode(row)

    def page(self, limit: int, offset: int) -> tuple[list[Task], int]:
        """A page, newest first, and the total (see :meth:`TaskStore.page`)."""
        limit = max(0, min(limit, INT64_MAX))
        offset = max(0, min(offset, INT64_MAX))
        with self.database.read() as conn:
            counted = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE parent IS NULL").fetchone()
            found = conn.execute(
                f"SELECT {rows.COLUMNS} FROM {TABLE} WHERE parent IS NULL"
                " ORDER BY seq DESC LIMIT %s OFFSET %s",
                (limit, offset),
            ).fetchall()
        return [_decode(row) for row in found], 0 if counted is None else int(counted[0])

    def delete(self, task_ids: Sequence[str]) -> int:
        """Remove tasks, their leases with them (see :meth:`TaskStore.delete`)."""
        wanted = sorted({task_id for task_id in task_ids if storable(task_id)})
        if not wanted:
            return 0
        with self.database.transaction() as conn:
            removed = max(0, conn.execute(_DELETE, (wanted,)).rowcount)
        for task_id in wanted:
            self._encoded.pop(task_id, None)
        return removed

    def unfinished(self) -> list[Task]:
        """Every NEW or RUNNING task, oldest first."""
        with self.database.read() as conn:
            found = conn.execute(
                f"SELECT {rows.COLUMNS} FROM {TABLE} WHERE {UNFINISHED} ORDER BY seq"
            ).fetchall()
        return [_decode(row) for row in found]

    def slice_counts(self, task_ids: Sequence[str]) -> dict[str, int]:
        """The ``slices`` of each of these tasks that has more than one (what the sweep
        removes with them, docs/slices.md): one indexed read."""
        wanted = [task_id for task_id in task_ids if storable(task_id)]
        if not wanted:
            return {}
        with self.database.read() as conn:
            found = conn.execute(
                f"SELECT id, slices FROM {TABLE} WHERE id = ANY(%s) AND slices > 1", (wanted,)
            ).fetchall()
        return {task_id: int(n) for task_id, n in found}

    def started_sliced(self) -> list[Task]:
        """Every sliced task that started and has not ended, oldest first (what the
        engine's slice housekeeping looks at: docs/slices.md): only those rows are read."""
        with self.database.read() as conn:
            found = conn.execute(
                f"SELECT {rows.COLUMNS} FROM {TABLE}"
                " WHERE status = 'RUNNING' AND slices > 1 ORDER BY seq"
            ).fetchall()
        return [_decode(row) for row in found]

    def expired(self, now: datetime, limit: int) -> list[str]:
        """Ids of tasks expired at ``now``, earliest first (see :meth:`TaskStore.expired`).

        One range read of the ``expires_at`` index: the ISO-8601 UTC text with
        milliseconds sorts as the instants do.
        """
        with self.database.read() as conn:
            found = conn.execute(
                f"SELECT id FROM {TABLE} WHERE expires_at IS NOT NULL AND expires_at <= %s"
                " ORDER BY expires_at, id LIMIT %s",
                (format_timestamp(now), max(0, int(limit))),
            ).fetchall()
        return [task_id for (task_id,) in found]

    def __len__(self) -> int:
        """How many tasks are stored."""
        with self.database.read() as conn:
            row = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE parent IS NULL").fetchone()
        return 0 if row is None else int(row[0])

    def shares_transactions_with(self, storage: Storage) -> bool:
        """Whether ``storage`` writes through this store's :class:`PgDatabase`."""
        return getattr(storage, "database", None) is self.database

    def transaction(self) -> AbstractContextManager[Any]:
        """A transaction on the store's database (reentrant in the calling thread)."""
        return self.database.transaction()

    def listen(self) -> Listener:
        """A listener of :data:`CHANNEL` on a connection of its own (close it when done):
        the :class:`taskengine.taskstore.Notifying` capability, which started engines use.

        Raises:
            PostgresError: the database is closed, or the connection or ``LISTEN`` failed.
        """
        return self.database.listen([CHANNEL])

    def close(self) -> None:
        """Close the database if the store opened it itself. Idempotent."""
        if self._owned:
            self.database.close()


def _decode(row: tuple[Any, ...]) -> Task:
    """The task of a row read as :data:`taskengine._taskrow.COLUMNS`."""
    if row[_CHECKPOINT] is not None or row[rows.UNTIL] is not None:
        values = list(row)
        for index in _BYTES:
            if values[index] is not None:
                values[index] = bytes(values[index]).decode("utf-8", "surrogatepass")
        row = tuple(values)
    return rows.decode(row)

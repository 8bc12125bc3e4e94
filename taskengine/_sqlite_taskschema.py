"""The SQLite task store's tables: their schema, versions and in-place upgrades.

Owns the ``taskengine_tasks`` and ``taskengine_leaders`` tables of
:class:`~taskengine._sqlite_taskstore.SQLiteTaskStore`. The version is the ``taskstore``
component's entry in the file's ``taskengine_schema`` table
(:meth:`~taskengine.storage._database.Database.ensure_schema`):

* 0 — no task table yet: a writer creates it; a read-only view reads as empty;
* 1 — the public task JSON in one ``body`` column (releases before the row format): a
  writer upgrades the file in place, in one transaction (a crash during the upgrade
  leaves the file as it was); a read-only view reads it as it is, without upgrading;
* 2 — the rows without lease columns: a writer adds them in place (``ALTER TABLE ADD
  COLUMN``, in one transaction); a read-only view reads the file as it is, with no task
  leased;
* 3 — version 2 plus the lease columns (``lease_owner``, ``lease_token``,
  ``lease_expires``): a writer adds the leaders table in place (in one transaction); a
  read-only view reads the file as it is, with no role led;
* 4 — version 3 plus the ``taskengine_leaders`` table of leader leases (``role``,
  ``owner``, ``token``, ``expires``): a writer adds the slice columns in place (in one
  transaction); a read-only view reads the file as it is, with no task sliced;
* 5 — the current schema: version 4 plus the slice columns (``parent``, ``slice_until``,
  ``slices``, ``split``; docs/slices.md) and an index of the tasks that are not slices;
* newer — refused with ``StorageError``, and the file is left untouched.

Every upgrade goes straight to the current version, so a file of version 1 to 4 ends at
version 5 too.

:func:`open_schema` is the one entry: it creates, upgrades or checks the tables of a
:class:`~taskengine.storage._database.Database` and says which version the store reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from taskengine import _taskrow as rows
from taskengine.storage._database import Database

__all__ = ["LEADERS", "MARKS", "TABLE", "open_schema"]

_COMPONENT = "taskstore"
_VERSION = 5
TABLE = "taskengine_tasks"
"""The tasks' table."""
LEADERS = "taskengine_leaders"
"""The leader leases' table (version 4 and later)."""
# Lease expiry is an integer (epoch milliseconds), not ISO text like the task's dates: the
# claim compares it with ``now`` in SQL, and integers compare exactly whatever the text
# form of a date; the task's own dates stay text as the row format documents them.
_LEASE_COLUMNS = (
    "lease_owner TEXT",
    "lease_token INTEGER NOT NULL DEFAULT 0",
    "lease_expires INTEGER",
)
_SLICE_COLUMNS = (
    "parent TEXT",
    "slice_until TEXT",
    "slices INTEGER NOT NULL DEFAULT 1",
    "split TEXT",
)
# The tasks lists show (slices are hidden): a page and the total walk this index only.
_TOP_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_top ON {TABLE} (seq) WHERE parent IS NULL"
# A role's row stays when its leader resigns (owner and expires NULL), to keep its token.
_LEADERS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {LEADERS} ("
    "role TEXT PRIMARY KEY, owner TEXT, token INTEGER NOT NULL, expires INTEGER)"
)
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE,"
    " type TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " started_at TEXT,"
    " finished_at TEXT,"
    " expires_at TEXT,"
    " estimated_item_count INTEGER NOT NULL,"
    " items_succeeded INTEGER NOT NULL,"
    " items_failed INTEGER NOT NULL,"
    " cancel_requested INTEGER NOT NULL,"
    " checkpoint TEXT,"
    " options_key TEXT NOT NULL,"
    " options TEXT NOT NULL,"
    " failures TEXT NOT NULL, " + ", ".join((*_LEASE_COLUMNS, *_SLICE_COLUMNS)) + ")",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_status ON {TABLE} (status)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_expiry ON {TABLE} (expires_at)"
    " WHERE expires_at IS NOT NULL",
    _LEADERS_SCHEMA,
    _TOP_INDEX,
)
MARKS = ", ".join("?" * len(rows.COLUMNS.split(",")))
"""The ``?`` marks of a row's columns (:data:`taskengine._taskrow.COLUMNS`)."""


def open_schema(database: Database) -> int:
    """Create, upgrade or check the task tables; return the version the store reads.

    A writer upgrades an older file in place, in one transaction, and reads the current
    version; a read-only database is only checked, and read in the version it holds
    (0 when it has no task table).

    Raises:
        StorageError: the file holds a newer version, or the upgrade failed (the file is
            left as it was).
    """
    if database.read_only:
        return database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)
    if database.schema_version(_COMPONENT) in _UPGRADES:
        with database.transaction() as conn:
            # Another process may have upgraded the file since the version was read.
            upgrade = _UPGRADES.get(database.schema_version(_COMPONENT))
            if upgrade is not None:
                upgrade(database, conn)
    database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)
    return _VERSION


def _upgrade_v1(database: Database, conn: sqlite3.Connection) -> None:
    """Rewrite version-1 rows (the task JSON) as version-2 rows, inside the caller's
    transaction; ``seq`` (the creation order) and the AUTOINCREMENT high mark are kept.
    """
    old = f"{TABLE}_v1"
    conn.execute(f"DROP INDEX IF EXISTS {TABLE}_status")
    conn.execute(f"DROP INDEX IF EXISTS {TABLE}_expiry")
    conn.execute(f"ALTER TABLE {TABLE} RENAME TO {old}")
    database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)
    insert = f"INSERT INTO {TABLE} (seq, {rows.COLUMNS}) VALUES (?, {MARKS})"
    cursor = conn.execute(f"SELECT seq, {rows.COLUMNS_V1} FROM {old} ORDER BY seq")
    while batch := cursor.fetchmany(500):
        conn.executemany(insert, [(row[0], *rows.encode(rows.decode_v1(row[1:]))) for row in batch])
    mark = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (old,)).fetchone()
    if mark is not None:
        conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (TABLE,))
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq)"
            f" SELECT ?, MAX(?, COALESCE((SELECT MAX(seq) FROM {TABLE}), 0))",
            (TABLE, mark[0]),
        )
    conn.execute(f"DROP TABLE {old}")


def _upgrade_v2(database: Database, conn: sqlite3.Connection) -> None:
    """Add the lease columns to version-2 rows (no task leased) and the leaders table,
    inside the caller's transaction, and record the current version.
    """
    for column in (*_LEASE_COLUMNS, *_SLICE_COLUMNS):
        conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column}")
    database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)


def _upgrade_v3(database: Database, conn: sqlite3.Connection) -> None:
    """Add the leaders table (no role led) to a version-3 file, inside the caller's
    transaction, and record the current version; rows and task leases are kept.
    """
    conn.execute(_LEADERS_SCHEMA)
    _upgrade_v4(database, conn)


def _upgrade_v4(database: Database, conn: sqlite3.Connection) -> None:
    """Add the slice columns (no task sliced) and the index of the tasks that are not
    slices, inside the caller's transaction, and record the current version."""
    for column in _SLICE_COLUMNS:
        conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column}")
    database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)


_UPGRADES: dict[int, Callable[[Database, sqlite3.Connection], None]] = {
    1: _upgrade_v1,
    2: _upgrade_v2,
    3: _upgrade_v3,
    4: _upgrade_v4,
}
"""The in-place upgrade from each older version to the current one."""

"""The PostgreSQL task store's tables: their schema and versions.

Owns the tables of :class:`~taskengine._pg_taskstore.PostgresTaskStore`. The tasks are
rows of ``taskengine_tasks`` in the SQLite task store's row format
(:mod:`taskengine._taskrow`), with the lease in three columns beside them; leader leases
are rows of ``taskengine_leaders``, one per role. The schema is the ``taskstore``
component's in ``taskengine_schema`` (:meth:`PgDatabase.ensure_schema`), version 2
(version 1 had no slice columns: opening it adds them in place, in one transaction):

* ``seq`` (``BIGINT`` identity, the creation order), ``id`` (unique), the task's columns as
  :data:`taskengine._taskrow.COLUMNS` writes them (dates as ISO text, counters and
  ``cancel_requested`` as integers, options and failures as JSON text), except
  ``checkpoint``, which is ``BYTEA`` (the cursor's UTF-8): a scan cursor is an item id, an
  item id may hold NUL, and PostgreSQL text cannot;
* ``lease_owner``, ``lease_token`` (0: never claimed), ``lease_expires`` (integer epoch
  milliseconds, compared with ``now`` in SQL);
* the slice columns (docs/slices.md): ``parent``, ``slice_until`` (``BYTEA``, an item id
  like the checkpoint), ``slices`` and ``split`` (JSON text), with an index of the tasks
  that are not slices (the ones lists show);
* ``taskengine_leaders (role, owner, token, expires)``: a resigned role keeps its row, with
  ``owner`` and ``expires`` ``NULL``, so that its token keeps growing.

:func:`open_schema` creates or upgrades them (once, also when many processes start
together) and checks the version.
"""

from __future__ import annotations

from taskengine.storage._pgdatabase import PgDatabase

__all__ = ["LEADERS", "TABLE", "open_schema"]

_COMPONENT = "taskstore"
_VERSION = 2
TABLE = "taskengine_tasks"
"""The tasks' table."""
LEADERS = "taskengine_leaders"
"""The leader leases' table."""
_SLICE_COLUMNS = (
    "parent TEXT",
    "slice_until BYTEA",
    "slices INTEGER NOT NULL DEFAULT 1",
    "split TEXT",
)
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    ' id TEXT COLLATE "C" NOT NULL UNIQUE,'
    " type TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " started_at TEXT,"
    " finished_at TEXT,"
    " expires_at TEXT,"
    " estimated_item_count BIGINT NOT NULL,"
    " items_succeeded BIGINT NOT NULL,"
    " items_failed BIGINT NOT NULL,"
    " cancel_requested SMALLINT NOT NULL,"
    " checkpoint BYTEA,"
    " options_key TEXT NOT NULL,"
    " options TEXT NOT NULL,"
    " failures TEXT NOT NULL,"
    " lease_owner TEXT,"
    " lease_token BIGINT NOT NULL DEFAULT 0,"
    " lease_expires BIGINT)",
    # Version 1 had no slice columns; a new table gets them here too.
    *(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {column}" for column in _SLICE_COLUMNS),
    f"CREATE INDEX IF NOT EXISTS {TABLE}_top ON {TABLE} (seq) WHERE parent IS NULL",
    # Claimers scan the unfinished tasks in creation order; finished ones pile up until
    # their retention ends, so they stay out of this index.
    f"CREATE INDEX IF NOT EXISTS {TABLE}_unfinished ON {TABLE} (seq)"
    " WHERE status IN ('NEW', 'RUNNING')",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_expiry ON {TABLE} (expires_at)"
    " WHERE expires_at IS NOT NULL",
    f"CREATE TABLE IF NOT EXISTS {LEADERS} ("
    ' role TEXT COLLATE "C" PRIMARY KEY, owner TEXT, token BIGINT NOT NULL, expires BIGINT)',
)


def open_schema(database: PgDatabase) -> None:
    """Create the task tables, or upgrade version 1 in place, in one transaction.

    Raises:
        PostgresError: the server cannot be reached, or the database holds a newer task
            store schema (it is left untouched).
    """
    database.ensure_schema(_COMPONENT, _VERSION, _SCHEMA)

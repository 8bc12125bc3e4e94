"""Engine processes on one PostgreSQL database, and the parent's view of it, for the
scale-out and partition tests (tests/core/test_pg_scaleout.py, test_pg_partition.py).

:class:`PgEngines` starts tests/pg_engine_child.py processes (optionally under a command
prefix such as ``ip netns exec <name>``) and kills every one still running at the end;
the :class:`~test_ownership_processes.Engine` handle of each is the SQLite tests' own.
:class:`PgReader` reads tasks, leases, items and sessions as committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_ownership_processes import Engines

from taskengine import PostgresStorage, PostgresTaskStore, Task
from taskengine.taskstore import Lease

CHILD = Path(__file__).parent / "pg_engine_child.py"


class PgEngines(Engines):
    """Starts engine processes on one database (``prefix``: e.g. ``ip netns exec <name>``);
    kills every one still running at the end."""

    child = CHILD


class PgReader:
    """The parent's view of the database: tasks, leases, items and sessions, as committed."""

    def __init__(self, dsn: str) -> None:
        self.storage = PostgresStorage(dsn)
        self.store = PostgresTaskStore(self.storage)

    def task(self, task_id: str) -> Task:
        """The task as last committed."""
        task = self.store.get(task_id)
        assert task is not None, f"task {task_id} is lost"
        return task

    def lease(self, task_id: str) -> Lease | None:
        """The task's lease, live or expired (``None`` when free)."""
        return self.store.lease_of(task_id)

    def items(self, collection: str) -> list[dict[str, Any]]:
        """Every item of the collection, in ``_id`` order."""
        return list(self.storage.find(collection, "LIVE"))

    def busy_sessions(self, application: str) -> int:
        """How many sessions named ``application`` are inside a transaction or a statement
        (they may hold row locks)."""
        with self.storage.database.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                " AND (state <> 'idle' OR xact_start IS NOT NULL)",
                (application,),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def sessions(self, application: str) -> int:
        """How many sessions named ``application`` the server has."""
        with self.storage.database.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (application,),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        """Close the connections."""
        self.store.close()
        self.storage.close()

"""``PostgresStorage`` analyzes a large item set's table before a task when the planner
knows nothing of it (a table filled a moment ago), so that the task's batches run
set-based: from the task's estimate, at most once per ``ANALYZE_EVERY`` seconds, never
inside the caller's transaction, never for a small item set. Against a real server."""

from __future__ import annotations

from contextlib import closing
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from taskengine.filters import compile_filter
from taskengine.storage import postgres as postgres_module
from taskengine.storage.postgres import PgDatabase, PostgresStorage

pytestmark = pytest.mark.postgres

EVEN = compile_filter({"n": {"$mod": [2, 0]}})


def _analyzed(dsn: str) -> bool:
    """Whether the items table has statistics (``reltuples`` is -1 before ANALYZE)."""
    with closing(psycopg.connect(dsn, autocommit=True)) as conn:
        row = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = 'taskengine_items'::regclass"
        ).fetchone()
    assert row is not None
    return float(row[0]) >= 0


@pytest.fixture
def filled(pg_database: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A storage over 600 items never analyzed, "large" above 500 items."""
    monkeypatch.setattr(postgres_module, "ANALYZE_ABOVE", 500)
    database = PgDatabase(pg_database)
    storage = PostgresStorage(database)
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": f"{k:04d}", "n": k} for k in range(600)])
    storage.create_collection("small")
    storage.insert_items("small", "LIVE", [{"_id": f"{k:04d}", "n": k} for k in range(100)])
    yield storage
    database.close()


@pytest.mark.parametrize("accept", [EVEN, None])
def test_an_estimate_of_a_large_item_set_analyzes_a_table_without_statistics(
    filled: PostgresStorage, pg_database: str, accept: Any
) -> None:
    assert not _analyzed(pg_database)
    filled.estimate_count("small", "LIVE", accept)  # 100 items: not worth it
    assert not _analyzed(pg_database)
    with filled.atomic():  # inside the caller's transaction: never
        filled.estimate_count("c", "LIVE", accept)
    assert not _analyzed(pg_database)
    count = filled.estimate_count("c", "LIVE", accept)
    assert _analyzed(pg_database)
    assert count.value == (300 if accept is not None else 600)


def test_analyze_runs_at_most_once_a_while(
    filled: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the statistics stay unknown (a role that may not analyze gets a warning
    only), every estimate would analyze again: at most once per ANALYZE_EVERY."""
    runs: list[int] = []
    real = postgres_module._analyze

    def counted(conn: Any) -> bool:
        ran = real(conn)
        runs.append(int(ran))
        return ran

    now = [1000.0]
    monkeypatch.setattr(postgres_module, "_analyze", counted)
    monkeypatch.setattr(postgres_module, "_has_statistics", lambda conn: False)
    monkeypatch.setattr(postgres_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    seen = []
    for step in (0.0, 1.0, postgres_module.ANALYZE_EVERY - 2.0, 1.5):
        now[0] += step
        filled.estimate_count("c", "LIVE", EVEN)
        seen.append(sum(runs))
    assert seen == [1, 1, 1, 2]


def test_a_failing_analyze_leaves_the_estimate_and_waits_before_the_next(
    filled: PostgresStorage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Analyzing is only an optimization: when it fails, the estimate is still given, a
    warning says why, and the next try waits ANALYZE_EVERY seconds."""
    tries: list[int] = []

    def failing(conn: Any) -> bool:
        tries.append(1)
        conn.execute("ANALYZE no_such_table")  # a PostgreSQL error
        return True

    monkeypatch.setattr(postgres_module, "_analyze", failing)
    with caplog.at_level("WARNING", logger="taskengine.storage"):
        first = filled.estimate_count("c", "LIVE", EVEN)
        second = filled.estimate_count("c", "LIVE", EVEN)
    assert (first.value, second.value) == (300, 300)
    assert tries == [1]
    assert "could not analyze the items table" in caplog.text
    assert "no_such_table" in caplog.text

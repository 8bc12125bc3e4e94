"""Storage schema 3 on PostgreSQL: the partial index of the rows without jsonb.

A set-based delete asks whether its key window holds a row the filter's SQL leaves
undecided (``data IS NULL``); the partial index ``taskengine_items_undecided`` answers
without reading the window's rows a second time. A version 2 database gets the index
when it is opened; a batch then reads its window's rows once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from taskengine.filters import compile_filter
from taskengine.storage import postgres as postgres_module
from taskengine.storage._pgitems import COMPONENT, SCHEMA_VERSION, UNDECIDED_INDEX
from taskengine.storage.postgres import PgDatabase, PostgresStorage
from taskengine.tasktypes._changes import DELETE_MATCHED

pytestmark = pytest.mark.postgres

_INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'taskengine_items'"
# Rows of the items table fetched from the heap by this transaction so far (index and
# sequential reads; an index-only read of a page marked all-visible fetches none).
_READ = (
    "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
    " FROM pg_stat_xact_user_tables WHERE relname = 'taskengine_items'"
)


def _raw(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(sql)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def _vacuum(dsn: str) -> None:
    """VACUUM ANALYZE the items table so that every page is marked all-visible: the test
    server commits asynchronously, and VACUUM cannot mark a page whose rows' commit is
    not yet flushed, so a commit with ``synchronous_commit`` on comes first (it flushes
    the WAL up to itself: it writes some, a temporary table's catalog rows)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("CREATE TEMPORARY TABLE flushed (a integer)")
        conn.execute("DROP TABLE flushed")
        conn.execute("VACUUM ANALYZE taskengine_items")
        row = conn.execute(
            "SELECT relpages, relallvisible FROM pg_class WHERE relname = 'taskengine_items'"
        ).fetchone()
    assert row is not None
    assert row[0] == row[1], row


def _indexes(dsn: str) -> dict[str, str]:
    return {str(name): str(text) for name, text in _raw(dsn, _INDEXES)}


@pytest.fixture
def database(pg_database: str) -> Iterator[PgDatabase]:
    with PgDatabase(pg_database) as opened:
        yield opened


def test_schema_3_has_the_partial_index(pg_database: str) -> None:
    """A new database gets version 3 and the index of the rows whose data is NULL."""
    assert SCHEMA_VERSION == 3
    PostgresStorage(pg_database).close()
    definition = _indexes(pg_database)[UNDECIDED_INDEX]
    assert definition.endswith("(coll, env, id) WHERE (data IS NULL)"), definition
    assert _raw(pg_database, "SELECT version FROM taskengine_schema WHERE component = 'storage'") \
        == [(3,)]  # fmt: skip


def test_a_version_2_database_gets_the_index_in_place(pg_database: str) -> None:
    """A database written by schema 2 (no partial index) is upgraded when opened: its
    items stay, the index holds exactly their rows without jsonb, and the version is 3."""
    with PostgresStorage(pg_database) as storage:
        storage.create_collection("c")
        storage.insert_items(
            "c",
            "LIVE",
            [{"_id": f"{k:03d}", "s": "x\x00" if k % 7 == 0 else "x"} for k in range(50)],
        )
    _raw(pg_database, f"DROP INDEX {UNDECIDED_INDEX}")
    _raw(pg_database, "UPDATE taskengine_schema SET version = 2 WHERE component = 'storage'")
    assert UNDECIDED_INDEX not in _indexes(pg_database)
    with PostgresStorage(pg_database) as storage:
        assert storage.database.schema_version(COMPONENT) == SCHEMA_VERSION
        assert storage.count("c", "LIVE").value == 50
        assert storage.count("c", "LIVE", compile_filter({"s": "x"})).value == 42
    assert UNDECIDED_INDEX in _indexes(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT id FROM taskengine_items WHERE coll = 1 AND env = 0 AND data IS NULL"
        ).fetchall()
        text = " ".join(row[0] for row in plan)
        assert UNDECIDED_INDEX in text, text
        rows = conn.execute(
            "SELECT id FROM taskengine_items WHERE coll = 1 AND env = 0 AND data IS NULL"
            " ORDER BY id"
        ).fetchall()
    assert [row[0] for row in rows] == [f"{k:03d}" for k in range(0, 50, 7)]


@pytest.mark.parametrize("has_index", [True, False])
def test_a_batch_reads_its_window_once(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, has_index: bool
) -> None:
    """On an analyzed and vacuumed table, a one-pass batch with a few rows without jsonb
    fetches about its windows' rows once (the DELETEs' reads) plus the undecided ones,
    not each window again to look for them. Without the index (the control) it does
    read them again."""
    monkeypatch.setattr(postgres_module, "_has_statistics", lambda conn: True)
    with PgDatabase(pg_database) as database:
        storage = PostgresStorage(database)
        storage.create_collection("c")
        storage.insert_items(
            "c",
            "LIVE",
            [
                {"_id": f"{k:06d}", "n": k % 5, **({"z": "\x00"} if k % 100 == 0 else {})}
                for k in range(20000)
            ],
        )
        if not has_index:
            _raw(pg_database, f"DROP INDEX {UNDECIDED_INDEX}")
        _vacuum(pg_database)
        flt = compile_filter({"n": {"$lt": 2}})
        with storage.atomic(), database.read() as conn:
            before = conn.execute(_READ).fetchone()
            result = storage.change_matching(
                "c", "LIVE", after="009999", limit=1000, filter=flt, change=DELETE_MATCHED
            )
            after = conn.execute(_READ).fetchone()
    assert before is not None
    assert after is not None
    # From key 10000: 1,000 keys (400 match), then a window sized for the 600 still
    # needed (1,200 keys: at most two per candidate); 2 in 5 match, and the rows without
    # jsonb (k % 100 == 0, n == 0) are deleted after the check in Python.
    assert (result.written, result.cursor) == (880, "012199")
    keys = 2200
    fetched = after[0] - before[0]
    if has_index:
        assert fetched < keys * 1.1, fetched
    else:
        assert fetched > keys * 1.9, fetched

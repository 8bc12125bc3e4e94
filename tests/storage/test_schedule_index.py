"""The ScheduleIndex capability: every adapter's due query equals the Python rule.

The rule is :func:`taskengine.storage.schedule.date_key` (``due_by_scan`` is its
reference on a scan). The SQL adapters compute the key from the stored ISO text in SQL:
these laws check it against Python over dates with every offset form (minutes, seconds,
microseconds), naive dates, microseconds, equal dates, both fields, values that are not
dates, nested fields, deleted and rewritten items and the sandbox.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from taskengine.errors import CollectionNotFound, InvalidRequest, SandboxNotEnabled
from taskengine.storage import MemoryStorage, SQLiteStorage, Storage
from taskengine.storage.schedule import (
    DATE_FIELDS,
    MAX_KEY,
    MIN_KEY,
    ScheduleIndex,
    date_key,
    due_by_scan,
    has_schedule_index,
    key_date,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

_offsets = st.one_of(
    st.sampled_from([timedelta(0), timedelta(hours=2), timedelta(hours=-5, minutes=-30)]),
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59, seconds=-59, microseconds=-999999),
        max_value=timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
    ),
)
_zones = st.none() | st.builds(timezone, _offsets)
# Dates near T0 (so that several are due and some equal), and anywhere in years 1..9999
# (the edges: instants outside years 1..9999 in UTC are not scheduled).
_near = st.builds(
    lambda minutes, micro, zone: (
        (T0 + timedelta(minutes=minutes, microseconds=micro)).astimezone(zone or timezone.utc)
        if zone
        else (T0 + timedelta(minutes=minutes, microseconds=micro)).replace(tzinfo=None)
    ),
    st.integers(-5, 5),
    st.sampled_from([0, 1, 999999]),
    _zones,
)
_anywhere = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=_zones
)
_dates = _near | _anywhere
_not_dates = st.sampled_from(
    [
        "2026-01-01T00:00:00Z",
        17,
        None,
        {"$dates": 1},
        [T0],
        # dicts that are not exactly {"$date": ISO}: stored as dicts, not dates
        {"$date": "2026-01-01T00:00:00+00:00", "x": 1},
        {"x": 1, "$date": "2026-01-01T00:00:00"},
        {"$date": 5},
        {"$date": None},
        {"$date": ["2026-01-01T00:00:00Z"]},
    ]
)
_field_value = _dates | _not_dates


@st.composite
def _item(draw: st.DrawFn, item_id: str) -> dict[str, Any]:
    item: dict[str, Any] = {"_id": item_id}
    if draw(st.booleans()):
        item["title"] = draw(st.text(max_size=3))
    for field in DATE_FIELDS:
        if draw(st.integers(0, 2)):
            item[field] = draw(_field_value)
    if draw(st.integers(0, 5)) == 0:
        item["nested"] = {DATE_FIELDS[0]: draw(_dates)}  # not a scheduled date
    return item


@st.composite
def _scenario(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(st.text("abcxyz", min_size=1, max_size=3), unique=True, max_size=12))
    live = [draw(_item(item_id)) for item_id in ids]
    sandbox = [draw(_item(item_id)) for item_id in ids[: len(ids) // 2]]
    rewritten = draw(st.lists(st.sampled_from(ids), max_size=4)) if ids else []
    rewrites = [draw(_item(item_id)) for item_id in rewritten]
    deletes = draw(st.lists(st.sampled_from(ids), max_size=3)) if ids else []
    stored = [v for item in live for f in DATE_FIELDS if isinstance(v := item.get(f), datetime)]
    now = draw(st.sampled_from(stored) | _dates if stored else _dates)
    limit = draw(st.sampled_from([1, 2, 3, 500]))
    return {
        "live": live,
        "sandbox": sandbox,
        "rewrites": rewrites,
        "deletes": deletes,
        "now": now,
        "limit": limit,
    }


_names = itertools.count()

_EDGES: dict[str, Any] = {
    # a document holding U+0000 (PostgreSQL's JSON functions refuse its escape), a dict
    # that is not exactly {"$date": ISO}, both fields, equal dates, the sandbox
    "live": [
        {"_id": "a", "title": "\x00", "_draftDate": T0},
        {"_id": "b", "_publishDate": {"$date": "2025-01-01T00:00:00+00:00", "x": 1}},
        {"_id": "c", "_publishDate": T0, "_draftDate": T0 - timedelta(microseconds=1)},
        {"_id": "d", "nested": {"_publishDate": T0}, "_draftDate": datetime(2026, 1, 1)},
    ],
    "sandbox": [{"_id": "a", "title": "\x00", "_publishDate": T0}],
    "rewrites": [{"_id": "d", "_draftDate": T0 + timedelta(minutes=1)}],
    "deletes": ["c"],
    "now": T0,
    "limit": 2,
}


def _check_scenario(storage: Storage, case: dict[str, Any]) -> None:
    """Store the scenario in a new collection; the index answers as the reference does."""
    assert isinstance(storage, ScheduleIndex)
    name = f"c{next(_names)}"
    storage.create_collection(name, sandbox=True, publish_plugin=True)
    storage.insert_items(name, "LIVE", case["live"])
    storage.insert_items(name, "SANDBOX", case["sandbox"])
    with storage.atomic():
        if case["rewrites"]:
            storage.replace_items(name, "LIVE", case["rewrites"])
        storage.delete_items(name, "LIVE", case["deletes"])
    now, limit = case["now"], case["limit"]
    for env in ("LIVE", "SANDBOX"):
        expected = due_by_scan(storage, name, env, now, limit=limit)
        assert storage.due_items(name, env, now, limit=limit) == expected
        keys = [
            key
            for item in storage.find(name, env)
            for field in DATE_FIELDS
            if (key := date_key(item.get(field))) is not None
        ]
        assert storage.next_due_date(name, env) == (key_date(min(keys)) if keys else None)
    if isinstance(storage, MemoryStorage):
        storage._check()


@settings(max_examples=150, deadline=None)
@given(case=_scenario())
@example(case=_EDGES)
def test_memory_due_query_is_the_python_rule(case: dict[str, Any]) -> None:
    """MemoryStorage's heap answers exactly as the reference scan."""
    _check_scenario(MemoryStorage(), case)


@settings(max_examples=150, deadline=None)
@given(case=_scenario())
@example(case=_EDGES)
def test_sqlite_due_query_is_the_python_rule(case: dict[str, Any]) -> None:
    """SQLite's key expression orders and bounds dates exactly as Python."""
    with SQLiteStorage(":memory:") as storage:
        _check_scenario(storage, case)


@pytest.mark.postgres
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_scenario())
@example(case=_EDGES)
def test_postgres_due_query_is_the_python_rule(pg_module_dsn: str, case: dict[str, Any]) -> None:
    """PostgreSQL's key function and generated columns agree with Python."""
    from taskengine.storage.postgres import PostgresStorage

    with PostgresStorage(pg_module_dsn) as storage:
        _check_scenario(storage, case)


@given(value=_dates)
def test_date_key_is_the_utc_instant(value: datetime) -> None:
    """The key orders as the instant: it is the UTC microseconds since the epoch."""
    key = date_key(value)
    aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        instant = aware.astimezone(timezone.utc)
    except OverflowError:
        assert key is None
        return
    if instant.year < 1 or instant.year > 9999:  # pragma: no cover - astimezone raises
        assert key is None
        return
    assert key is not None
    assert MIN_KEY <= key <= MAX_KEY
    assert key_date(key) == instant


def test_sqlite_keys_equal_python_at_the_edges() -> None:
    """The SQL expression at the representable edges and for every offset form."""
    from taskengine.storage._schedulesql import sqlite_key

    values = [
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # year 0 in UTC
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),  # year 10000
        datetime(1969, 12, 31, 23, 59, 59, 999999),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(seconds=-1, microseconds=1))),
        datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=timezone(timedelta(hours=5, seconds=30))),
    ]
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        storage.insert_items(
            "c", "LIVE", [{"_id": str(n), "_draftDate": v} for n, v in enumerate(values)]
        )
        with storage.database.read() as conn:
            rows = conn.execute(
                f"SELECT id, {sqlite_key('_draftDate')} FROM taskengine_items"
            ).fetchall()
    got = dict(rows)
    for n, value in enumerate(values):
        key = date_key(value)
        if key is not None:
            assert got[str(n)] == key, value
        else:
            assert got[str(n)] is None or not MIN_KEY <= got[str(n)] <= MAX_KEY, value


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Both in-process adapters, with a publish collection 'pub' (sandbox) and 'plain'."""
    storage: Storage = (
        MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "s.db")
    )
    storage.create_collection("pub", sandbox=True, publish_plugin=True)
    storage.create_collection("plain")
    yield storage
    if isinstance(storage, SQLiteStorage):
        storage.close()


def test_bad_input_gets_typed_errors(store: Storage) -> None:
    """Unknown collections, a sandbox that is not there, bad limits and nows are typed."""
    assert isinstance(store, ScheduleIndex)
    with pytest.raises(CollectionNotFound):
        store.due_items("nope", "LIVE", T0, limit=5)
    with pytest.raises(CollectionNotFound):
        store.next_due_date("nope", "LIVE")
    with pytest.raises(SandboxNotEnabled):
        store.due_items("plain", "SANDBOX", T0, limit=5)
    with pytest.raises(InvalidRequest, match="limit"):
        store.due_items("pub", "LIVE", T0, limit=0)
    with pytest.raises(InvalidRequest, match="now"):
        store.due_items("pub", "LIVE", "2026-01-01", limit=5)  # type: ignore[arg-type]
    assert store.due_items("pub", "LIVE", datetime.min, limit=5) == []
    assert store.next_due_date("pub", "SANDBOX") is None


def test_rolled_back_block_leaves_the_index_as_it_was(store: Storage) -> None:
    """Writes undone by a failing atomic block are undone in the index too."""
    assert isinstance(store, ScheduleIndex)
    store.insert_items("pub", "LIVE", [{"_id": "a", "_publishDate": T0}, {"_id": "b"}])

    def undone() -> None:
        with store.atomic():
            store.replace_items("pub", "LIVE", [{"_id": "a"}, {"_id": "b", "_draftDate": T0}])
            store.insert_items("pub", "LIVE", [{"_id": "c", "_draftDate": T0}])
            store.delete_items("pub", "LIVE", ["a"])
            raise RuntimeError

    with pytest.raises(RuntimeError):
        undone()
    assert store.due_items("pub", "LIVE", T0, limit=5) == [("a", T0)]
    if isinstance(store, MemoryStorage):
        store._check()


def test_capability_can_be_taken_away() -> None:
    """A subclass setting due_items = None has no schedule index (the scheduler then
    keeps its own timeline)."""

    class Plain(MemoryStorage):
        due_items = None  # type: ignore[assignment]

    assert has_schedule_index(MemoryStorage())
    assert not has_schedule_index(Plain())


def test_sqlite_queries_read_the_index(tmp_path: Path) -> None:
    """The due and next-date queries are range reads of the partial indexes."""
    from taskengine.storage.sqlite import _DUE, _NEXT

    with SQLiteStorage(tmp_path / "s.db") as storage, storage.database.read() as conn:
        for field in DATE_FIELDS:
            for sql, params in ((_DUE[field], (1, 0, 0, 0, 1)), (_NEXT[field], (1, 0, 0, 0))):
                plan = " ".join(
                    row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)
                )
                assert "USING INDEX taskengine_items_" in plan, plan
                assert "TEMP B-TREE" not in plan, plan


def test_sqlite_version_1_file_gets_the_index_in_place(tmp_path: Path) -> None:
    """A file written before the index (storage schema 1: positive collection ids, no
    index) is upgraded when opened: publish-plugin collections get negative ids, their
    items move with them, and their dates are indexed."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE taskengine_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)
            WITHOUT ROWID;
        INSERT INTO taskengine_schema VALUES ('storage', 1);
        CREATE TABLE taskengine_collections (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            sandbox INTEGER NOT NULL, publish_plugin INTEGER NOT NULL);
        CREATE TABLE taskengine_items (coll INTEGER NOT NULL, env INTEGER NOT NULL,
            id TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (coll, env, id)) WITHOUT ROWID;
        INSERT INTO taskengine_collections VALUES (1, 'plain', 0, 0), (2, 'pub', 1, 1);
        INSERT INTO taskengine_items VALUES
            (1, 0, 'p', '{"_id":"p","_publishDate":{"$date":"2020-01-01T00:00:00"}}'),
            (2, 0, 'a', '{"_id":"a","_publishDate":{"$date":"2026-01-01T00:00:00+00:00"}}'),
            (2, 1, 's', '{"_id":"s","_draftDate":{"$date":"2026-01-01T01:00:00+01:00"}}'),
            (2, 0, 'b', '{"_id":"b"}');
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    with SQLiteStorage(path) as storage:
        assert storage.database.schema_version("storage") == 2
        assert storage.due_items("pub", "LIVE", T0, limit=5) == [("a", T0)]
        assert storage.due_items("pub", "SANDBOX", T0, limit=5) == [("s", T0)]
        assert [item["_id"] for item in storage.find("pub", "LIVE")] == ["a", "b"]
        assert storage.get_item("plain", "LIVE", "p") is not None
        storage.create_collection("pub2", publish_plugin=True)
        storage.create_collection("plain2")
        with storage.database.read() as conn:
            ids = dict(conn.execute("SELECT name, id FROM taskengine_collections"))
            names = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
    assert ids["plain"] > 0
    assert ids["plain2"] > 0
    assert ids["pub"] < 0
    assert ids["pub2"] < ids["pub"]
    assert {"taskengine_items_publish_due", "taskengine_items_draft_due"} <= names


@pytest.mark.postgres
def test_postgres_version_1_database_gets_the_columns_in_place(pg_database: str) -> None:
    """A database written before the index (storage schema 1) is upgraded when opened;
    the queries use the partial indexes."""
    import psycopg

    from taskengine.storage._pgitems import SCHEMA_VERSION
    from taskengine.storage._schedulesql import PG_COLUMN
    from taskengine.storage.postgres import _DUE, PostgresStorage

    with PostgresStorage(pg_database) as storage:
        storage.create_collection("pub", publish_plugin=True)
        storage.insert_items("pub", "LIVE", [{"_id": "a", "_publishDate": T0}, {"_id": "b"}])
    with psycopg.connect(pg_database, autocommit=True) as conn:
        for column in PG_COLUMN.values():
            conn.execute(f"ALTER TABLE taskengine_items DROP COLUMN {column}")
        conn.execute("DROP FUNCTION taskengine_date_key(json)")
        conn.execute("UPDATE taskengine_schema SET version = 1 WHERE component = 'storage'")
    with PostgresStorage(pg_database) as storage:
        assert storage.database.schema_version("storage") == SCHEMA_VERSION
        assert storage.due_items("pub", "LIVE", T0, limit=5) == [("a", T0)]
        assert storage.next_due_date("pub", "LIVE") == T0
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        for field in DATE_FIELDS:
            plan = conn.execute("EXPLAIN " + _DUE[field], (1, 0, 0, 0, 1)).fetchall()
            text = " ".join(row[0] for row in plan)
            assert "_due" in text, text
            assert "Index" in text, text


@pytest.mark.parametrize("rewrite", ["remove", "set"])
def test_memory_batch_that_takes_dates_away_unindexes_them(rewrite: str) -> None:
    # A set-based batch replacing dated items by undated ones (cancel scheduling, or a
    # date field set to a string) must take their entries out of the index.
    from taskengine.tasktypes._changes import RemoveFields, SetField

    storage = MemoryStorage()
    storage.create_collection("c", publish_plugin=True)
    # Undated items of the shape the dated ones get: a shape the index knows holds none.
    storage.insert_items("c", "LIVE", [{"_id": f"u{n}", "n": n} for n in range(3)])
    storage.insert_items(
        "c", "LIVE", [{"_id": f"{n:02d}", "_publishDate": T0, "n": n} for n in range(6)]
    )
    change = RemoveFields(DATE_FIELDS) if rewrite == "remove" else SetField("_publishDate", "x")
    storage.change_matching("c", "LIVE", after=None, limit=100, filter=None, change=change)
    storage._check()
    assert storage.due_items("c", "LIVE", T0 + timedelta(days=1), limit=10) == []
    assert storage.next_due_date("c", "LIVE") is None

"""PostgresStorage against a real server: the conformance suite, agreement with
MemoryStorage, exact values, id order, schema, errors, transactions, sessions, threads
and an engine run."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from pg_server import drop_database
from test_storage_atomic import OPS, apply, contents

from taskengine import TaskEngine, TaskStatus
from taskengine.errors import (
    CollectionNotFound,
    DuplicateItem,
    InvalidItem,
    InvalidRequest,
    StorageError,
)
from taskengine.storage import MemoryStorage, Storage
from taskengine.storage._pgitems import COMPONENT, SCHEMA_VERSION
from taskengine.storage._pgkeys import key, keys, lower_bound, unkey
from taskengine.storage.codec import admit_text
from taskengine.storage.postgres import PgDatabase, PostgresError, PostgresStorage
from taskengine.testing import StorageConformance, agreement_machine, same_value

WAIT = 10.0
"""The longest a test waits for another thread."""


@pytest.fixture(scope="module")
def shared_dsn(pg_module_dsn: str) -> str:
    """The DSN of one database for the whole module (a new database for each test costs
    0.1-0.3 s on a busy machine; emptying this one costs about 1 ms)."""
    return pg_module_dsn


@pytest.fixture(scope="module")
def shared(pg_module_database: PgDatabase) -> PgDatabase:
    """A PgDatabase on the module's database, holding the storage tables."""
    return pg_module_database


@pytest.fixture
def storage(shared: PgDatabase) -> PostgresStorage:
    """An empty PostgresStorage on the module's database (not closed: it shares it)."""
    return _emptied(shared)


def _emptied(database: PgDatabase) -> PostgresStorage:
    """A storage on ``database`` with every collection and item deleted (cheaper than a
    new database for each hypothesis example)."""
    with database.transaction() as conn:
        conn.execute("DELETE FROM taskengine_items")
        conn.execute("DELETE FROM taskengine_collections")
    return PostgresStorage(database)


def _raw(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` as another session sees them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(sql, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


class TestPostgresConformance(StorageConformance):
    """PostgresStorage passes every conformance check (each on emptied tables)."""

    @pytest.fixture
    def storage(self, shared: PgDatabase) -> Storage:
        """An empty PostgresStorage on the module's database."""
        return _emptied(shared)


# -- agreement and hypothesis laws ---------------------------------------------------------


def test_postgres_and_memory_agree(shared: PgDatabase) -> None:
    """The same random operations on PostgresStorage and MemoryStorage give equal results."""
    machine = agreement_machine(lambda: _emptied(shared))
    # Half the profile's examples (each step is a few round trips to the server).
    examples = max(10, settings().max_examples // 2)
    run_state_machine_as_test(
        machine, settings=settings(settings(), max_examples=examples, stateful_step_count=20)
    )


_SURROGATES: Any = ("Cs",)
_text = st.text(st.characters(blacklist_categories=_SURROGATES), max_size=5)
_keys = st.text(
    st.sampled_from(["\x00", "\x01", "\x02", "a", "b", "é", "\uffff", "\U00010000"]),
    min_size=1,
    max_size=4,
)


def test_values_round_trip_exactly(shared: PgDatabase) -> None:
    """Every storable value (NUL in strings and keys included) comes back exactly."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | _text
        | _keys
        | st.datetimes(timezones=st.none() | st.just(timezone.utc))
    )
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(_text | _keys, inner, max_size=3)
        ),
        max_leaves=10,
    )

    @given(doc=st.dictionaries(_text | _keys, values, max_size=5), item_id=_keys | _text)
    @settings(max_examples=60)
    def round_trip(doc: dict[str, Any], item_id: str) -> None:
        if not item_id:
            return
        storage = _emptied(shared)
        item = {**doc, "_id": item_id}
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [item])
        assert same_value(storage.get_item("c", "LIVE", item_id), item)
        assert same_value(storage.scan("c", "LIVE").items, [item])
        storage.replace_items("c", "LIVE", [{**item, "again": [item_id]}])
        assert same_value(list(storage.find("c", "LIVE")), [{**item, "again": [item_id]}])

    round_trip()


def test_pages_tile_ids_in_code_point_order(shared: PgDatabase) -> None:
    """Paging with any limit and cursor (NUL, U+0001, surrogates) follows Python str order."""

    @given(
        ids=st.sets(_keys, max_size=25),
        limit=st.integers(min_value=1, max_value=6),
        after=st.none() | _keys | st.sampled_from(["\ud800", "a\udfff", "\x00\ud800x"]),
    )
    @settings(max_examples=60)
    def tiles(ids: set[str], limit: int, after: str | None) -> None:
        storage = _emptied(shared)
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": i} for i in ids])
        seen: list[str] = []
        cursor = after
        while True:
            page = storage.scan("c", "LIVE", after=cursor, limit=limit)
            assert len(page.items) <= limit
            seen.extend(item["_id"] for item in page.items)
            if page.cursor is None:
                break
            cursor = page.cursor
        assert seen == sorted(i for i in ids if after is None or i > after)
        assert storage.count("c", "LIVE", lambda doc: True).value == len(ids)

    tiles()


def test_write_results_partition_the_batch(shared: PgDatabase) -> None:
    """replace/delete report each distinct id once: done if it was stored, else missing."""

    @given(stored=st.sets(_keys, max_size=12), batch=st.lists(_keys | st.just(""), max_size=12))
    @settings(max_examples=60)
    def partition(stored: set[str], batch: list[str]) -> None:
        storage = _emptied(shared)
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": i} for i in stored])
        distinct = list(dict.fromkeys(batch))
        replaced = storage.replace_items("c", "LIVE", [{"_id": i, "r": 1} for i in batch if i])
        assert replaced.done == tuple(i for i in distinct if i in stored)
        assert replaced.missing == tuple(i for i in distinct if i and i not in stored)
        deleted = storage.delete_items("c", "LIVE", batch)
        assert deleted.done == replaced.done
        assert deleted.missing == tuple(i for i in distinct if i not in stored)
        left = [item["_id"] for item in storage.find("c", "LIVE")]
        assert left == sorted(stored - set(batch))

    partition()


def test_atomic_rollback_leaves_storage_as_before(shared: PgDatabase) -> None:
    """A failed block (savepoints nested in a transaction) leaves the storage as before it."""

    @given(setup=OPS, ops=OPS, outer_fails=st.booleans())
    @settings(max_examples=40)
    def rolled_back(setup: list[Any], ops: list[Any], outer_fails: bool) -> None:
        storage = _emptied(shared)
        expected = MemoryStorage()
        apply(storage, setup, skip_failing=True)
        apply(expected, setup, skip_failing=True)
        if not outer_fails:
            apply(expected, ops, skip_failing=True)
        apply(storage, [("block", ops, outer_fails)])
        assert same_value(contents(storage), contents(expected))

    rolled_back()


@given(a=_keys | _text, b=_keys | _text)
def test_escaped_keys_sort_like_their_strings(a: str, b: str) -> None:
    """Stored keys have no NUL, come back exactly, and compare as the original strings."""
    assert "\x00" not in key(a)
    assert unkey(key(a)) == a
    assert (key(a) < key(b)) == (a < b)
    assert keys([a, b]) == [key(a), key(b)]


@given(
    after=st.text(
        st.sampled_from(["\x00", "a", "\ud7ff", "\ud800", "\udfff", "\ue000"]), max_size=4
    ),
    stored=_keys
    | st.text(st.sampled_from(["\x00", "a", "\ud7ff", "\ue000", "\uffff"]), min_size=1),
)
def test_a_cursor_with_a_surrogate_bounds_the_same_keys(after: str, stored: str) -> None:
    """lower_bound(after) admits exactly the stored keys above ``after``, surrogates or not."""
    bound, inclusive = lower_bound(after)
    above = key(stored) >= bound if inclusive else key(stored) > bound
    assert above == (stored > after)


# -- what is stored ------------------------------------------------------------------------


def test_documents_are_the_codecs_exact_text(storage: PostgresStorage, shared_dsn: str) -> None:
    """doc holds admit_text's JSON byte for byte; data is JSONB of it, NULL with a NUL."""
    when = datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=timezone.utc)
    item = {"_id": "a", "z": 1.0, "a": -0.0, "n": 2**63 - 1, "when": when}
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [item, {"_id": "nul", "s": "x\x00y"}])
    rows = _raw(shared_dsn, "SELECT id, doc, data FROM taskengine_items ORDER BY id")
    assert rows[0] == (
        "a",
        admit_text(item)[1],
        {"_id": "a", "z": 1.0, "a": -0.0, "n": 2**63 - 1, "when": {"$date": when.isoformat()}},
    )
    assert rows[1][:2] == ("nul", '{"_id":"nul","s":"x\\u0000y"}')
    assert rows[1][2] is None


def test_ids_and_names_with_nul_are_stored_escaped(
    storage: PostgresStorage, shared_dsn: str
) -> None:
    """NUL and U+0001 in ids and collection names are escaped in the column, kept in items."""
    storage.create_collection("c\x00")
    ids = ["a", "a\x00", "a\x00b", "a\x01", "a\x01\x00", "a\x02", "\x00"]
    storage.insert_items("c\x00", "LIVE", [{"_id": i} for i in ids])
    assert [info.name for info in storage.list_collections()] == ["c\x00"]
    assert [item["_id"] for item in storage.find("c\x00", "LIVE")] == sorted(ids)
    assert storage.get_item("c\x00", "LIVE", "a\x01\x00") == {"_id": "a\x01\x00"}
    stored = [row[0] for row in _raw(shared_dsn, "SELECT id FROM taskengine_items ORDER BY id")]
    assert stored == ["\x01\x01", "a", "a\x01\x01", "a\x01\x01b", "a\x01\x02", "a\x01\x02\x01\x01",
                      "a\x02"]  # fmt: skip
    result = storage.delete_items("c\x00", "LIVE", ["a\x00", "a\x01", "zz"])
    assert (result.done, result.missing) == (("a\x00", "a\x01"), ("zz",))
    storage.drop_collection("c\x00")
    assert _raw(shared_dsn, "SELECT count(*) FROM taskengine_items") == [(0,)]


def test_filtered_count_reads_every_page(storage: PostgresStorage) -> None:
    """A filtered count pages through more rows than one read holds (4096), NUL ids too."""
    storage.create_collection("c", sandbox=True)
    ids = [f"{n:05d}" + ("\x00" if n % 2 else "") for n in range(4200)]
    storage.insert_items("c", "SANDBOX", [{"_id": i, "n": n} for n, i in enumerate(ids)])
    assert storage.count("c", "SANDBOX", lambda doc: doc["n"] % 3 == 0).value == 1400
    assert storage.count("c", "SANDBOX").value == 4200
    assert storage.count("c", "LIVE", lambda doc: True).value == 0


def test_names_that_cannot_be_stored(storage: PostgresStorage) -> None:
    """A name with a lone surrogate cannot be created (InvalidRequest) and is never found."""
    with pytest.raises(InvalidRequest, match="valid Unicode"):
        storage.create_collection("bad\ud800")
    for call in (
        lambda: storage.collection_info("bad\ud800"),
        lambda: storage.scan("bad\ud800", "LIVE"),
        lambda: storage.drop_collection("bad\ud800"),
    ):
        with pytest.raises(CollectionNotFound):
            call()
    assert storage.list_collections() == []


# -- schema, lifecycle, errors -------------------------------------------------------------


def test_schema_is_versioned_and_created_once(pg_database: str) -> None:
    """A new database gets the storage schema row; opening again changes nothing."""
    with PostgresStorage(pg_database) as storage:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": "a", "v": 1}])
        assert storage.database.schema_version(COMPONENT) == SCHEMA_VERSION
    with PostgresStorage(pg_database) as storage:
        assert storage.get_item("c", "LIVE", "a") == {"_id": "a", "v": 1}
    assert _raw(pg_database, "SELECT version FROM taskengine_schema WHERE component = 'storage'") \
        == [(SCHEMA_VERSION,)]  # fmt: skip


def test_newer_schema_is_refused(pg_database: str) -> None:
    """A storage schema newer than the code raises StorageError and closes what it opened."""
    PostgresStorage(pg_database).close()
    _raw(pg_database, "UPDATE taskengine_schema SET version = 99 WHERE component = 'storage'")
    with pytest.raises(StorageError, match="schema version 99"):
        PostgresStorage(pg_database)


def test_a_database_that_is_not_utf8_is_refused(postgres_dsn: str) -> None:
    """A SQL_ASCII database is refused (code point order needs UTF-8), naming its encoding."""
    name = f"taskengine_ascii_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(  # type: ignore[arg-type]
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C'"
            " LC_CTYPE 'C'"
        )
    try:
        dsn = psycopg.conninfo.make_conninfo(postgres_dsn, dbname=name)
        with pytest.raises(PostgresError, match="encoding is SQL_ASCII"):
            PostgresStorage(dsn)
    finally:
        drop_database(postgres_dsn, name)


def test_unreachable_server_is_a_storage_error() -> None:
    """A DSN naming no server raises StorageError at once."""
    with pytest.raises(StorageError, match="PostgreSQL could not connect"):
        PostgresStorage("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_dsn_storage_closes_its_database_and_shared_one_is_kept(
    storage: PostgresStorage, shared_dsn: str
) -> None:
    """A storage from a DSN closes its PgDatabase; one built on a PgDatabase leaves it open."""
    owned = PostgresStorage(shared_dsn)
    owned.close()
    owned.close()  # idempotent
    assert owned.database.closed
    with pytest.raises(StorageError, match="is closed"):
        owned.list_collections()
    with PgDatabase(shared_dsn) as database:
        storage = PostgresStorage(database)
        storage.create_collection("c")
        storage.close()
        assert not database.closed
        assert PostgresStorage(database).list_collections()[0].name == "c"
    with pytest.raises(StorageError, match="is closed"):
        storage.scan("c", "LIVE")
    assert repr(storage).startswith("<PostgresStorage postgresql://")


def test_driver_errors_become_storage_errors(pg_database: str) -> None:
    """A psycopg error inside a call surfaces as PostgresError (a StorageError) from it."""
    storage = PostgresStorage(pg_database)
    storage.create_collection("c")
    with storage.database.transaction() as conn:
        conn.execute("DROP TABLE taskengine_items")
    for call in (
        lambda: storage.scan("c", "LIVE"),
        lambda: storage.insert_items("c", "LIVE", [{"_id": "a"}]),
        lambda: storage.delete_items("c", "LIVE", ["a"]),
    ):
        with pytest.raises(PostgresError) as info:
            call()
        assert isinstance(info.value.__cause__, psycopg.Error)
        assert info.value.sqlstate == "42P01"  # undefined_table
    storage.close()


def test_bad_input_is_refused_before_the_database(storage: PostgresStorage) -> None:
    """Invalid items and ids raise InvalidItem; nothing is written."""
    storage.create_collection("c")
    with pytest.raises(InvalidItem):
        storage.insert_items("c", "LIVE", [{"_id": "a"}, {"_id": "b", "v": float("nan")}])
    with pytest.raises(InvalidItem):
        storage.delete_items("c", "LIVE", ["a", 1])  # type: ignore[list-item]
    assert storage.count("c", "LIVE").value == 0
    assert storage.get_item("c", "LIVE", "") is None
    assert storage.get_item("c", "LIVE", "\ud800") is None


# -- transactions and sessions -------------------------------------------------------------


def test_atomic_commits_and_rolls_back_with_another_component(storage: PostgresStorage) -> None:
    """Item writes and another component's rows in one atomic() block commit or roll back
    together (the shape of a batch and its checkpoint)."""
    db = storage.database
    db.ensure_schema("other", 1, ["CREATE TABLE other (k TEXT PRIMARY KEY)"])
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": "a", "v": 0}])

    def batch(fail: bool) -> None:
        with storage.atomic():
            storage.replace_items("c", "LIVE", [{"_id": "a", "v": 1}])
            storage.insert_items("c", "LIVE", [{"_id": "b"}])
            with db.transaction() as conn:
                conn.execute("INSERT INTO other VALUES ('checkpoint')")
            if fail:
                raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        batch(fail=True)
    with db.read() as conn:
        assert conn.execute("SELECT k FROM other").fetchall() == []
    assert list(storage.find("c", "LIVE")) == [{"_id": "a", "v": 0}]
    batch(fail=False)
    with db.read() as conn:
        assert conn.execute("SELECT k FROM other").fetchall() == [("checkpoint",)]
    assert list(storage.find("c", "LIVE")) == [{"_id": "a", "v": 1}, {"_id": "b"}]


def test_caught_duplicate_inside_atomic_undoes_only_its_insert(storage: PostgresStorage) -> None:
    """A DuplicateItem caught inside atomic() undoes that insert only, naming the real id."""
    storage.create_collection("c")
    storage.insert_items("c", "LIVE", [{"_id": "s"}])
    with storage.atomic():
        storage.insert_items("c", "LIVE", [{"_id": "before"}])
        with pytest.raises(DuplicateItem) as raised:
            storage.insert_items("c", "LIVE", [{"_id": f"n{n:04d}"} for n in range(1500)]
                                 + [{"_id": "s"}])  # fmt: skip
        assert raised.value.item_id == "s"
        storage.insert_items("c", "LIVE", [{"_id": "after"}])
    assert [item["_id"] for item in storage.find("c", "LIVE")] == ["after", "before", "s"]


def test_another_storage_sees_only_committed_writes(
    storage: PostgresStorage, shared_dsn: str
) -> None:
    """A second PostgresStorage on the same DSN sees a block's writes once it commits."""
    storage.create_collection("c", sandbox=True, publish_plugin=True)
    with PostgresStorage(shared_dsn) as other:
        assert other.collection_info("c").publish_plugin is True
        with storage.atomic():
            storage.insert_items("c", "SANDBOX", [{"_id": "a", "v": 1}])
            assert storage.get_item("c", "SANDBOX", "a") == {"_id": "a", "v": 1}
            assert other.get_item("c", "SANDBOX", "a") is None
            assert other.count("c", "SANDBOX").value == 0
        assert other.get_item("c", "SANDBOX", "a") == {"_id": "a", "v": 1}
        other.replace_items("c", "SANDBOX", [{"_id": "a", "v": 2}])
        assert storage.get_item("c", "SANDBOX", "a") == {"_id": "a", "v": 2}


def _wait_for_a_blocked_session(dsn: str) -> None:
    """Return once a session of the database waits for a lock (fail after WAIT)."""
    deadline = time.monotonic() + WAIT
    sql = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while _raw(dsn, sql) != [(1,)]:
        assert time.monotonic() < deadline, "no session came to wait for the lock"
        time.sleep(0.01)


def test_drop_waits_for_an_uncommitted_write(storage: PostgresStorage, shared_dsn: str) -> None:
    """drop_collection waits for a write to the collection to commit, then removes its
    items too: no item outlives its collection."""
    storage.create_collection("c")
    inside = threading.Event()
    dropped: list[BaseException | None] = []

    def drop() -> None:
        inside.wait(timeout=WAIT)
        try:
            storage.drop_collection("c")
            dropped.append(None)
        except BaseException as exc:
            dropped.append(exc)

    thread = threading.Thread(target=drop)
    thread.start()
    with storage.atomic():
        storage.insert_items("c", "LIVE", [{"_id": "a"}])
        inside.set()
        _wait_for_a_blocked_session(shared_dsn)
        assert thread.is_alive()
    thread.join(timeout=WAIT)
    assert dropped == [None]
    assert storage.list_collections() == []
    assert _raw(shared_dsn, "SELECT count(*) FROM taskengine_items") == [(0,)]


def test_threads_and_sessions_write_at_once(storage: PostgresStorage, shared_dsn: str) -> None:
    """Threads of one storage and a second storage, replacing overlapping batches in
    opposite orders inside atomic(), all finish (no deadlock) and lose nothing."""
    storage.create_collection("c")
    ids = [f"k{n:03d}" for n in range(300)]
    storage.insert_items("c", "LIVE", [{"_id": i, "w": []} for i in ids])
    start = threading.Barrier(4, timeout=WAIT)
    errors: list[BaseException] = []

    def work(store: PostgresStorage, name: str, reverse: bool) -> None:
        try:
            start.wait()
            order = ids[::-1] if reverse else ids
            for n in range(5):
                with store.atomic():
                    store.replace_items("c", "LIVE", [{"_id": i, "w": [name, n]} for i in order])
                    store.insert_items("c", "LIVE", [{"_id": f"{name}-{n}"}])
        except BaseException as exc:
            errors.append(exc)

    with PostgresStorage(shared_dsn) as other:
        threads = [
            threading.Thread(target=work, args=(store, f"t{n}", n % 2 == 1))
            for n, store in enumerate([storage, storage, other, other])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors
    items = list(storage.find("c", "LIVE"))
    assert len(items) == 300 + 4 * 5
    last = {tuple(item["w"]) for item in items if "w" in item}
    assert len(last) == 1  # every id holds the batch that committed last,
    assert last.pop()[1] == 4  # which was its writer's last


# -- the engine on PostgreSQL --------------------------------------------------------------


def test_engine_runs_tasks_on_postgres(shared: PgDatabase, shared_dsn: str) -> None:
    """An engine on PostgresStorage runs EDIT_FIELD_DATA and DELETE_BY_QUERY to completion."""
    _emptied(shared)
    with PostgresStorage(shared_dsn) as storage:
        storage.create_collection("Items")
        storage.insert_items(
            "Items",
            "LIVE",
            [{"_id": f"{n:03d}", "n": n, "tags": ["a"] if n % 3 else "text"} for n in range(25)],
        )
        engine = TaskEngine(storage, batch_size=4)
        edit = engine.create_task({"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {
            "dataCollectionId": "Items", "fieldKey": "tags",
            "operations": {"addItems": ["b"]}}})  # fmt: skip
        engine.run_until_idle()
        done = engine.get_task(edit.id)
        assert done.status is TaskStatus.COMPLETED
        assert (done.items_succeeded, done.items_failed) == (16, 9)
        assert storage.get_item("Items", "LIVE", "001") == {
            "_id": "001",
            "n": 1,
            "tags": ["a", "b"],
        }
        delete = engine.create_task({"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {
            "dataCollectionId": "Items", "filter": {"n": {"$gte": 10}}}})  # fmt: skip
        engine.run_until_idle()
        done = engine.get_task(delete.id)
        assert done.status is TaskStatus.COMPLETED
        assert done.items_succeeded == 15
        assert [item["n"] for item in storage.find("Items", "LIVE")] == list(range(10))


# -- packaging -----------------------------------------------------------------------------


def test_importing_taskengine_never_imports_psycopg() -> None:
    """``import taskengine`` (and listing its API) leaves psycopg unloaded; PostgresStorage
    without the extra says what to install."""
    code = (
        "import sys, taskengine\n"
        "assert sorted(taskengine.__all__)\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
        "sys.modules['psycopg'] = None\n"
        "taskengine.PostgresStorage\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert "psycopg imported" not in result.stderr
    assert "pip install 'taskengine[postgres]'" in result.stderr

"""Set-based batches (``change_matching``) give exactly what the scan path gives.

The SQLite adapter writes the rows its SQL forms decide with one statement per batch and
the rest in Python; :func:`change_by_scan` is the reference. Both run over copies of the
same items, with the same filter and change, and must end in the same stored text (the
codec's JSON, so ``1`` vs ``1.0``, ``-0.0`` vs ``0.0`` and key order all count) and the
same counters. Values come from ``sql_strategies``, where SQL and Python part most often.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sql_strategies as sq
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.engine import TaskEngine
from taskengine.errors import InvalidItem
from taskengine.filters import compile_filter
from taskengine.storage import SQLiteStorage
from taskengine.storage.changes import ChangeResult, ItemChange, change_by_scan
from taskengine.storage.codec import encode
from taskengine.task import Task
from taskengine.taskstore import SQLiteTaskStore
from taskengine.tasktypes._changes import (
    DELETE_MATCHED,
    CopyField,
    EditField,
    RemoveFields,
    SetField,
)
from taskengine.tasktypes._fieldops import Operations, ReplaceItem

KEYS = st.sampled_from(sq.KEYS)
DATES = st.sampled_from(
    [
        datetime(2030, 1, 1, tzinfo=timezone.utc),
        datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(2020, 1, 1, 12, 30),
    ]
)


small_values = sq.values(max_leaves=3).map(sq.storable)
operations = st.builds(
    Operations,
    add_items=st.lists(small_values, max_size=2),
    remove_items=st.lists(small_values, max_size=2),
    replace_items=st.lists(st.builds(ReplaceItem, small_values, small_values), max_size=2),
    remove_duplicates=st.booleans(),
)
changes: st.SearchStrategy[ItemChange] = st.one_of(
    st.just(DELETE_MATCHED),
    st.builds(
        SetField,
        KEYS,
        st.one_of(st.sampled_from(["DRAFT", "PUBLISHED", "", "a\x00"]), DATES),
        needs_ids=st.booleans(),
    ),
    st.builds(
        RemoveFields, st.lists(KEYS, min_size=1, max_size=2).map(tuple), needs_ids=st.booleans()
    ),
    st.builds(CopyField, KEYS, KEYS).filter(lambda c: c.source != c.target),
    st.builds(EditField.of, KEYS, operations),
    st.builds(
        EditField.of,
        KEYS,
        st.builds(Operations, add_items=st.lists(small_values, min_size=1, max_size=3)),
    ),
)


def texts(storage: SQLiteStorage) -> list[str]:
    """Every stored item as the codec's text (exact: types, signed zeros, key order)."""
    return [encode(item) for item in storage.find("c", "LIVE")]


def run_all(
    batch: Callable[..., ChangeResult], storage: SQLiteStorage, flt: Any, change: Any, limit: int
) -> tuple[int, int, set[tuple[str, str]], set[str]]:
    """Batches to the end: (written, unchanged, refused, reported ids)."""
    written = unchanged = 0
    refused: set[tuple[str, str]] = set()
    ids: set[str] = set()
    after: str | None = None
    for _ in range(1000):
        with storage.atomic():
            result = batch(
                storage, "c", "LIVE", after=after, limit=limit, filter=flt, change=change
            )
        assert result.written + result.unchanged + len(result.refused) <= limit
        assert len(result.done) <= result.written
        assert not result.missing
        written += result.written
        unchanged += result.unchanged
        refused.update(result.refused)
        ids.update(result.done)
        if result.cursor is None:
            return written, unchanged, refused, ids
        assert after is None or result.cursor > after
        after = result.cursor
    raise AssertionError("the batches never ended")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(sq.documents, max_size=8),
    st.sampled_from(["mongo", "wix", None]),
    changes,
    st.integers(1, 4),
    st.data(),
)
def test_change_matching_equals_the_scan_path(
    docs: list[dict[str, Any]], dialect: str | None, change: Any, limit: int, data: st.DataObject
) -> None:
    """Same end state (to the byte), same counts, same refusals, every reported id."""
    docs = [sq.storable(doc) for doc in docs]
    flt = None
    if dialect is not None:
        fields = sq.linked(docs)
        specs = sq.mongo_specs(fields=fields) if dialect == "mongo" else sq.wix_specs(fields=fields)
        flt = compile_filter(data.draw(specs, label="spec"), dialect)  # type: ignore[arg-type]
    items = [{**doc, "_id": f"i{n}"} for n, doc in enumerate(docs)]
    with SQLiteStorage(":memory:") as fast, SQLiteStorage(":memory:") as reference:
        for storage in (fast, reference):
            storage.create_collection("c")
            storage.insert_items("c", "LIVE", items)
        try:
            expected = run_all(change_by_scan, reference, flt, change, limit)
        except InvalidItem:
            with pytest.raises(InvalidItem):
                run_all(SQLiteStorage.change_matching, fast, flt, change, limit)
            return
        got = run_all(SQLiteStorage.change_matching, fast, flt, change, limit)
        assert texts(fast) == texts(reference)
        assert got[:3] == expected[:3]
        if change.needs_ids:
            assert got[3] == expected[3]


class ScanPath(SQLiteStorage):
    """SQLite without the set-based capability: the engine takes the scan path."""

    change_matching = None  # type: ignore[assignment]


SPECS = [
    {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"filter": {"n": {"$lt": 7}}}},
    {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "filter": {"n": {"$gte": 5}},
            "operation": "SCHEDULE_PUBLISHED_STATUS",
            "schedulePublishedStatusOptions": {"date": "2030-01-01T00:00:00Z"},
        },
    },
    {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {"operation": "SET_DRAFT_STATUS"},
    },
    {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {"sourceFieldKey": "v", "targetFieldKey": "w"},
    },
    {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {"fieldKey": "v", "operations": {"addItems": ["x", 1.0]}},
    },
]


def run_task(storage: SQLiteStorage, spec: dict[str, Any]) -> Task:
    """One task on ``storage`` (tasks in the same database), run to its end."""
    options = {**next(v for k, v in spec.items() if k != "type"), "dataCollectionId": "c"}
    key = next(k for k in spec if k != "type")
    engine = TaskEngine(
        storage, task_store=SQLiteTaskStore(storage.database), batch_size=3, set_batch_size=3
    )
    task = engine.create_task({"type": spec["type"], key: options})
    engine.run_until_idle()
    return engine.get_task(task.id)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"n": st.integers(0, 9)},
            optional={"v": sq.values(max_leaves=3), "w": sq.values(max_leaves=2)},
        ),
        max_size=12,
    ),
    st.sampled_from(SPECS),
)
def test_tasks_end_alike_on_either_path(docs: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    """A task run with set-based batches ends like one run on the scan path: same items,
    same counters, same failures."""
    items = [{**sq.storable(doc), "_id": f"i{n:02d}"} for n, doc in enumerate(docs)]
    outcomes = []
    for kind in (SQLiteStorage, ScanPath):
        with kind(":memory:") as storage:
            storage.create_collection("c", publish_plugin=True)
            storage.insert_items("c", "LIVE", items)
            task = run_task(storage, spec)
            failures = [(f.code, f.data) for f in task.failures]
            counters = (task.status, task.items_succeeded, task.items_failed)
            outcomes.append((texts(storage), counters, failures, task.estimated_item_count))
    assert outcomes[0] == outcomes[1]


EDGES: list[tuple[list[dict[str, Any]], ItemChange]] = [
    # -0.0 equals 0.0 (identical: unchanged) but its text differs
    ([{"a": -0.0, "b": 0.0}, {"a": 0.0, "b": -0.0}], CopyField("a", "b")),
    ([{"a": [-0.0, {"x": 1}], "b": [0.0, {"x": 1}]}], CopyField("a", "b")),
    # a copy keeps types: 1 vs 1.0, True vs 1, key order, dates at an offset
    (
        [{"a": 1, "b": 1.0}, {"a": True, "b": 1}, {"a": {"x": 1, "y": 2}, "b": {"y": 2, "x": 1}}],
        CopyField("a", "b"),
    ),
    (
        [
            {
                "a": datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
                "b": datetime(2030, 1, 1, tzinfo=timezone.utc),
            }
        ],
        CopyField("a", "b"),
    ),
    # strings holding U+0000 compared by SQLite
    ([{"a": "DRAFT\x00x"}, {"a": "DRAFT"}, {"a": "\x00"}], SetField("a", "DRAFT")),
    ([{"a": "a\x00"}, {"a": "a"}], SetField("a", "a\x00")),
    ([{"a": "a\x00b", "b": "a\x00c"}, {"a": "a\x00b", "b": "a\x00b"}], CopyField("a", "b")),
    # a date stored at another offset is not identical
    (
        [
            {"d": datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))},
            {"d": datetime(2030, 1, 1, tzinfo=timezone.utc)},
        ],
        SetField("d", datetime(2030, 1, 1, tzinfo=timezone.utc)),
    ),
    # addItems on arrays, null, missing, and values it must refuse
    (
        [{"t": [1]}, {"t": None}, {}, {"t": "x"}, {"t": {"k": 1}}, {"t": 0}],
        EditField.of(
            "t", Operations(add_items=("x", 1.0, -0.0, {"$date": "2030-01-01T00:00:00Z"}))
        ),
    ),
]


@pytest.mark.parametrize(("docs", "change"), EDGES)
@pytest.mark.parametrize("limit", [1, 3])
def test_edges_where_sql_and_python_part(
    docs: list[dict[str, Any]], change: ItemChange, limit: int
) -> None:
    """Values whose text and value disagree, or that SQLite handles apart, end alike."""
    items = [{**doc, "_id": f"i{n}"} for n, doc in enumerate(docs)]
    with SQLiteStorage(":memory:") as fast, SQLiteStorage(":memory:") as reference:
        for storage in (fast, reference):
            storage.create_collection("c")
            storage.insert_items("c", "LIVE", items)
        expected = run_all(change_by_scan, reference, None, change, limit)
        got = run_all(SQLiteStorage.change_matching, fast, None, change, limit)
        assert texts(fast) == texts(reference)
        assert got[:3] == expected[:3]


def test_a_batch_with_nul_in_an_id_ends_alike() -> None:
    """Ids holding U+0000 (which SQLite's json_each cannot carry) take the scan path."""
    items = [{"_id": f"a\x00{n}", "n": n, "t": []} for n in range(6)]
    items += [{"_id": f"b{n}", "n": n, "t": []} for n in range(6)]
    flt = compile_filter({"n": {"$gte": 2}}, "wix")
    for change in (DELETE_MATCHED, EditField.of("t", Operations(add_items=("x",)))):
        with SQLiteStorage(":memory:") as fast, SQLiteStorage(":memory:") as reference:
            for storage in (fast, reference):
                storage.create_collection("c")
                storage.insert_items("c", "LIVE", items)
            expected = run_all(change_by_scan, reference, flt, change, 3)
            got = run_all(SQLiteStorage.change_matching, fast, flt, change, 3)
            assert texts(fast) == texts(reference)
            assert got[:3] == expected[:3] == (8, 0, set())


class Wrapper:
    """A README-style adapter: delegates every other method to SQLite, counts its writes."""

    def __init__(self, inner: SQLiteStorage) -> None:
        self._inner = inner
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def replace_items(self, collection: str, environment: Any, items: Any) -> Any:
        self.writes += 1
        return self._inner.replace_items(collection, environment, items)


def test_a_wrapping_adapter_keeps_its_own_writes() -> None:
    """The engine looks ``change_matching`` up on the adapter's class: a wrapper that
    delegates through ``__getattr__`` is not bypassed by the inner adapter's method."""
    with SQLiteStorage(":memory:") as inner:
        inner.create_collection("c")
        inner.insert_items("c", "LIVE", [{"_id": f"i{n}", "v": n} for n in range(7)])
        wrapper = Wrapper(inner)
        engine = TaskEngine(wrapper, task_store=SQLiteTaskStore(inner.database), batch_size=3)  # type: ignore[arg-type]
        spec = SPECS[3]
        task = engine.create_task(
            {
                "type": spec["type"],
                "copyFieldDataOptions": {**spec["copyFieldDataOptions"], "dataCollectionId": "c"},
            }
        )
        engine.run_until_idle()
        assert engine.get_task(task.id).items_succeeded == 7
        assert wrapper.writes == 3
        assert all(item["w"] == item["v"] for item in inner.find("c", "LIVE"))


@pytest.mark.parametrize(
    ("settings", "batches"), [({}, 1), ({"set_batch_size": 5}, 2), ({"set_batch_size": 2}, 4)]
)
def test_set_batch_size_sets_the_rows_per_set_based_batch(
    settings: dict[str, Any], batches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set-based batches cover ``set_batch_size`` rows (default ten times ``batch_size``)."""
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", [{"_id": f"i{n}", "v": n} for n in range(8)])
        engine = TaskEngine(
            storage, task_store=SQLiteTaskStore(storage.database), batch_size=2, **settings
        )
        executor = engine.task_types["COPY_FIELD_DATA"].executor
        seen: list[int] = []
        monkeypatch.setattr(
            executor, "committed", lambda plan, changes, written: seen.append(changes.unchanged)
        )
        task = engine.create_task(
            {
                "type": "COPY_FIELD_DATA",
                "copyFieldDataOptions": {
                    "dataCollectionId": "c",
                    "sourceFieldKey": "v",
                    "targetFieldKey": "w",
                },
            }
        )
        engine.run_until_idle()
        assert engine.get_task(task.id).items_succeeded == 8
        assert len(seen) == batches


def test_a_subclass_overriding_a_write_loses_the_capability() -> None:
    """A SQLiteStorage subclass that overrides scan or a write (and not change_matching)
    has ``change_matching = None``: the engine then runs its batches through its methods."""

    class Audited(SQLiteStorage):
        def replace_items(self, collection: str, environment: Any, items: Any) -> Any:
            return super().replace_items(collection, environment, items)

    class Tuned(Audited):
        change_matching = SQLiteStorage.change_matching

    class Plain(SQLiteStorage):
        pass

    assert Audited.change_matching is None
    assert Tuned.change_matching is SQLiteStorage.change_matching
    assert Plain.change_matching is SQLiteStorage.change_matching


def test_an_exact_filter_updates_a_window_of_keys_in_one_statement() -> None:
    """An exact filter and a change whose SQL form holds on every row: a batch is the next
    ``limit`` keys, one ``UPDATE`` with the filter in it, the matched rows it leaves as they
    are counted (not written), as on the scan path."""
    items = [
        {"_id": f"i{n:02d}", "n": n % 10, "s": "DRAFT" if n % 4 == 0 else "X"} for n in range(40)
    ]
    flt = compile_filter({"n": {"$gte": 5}}, "wix")
    condition = flt.to_sql("sqlite", "doc")
    assert condition is not None
    assert condition.exact
    change = SetField("s", "DRAFT", needs_ids=True)
    with SQLiteStorage(":memory:") as fast, SQLiteStorage(":memory:") as reference:
        for storage in (fast, reference):
            storage.create_collection("c")
            storage.insert_items("c", "LIVE", items)
        with fast.atomic():
            first = fast.change_matching(
                "c", "LIVE", after=None, limit=10, filter=flt, change=change
            )
        # i00..i09: n 5..9 match; i08 (n 8) is DRAFT already.
        assert first.cursor == "i09"
        assert (first.written, first.unchanged) == (4, 1)
        assert first.done == ("i05", "i06", "i07", "i09")
        # Again from the start: the first window's five are unchanged now.
        assert run_all(SQLiteStorage.change_matching, fast, flt, change, 10)[:2] == (12, 8)
        expected = run_all(change_by_scan, reference, flt, change, 10)
        assert expected[:2] == (4 + 12, 1 + 3)
        assert texts(fast) == texts(reference)


def test_the_unchanged_count_survives_an_open_cursor_and_threads() -> None:
    """The counting function is registered once per connection (SQLite refuses to replace
    one while a statement is active) and counts per thread (a new one too)."""
    items = [{"_id": f"i{n:02d}", "n": n, "s": "DRAFT"} for n in range(30)]
    flt = compile_filter({"n": {"$gte": 0}}, "wix")
    change = SetField("s", "DRAFT")
    with SQLiteStorage(":memory:") as storage:
        storage.create_collection("c")
        storage.insert_items("c", "LIVE", items)
        results: list[ChangeResult] = []

        def batch(after: str | None) -> None:
            with storage.atomic():
                results.append(
                    storage.change_matching(
                        "c", "LIVE", after=after, limit=10, filter=flt, change=change
                    )
                )

        batch(None)  # registers the function
        with storage.database.transaction() as conn:
            pending = conn.execute("SELECT id FROM taskengine_items")
            pending.fetchone()  # a statement left active on the connection
            batch(results[0].cursor)
            pending.fetchall()
        worker = threading.Thread(target=batch, args=(results[1].cursor,))
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert [(r.written, r.unchanged) for r in results] == [(0, 10)] * 3

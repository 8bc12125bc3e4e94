"""The four task types end to end through TaskEngine (see docs/task-types.md)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from test_fieldops import MISSING, operations, reference_edit, values
from test_options import SEED_BODIES, seed_bodies

from taskengine._values import values_equal
from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.errors import InvalidTask
from taskengine.filters import matches
from taskengine.storage import MemoryStorage, SQLiteStorage, Storage
from taskengine.task import Task, TaskStatus
from taskengine.taskstore import SQLiteTaskStore
from taskengine.tasktypes._fieldops import identical
from taskengine.tasktypes._options import EditFieldDataOptions, Operations, ReplaceItem

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
HALLOWEEN = {"holidays": {"$in": ["Halloween"]}}


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Both storage adapters."""
    store: Storage
    store = MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "i.db")
    yield store
    if isinstance(store, SQLiteStorage):
        store.close()


@pytest.fixture
def clock() -> ManualClock:
    """A hand-driven clock at 2026-01-01."""
    return ManualClock(START)


@pytest.fixture
def engine(storage: Storage, clock: ManualClock) -> TaskEngine:
    """An engine with the default task types and small batches."""
    return TaskEngine(storage, clock=clock, batch_size=3)


def run(engine: TaskEngine, spec: Any) -> Task:
    """Create a task, run the engine until idle, return the finished task."""
    task = engine.create_task(spec)
    engine.run_until_idle()
    done = engine.get_task(task.id)
    assert done.is_finished
    return done


def items(storage: Storage, collection: str = "Items", env: str = "LIVE") -> list[dict[str, Any]]:
    """Every stored item."""
    return list(storage.find(collection, env))


def holiday_items() -> list[dict[str, Any]]:
    """Items for the seed examples: some Halloween, some not, tags and names."""
    return [
        {"_id": "1", "holidays": ["Halloween"], "tags": ["Goob", "outdated"], "fullName": "A"},
        {"_id": "2", "holidays": ["Easter"], "tags": ["Goob"], "fullName": "B"},
        {"_id": "3", "holidays": ["Halloween", "Easter"], "tags": ["sale", "sale"]},
        {"_id": "4", "tags": "Goob", "fullName": {"first": "D"}},
        {"_id": "5", "holidays": ["Halloween"], "_publishStatus": "DRAFT"},
    ]


def task_json(spec: dict[str, Any]) -> dict[str, Any]:
    """The inner task object of a {"task": ...} body."""
    inner: dict[str, Any] = spec["task"]
    return inner


# --------------------------------------------------------------------------- the seed


def test_seed_bodies_are_the_references() -> None:
    """The bodies used below are the reference's examples (parsed from the file when present)."""
    assert len(seed_bodies()) == 4


@pytest.mark.parametrize("plugin", [False, True])
def test_seed_delete_by_query(storage: Storage, engine: TaskEngine, plugin: bool) -> None:
    """Seed DELETE: Halloween items go; with the plugin, the DRAFT one stays."""
    storage.create_collection("Items", publish_plugin=plugin)
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, copy.deepcopy(SEED_BODIES[1]))
    assert task.status is TaskStatus.COMPLETED
    left = sorted(i["_id"] for i in items(storage))
    assert left == (["2", "4", "5"] if plugin else ["2", "4"])
    assert task.items_succeeded == (2 if plugin else 3)
    assert task.items_failed == 0
    assert task.estimated_item_count == task.items_succeeded


def test_seed_edit_field_data(storage: Storage, engine: TaskEngine) -> None:
    """Seed EDIT on Halloween items: replace, remove, add, dedupe."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, copy.deepcopy(SEED_BODIES[2]))
    assert task.status is TaskStatus.COMPLETED
    by_id = {i["_id"]: i for i in items(storage)}
    assert by_id["1"]["tags"] == ["Good", "sale"]
    assert by_id["2"]["tags"] == ["Goob"]  # not Halloween
    assert by_id["3"]["tags"] == ["sale"]
    assert by_id["5"]["tags"] == ["sale"]  # missing field = empty array
    assert (task.items_succeeded, task.items_failed) == (3, 0)


def test_seed_copy_field_data(storage: Storage, engine: TaskEngine) -> None:
    """Seed COPY: fullNameCopy := deep copy of fullName; items without it unchanged."""
    storage.create_collection("Items")
    original = holiday_items()
    storage.insert_items("Items", "LIVE", original)
    task = run(engine, copy.deepcopy(SEED_BODIES[3]))
    assert task.status is TaskStatus.COMPLETED
    for before, after in zip(original, items(storage), strict=True):
        expected = dict(before)
        if "fullName" in before:
            expected["fullNameCopy"] = before["fullName"]
        assert after == expected
    assert (task.items_succeeded, task.items_failed) == (5, 0)


def test_seed_schedule_publish_overdue(storage: Storage, engine: TaskEngine) -> None:
    """Seed SCHEDULE_PUBLISHED_STATUS for 2025-01-01 is overdue at 2026: applied at once."""
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, copy.deepcopy(SEED_BODIES[0]))
    assert task.status is TaskStatus.COMPLETED
    by_id = {i["_id"]: i for i in items(storage)}
    for item_id in ("1", "3", "5"):
        assert by_id[item_id]["_publishStatus"] == "PUBLISHED"
        assert "_publishDate" not in by_id[item_id]
    assert "_publishStatus" not in by_id["2"]


def test_schedule_future_flips_when_clock_passes(storage: Storage, clock: ManualClock) -> None:
    """A future schedule is stored, then applied when the injected clock passes it."""
    clock_before = ManualClock(datetime(2024, 12, 31, tzinfo=timezone.utc))
    engine = TaskEngine(storage, clock=clock_before, batch_size=2)
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    run(engine, copy.deepcopy(SEED_BODIES[0]))
    stored = storage.get_item("Items", "LIVE", "1")
    assert stored is not None
    assert values_equal(stored["_publishDate"], datetime(2025, 1, 1, 10, tzinfo=timezone.utc))
    clock_before.set(datetime(2025, 1, 1, 9, 59, tzinfo=timezone.utc))
    engine.run_until_idle()
    stored = storage.get_item("Items", "LIVE", "5")
    assert stored is not None
    assert stored["_publishStatus"] == "DRAFT"
    clock_before.set(datetime(2025, 1, 1, 10, 0, tzinfo=timezone.utc))
    engine.run_until_idle()
    for item_id in ("1", "3", "5"):
        stored = storage.get_item("Items", "LIVE", item_id)
        assert stored is not None
        assert stored["_publishStatus"] == "PUBLISHED"
        assert "_publishDate" not in stored


def test_cancel_scheduling_prevents_flip(storage: Storage) -> None:
    """CANCEL_SCHEDULING removes pending dates, so nothing flips later."""
    clock = ManualClock(datetime(2024, 1, 1, tzinfo=timezone.utc))
    engine = TaskEngine(storage, clock=clock)
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    run(engine, {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": "Items", "operation": "SCHEDULE_DRAFT_STATUS",
            "scheduleDraftStatusOptions": {"date": "2024-06-01T00:00:00Z"},
        },
    })
    assert all("_draftDate" in i for i in items(storage))
    task = run(engine, {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {"dataCollectionId": "Items",
                                       "operation": "CANCEL_SCHEDULING"},
    })
    assert task.items_succeeded == 5
    clock.set(datetime(2025, 1, 1, tzinfo=timezone.utc))
    engine.run_until_idle()
    assert items(storage) == holiday_items()


def test_schedule_survives_restart(tmp_path: Path) -> None:
    """With SQLite storage, a schedule made before a restart is applied after it."""
    path = tmp_path / "all.db"
    clock = ManualClock(datetime(2024, 1, 1, tzinfo=timezone.utc))
    with SQLiteStorage(path) as storage:
        storage.create_collection("Items", publish_plugin=True)
        storage.insert_items("Items", "LIVE", holiday_items())
        store = SQLiteTaskStore(storage)
        engine = TaskEngine(storage, task_store=store, clock=clock)
        run(engine, copy.deepcopy(SEED_BODIES[0]))
        store.close()
    clock.set(datetime(2025, 2, 1, tzinfo=timezone.utc))
    with SQLiteStorage(path) as storage:
        store = SQLiteTaskStore(storage)
        engine = TaskEngine(storage, task_store=store, clock=clock)
        engine.run_until_idle()
        stored = storage.get_item("Items", "LIVE", "1")
        assert stored is not None
        assert stored["_publishStatus"] == "PUBLISHED"
        assert "_publishDate" not in stored
        store.close()


@pytest.mark.parametrize("op", ["SET_PUBLISHED_STATUS", "SET_DRAFT_STATUS"])
def test_set_status(storage: Storage, engine: TaskEngine, op: str) -> None:
    """SET_* writes _publishStatus on matching items; already-set items succeed unchanged."""
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {"dataCollectionId": "Items", "operation": op,
                                       "filter": HALLOWEEN},
    })
    status = "PUBLISHED" if op == "SET_PUBLISHED_STATUS" else "DRAFT"
    by_id = {i["_id"]: i for i in items(storage)}
    assert [by_id[i].get("_publishStatus") for i in ("1", "3", "5")] == [status] * 3
    assert "_publishStatus" not in by_id["2"]
    assert task.items_succeeded == 3


# --------------------------------------------------------------------------- environments


@pytest.mark.parametrize(
    ("sandbox", "env", "touched"),
    [
        (True, "SANDBOX", "SANDBOX"),
        (True, "SANDBOX_PREFERRED", "SANDBOX"),
        (False, "SANDBOX_PREFERRED", "LIVE"),
        (True, "LIVE", "LIVE"),
    ],
)
def test_environments(
    storage: Storage, engine: TaskEngine, sandbox: bool, env: str, touched: str
) -> None:
    """The task works on the resolved environment only."""
    storage.create_collection("Items", sandbox=sandbox)
    storage.insert_items("Items", "LIVE", [{"_id": "a", "s": 1}])
    if sandbox:
        storage.insert_items("Items", "SANDBOX", [{"_id": "a", "s": 2}])
    task = run(engine, {"type": "COPY_FIELD_DATA", "copyFieldDataOptions": {
        "dataCollectionId": "Items", "environment": env,
        "sourceFieldKey": "s", "targetFieldKey": "t"}})
    assert task.status is TaskStatus.COMPLETED
    assert "t" in items(storage, env=touched)[0]
    if sandbox:
        other = "LIVE" if touched == "SANDBOX" else "SANDBOX"
        assert "t" not in items(storage, env=other)[0]


# --------------------------------------------------------------------------- whole-task failures


def failed_with(task: Task, code: str) -> None:
    """Assert the task FAILED with a whole-task failure of this code, nothing counted."""
    assert task.status is TaskStatus.FAILED
    assert task.failures[0].code == code
    assert task.items_succeeded == task.items_failed == 0
    assert task.started_at is not None
    assert task.finished_at is not None


def test_unknown_collection_task_fails(engine: TaskEngine) -> None:
    """A task on an unknown collection is created, then FAILS with WDE0025."""
    for body in SEED_BODIES:
        created = engine.create_task(copy.deepcopy(body))
        assert created.status is TaskStatus.NEW
    engine.run_until_idle()
    for task in engine.list_tasks().tasks:
        failed_with(task, "WDE0025")
        assert task.failures[0].data == {"dataCollectionId": "Items"}


def test_sandbox_not_enabled_fails(storage: Storage, engine: TaskEngine) -> None:
    """SANDBOX on a collection without a sandbox FAILS with WDE0179."""
    storage.create_collection("Items")
    task = run(engine, {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {
        "dataCollectionId": "Items", "environment": "SANDBOX"}})
    failed_with(task, "WDE0179")


def test_publish_without_plugin_fails(storage: Storage, engine: TaskEngine) -> None:
    """UPDATE_PUBLISH_STATUS without the publish plugin FAILS with WDE0119."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, copy.deepcopy(SEED_BODIES[0]))
    failed_with(task, "WDE0119")
    assert items(storage) == holiday_items()


# --------------------------------------------------------------------------- item failures


def test_item_failures_complete_with_items_failed(storage: Storage, engine: TaskEngine) -> None:
    """addItems on a string field is an item failure; the task still COMPLETES."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", holiday_items())
    task = run(engine, {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {
        "dataCollectionId": "Items", "fieldKey": "tags", "operations": {"addItems": ["x"]}}})
    assert task.status is TaskStatus.COMPLETED
    assert (task.items_succeeded, task.items_failed) == (4, 1)
    assert len(task.failures) == 1
    failure = task.failures[0]
    assert failure.code == "WDE0075"
    assert failure.data == {"itemId": "4"}
    stored = storage.get_item("Items", "LIVE", "4")
    assert stored is not None
    assert stored["tags"] == "Goob"
    assert task.to_json()["failures"][0]["data"] == {"itemId": "4"}


# --------------------------------------------------------------------------- create validation


def test_create_rejects_with_paths(engine: TaskEngine) -> None:
    """A bad spec raises InvalidTask listing every violation by JSON path; nothing stored."""
    with pytest.raises(InvalidTask) as info:
        engine.create_task({"task": {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {
            "dataCollectionId": "x" * 300, "operations": {"addItems": list(range(65))}}}})
    paths = {v.field for v in info.value.violations}
    assert paths == {
        "task.editFieldDataOptions.dataCollectionId",
        "task.editFieldDataOptions.fieldKey",
        "task.editFieldDataOptions.operations.addItems",
    }
    assert engine.list_tasks().total == 0


def test_create_options_must_match_type(engine: TaskEngine) -> None:
    """The options object must be the one matching type."""
    with pytest.raises(InvalidTask) as info:
        engine.create_task({"type": "DELETE_BY_QUERY", "copyFieldDataOptions": {
            "dataCollectionId": "c", "sourceFieldKey": "a", "targetFieldKey": "b"}})
    paths = {v.field for v in info.value.violations}
    assert "task.deleteByQueryOptions" in paths


def test_create_from_typed_options(storage: Storage, engine: TaskEngine) -> None:
    """Typed options objects are accepted as a task spec."""
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", [{"_id": "a", "t": ["x"]}])
    task = run(engine, EditFieldDataOptions(
        "Items", "t", Operations(replace_items=[ReplaceItem("x", "y")])))
    assert task.type == "EDIT_FIELD_DATA"
    assert task.status is TaskStatus.COMPLETED
    assert items(storage) == [{"_id": "a", "t": ["y"]}]


# --------------------------------------------------------------------------- properties

ids = st.integers(0, 30).map(lambda n: f"id{n:03d}")
small = st.one_of(st.sampled_from(["a", "b", "Halloween"]), st.integers(0, 3), st.none())
docs = st.dictionaries(
    ids,
    st.fixed_dictionaries(
        {},
        optional={
            "k": small,
            "tags": st.one_of(st.lists(values, max_size=4), values),
            "_publishStatus": st.sampled_from(["PUBLISHED", "DRAFT"]),
        },
    ),
    max_size=12,
).map(lambda d: [{"_id": k, **v} for k, v in sorted(d.items())])
user_filters = st.one_of(
    st.none(),
    st.just({}),
    st.builds(lambda v: {"k": v}, small),
    st.builds(lambda v: {"k": {"$ne": v}}, small),
    st.builds(lambda vs: {"k": {"$in": vs}}, st.lists(small, max_size=3)),
)


def memory_engine(collection_items: list[dict[str, Any]], plugin: bool) -> tuple[
    MemoryStorage, TaskEngine
]:
    """A fresh memory store with 'c' holding the items, and an engine with batches of 4."""
    storage = MemoryStorage()
    storage.create_collection("c", publish_plugin=plugin)
    storage.insert_items("c", "LIVE", collection_items)
    return storage, TaskEngine(storage, clock=ManualClock(START), batch_size=4)


def counters_add_up(task: Task, touched: int) -> None:
    """itemsSucceeded + itemsFailed == items touched; failures listed (under the cap)."""
    assert task.items_succeeded + task.items_failed == touched
    assert len(task.failures) == task.items_failed


@given(docs, user_filters, st.booleans(), st.booleans())
def test_delete_deletes_exactly_matching(
    collection_items: list[dict[str, Any]], spec: Any, plugin: bool, drafts: bool
) -> None:
    """DELETE_BY_QUERY deletes exactly the matching items, sparing drafts unless asked."""
    storage, engine = memory_engine(collection_items, plugin)
    options: dict[str, Any] = {"dataCollectionId": "c",
                               "publishPluginOptions": {"includeDraftItems": drafts}}
    if spec is not None:
        options["filter"] = spec
    task = run(engine, {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": options})

    def doomed(d: dict[str, Any]) -> bool:
        if not matches(spec, d, "wix"):
            return False
        return not plugin or drafts or d.get("_publishStatus") in (None, "PUBLISHED")

    expected = [d for d in collection_items if not doomed(d)]
    assert list(storage.find("c", "LIVE")) == expected
    counters_add_up(task, len(collection_items) - len(expected))
    assert task.status is TaskStatus.COMPLETED


@given(docs, user_filters, operations)
def test_edit_equals_reference(
    collection_items: list[dict[str, Any]], spec: Any, ops: Operations
) -> None:
    """EDIT_FIELD_DATA result equals the slow reference applied item by item."""
    assume(ops.needs_array or ops.replace_items)  # an empty edit is refused at create
    storage, engine = memory_engine(collection_items, False)
    engine.create_task(EditFieldDataOptions("c", "tags", ops, filter=spec))
    engine.run_until_idle()
    task = engine.list_tasks().tasks[0]
    expected = []
    failed = touched = 0
    for d in collection_items:
        want = copy.deepcopy(d)
        if matches(spec, d, "wix"):
            touched += 1
            kind, value = reference_edit(d.get("tags", MISSING), ops)
            if kind == "refused":
                failed += 1
            elif not (("tags" not in d or d["tags"] is None) and value == []):
                want["tags"] = value
        expected.append(want)
    got = list(storage.find("c", "LIVE"))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert values_equal(g, e), (g, e)
    counters_add_up(task, touched)
    assert task.items_failed == failed
    assert all(f.code == "WDE0075" for f in task.failures)


@given(docs, st.sampled_from(["k", "tags", "_publishStatus", "_id", "nope"]))
def test_copy_touches_only_target(collection_items: list[dict[str, Any]], source: str) -> None:
    """COPY_FIELD_DATA sets target = source and leaves every other field untouched."""
    storage, engine = memory_engine(collection_items, False)
    task = run(engine, {"type": "COPY_FIELD_DATA", "copyFieldDataOptions": {
        "dataCollectionId": "c", "sourceFieldKey": source, "targetFieldKey": "dst"}})
    for before, after in zip(collection_items, storage.find("c", "LIVE"), strict=True):
        assert {k: v for k, v in after.items() if k != "dst"} == before
        if source in before:
            assert identical(after["dst"], before[source])
        else:
            assert "dst" not in after
    counters_add_up(task, len(collection_items))


# --------------------------------------------------------------------------- concurrency


def test_concurrent_tasks_with_cancels(tmp_path: Path) -> None:
    """Several tasks at once on different and the same collection, one cancelled: exact."""
    storage = MemoryStorage()
    n = 600
    for name in ("A", "B"):
        storage.create_collection(name)
        storage.insert_items(name, "LIVE", [
            {"_id": f"{i:05d}", "g": i % 3, "tags": []} for i in range(n)
        ])
    engine = TaskEngine(storage, workers=3, batch_size=25)
    edit_a = {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {
        "dataCollectionId": "A", "fieldKey": "tags", "filter": {"g": 0},
        "operations": {"addItems": ["x"]}}}
    delete_a = {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {
        "dataCollectionId": "A", "filter": {"g": 1}}}
    copy_b = {"type": "COPY_FIELD_DATA", "copyFieldDataOptions": {
        "dataCollectionId": "B", "sourceFieldKey": "g", "targetFieldKey": "h"}}
    cancelled_b = {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {
        "dataCollectionId": "B", "fieldKey": "tags", "operations": {"addItems": ["y"]}}}
    engine.start()
    try:
        tasks = [engine.create_task(s) for s in (edit_a, delete_a, copy_b, cancelled_b)]
        engine.cancel_task(tasks[3].id)
        finished = [engine.wait(t.id, timeout=30) for t in tasks]
    finally:
        engine.stop(timeout=10)
    assert all(t.is_finished for t in finished)
    e_a, d_a, c_b, x_b = finished
    assert e_a.status is d_a.status is c_b.status is TaskStatus.COMPLETED
    assert (e_a.items_succeeded, d_a.items_succeeded, c_b.items_succeeded) == (200, 200, n)
    left = list(storage.find("A", "LIVE"))
    assert len(left) == 400
    assert all(i["tags"] == (["x"] if i["g"] == 0 else []) for i in left)
    assert all(i["h"] == i["g"] for i in storage.find("B", "LIVE"))
    assert x_b.status is TaskStatus.FAILED
    assert x_b.failures[0].code == "CANCELLED"
    with_y = sum(1 for i in storage.find("B", "LIVE") if i["tags"] == ["y"])
    assert with_y == x_b.items_succeeded
    assert x_b.items_failed == 0


def test_cancel_midway_counts_exact(storage: Storage) -> None:
    """Cancelling a RUNNING task stops it between batches; counters match the writes."""
    storage.create_collection("C")
    storage.insert_items("C", "LIVE", [{"_id": f"{i:04d}", "t": []} for i in range(300)])
    engine = TaskEngine(storage, batch_size=10, clock=ManualClock(START))
    task = engine.create_task({"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {
        "dataCollectionId": "C", "fieldKey": "t", "operations": {"addItems": [1]}}})
    executor = engine.task_types["EDIT_FIELD_DATA"].executor
    original = executor.apply
    calls = {"n": 0}

    def apply_then_cancel(plan: Any, batch: list[dict[str, Any]]) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            engine.cancel_task(task.id)
        return original(plan, batch)

    executor.apply = apply_then_cancel  # type: ignore[method-assign]
    try:
        engine.run_until_idle()
    finally:
        executor.apply = original  # type: ignore[method-assign]
    done = engine.get_task(task.id)
    assert done.status is TaskStatus.FAILED
    assert done.failures[0].code == "CANCELLED"
    written = sum(1 for i in storage.find("C", "LIVE") if i["t"] == [1])
    assert done.items_succeeded == written == 50
    assert all(i["t"] in ([], [1]) for i in storage.find("C", "LIVE"))


def test_now_overdue_schedule_in_started_engine() -> None:
    """In a started engine, an overdue schedule is applied by the service thread."""
    storage = MemoryStorage()
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", holiday_items())
    engine = TaskEngine(storage, tick_interval=0.01)
    engine.start()
    try:
        task = engine.create_task(copy.deepcopy(SEED_BODIES[0]))
        assert engine.wait(task.id, timeout=30).status is TaskStatus.COMPLETED
        deadline = datetime.now(timezone.utc) + timedelta(seconds=30)
        stored = storage.get_item("Items", "LIVE", "1")
        while stored is not None and "_publishDate" in stored:
            assert datetime.now(timezone.utc) < deadline
            threading.Event().wait(0.01)  # bounded poll: the service runs in its thread
            stored = storage.get_item("Items", "LIVE", "1")
        assert stored is not None
        assert stored["_publishStatus"] == "PUBLISHED"
    finally:
        engine.stop(timeout=10)

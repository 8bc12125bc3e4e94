"""Bad input to the Python API and the REST API: a typed error naming the path, never a crash.

Every public call refuses what it cannot honour with ``InvalidTask`` / ``InvalidRequest``
(HTTP 400), the same on the memory and SQLite task stores, and leaves stored state as it was.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.engine import MAX_OFFSET, TaskEngine
from taskengine.errors import InvalidItem, InvalidRequest, InvalidTask, printable
from taskengine.http import TaskAPI
from taskengine.storage.memory import MemoryStorage
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.task import TaskStatus
from taskengine.taskstore import MemoryTaskStore, SQLiteTaskStore, TaskStore
from taskengine.tasktype import TaskType
from taskengine.tasktypes._fieldops import Operations, ReplaceItem
from taskengine.tasktypes.edit_field_data import EditFieldDataOptions

LONE = "x\ud800"

EngineFactory = Callable[[], TaskEngine]


def _memory_engine() -> TaskEngine:
    storage = MemoryStorage()
    storage.create_collection("c", publish_plugin=True)
    storage.insert_items("c", "LIVE", [{"_id": "a", "tags": ["t"], "name": "n"}])
    return TaskEngine(storage, task_store=MemoryTaskStore())


def _sqlite_engine() -> TaskEngine:
    storage = SQLiteStorage(":memory:")
    storage.create_collection("c", publish_plugin=True)
    storage.insert_items("c", "LIVE", [{"_id": "a", "tags": ["t"], "name": "n"}])
    return TaskEngine(storage, task_store=SQLiteTaskStore(storage))


@pytest.fixture(params=["memory", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Iterator[TaskEngine]:
    """An engine over collection 'c' (publish plugin, one item), on each task store."""
    engine = _memory_engine() if request.param == "memory" else _sqlite_engine()
    yield engine
    _close(engine)


def _close(engine: TaskEngine) -> None:
    engine.task_store.close()
    close = getattr(engine.storage, "close", None)
    if close is not None:
        close()


def edit_spec(operations: dict[str, Any]) -> dict[str, Any]:
    """An EDIT_FIELD_DATA task on c.tags with these operations."""
    return {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "c",
            "fieldKey": "tags",
            "operations": operations,
        },
    }


def delete_spec(**options: Any) -> dict[str, Any]:
    """A DELETE_BY_QUERY task on c with extra options."""
    return {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": "c", **options}}


def refused(engine: TaskEngine, spec: Any) -> dict[str, str]:
    """Create ``spec``, expect InvalidTask with nothing stored; return {field: description}."""
    before = engine.list_tasks(limit=100).total
    with pytest.raises(InvalidTask) as caught:
        engine.create_task(spec)
    assert engine.list_tasks(limit=100).total == before
    text = str(caught.value)
    text.encode("utf-8")  # printable: no lone surrogate leaks into the message
    return {v.field: v.description for v in caught.value.violations}


OPS = "task.editFieldDataOptions.operations"
UNSTORABLE = [
    pytest.param({"$date": "x"}, "", "ISO-8601", id="bad-date-wrapper"),
    pytest.param(math.nan, "", "finite", id="nan"),
    pytest.param(math.inf, "", "finite", id="infinity"),
    pytest.param(LONE, "", "lone surrogate", id="lone-surrogate"),
    pytest.param({"k": [LONE]}, ".k.0", "lone surrogate", id="nested-surrogate"),
    pytest.param(2**63, "", "64-bit", id="huge-int"),
]


@pytest.mark.parametrize(("value", "inner", "fragment"), UNSTORABLE)
@pytest.mark.parametrize(
    ("operations", "where"),
    [
        (lambda v: {"addItems": ["ok", v]}, f"{OPS}.addItems.1"),
        (lambda v: {"removeItems": [v]}, f"{OPS}.removeItems.0"),
        (lambda v: {"replaceItems": [{"from": "t", "to": v}]}, f"{OPS}.replaceItems.0.to"),
        (lambda v: {"replaceItems": [{"from": v, "to": "t"}]}, f"{OPS}.replaceItems.0.from"),
    ],
    ids=["add", "remove", "replace-to", "replace-from"],
)
def test_unstorable_operation_values_are_refused_at_create(
    engine: TaskEngine,
    operations: Callable[[Any], dict[str, Any]],
    where: str,
    value: Any,
    inner: str,
    fragment: str,
) -> None:
    """An EDIT_FIELD_DATA value the storage would refuse is an InvalidTask naming its path."""
    found = refused(engine, edit_spec(operations(value)))
    assert list(found) == [where + inner]
    assert fragment in found[where + inner]


def test_typed_operations_get_the_same_check(engine: TaskEngine) -> None:
    """Typed EditFieldDataOptions with an unstorable value are refused like JSON ones."""
    options = EditFieldDataOptions(
        data_collection_id="c",
        field_key="tags",
        operations=Operations(replace_items=[ReplaceItem(from_="t", to={"$date": "nope"})]),
    )
    found = refused(engine, options)
    assert list(found) == [f"{OPS}.replaceItems.0.to"]


@pytest.mark.parametrize(
    "value",
    [
        {"$date": "2024-05-01T10:00:00Z"},
        datetime(2024, 5, 1, tzinfo=timezone.utc),
        2**63 - 1,
        -(2**63),
        "snow ☃ 😀",
        {"nested": [1, 2.5, None, True]},
    ],
)
def test_storable_operation_values_are_accepted_and_written(engine: TaskEngine, value: Any) -> None:
    """Every value the storage stores is accepted, and the task completes writing it."""
    task = engine.create_task(edit_spec({"addItems": [value]}))
    engine.run_until_idle()
    final = engine.get_task(task.id)
    assert final.status is TaskStatus.COMPLETED
    assert final.items_failed == 0
    tags = engine.storage.get_item("c", "LIVE", "a")["tags"]  # type: ignore[index]
    assert len(tags) == 2


SURROGATE_SPECS = [
    pytest.param(
        {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": {"dataCollectionId": LONE}},
        "task.deleteByQueryOptions.dataCollectionId",
        id="collection",
    ),
    pytest.param(
        delete_spec(filter={LONE: 1}), "task.deleteByQueryOptions.filter.x\\ud800", id="filter-key"
    ),
    pytest.param(
        delete_spec(filter={"name": {"$eq": LONE}}),
        "task.deleteByQueryOptions.filter.name.$eq",
        id="filter-value",
    ),
    pytest.param(
        delete_spec(appOptions={"a": [LONE]}),
        "task.deleteByQueryOptions.appOptions.a.0",
        id="app-options",
    ),
    pytest.param(
        {
            "type": "COPY_FIELD_DATA",
            "copyFieldDataOptions": {
                "dataCollectionId": "c",
                "sourceFieldKey": LONE,
                "targetFieldKey": "b",
            },
        },
        "task.copyFieldDataOptions.sourceFieldKey",
        id="copy-source",
    ),
    pytest.param(
        edit_spec({"addItems": ["a"]}) | {"x\udfff": 1}, "task.x\\udfff", id="unknown-top-key"
    ),
    pytest.param({"type": LONE}, "task.type", id="type"),
    pytest.param(
        {
            "type": "UPDATE_PUBLISH_STATUS",
            "updatePublishStatusOptions": {
                "dataCollectionId": "c",
                "operation": "SCHEDULE_PUBLISHED_STATUS",
                "schedulePublishedStatusOptions": {"date": "2030-01-01T00:00:00Z" + LONE},
            },
        },
        "task.updatePublishStatusOptions.schedulePublishedStatusOptions.date",
        id="schedule-date",
    ),
]


@pytest.mark.parametrize(("spec", "field"), SURROGATE_SPECS)
def test_lone_surrogate_anywhere_is_invalid_task(
    engine: TaskEngine, spec: dict[str, Any], field: str
) -> None:
    """A lone surrogate in any key or value of a spec is InvalidTask at its (escaped) path."""
    found = refused(engine, spec)
    assert field in found
    assert "lone surrogate" in found[field]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (delete_spec(appOptions={"a": math.nan}), "task.deleteByQueryOptions.appOptions.a"),
        (delete_spec(filter={"name": math.inf}), "task.deleteByQueryOptions.filter.name"),
        (delete_spec(appOptions={"s": {1, 2}}), "task.deleteByQueryOptions.appOptions.s"),
    ],
)
def test_values_json_cannot_carry_are_invalid_task(
    engine: TaskEngine, spec: dict[str, Any], field: str
) -> None:
    """NaN, infinity or a non-JSON object anywhere in a spec is InvalidTask on every store."""
    assert field in refused(engine, spec)


@pytest.mark.parametrize("date", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+05:00"])
def test_a_schedule_date_without_a_utc_form_is_invalid_task(engine: TaskEngine, date: str) -> None:
    """A schedule date whose UTC instant is outside years 1..9999 is refused at create."""
    spec = {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": "c",
            "operation": "SCHEDULE_DRAFT_STATUS",
            "scheduleDraftStatusOptions": {"date": date},
        },
    }
    found = refused(engine, spec)
    assert list(found) == ["task.updatePublishStatusOptions.scheduleDraftStatusOptions.date"]


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "spec",
    [
        delete_spec(appOptions=_nested(5000)),
        delete_spec(filter=_nested(5000)),
        edit_spec({"addItems": [_nested(5000)]}),
        EditFieldDataOptions(
            data_collection_id="c",
            field_key="tags",
            operations=Operations(add_items=[[_nested(5000)]]),
        ),
    ],
    ids=["app-options", "filter", "add-items", "typed"],
)
def test_a_spec_nested_past_the_wire_limit_is_invalid_task(engine: TaskEngine, spec: Any) -> None:
    """Nesting deeper than the wire's 64 levels is InvalidTask, never a RecursionError."""
    (description,) = set(refused(engine, spec).values())
    assert description == "nested deeper than 64 levels"


def test_nesting_within_the_wire_limit_is_accepted(engine: TaskEngine) -> None:
    """A spec as deep as an HTTP body may be (64 levels in all) is accepted."""
    engine.create_task({"task": delete_spec(appOptions=_nested(60))})


def test_a_datetime_in_a_filter_is_stored_on_every_task_store(engine: TaskEngine) -> None:
    """A filter holding a datetime (SPEC 5) creates, reads back and runs on both stores."""
    spec = delete_spec(filter={"when": {"$gt": datetime(2020, 1, 1, tzinfo=timezone.utc)}})
    task = engine.create_task(spec)
    engine.run_until_idle()
    assert engine.get_task(task.id).status is TaskStatus.COMPLETED


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"offset": MAX_OFFSET + 1}, "paging.offset"),
        ({"offset": 99999999999999999999999}, "paging.offset"),
        ({"offset": -1}, "paging.offset"),
        ({"limit": 2**64}, "paging.limit"),
        ({"limit": 0}, "paging.limit"),
    ],
)
def test_paging_out_of_range_is_invalid_request(
    engine: TaskEngine, kwargs: dict[str, int], field: str
) -> None:
    """list_tasks refuses an offset or limit out of range with the same error on both stores."""
    with pytest.raises(InvalidRequest) as caught:
        engine.list_tasks(**kwargs)
    assert [v.field for v in caught.value.violations] == [field]


def test_the_largest_offset_is_an_empty_page(engine: TaskEngine) -> None:
    """offset = MAX_OFFSET is allowed and gives an empty page with the true total."""
    engine.create_task(delete_spec())
    page = engine.list_tasks(offset=MAX_OFFSET)
    assert (page.tasks, page.total, page.offset) == ((), 1, MAX_OFFSET)


@pytest.mark.parametrize("store", [MemoryTaskStore, lambda: SQLiteTaskStore(":memory:")])
def test_task_stores_page_past_any_offset(store: Callable[[], TaskStore]) -> None:
    """A task store's page() past SQLite's integer range is empty, never OverflowError."""
    assert store().page(2**70, 2**70) == ([], 0)


def test_an_id_with_a_lone_surrogate_is_not_found(engine: TaskEngine) -> None:
    """get/cancel of an id with a lone surrogate is TaskNotFound on both stores."""
    from taskengine.errors import TaskNotFound

    for call in (engine.get_task, engine.cancel_task, engine.get_progress):
        with pytest.raises(TaskNotFound):
            call(LONE)


class _Stubborn:
    """An EDIT_FIELD_DATA executor that writes a value the storage refuses."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def plan(self, options: Any, storage: Any) -> Any:
        return self.inner.plan(options, storage)

    def apply(self, plan: Any, items: Any) -> Any:
        changes = self.inner.apply(plan, items)
        for item in changes.replaces:
            item["tags"] = [{"$date": "never"}]
        return changes

    def committed(self, plan: Any, changes: Any, written: Any) -> None:
        self.inner.committed(plan, changes, written)


def test_an_item_the_storage_refuses_fails_the_task_without_raising(engine: TaskEngine) -> None:
    """run_until_idle turns a storage InvalidItem into a FAILED task naming the item."""
    edit = engine.task_types["EDIT_FIELD_DATA"]
    engine.register_task_type(
        TaskType(
            name="STUBBORN_EDIT",
            options_key="stubbornOptions",
            parse_options=edit.parse_options,
            executor=_Stubborn(edit.executor),  # type: ignore[arg-type]
        )
    )
    options = edit_spec({"addItems": ["x"]})["editFieldDataOptions"]
    task = engine.create_task({"type": "STUBBORN_EDIT", "stubbornOptions": options})
    engine.run_until_idle()  # raised InvalidItem before
    final = engine.get_task(task.id)
    assert final.status is TaskStatus.FAILED
    (failure,) = final.failures
    assert failure.code == "WDE0054"
    assert failure.data == {"itemId": "a"}
    assert "ISO-8601" in failure.description
    assert engine.storage.get_item("c", "LIVE", "a")["tags"] == ["t"]  # type: ignore[index]


def test_printable_escapes_lone_surrogates_only() -> None:
    """printable() leaves valid text alone and escapes lone surrogates."""
    assert printable("snow ☃") == "snow ☃"
    assert printable(LONE) == "x\\ud800"
    assert InvalidItem("bad", path=LONE).args[0].encode("utf-8")


# -- HTTP -----------------------------------------------------------------------------------


def _wsgi(engine: TaskEngine, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "CONTENT_LENGTH": str(len(body))}
    if "?" in path:
        path, environ["QUERY_STRING"] = path.split("?", 1)
    environ["PATH_INFO"] = path
    environ["wsgi.input"] = io.BytesIO(body)
    setup_testing_defaults(environ)
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.append(status)

    payload = b"".join(TaskAPI(engine)(environ, start_response))
    return int(seen[0][:3]), json.loads(payload)


def _fields(reply: dict[str, Any]) -> list[str]:
    violations = reply["details"]["validationError"]["fieldViolations"]
    return [v["field"] for v in violations]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            b'{"task": {"type": "DELETE_BY_QUERY", "deleteByQueryOptions": '
            b'{"dataCollectionId": "c", "filter": {"\\ud800": 1}}}}',
            "task.deleteByQueryOptions.filter.\\ud800",
        ),
        (
            b'{"task": {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": '
            b'{"dataCollectionId": "c", "fieldKey": "tags", '
            b'"operations": {"addItems": [{"$date": "x"}]}}}}',
            f"{OPS}.addItems.0",
        ),
        (
            b'{"task": {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": '
            b'{"dataCollectionId": "c", "fieldKey": "tags", '
            b'"operations": {"addItems": ["\\udc00"]}}}}',
            f"{OPS}.addItems.0",
        ),
    ],
    ids=["surrogate-key", "bad-date", "surrogate-value"],
)
def test_http_bad_values_are_400(engine: TaskEngine, body: bytes, field: str) -> None:
    """A task body with a lone surrogate or an unstorable value is a 400 naming the field."""
    status, reply = _wsgi(engine, "POST", "/cms/v1/tasks", body)
    assert status == 400
    assert field in _fields(reply)
    assert engine.list_tasks().total == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("paging.offset=99999999999999999999999", "paging.offset"),
        ("paging.limit=99999999999999999999999", "paging.limit"),
    ],
)
def test_http_huge_paging_is_400(engine: TaskEngine, query: str, field: str) -> None:
    """A paging number beyond the documented range is a 400, not a 500."""
    status, reply = _wsgi(engine, "GET", f"/cms/v1/tasks?{query}")
    assert status == 400
    assert _fields(reply) == [field]


# -- property: both task stores accept and refuse the same specs ------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
    | st.sampled_from([LONE, "\udfff", {"$date": "x"}, {"$date": "2024-01-01"}, "tags", "c"])
)
_keys = st.sampled_from(["c", "tags", "x", LONE, "$eq", "$gt", "$date", "name"]) | st.text(
    max_size=3
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)


_replace_rules = st.fixed_dictionaries({"from": _json, "to": _json})


@st.composite
def task_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A task spec of a real type, with arbitrary JSON-ish values in its options."""
    kind = draw(
        st.sampled_from(
            [
                ("DELETE_BY_QUERY", "deleteByQueryOptions", ["filter", "appOptions"]),
                ("COPY_FIELD_DATA", "copyFieldDataOptions", ["sourceFieldKey", "targetFieldKey"]),
                ("EDIT_FIELD_DATA", "editFieldDataOptions", ["filter", "fieldKey", "operations"]),
                ("UPDATE_PUBLISH_STATUS", "updatePublishStatusOptions", ["filter", "operation"]),
            ]
        )
    )
    name, key, fields = kind
    options: dict[str, Any] = {"dataCollectionId": draw(st.sampled_from(["c", LONE, 7]))}
    for field in fields:
        if field == "operations":
            ops = draw(
                st.dictionaries(
                    st.sampled_from(["addItems", "removeItems", "replaceItems"]),
                    st.lists(_json | _replace_rules, max_size=2),
                    max_size=3,
                )
            )
            options[field] = ops
        elif draw(st.booleans()):
            options[field] = draw(_json)
    return {"type": name, key: options}


@given(task_specs())
def test_task_stores_agree_on_arbitrary_specs(spec: dict[str, Any]) -> None:
    """Any spec either creates a task on both stores or is the same InvalidTask on both."""
    outcomes = []
    for factory in (_memory_engine, _sqlite_engine):
        engine = factory()
        try:
            task = engine.create_task(spec)
        except InvalidTask as exc:
            str(exc).encode("utf-8")
            outcomes.append(("invalid", exc.violations))
            assert engine.list_tasks().total == 0
            continue
        else:
            outcomes.append(("created", engine.get_task(task.id).type))
            engine.run_until_idle()  # what is accepted runs without raising
        finally:
            _close(engine)
    assert outcomes[0] == outcomes[1]


@given(task_specs())
def test_arbitrary_specs_over_http_get_200_or_400(spec: dict[str, Any]) -> None:
    """Any spec posted (lone surrogates as JSON escapes, NaN, huge ints) gets 200 or 400."""
    engine = _sqlite_engine()
    try:
        body = json.dumps({"task": spec}).encode("ascii")  # \ud800 travels as an escape
        status, reply = _wsgi(engine, "POST", "/cms/v1/tasks", body)
        assert status in (200, 400), reply
        if status == 400:
            assert engine.list_tasks().total == 0
            assert _fields(reply) or reply["details"]
    finally:
        _close(engine)

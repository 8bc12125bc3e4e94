"""What every built-in type shares: option rules, environments, targets, dates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from tasktypes_support import PARSERS, fields

from taskengine.errors import TaskFailure
from taskengine.storage import Environment, Storage
from taskengine.task import RawOptions
from taskengine.tasktypes._common import (
    MAX_COLLECTION_ID_LENGTH,
    TaskEnvironment,
    format_date,
    parse_date,
    resolve_target,
)
from taskengine.tasktypes._fieldops import Operations
from taskengine.tasktypes.copy_field_data import CopyFieldDataExecutor, CopyFieldDataOptions
from taskengine.tasktypes.delete_by_query import (
    DeleteByQueryExecutor,
    DeleteByQueryOptions,
    parse_delete_by_query_options,
)
from taskengine.tasktypes.edit_field_data import EditFieldDataExecutor, EditFieldDataOptions
from taskengine.tasktypes.update_publish_status import (
    PublishOperation,
    UpdatePublishStatusExecutor,
    UpdatePublishStatusOptions,
)


@pytest.mark.parametrize("key", list(PARSERS))
def test_collection_required(key: str) -> None:
    """dataCollectionId is required by every type."""
    _, problems = PARSERS[key]({}, "task.o")
    assert fields(problems)["task.o.dataCollectionId"] == "required"


@pytest.mark.parametrize("key", list(PARSERS))
@pytest.mark.parametrize(
    "value", ["", "x" * (MAX_COLLECTION_ID_LENGTH + 1), 5], ids=["empty", "long", "number"]
)
def test_collection_bad_values(key: str, value: Any) -> None:
    """An empty, too long or non-string dataCollectionId is a violation."""
    _, problems = PARSERS[key]({"dataCollectionId": value}, "t")
    assert "t.dataCollectionId" in fields(problems)


def test_collection_255_is_fine() -> None:
    """A 255-character dataCollectionId is accepted."""
    name = "x" * MAX_COLLECTION_ID_LENGTH
    options, problems = parse_delete_by_query_options({"dataCollectionId": name}, "t")
    assert problems == []
    assert options is not None
    assert options.collection == name


@pytest.mark.parametrize("key", list(PARSERS))
def test_environment_must_be_known(key: str) -> None:
    """environment outside LIVE/SANDBOX/SANDBOX_PREFERRED is a violation."""
    _, problems = PARSERS[key]({"dataCollectionId": "c", "environment": "live"}, "t")
    assert "must be one of" in fields(problems)["t.environment"]


@pytest.mark.parametrize("env", list(TaskEnvironment))
def test_environments_accepted(env: TaskEnvironment) -> None:
    """Each documented environment parses; LIVE is the default."""
    options, problems = parse_delete_by_query_options(
        {"dataCollectionId": "c", "environment": env.value}, "t"
    )
    assert problems == []
    assert options is not None
    assert options.environment is env
    default, _ = parse_delete_by_query_options({"dataCollectionId": "c"}, "t")
    assert default is not None
    assert default.environment is TaskEnvironment.LIVE


@pytest.mark.parametrize("key", list(PARSERS))
def test_unknown_field_rejected(key: str) -> None:
    """A key the options object does not define is reported by path."""
    _, problems = PARSERS[key]({"dataCollectionId": "c", "bogus": 1}, "t")
    assert fields(problems)["t.bogus"] == "unknown field"


@pytest.mark.parametrize("key", list(PARSERS))
def test_options_must_be_object(key: str) -> None:
    """A non-object options value is reported at its own path."""
    options, problems = PARSERS[key]([1], "t.o")
    assert options is None
    assert fields(problems) == {"t.o": "must be an object"}


@pytest.mark.parametrize(
    "key", ["deleteByQueryOptions", "editFieldDataOptions", "updatePublishStatusOptions"]
)
def test_invalid_wix_filter_rejected(key: str) -> None:
    """A filter that does not compile in the wix dialect is a violation under .filter."""
    _, problems = PARSERS[key]({"dataCollectionId": "c", "filter": {"a": {"$regex": "x"}}}, "t")
    assert any(p.startswith("t.filter") for p in fields(problems))


def test_filter_must_be_object() -> None:
    """A non-object filter is a violation."""
    _, problems = parse_delete_by_query_options({"dataCollectionId": "c", "filter": [1]}, "t")
    assert fields(problems)["t.filter"] == "must be an object"


def test_null_optional_means_absent() -> None:
    """JSON null for an optional key is the default."""
    options, problems = parse_delete_by_query_options(
        {"dataCollectionId": "c", "filter": None, "environment": None}, "t"
    )
    assert problems == []
    assert options is not None
    assert options.filter is None
    assert options.environment is TaskEnvironment.LIVE


def test_filter_is_copied() -> None:
    """Options keep a copy of the filter: mutating the input does not change them."""
    spec = {"a": {"$in": [1]}}
    options, _ = parse_delete_by_query_options({"dataCollectionId": "c", "filter": spec}, "t")
    spec["a"]["$in"].append(2)
    assert options is not None
    assert options.filter == {"a": {"$in": [1]}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-01T10:00:00Z", datetime(2025, 1, 1, 10, tzinfo=timezone.utc)),
        ("2025-01-01T10:00:00.5Z", datetime(2025, 1, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)),
        ("2025-01-01T10:00:00", datetime(2025, 1, 1, 10, tzinfo=timezone.utc)),
        ({"$date": "2025-01-01T10:00:00Z"}, datetime(2025, 1, 1, 10, tzinfo=timezone.utc)),
        (
            datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
            datetime(2025, 1, 1, 10, tzinfo=timezone.utc),
        ),
    ],
)
def test_parse_date_accepts(value: Any, expected: datetime) -> None:
    """ISO strings (Z, offset, none = UTC), $date wrappers and datetimes are dates."""
    got = parse_date(value)
    assert got == expected
    assert got is not None
    assert got.tzinfo is not None


@pytest.mark.parametrize("value", ["", "tomorrow", "2025-13-01T00:00:00Z", 5, None, {"d": 1}])
def test_parse_date_rejects(value: Any) -> None:
    """Anything else is not a date (None, never an exception)."""
    assert parse_date(value) is None


def test_format_date_is_utc_z() -> None:
    """format_date writes UTC with a Z suffix."""
    moment = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert format_date(moment) == "2025-01-01T10:00:00Z"


def test_unknown_collection_fails_wde0025(targets: Storage) -> None:
    """Every executor fails an unknown collection with WDE0025 naming it."""
    cases: list[tuple[Any, Any]] = [
        (DeleteByQueryExecutor(), DeleteByQueryOptions("nope")),
        (CopyFieldDataExecutor(), CopyFieldDataOptions("nope", "a", "b")),
        (EditFieldDataExecutor(), EditFieldDataOptions("nope", "t", Operations(["x"]))),
        (
            UpdatePublishStatusExecutor(),
            UpdatePublishStatusOptions("nope", PublishOperation.SET_DRAFT_STATUS),
        ),
    ]
    for executor, options in cases:
        with pytest.raises(TaskFailure) as info:
            executor.plan(options, targets)
        assert info.value.code == "WDE0025"
        assert info.value.data == {"dataCollectionId": "nope"}


def test_sandbox_without_sandbox_fails_wde0179(targets: Storage) -> None:
    """SANDBOX on a collection without a sandbox fails with WDE0179."""
    with pytest.raises(TaskFailure) as info:
        resolve_target("plain", TaskEnvironment.SANDBOX, targets)
    assert info.value.code == "WDE0179"


@pytest.mark.parametrize(
    ("collection", "requested", "expected"),
    [
        ("plain", "LIVE", Environment.LIVE),
        ("plain", "SANDBOX_PREFERRED", Environment.LIVE),
        ("boxed", "SANDBOX_PREFERRED", Environment.SANDBOX),
        ("boxed", "SANDBOX", Environment.SANDBOX),
        ("boxed", "LIVE", Environment.LIVE),
    ],
)
def test_environment_resolution(
    targets: Storage, collection: str, requested: str, expected: Environment
) -> None:
    """SANDBOX_PREFERRED picks the sandbox exactly when the collection has one."""
    _, env = resolve_target(collection, requested, targets)
    assert env is expected
    plan = CopyFieldDataExecutor().plan(
        CopyFieldDataOptions(collection, "a", "b", TaskEnvironment(requested)), targets
    )
    assert plan.environment is expected


def test_empty_filter_is_no_filter(targets: Storage) -> None:
    """filter {} means all items: the plan carries no filter."""
    plan = EditFieldDataExecutor().plan(
        EditFieldDataOptions("plain", "t", Operations(["x"]), filter={}), targets
    )
    assert plan.filter is None


def test_plan_takes_only_its_own_parsed_options(targets: Storage) -> None:
    """Options are parsed once, by the engine: an executor refuses raw JSON options."""
    raw = RawOptions(
        "plain", {"dataCollectionId": "plain", "sourceFieldKey": "a", "targetFieldKey": "b"}
    )
    with pytest.raises(TypeError, match="expected CopyFieldDataOptions, got RawOptions"):
        CopyFieldDataExecutor().plan(raw, targets)

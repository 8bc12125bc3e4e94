"""Create-time validation of the four options objects (see docs/task-types.md)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.tasktypes._options import (
    MAX_COLLECTION_ID_LENGTH,
    MAX_OPERATION_ENTRIES,
    SYSTEM_FIELDS,
    CopyFieldDataOptions,
    DeleteByQueryOptions,
    EditFieldDataOptions,
    Operations,
    PublishOperation,
    ReplaceItem,
    TaskEnvironment,
    UpdatePublishStatusOptions,
    format_date,
    parse_copy_field_data_options,
    parse_date,
    parse_delete_by_query_options,
    parse_edit_field_data_options,
    parse_update_publish_status_options,
)

SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "001_5baa8ec0c6d1dce1.txt"

PARSERS = {
    "deleteByQueryOptions": parse_delete_by_query_options,
    "copyFieldDataOptions": parse_copy_field_data_options,
    "editFieldDataOptions": parse_edit_field_data_options,
    "updatePublishStatusOptions": parse_update_publish_status_options,
}


def seed_bodies() -> list[dict[str, Any]]:
    """The four curl ``-d`` bodies of the reference API (its DELETE body has a trailing comma)."""
    if SEED.exists():
        text = SEED.read_text()
        raw = re.findall(r"-d '(\{.*?\})'", text)
        # The reference's DELETE example is not strict JSON ("...}, }"): drop trailing commas.
        return [json.loads(re.sub(r",\s*([}\]])", r"\1", body)) for body in raw]
    return list(SEED_BODIES)


SEED_BODIES: list[dict[str, Any]] = [
    {
        "task": {
            "type": "UPDATE_PUBLISH_STATUS",
            "updatePublishStatusOptions": {
                "dataCollectionId": "Items",
                "environment": "LIVE",
                "filter": {"holidays": {"$in": ["Halloween"]}},
                "operation": "SCHEDULE_PUBLISHED_STATUS",
                "schedulePublishedStatusOptions": {"date": "2025-01-01T10:00:00Z"},
            },
        }
    },
    {
        "task": {
            "type": "DELETE_BY_QUERY",
            "deleteByQueryOptions": {
                "dataCollectionId": "Items",
                "environment": "LIVE",
                "filter": {"holidays": {"$in": ["Halloween"]}},
            },
        }
    },
    {
        "task": {
            "type": "EDIT_FIELD_DATA",
            "editFieldDataOptions": {
                "dataCollectionId": "Items",
                "environment": "LIVE",
                "filter": {"holidays": {"$in": ["Halloween"]}},
                "fieldKey": "tags",
                "operations": {
                    "addItems": ["sale"],
                    "removeItems": ["outdated"],
                    "replaceItems": [{"from": "Goob", "to": "Good"}],
                    "removeDuplicates": True,
                },
            },
        }
    },
    {
        "task": {
            "type": "COPY_FIELD_DATA",
            "copyFieldDataOptions": {
                "dataCollectionId": "Items",
                "environment": "LIVE",
                "sourceFieldKey": "fullName",
                "targetFieldKey": "fullNameCopy",
            },
        }
    },
]


def fields(violations: list[Any]) -> dict[str, str]:
    """Violations as {path: description}."""
    return {v.field: v.description for v in violations}


# --------------------------------------------------------------------------- seed


def test_seed_has_four_bodies_matching_the_copy_here() -> None:
    """The seed's four curl bodies are found, one per task type, equal to the copy here."""
    bodies = seed_bodies()
    assert sorted(b["task"]["type"] for b in bodies) == sorted(
        b["task"]["type"] for b in SEED_BODIES
    )
    assert sorted(map(json.dumps, bodies)) == sorted(map(json.dumps, SEED_BODIES))


@pytest.mark.parametrize("body", SEED_BODIES, ids=lambda b: b["task"]["type"])
def test_seed_bodies_parse(body: dict[str, Any]) -> None:
    """Each seed body's options parse with no violation and round-trip through to_json."""
    task = body["task"]
    key = next(k for k in task if k != "type")
    options, problems = PARSERS[key](task[key], f"task.{key}")
    assert problems == []
    assert options is not None
    assert task["type"] == options.TASK_TYPE
    again, problems = PARSERS[key](options.to_json(), "x")
    assert problems == []
    assert again == options


def test_seed_schedule_date_is_parsed() -> None:
    """The seed's schedule date becomes an aware UTC datetime."""
    options, _ = parse_update_publish_status_options(
        SEED_BODIES[0]["task"]["updatePublishStatusOptions"], "p"
    )
    assert options is not None
    assert options.date == datetime(2025, 1, 1, 10, tzinfo=timezone.utc)
    assert options.operation is PublishOperation.SCHEDULE_PUBLISHED_STATUS


def test_seed_edit_options_typed() -> None:
    """The seed's EDIT options become typed operations."""
    options, _ = parse_edit_field_data_options(
        SEED_BODIES[2]["task"]["editFieldDataOptions"], "p"
    )
    assert options == EditFieldDataOptions(
        data_collection_id="Items",
        field_key="tags",
        operations=Operations(
            add_items=["sale"],
            remove_items=["outdated"],
            replace_items=[ReplaceItem("Goob", "Good")],
            remove_duplicates=True,
        ),
        filter={"holidays": {"$in": ["Halloween"]}},
    )


# --------------------------------------------------------------------------- shared rules


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


# --------------------------------------------------------------------------- DELETE_BY_QUERY


def test_delete_publish_plugin_options() -> None:
    """includeDraftItems defaults to false and must be a boolean."""
    options, _ = parse_delete_by_query_options(
        {"dataCollectionId": "c", "publishPluginOptions": {"includeDraftItems": True}}, "t"
    )
    assert options is not None
    assert options.include_draft_items is True
    _, problems = parse_delete_by_query_options(
        {"dataCollectionId": "c", "publishPluginOptions": {"includeDraftItems": "yes"}}, "t"
    )
    assert fields(problems) == {
        "t.publishPluginOptions.includeDraftItems": "must be a boolean"
    }


def test_delete_app_options_opaque() -> None:
    """appOptions is kept as given but must be an object."""
    options, _ = parse_delete_by_query_options(
        {"dataCollectionId": "c", "appOptions": {"anything": [1, {"x": None}]}}, "t"
    )
    assert options is not None
    assert options.app_options == {"anything": [1, {"x": None}]}
    _, problems = parse_delete_by_query_options({"dataCollectionId": "c", "appOptions": 3}, "t")
    assert "t.appOptions" in fields(problems)


# --------------------------------------------------------------------------- COPY_FIELD_DATA


def test_copy_requires_both_keys() -> None:
    """sourceFieldKey and targetFieldKey are both required, reported together."""
    _, problems = parse_copy_field_data_options({"dataCollectionId": "c"}, "t")
    assert fields(problems) == {"t.sourceFieldKey": "required", "t.targetFieldKey": "required"}


def test_copy_keys_must_differ() -> None:
    """sourceFieldKey equal to targetFieldKey is a violation."""
    _, problems = parse_copy_field_data_options(
        {"dataCollectionId": "c", "sourceFieldKey": "a", "targetFieldKey": "a"}, "t"
    )
    assert fields(problems) == {"t.targetFieldKey": "must differ from sourceFieldKey"}


@pytest.mark.parametrize("system", sorted(SYSTEM_FIELDS))
def test_copy_target_not_system(system: str) -> None:
    """No system field may be a copy target; it may be the source."""
    _, problems = parse_copy_field_data_options(
        {"dataCollectionId": "c", "sourceFieldKey": "a", "targetFieldKey": system}, "t"
    )
    assert "t.targetFieldKey" in fields(problems)
    options, problems = parse_copy_field_data_options(
        {"dataCollectionId": "c", "sourceFieldKey": system, "targetFieldKey": "copy"}, "t"
    )
    assert problems == []
    assert options is not None


# --------------------------------------------------------------------------- EDIT_FIELD_DATA


def edit(**extra: Any) -> dict[str, Any]:
    """A valid edit options object with overrides."""
    base: dict[str, Any] = {
        "dataCollectionId": "c",
        "fieldKey": "tags",
        "operations": {"addItems": ["x"]},
    }
    base.update(extra)
    return base


def test_edit_field_key_required_and_not_system() -> None:
    """fieldKey is required and may not be a system field."""
    body = edit()
    del body["fieldKey"]
    _, problems = parse_edit_field_data_options(body, "task.editFieldDataOptions")
    assert fields(problems) == {"task.editFieldDataOptions.fieldKey": "required"}
    _, problems = parse_edit_field_data_options(edit(fieldKey="_id"), "t")
    assert "t.fieldKey" in fields(problems)


def test_edit_operations_required_and_nonempty() -> None:
    """operations is required and must request at least one operation."""
    body = edit()
    del body["operations"]
    _, problems = parse_edit_field_data_options(body, "t")
    assert fields(problems) == {"t.operations": "required"}
    _, problems = parse_edit_field_data_options(edit(operations={"removeDuplicates": False}), "t")
    assert "t.operations" in fields(problems)


@pytest.mark.parametrize("name", ["addItems", "removeItems"])
def test_edit_cap_64(name: str) -> None:
    """addItems/removeItems accept 64 entries and reject 65."""
    ok, problems = parse_edit_field_data_options(
        edit(operations={name: list(range(MAX_OPERATION_ENTRIES))}), "t"
    )
    assert problems == []
    assert ok is not None
    _, problems = parse_edit_field_data_options(
        edit(operations={name: list(range(MAX_OPERATION_ENTRIES + 1))}), "t"
    )
    assert fields(problems) == {f"t.operations.{name}": "must have at most 64 entries"}


def test_edit_replace_cap_and_entries() -> None:
    """replaceItems is capped at 64 and each entry needs from and to (null allowed)."""
    pairs = [{"from": i, "to": i + 1} for i in range(MAX_OPERATION_ENTRIES + 1)]
    _, problems = parse_edit_field_data_options(edit(operations={"replaceItems": pairs}), "t")
    assert "t.operations.replaceItems" in fields(problems)
    _, problems = parse_edit_field_data_options(
        edit(operations={"replaceItems": [{"from": "a"}, {"to": "b", "x": 1}, 3]}), "t"
    )
    assert fields(problems) == {
        "t.operations.replaceItems.0.to": "required",
        "t.operations.replaceItems.1.from": "required",
        "t.operations.replaceItems.1.x": "unknown field",
        "t.operations.replaceItems.2": "must be an object",
    }
    options, problems = parse_edit_field_data_options(
        edit(operations={"replaceItems": [{"from": None, "to": "x"}]}), "t"
    )
    assert problems == []
    assert options is not None
    assert options.operations.replace_items == (ReplaceItem(None, "x"),)


def test_edit_values_must_be_storable() -> None:
    """Operation values must be JSON-like: NaN, sets and huge ints are violations."""
    _, problems = parse_edit_field_data_options(
        edit(operations={"addItems": [1, float("nan"), {1, 2}, 2**70]}), "t"
    )
    assert set(fields(problems)) == {
        "t.operations.addItems.1",
        "t.operations.addItems.2",
        "t.operations.addItems.3",
    }


def test_edit_arrays_must_be_arrays() -> None:
    """addItems given as a string is a violation, not a list of characters."""
    _, problems = parse_edit_field_data_options(edit(operations={"addItems": "abc"}), "t")
    assert fields(problems) == {"t.operations.addItems": "must be an array"}


def test_all_violations_reported_together() -> None:
    """Every broken rule is reported in one call, each by its path."""
    _, problems = parse_edit_field_data_options(
        {
            "dataCollectionId": "",
            "environment": "MOON",
            "fieldKey": "_owner",
            "operations": {"addItems": list(range(65)), "removeDuplicates": "y"},
        },
        "task.editFieldDataOptions",
    )
    assert set(fields(problems)) == {
        "task.editFieldDataOptions.dataCollectionId",
        "task.editFieldDataOptions.environment",
        "task.editFieldDataOptions.fieldKey",
        "task.editFieldDataOptions.operations.addItems",
        "task.editFieldDataOptions.operations.removeDuplicates",
    }


# --------------------------------------------------------------------------- UPDATE_PUBLISH_STATUS


def test_publish_operation_required_and_known() -> None:
    """operation is required and must be one of the five operations."""
    _, problems = parse_update_publish_status_options({"dataCollectionId": "c"}, "t")
    assert fields(problems) == {"t.operation": "required"}
    _, problems = parse_update_publish_status_options(
        {"dataCollectionId": "c", "operation": "PUBLISH"}, "t"
    )
    assert "must be one of" in fields(problems)["t.operation"]


@pytest.mark.parametrize(
    ("operation", "key"),
    [
        ("SCHEDULE_PUBLISHED_STATUS", "schedulePublishedStatusOptions"),
        ("SCHEDULE_DRAFT_STATUS", "scheduleDraftStatusOptions"),
    ],
)
def test_schedule_needs_date(operation: str, key: str) -> None:
    """The schedule operations need their options' date, parseable."""
    base = {"dataCollectionId": "c", "operation": operation}
    _, problems = parse_update_publish_status_options(base, "t")
    assert fields(problems) == {f"t.{key}.date": "required"}
    _, problems = parse_update_publish_status_options({**base, key: {}}, "t")
    assert fields(problems) == {f"t.{key}.date": "required"}
    _, problems = parse_update_publish_status_options({**base, key: {"date": "soon"}}, "t")
    assert fields(problems) == {f"t.{key}.date": "must be an ISO-8601 date-time"}
    options, problems = parse_update_publish_status_options(
        {**base, key: {"date": "2030-05-01T12:00:00+02:00"}}, "t"
    )
    assert problems == []
    assert options is not None
    assert options.date == datetime(2030, 5, 1, 10, tzinfo=timezone.utc)


def test_schedule_options_only_with_their_operation() -> None:
    """A schedule options object that does not match the operation is a violation."""
    _, problems = parse_update_publish_status_options(
        {
            "dataCollectionId": "c",
            "operation": "SET_DRAFT_STATUS",
            "schedulePublishedStatusOptions": {"date": "2030-01-01T00:00:00Z"},
        },
        "t",
    )
    assert fields(problems) == {
        "t.schedulePublishedStatusOptions": "not allowed with operation SET_DRAFT_STATUS"
    }


@pytest.mark.parametrize("op", ["SET_PUBLISHED_STATUS", "SET_DRAFT_STATUS", "CANCEL_SCHEDULING"])
def test_non_schedule_operations_need_no_date(op: str) -> None:
    """SET_* and CANCEL_SCHEDULING parse without a date."""
    options, problems = parse_update_publish_status_options(
        {"dataCollectionId": "c", "operation": op}, "t"
    )
    assert problems == []
    assert options is not None
    assert options.date is None


# --------------------------------------------------------------------------- dates


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


# --------------------------------------------------------------------------- round trip

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=2), inner, max_size=2)
    ),
    max_leaves=5,
)
names = st.text(min_size=1, max_size=8).filter(lambda s: s not in SYSTEM_FIELDS)
envs = st.sampled_from(list(TaskEnvironment))
filters = st.one_of(st.none(), st.builds(lambda v: {"f": {"$eq": v}}, st.integers(0, 3)))

options_strategy = st.one_of(
    st.builds(
        DeleteByQueryOptions,
        data_collection_id=names,
        environment=envs,
        filter=filters,
        app_options=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), json_values)),
        include_draft_items=st.booleans(),
    ),
    st.builds(
        lambda c, e, s: CopyFieldDataOptions(c, s, s + "_copy", e),
        names,
        envs,
        names,
    ),
    st.builds(
        EditFieldDataOptions,
        data_collection_id=names,
        field_key=names,
        operations=st.builds(
            Operations,
            add_items=st.lists(json_values, min_size=1, max_size=3),
            remove_items=st.lists(json_values, max_size=3),
            replace_items=st.lists(st.builds(ReplaceItem, json_values, json_values), max_size=2),
            remove_duplicates=st.booleans(),
        ),
        environment=envs,
        filter=filters,
    ),
    st.builds(
        UpdatePublishStatusOptions,
        data_collection_id=names,
        operation=st.sampled_from(list(PublishOperation)),
        environment=envs,
        filter=filters,
        date=st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(
                timezone.utc
            )
        ),
    ).map(
        lambda o: o
        if o.operation.schedule_key
        else UpdatePublishStatusOptions(
            o.data_collection_id, o.operation, o.environment, o.filter, None
        )
    ),
)


@given(options_strategy)
def test_to_json_round_trips(options: Any) -> None:
    """parse(to_json(options)) gives back equal options, with no violation."""
    data = json.loads(json.dumps(options.to_json()))
    again, problems = PARSERS[options.OPTIONS_KEY](data, "t")
    assert problems == []
    assert again == options

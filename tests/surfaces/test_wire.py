"""The JSON wire format: tolerant trailing commas, strict everything else, clean errors."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine._jsonio import (
    MAX_DEPTH,
    dumps,
    json_type_name,
    parse_json,
    parse_json_object,
)
from taskengine.errors import InvalidRequest, Violation

REFERENCE_DELETE_BY_QUERY = """{ "task": { "type": "DELETE_BY_QUERY", "deleteByQueryOptions": {
"dataCollectionId": "Items", "environment": "LIVE", "filter": { "holidays": { "$in":
["Halloween"] } }, } } }"""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _dump_with_trailing_commas(value: Any, draw_comma: Any) -> str:
    """Serialise like json.dumps, adding a trailing comma to containers when told to."""
    if isinstance(value, list):
        parts = [_dump_with_trailing_commas(v, draw_comma) for v in value]
        comma = "," if parts and draw_comma() else ""
        return "[" + ", ".join(parts) + comma + " ]"
    if isinstance(value, dict):
        parts = [
            json.dumps(k) + ": " + _dump_with_trailing_commas(v, draw_comma)
            for k, v in value.items()
        ]
        comma = ",\n" if parts and draw_comma() else ""
        return "{" + ", ".join(parts) + comma + "}"
    return json.dumps(value)


def _violation(exc: pytest.ExceptionInfo[InvalidRequest]) -> Violation:
    assert len(exc.value.violations) == 1
    return exc.value.violations[0]


@given(json_values)
def test_standard_json_round_trips(value: Any) -> None:
    """Any standard JSON document parses to the value it encodes."""
    assert parse_json(json.dumps(value)) == value
    assert parse_json(json.dumps(value).encode("utf-8")) == value


@given(json_values, st.data())
def test_trailing_commas_are_ignored(value: Any, data: st.DataObject) -> None:
    """A trailing comma before any closing bracket changes nothing about the parsed value."""
    text = _dump_with_trailing_commas(value, lambda: data.draw(st.booleans()))
    assert parse_json(text) == value


@given(st.text(alphabet=',]}[{" \\:ab', max_size=12))
def test_commas_inside_strings_are_kept(inner: str) -> None:
    """Text inside strings, commas and brackets included, is never altered."""
    value = {"s": inner, "l": [inner]}
    assert parse_json(json.dumps(value)) == value


@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_anything_parses_or_raises_invalid_request(data: str | bytes) -> None:
    """Arbitrary input either parses or raises InvalidRequest naming the source; never else."""
    error: InvalidRequest | None = None
    try:
        parse_json(data, source="input.json")
    except InvalidRequest as exc:
        error = exc
    assert error is None or error.violations[0].field == "input.json"


@given(st.integers(min_value=1, max_value=MAX_DEPTH + 40))
def test_depth_limit(depth: int) -> None:
    """Nesting up to MAX_DEPTH parses; one level deeper is refused with a violation."""
    text = "[" * depth + "]" * depth
    if depth <= MAX_DEPTH:
        assert parse_json(text) is not None
    else:
        with pytest.raises(InvalidRequest, match="nested deeper than"):
            parse_json(text)


def test_very_deep_nesting_is_refused_without_recursion_error() -> None:
    """A hostile 100k-deep document gets a clean InvalidRequest, not a RecursionError."""
    with pytest.raises(InvalidRequest, match="nested deeper"):
        parse_json('{"a":' * 100_000)


def test_reference_delete_by_query_example_parses() -> None:
    """The reference's DELETE_BY_QUERY curl body, trailing comma included, parses."""
    body = parse_json_object(REFERENCE_DELETE_BY_QUERY)
    options = body["task"]["deleteByQueryOptions"]
    assert options["filter"] == {"holidays": {"$in": ["Halloween"]}}


@pytest.mark.parametrize("text", ["[,]", "[1,,]", "{,}", '{"a":1,,}', "[1 2]"])
def test_stray_commas_stay_errors(text: str) -> None:
    """Only a real trailing comma is tolerated; leading or doubled commas are errors."""
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_json(text)


def test_syntax_error_reports_line_and_column() -> None:
    """A syntax error names the source, line and column (columns stay exact after commas)."""
    text = '{\n  "a": [1, 2,],\n  "b": tru\n}'
    with pytest.raises(InvalidRequest) as exc:
        parse_json(text, source="task.json")
    violation = _violation(exc)
    assert violation.field == "task.json"
    assert "(line 3 column 8)" in violation.description


@given(st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=10))
def test_error_position_matches_the_standard_decoder(lines: int, indent: int) -> None:
    """For invalid text without trailing commas, line and column equal json's own."""
    text = "\n" * lines + " " * indent + '{"a": }'
    with pytest.raises(json.JSONDecodeError) as std:
        json.loads(text)
    with pytest.raises(InvalidRequest) as ours:
        parse_json(text)
    assert f"(line {std.value.lineno} column {std.value.colno})" in str(ours.value)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        ("   \n", "empty"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("NaN", "NaN is not valid JSON"),
        ('{"a": Infinity}', "Infinity is not valid JSON"),
        ("{'a': 1}", "not valid JSON"),
        ('{"a": 1} // comment', "not valid JSON"),
        ('"unterminated', "not valid JSON"),
    ],
)
def test_rejections_name_the_rule(data: str | bytes, reason: str) -> None:
    """Each kind of bad input is refused with a description of the broken rule."""
    with pytest.raises(InvalidRequest) as exc:
        parse_json(data)
    violation = _violation(exc)
    assert violation.field == "body"
    assert reason in violation.description


def test_byte_order_mark_is_skipped() -> None:
    """A UTF-8 byte order mark (as some editors write) is not an error."""
    assert parse_json("\ufeff{}".encode()) == {}


@pytest.mark.parametrize(
    ("value", "name"),
    [([], "an array"), (1, "a number"), ("x", "a string"), (None, "null"), (True, "a boolean")],
)
def test_parse_json_object_requires_an_object(value: Any, name: str) -> None:
    """A document that is not an object is refused, naming what it was."""
    with pytest.raises(InvalidRequest, match=f"must be a JSON object, got {name}"):
        parse_json_object(json.dumps(value))
    assert json_type_name(value) == name


def test_dumps_is_compact_utf8_and_encodes_dates() -> None:
    """dumps writes compact UTF-8 text and dates as {"$date": ISO}."""
    moment = datetime(2025, 1, 1, 10, 0, tzinfo=timezone.utc)
    text = dumps({"name": "Zoë", "when": moment})
    assert text == '{"name":"Zoë","when":{"$date":"2025-01-01T10:00:00+00:00"}}'
    assert re.search(r"\n  ", dumps({"a": 1}, indent=2))


def test_dumps_refuses_non_json_values() -> None:
    """dumps never writes NaN or an arbitrary object."""
    with pytest.raises(ValueError, match="JSON"):
        dumps(float("nan"))
    with pytest.raises(TypeError, match="not a JSON value"):
        dumps(object())

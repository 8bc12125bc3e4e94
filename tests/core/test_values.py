"""The value model (taskengine._values): each rule once, and its fast forms agree with it."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import values

from taskengine._values import (
    INT64_MAX,
    INT64_MIN,
    bson_equal,
    check_storable,
    date_from_text,
    date_text,
    equal_to,
    find_foreign,
    format_timestamp,
    format_utc,
    identical,
    is_date_wrapper,
    parse_date,
    parse_iso_datetime,
    parse_timestamp,
    storable,
    values_equal,
)
from taskengine.storage import _shapes, codec

UTC = timezone.utc

offsets = st.builds(
    lambda minutes, seconds, micro: timezone(
        timedelta(minutes=minutes, seconds=seconds, microseconds=micro)
    ),
    st.integers(-1439, 1439),
    st.sampled_from([0, 0, 30]),
    st.sampled_from([0, 0, 5]),
)
naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
any_datetimes = naive | st.builds(lambda d, tz: d.replace(tzinfo=tz), naive, offsets)

# Values that storage refuses or must normalise, mixed into JSON-like values.
awkward = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        2**63,
        -(2**63) - 1,
        INT64_MAX,
        INT64_MIN,
        "\ud800",
        "é",
        {"$date": "2024-01-01T10:00:00Z"},
        {"$date": "nope"},
        {"$date": "2024-01-01", "x": 1},
        {1: "non-str key"},
        (1, 2),
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2))),
    ]
)
storage_values = st.recursive(
    values | awkward,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=2), children, max_size=3)
    ),
    max_leaves=8,
)
iso_texts = st.one_of(
    any_datetimes.map(lambda d: d.isoformat()),
    st.from_regex(
        r"\A\d{4}-?\d{2}-?\d{2}([Tt x]\d{2}(:?\d{2}(:\d{2}([.,]\d{1,8})?)?)?)?"
        r"([Zz]|[+-]\d{2}(:?\d{2})?)?\Z"
    ),
    st.text(max_size=12),
)


@given(value=storage_values)
def test_shape_checkers_agree_with_the_storable_rule(value: Any) -> None:
    """storage._shapes accepts a value as it is exactly when _values stores it unchanged."""
    item = {"v": value}
    plan = _shapes.plan_dict(item)
    refused = check_storable(item)
    if plan is not None:
        assert refused is None
        assert identical(storable(item), item)
    elif refused is None and identical(storable(item), item):
        assert _has_date_key(item)  # the one shape the fast checks leave to the walk


def _has_date_key(value: Any) -> bool:
    """Whether a dict with a "$date" key sits anywhere in value."""
    if type(value) is dict:
        return "$date" in value or any(_has_date_key(v) for v in value.values())
    return type(value) is list and any(_has_date_key(v) for v in value)


@given(moment=any_datetimes)
def test_every_date_text_parses_back_exactly(moment: datetime) -> None:
    """parse_iso_datetime and date_from_text both read date_text's output exactly."""
    text = date_text(moment)
    for parsed in (parse_iso_datetime(text), date_from_text(text)):
        assert parsed == moment
        assert parsed is not None
        assert parsed.utcoffset() == moment.utcoffset()


@given(text=iso_texts)
def test_storage_admits_exactly_the_date_strings_filters_read_as_dates(text: str) -> None:
    """A {"$date": s} dict is stored as a date exactly when a filter reads it as one."""
    wrapper = {"$date": text}
    assert (check_storable(wrapper) is None) == is_date_wrapper(wrapper)
    assert (codec.parse_date(text) is not None) == is_date_wrapper(wrapper)


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        (float("nan"), ("", "float nan is not finite (NaN and infinity cannot be stored)")),
        ({"a": [1, INT64_MAX + 1]}, ("a.1", "int outside the signed 64-bit range")),
        ({"a": INT64_MIN - 1}, ("a", "int outside the signed 64-bit range")),
        (["ok", "\ud800"], ("1", "string is not valid Unicode (lone surrogate)")),
        ({"$date": "soon"}, ("", "{'$date': 'soon'} is not an ISO-8601 date")),
        ({1: 2}, ("1", "keys must be strings, got int 1")),
        ((1,), ("", "tuple is not a storable value (JSON types and datetime only)")),
    ],
)
def test_check_storable_names_the_path_and_the_rule(value: Any, refused: tuple[str, str]) -> None:
    """check_storable returns the dotted path and the reason of the first refused part."""
    assert check_storable(value) == refused


def test_storable_bounds_are_inclusive() -> None:
    """INT64_MIN and INT64_MAX themselves are storable, by the walk and by the shapes."""
    item = {"low": INT64_MIN, "high": INT64_MAX}
    assert check_storable(item) is None
    assert _shapes.plan_dict(item) == ()
    assert _shapes.plan_dict({"low": INT64_MIN - 1, "high": 0}) is None


def test_storable_turns_a_date_wrapper_into_a_datetime_with_a_timezone() -> None:
    """A {"$date": ISO} dict becomes its datetime; a foreign tzinfo becomes a timezone."""
    assert storable({"$date": "2024-01-01T10:00:00Z"}) == datetime(2024, 1, 1, 10, tzinfo=UTC)

    class Plus2(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            return timedelta(hours=2)

    out = storable(datetime(2024, 1, 1, tzinfo=Plus2()))
    assert type(out.tzinfo) is timezone
    assert out.utcoffset() == timedelta(hours=2)


def test_find_foreign_allows_extra_leaves_only_when_given() -> None:
    """A regex is foreign unless the caller adds it; the path names where it sits."""
    rx = re.compile("a")
    assert find_foreign({"a": [1, rx]}, "f") == ("f.a.1", "unsupported value of type Pattern")
    assert find_foreign({"a": [1, rx]}, "f", (re.Pattern,)) is None
    assert find_foreign({1: "x"}, "f") == ("f", "object keys must be strings, not 1")


def test_find_foreign_checks_date_wrappers_only_when_asked() -> None:
    """With dates=True a "$date" dict that is not a date wrapper is refused."""
    bad = {"x": {"$date": "2024-01-01", "y": 1}}
    assert find_foreign(bad, "f") is None
    reason = '"$date" needs an ISO-8601 date string and no other key'
    assert find_foreign(bad, "f", dates=True) == ("f.x", reason)


@given(a=values, b=values)
def test_equal_to_agrees_with_the_equalities(a: Any, b: Any) -> None:
    """equal_to(c) answers as bson_equal (ordered) or values_equal (unordered)."""
    assert equal_to(a, ordered=True)(b) == bson_equal(b, a)
    assert equal_to(a, ordered=False)(b) == values_equal(b, a)


def test_equalities_differ_only_in_key_order() -> None:
    """values_equal ignores key order, bson_equal does not; neither takes True for 1."""
    a, b = {"x": 1, "y": 2}, {"y": 2, "x": 1.0}
    assert values_equal(a, b)
    assert not bson_equal(a, b)
    assert not values_equal(True, 1)
    assert values_equal(float("nan"), float("nan"))


def test_identical_is_stricter_than_equal() -> None:
    """identical needs the same types, key order and time zone; NaN is identical to NaN."""
    assert not identical(1, 1.0)
    assert not identical({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert identical(float("nan"), float("nan"))
    aware = datetime(2024, 1, 1, 12, tzinfo=UTC)
    shifted = aware.astimezone(timezone(timedelta(hours=1)))
    assert values_equal(aware, shifted)
    assert not identical(aware, shifted)


def test_timestamps_are_utc_milliseconds_with_z() -> None:
    """format_timestamp writes UTC milliseconds and Z; parse_timestamp reads it back."""
    moment = datetime(2026, 1, 1, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    text = format_timestamp(moment)
    assert text == "2026-01-01T10:00:00.123Z"
    assert parse_timestamp(text) == datetime(2026, 1, 1, 10, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026-01-01T10:00:00", "yesterday", "2026-13-01T00:00Z"])
def test_parse_timestamp_refuses_dates_without_a_zone_or_invalid(text: str) -> None:
    """parse_timestamp raises ValueError for a naive or invalid timestamp."""
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(text)


def test_option_dates_read_three_forms_and_write_utc_z() -> None:
    """parse_date takes a string, a wrapper or a datetime (naive = UTC); format_utc ends in Z."""
    expected = datetime(2026, 5, 1, 9, tzinfo=UTC)
    assert parse_date(" 2026-05-01T09:00:00Z ") == expected
    assert parse_date({"$date": "2026-05-01T11:00:00+02:00"}) == expected
    assert parse_date(datetime(2026, 5, 1, 9)) == expected
    assert parse_date(5) is None
    assert parse_date("May 1st") is None
    two_hours_east = timezone(timedelta(hours=2))
    assert format_utc(datetime(2026, 5, 1, 11, tzinfo=two_hours_east)) == "2026-05-01T09:00:00Z"

"""Example tests of the wix dialect (see docs/filters.md), operator by operator."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from taskengine.errors import InvalidFilter
from taskengine.filters import compile_filter, matches


def w(spec: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Shorthand: wix-dialect match."""
    return matches(spec, doc, dialect="wix")


def test_dialect_is_recorded() -> None:
    """A wix filter reports its dialect and differs from the same mongo spec."""
    f = compile_filter({"a": 1}, dialect="wix")
    assert f.dialect == "wix"
    assert f != compile_filter({"a": 1})


def test_empty_matches_everything() -> None:
    """{} and None match every document."""
    assert w({}, {"a": 1})
    assert compile_filter(None, dialect="wix")({})


@pytest.mark.parametrize(
    ("spec", "doc", "expected"),
    [
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"a": True}, False),
        ({"a": True}, {"a": 1}, False),
        ({"a": "x"}, {"a": "X"}, False),
        ({"a": {"$eq": "x"}}, {"a": ["y", "x"]}, True),
        ({"a": [1, 2]}, {"a": [1, 2]}, True),
        ({"a": [1, 2]}, {"a": [2, 1]}, False),
        ({"a": [1]}, {"a": 1}, False),
        ({"a": {"b": 1, "c": 2}}, {"a": {"c": 2, "b": 1}}, True),
        ({"a.b": 1}, {"a": {"b": 1}}, True),
        ({"a.0": 1}, {"a": [1, 2]}, True),
        ({"a": {"$date": "2020-01-01T00:00:00Z"}}, {"a": datetime(2020, 1, 1)}, True),
        ({"a": float("nan")}, {"a": float("nan")}, True),
    ],
)
def test_eq(spec: dict[str, Any], doc: dict[str, Any], expected: bool) -> None:
    """$eq is type-strict and case-sensitive; arrays: some element, or whole-array operand."""
    assert w(spec, doc) is expected


@pytest.mark.parametrize(
    ("doc", "expected"),
    [({"a": 1}, False), ({"a": [2, 1]}, False), ({"a": [2]}, True), ({}, True), ({"a": "1"}, True)],
)
def test_ne(doc: dict[str, Any], expected: bool) -> None:
    """$ne v: no element equals v; missing fields match."""
    assert w({"a": {"$ne": 1}}, doc) is expected


@pytest.mark.parametrize(
    ("spec", "doc", "expected"),
    [
        ({"a": None}, {}, True),
        ({"a": None}, {"a": None}, True),
        ({"a": None}, {"a": ""}, False),
        ({"a": {"$exists": False}}, {"a": None}, True),
        ({"a": {"$exists": False}}, {"a": 0}, False),
        ({"a": {"$exists": True}}, {"a": ""}, True),
        ({"a": {"$exists": True}}, {"a": None}, False),
        ({"a": {"$exists": True}}, {"a": []}, True),
        ({"a": {"$ne": None}}, {"a": ""}, True),
        ({"a": {"$ne": None}}, {}, False),
    ],
)
def test_null_and_exists(spec: dict[str, Any], doc: dict[str, Any], expected: bool) -> None:
    """null/$exists:false match missing or null; $exists:true/$ne:null any non-null value."""
    assert w(spec, doc) is expected


@pytest.mark.parametrize(
    ("spec", "doc", "expected"),
    [
        ({"a": {"$gt": 1}}, {"a": 2}, True),
        ({"a": {"$gt": 1}}, {"a": "2"}, False),
        ({"a": {"$gt": 0}}, {"a": True}, False),
        ({"a": {"$gte": "b"}}, {"a": "b"}, True),
        ({"a": {"$lt": "b"}}, {"a": "B"}, True),
        ({"a": {"$lt": "z"}}, {"a": "é"}, False),
        ({"a": {"$lte": 1}}, {}, False),
        ({"a": {"$gt": 5}}, {"a": [1, 9]}, True),
        ({"a": {"$lt": {"$date": "2020-01-01"}}}, {"a": datetime(2019, 1, 1)}, True),
        ({"a": {"$lt": {"$date": "2020-01-01"}}}, {"a": "2019"}, False),
        ({"a": {"$gt": 1, "$lt": 3}}, {"a": 2}, True),
        ({"a": {"$gt": 1, "$lt": 3}}, {"a": 3}, False),
    ],
)
def test_comparisons_are_type_strict(
    spec: dict[str, Any], doc: dict[str, Any], expected: bool
) -> None:
    """Comparisons only between numbers, strings (code point), dates, booleans."""
    assert w(spec, doc) is expected


def test_in_nin() -> None:
    """$in: equals one of the values (no True/1 trap); $nin the complement."""
    assert w({"a": {"$in": [1, "x"]}}, {"a": "x"})
    assert not w({"a": {"$in": [1]}}, {"a": True})
    assert not w({"a": {"$in": ["X"]}}, {"a": "x"})
    assert w({"a": {"$in": [1]}}, {"a": [3, 1]})
    assert w({"a": {"$nin": [1]}}, {})
    assert not w({"a": {"$nin": [1]}}, {"a": 1.0})


def test_has_some_has_all() -> None:
    """$hasSome = intersection not empty; $hasAll = superset; case-sensitive."""
    assert w({"t": {"$hasSome": ["a", "z"]}}, {"t": ["a", "b"]})
    assert not w({"t": {"$hasSome": ["A"]}}, {"t": ["a", "b"]})
    assert w({"t": {"$hasAll": ["a", "b"]}}, {"t": ["b", "c", "a"]})
    assert not w({"t": {"$hasAll": ["a", "d"]}}, {"t": ["b", "c", "a"]})
    assert w({"t": {"$hasAll": []}}, {"t": []})
    assert w({"t": {"$hasSome": [1]}}, {"t": 1})
    assert not w({"t": {"$hasSome": [1]}}, {"t": [True]})


@pytest.mark.parametrize(
    ("op", "arg", "value", "expected"),
    [
        ("$startsWith", "AL", "alice", True),
        ("$startsWith", "li", "alice", False),
        ("$endsWith", "CE", "alice", True),
        ("$contains", "Lic", "alice", True),
        ("$contains", "1", 1, False),
        ("$contains", "b", ["abc", 2], True),
        ("$startsWith", "", "", True),
    ],
)
def test_string_operators_case_insensitive(op: str, arg: str, value: Any, expected: bool) -> None:
    """$startsWith/$endsWith/$contains are case-insensitive and match strings only."""
    assert w({"a": {op: arg}}, {"a": value}) is expected


def test_logical() -> None:
    """$and, $or and top-level $not (object or one-element list)."""
    doc = {"a": 1, "b": "x"}
    assert w({"$and": [{"a": 1}, {"b": "x"}]}, doc)
    assert w({"$or": [{"a": 2}, {"b": "x"}]}, doc)
    assert not w({"$not": {"a": 1}}, doc)
    assert w({"$not": [{"a": 2}]}, doc)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"title": "Xmas sale"}, False),
        ({"title": "xylophone"}, False),
        ({"title": "Pumpkin"}, True),
        ({"title": ["Pumpkin", "xmas"]}, False),
        ({"title": 5}, True),
        ({"title": None}, True),
        ({}, True),
    ],
)
def test_field_level_not(doc: dict[str, Any], expected: bool) -> None:
    """A field-level $not wraps an operator object and matches where it fails (missing too)."""
    assert w({"title": {"$not": {"$startsWith": "x"}}}, doc) is expected


def test_field_level_not_of_several_operators() -> None:
    """A field-level $not of a range matches the values outside it."""
    spec = {"n": {"$not": {"$gte": 1, "$lt": 3}}}
    assert [w(spec, {"n": n}) for n in (0, 1, 2, 3)] == [True, False, False, True]


def test_dates_aware_and_naive() -> None:
    """Dates compare by instant; a naive datetime is UTC."""
    doc = {"d": datetime(2020, 1, 1, tzinfo=timezone.utc)}
    assert w({"d": datetime(2020, 1, 1)}, doc)
    assert w({"d": {"$gte": {"$date": "2020-01-01T00:00:00Z"}}}, doc)


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"a": {"$regex": "x"}}, "a.$regex"),
        ({"$regex": "x"}, "$regex"),
        ({"a": {"$foo": 1}}, "a.$foo"),
        ({"$foo": 1}, "$foo"),
        ({"$and": []}, "$and"),
        ({"$or": [1]}, "$or.0"),
        ({"$not": [{"a": 1}, {"b": 1}]}, "$not"),
        ({"$not": 1}, "$not"),
        ({"a": {"$in": 1}}, "a.$in"),
        ({"a": {"$hasSome": "x"}}, "a.$hasSome"),
        ({"a": {"$hasAll": None}}, "a.$hasAll"),
        ({"a": {"$startsWith": 1}}, "a.$startsWith"),
        ({"a": {"$exists": 1}}, "a.$exists"),
        ({"a": {"$gt": None}}, "a.$gt"),
        ({"a": {"$gt": [1]}}, "a.$gt"),
        ({"a": {"$gt": float("nan")}}, "a.$gt"),
        ({"a": {"$elemMatch": {}}}, "a.$elemMatch"),
        ({"a": {"$date": "nope"}}, "a"),
        ({"a": {"$eq": object()}}, "a.$eq"),
        ({"a": {"$not": "x"}}, "a.$not"),
        ({"a": {"$not": {}}}, "a.$not"),
        ({"a": {"$not": {"b": 1}}}, "a.$not.b"),
        ({"a": {"$not": {"$regex": "x"}}}, "a.$not.$regex"),
        ({"a": {"$not": {"$startsWith": 1}}}, "a.$not.$startsWith"),
    ],
)
def test_invalid_specs(spec: dict[str, Any], path: str) -> None:
    """Invalid wix specs raise InvalidFilter naming the path ($regex rejected)."""
    with pytest.raises(InvalidFilter) as info:
        compile_filter(spec, dialect="wix")
    assert info.value.path == path

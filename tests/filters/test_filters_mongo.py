"""Example tests of the mongo dialect, operator by operator, including the traps."""

from __future__ import annotations

import copy
import pickle
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from taskengine.errors import InvalidFilter
from taskengine.filters import Filter, compile_filter, matches

NAN = float("nan")


def m(spec: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Shorthand: mongo-dialect match."""
    return matches(spec, doc)


# ------------------------------------------------------------------ Filter object


def test_none_and_empty_match_everything() -> None:
    """None and {} compile to filters that accept any document."""
    assert compile_filter(None)({"a": 1})
    assert compile_filter({})({})


def test_filter_keeps_spec_and_dialect() -> None:
    """A Filter exposes its source spec and dialect, and reprs with them."""
    f = compile_filter({"a": {"$gt": 1}})
    assert f.spec == {"a": {"$gt": 1}}
    assert f.dialect == "mongo"
    assert repr(f) == "Filter({'a': {'$gt': 1}}, dialect='mongo')"


def test_filter_equality_and_hash() -> None:
    """Filters are equal and hash alike by (dialect, spec), type-strictly."""
    a, b = compile_filter({"a": 1}), compile_filter({"a": 1})
    assert a == b
    assert hash(a) == hash(b)
    assert a != compile_filter({"a": True})
    assert a != compile_filter({"a": 1}, dialect="wix")
    assert len({a, b, compile_filter({"a": 2})}) == 2


def test_filter_is_immutable_and_isolated_from_spec_changes() -> None:
    """Mutating the source spec or .spec does not change the filter; attributes are frozen."""
    spec: dict[str, Any] = {"a": [1, 2]}
    f = compile_filter({"a": {"$in": spec["a"]}})
    spec["a"].append(3)
    f.spec["a"] = 5  # type: ignore[index]
    assert not f({"a": 3})
    assert f.spec == {"a": {"$in": [1, 2]}}
    with pytest.raises(AttributeError):
        f.x = 1  # type: ignore[attr-defined]


def test_filter_pickles_and_copies() -> None:
    """A Filter survives pickling (recompiled) and copy returns an equal filter."""
    f = compile_filter({"a": {"$regex": "^x"}})
    g = pickle.loads(pickle.dumps(f))
    assert g == f
    assert g({"a": "xy"})
    assert copy.deepcopy(f) == f
    assert isinstance(g, Filter)


def test_unknown_dialect_is_invalid_filter() -> None:
    """An unknown dialect name raises InvalidFilter."""
    with pytest.raises(InvalidFilter):
        compile_filter({}, dialect="sql")  # type: ignore[arg-type]


def test_non_mapping_spec_is_invalid_filter() -> None:
    """A spec that is not an object raises InvalidFilter at the root path."""
    with pytest.raises(InvalidFilter) as info:
        compile_filter([1])  # type: ignore[arg-type]
    assert info.value.path == ""


# ---------------------------------------------------------------------- equality


@pytest.mark.parametrize(
    ("spec", "doc", "expected"),
    [
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"a": True}, False),
        ({"a": True}, {"a": 1}, False),
        ({"a": 0}, {"a": False}, False),
        ({"a": "x"}, {"a": "X"}, False),
        ({"a": NAN}, {"a": NAN}, True),
        ({"a": 2**53 + 1}, {"a": float(2**53)}, False),
        ({"a": 2}, {"a": [1, 2]}, True),
        ({"a": [1, 2]}, {"a": [1, 2]}, True),
        ({"a": [1, 2]}, {"a": [2, 1]}, False),
        ({"a": [1, 2]}, {"a": [[1, 2], 3]}, True),
        ({"a": 1}, {"a": [[1]]}, False),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 2}}, True),
        ({"a": {"b": 1, "c": 2}}, {"a": {"c": 2, "b": 1}}, False),
        ({"a": {"b": 1}}, {"a": {"b": 1.0}}, True),
        ({"a": {}}, {"a": {}}, True),
        ({"a": {"$eq": {"b": 1}}}, {"a": [{"b": 1}]}, True),
    ],
)
def test_equality(spec: dict[str, Any], doc: dict[str, Any], expected: bool) -> None:
    """Equality is type-strict, numeric across int/float, order-sensitive for documents."""
    assert m(spec, doc) is expected


def test_bool_is_not_one_inside_in_sets() -> None:
    """$in does not fall for hash(True) == hash(1)."""
    assert not m({"a": {"$in": [1, 2]}}, {"a": True})
    assert not m({"a": {"$in": [True]}}, {"a": 1})
    assert m({"a": {"$in": [True]}}, {"a": True})
    assert m({"a": {"$in": [1.0]}}, {"a": 1})


@pytest.mark.parametrize(
    ("doc", "expected"),
    [({}, True), ({"a": None}, True), ({"a": []}, False), ({"a": [None]}, True), ({"a": 0}, False)],
)
def test_null_matches_missing_and_null(doc: dict[str, Any], expected: bool) -> None:
    """{a: null} matches a missing or null field and arrays holding null, not []."""
    assert m({"a": None}, doc) is expected


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"a": [1]}, False),
        ({"a": []}, False),
        ({"a": 5}, True),
        ({"a": [{"c": 1}]}, True),
        ({"a": [{"b": 1}]}, False),
        ({"a": {"b": None}}, True),
    ],
)
def test_null_through_arrays_follows_mongodb_8(doc: dict[str, Any], expected: bool) -> None:
    """{'a.b': null} does not match arrays of scalars or [] (MongoDB 8.0, not 9.0)."""
    assert m({"a.b": None}, doc) is expected
    assert m({"a.b": {"$ne": None}}, doc) is not expected


def test_ne_and_nin_match_missing() -> None:
    """$ne and $nin match documents without the field."""
    assert m({"a": {"$ne": 1}}, {})
    assert m({"a": {"$nin": [1]}}, {})
    assert not m({"a": {"$ne": 1}}, {"a": [0, 1]})
    assert m({"a": {"$nin": []}}, {"a": 1})


# -------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("spec", "doc", "expected"),
    [
        ({"a.b": 1}, {"a": {"b": 1}}, True),
        ({"a.b": 1}, {"a": [{"b": 2}, {"b": 1}]}, True),
        ({"a.b": 1}, {"a": [{"b": [0, 1]}]}, True),
        ({"a.b": 1}, {"a": [[{"b": 1}]]}, False),
        ({"a.0": 1}, {"a": [1, 2]}, True),
        ({"a.1": 1}, {"a": [1, 2]}, False),
        ({"a.0.b": 1}, {"a": [{"b": 1}]}, True),
        ({"a.0.b": 1}, {"a": [[{"b": 1}]]}, True),
        ({"a.0": 1}, {"a": {"0": 1}}, True),
        ({"a.0": 1}, {"a": [{"0": 1}]}, True),
        ({"a.00": 1}, {"a": [1]}, False),
        ({"a.0": 1}, {"a": [[1, 2]]}, False),
        ({"a.0": [1, 2]}, {"a": [[1, 2]]}, True),
        ({"a.b.c": 1}, {"a": {"b": 5}}, False),
        ({"a.b": 1}, {"a": {"$date": "2020-01-01"}}, False),
    ],
)
def test_dotted_paths(spec: dict[str, Any], doc: dict[str, Any], expected: bool) -> None:
    """Dotted paths traverse subdocuments, arrays of subdocuments and numeric indexes."""
    assert m(spec, doc) is expected


def test_conditions_on_array_may_use_different_elements() -> None:
    """Without $elemMatch each operator may be satisfied by a different element."""
    assert m({"a": {"$gt": 1, "$lt": 3}}, {"a": [0, 5]})
    assert not m({"a": {"$elemMatch": {"$gt": 1, "$lt": 3}}}, {"a": [0, 5]})
    assert m({"a": {"$elemMatch": {"$gt": 1, "$lt": 3}}}, {"a": [0, 2]})


# ---------------------------------------------------------------------- comparison


@pytest.mark.parametrize(
    ("spec", "doc", "expected"),
    [
        ({"a": {"$gt": 5}}, {"a": 6}, True),
        ({"a": {"$gt": 5}}, {"a": "6"}, False),
        ({"a": {"$gt": 5}}, {"a": True}, False),
        ({"a": {"$gte": 5}}, {"a": 5.0}, True),
        ({"a": {"$lt": "b"}}, {"a": "a"}, True),
        ({"a": {"$lt": "b"}}, {"a": 1}, False),
        ({"a": {"$lt": "é"}}, {"a": "z"}, True),
        ({"a": {"$gt": 5}}, {"a": [1, 10]}, True),
        ({"a": {"$gt": 5}}, {}, False),
        ({"a": {"$gte": None}}, {}, True),
        ({"a": {"$lte": None}}, {"a": None}, True),
        ({"a": {"$gt": None}}, {"a": None}, False),
        ({"a": {"$lt": 5}}, {"a": NAN}, False),
        ({"a": {"$gt": NAN}}, {"a": NAN}, False),
        ({"a": {"$gte": NAN}}, {"a": NAN}, True),
        ({"a": {"$gte": NAN}}, {"a": 1}, False),
        ({"a": {"$gt": False}}, {"a": True}, True),
        ({"a": {"$gt": [1]}}, {"a": [[2]]}, True),
        ({"a": {"$gt": {"b": 1}}}, {"a": {"b": 2}}, True),
        ({"a": {"$lt": float("inf")}}, {"a": 10**30}, True),
    ],
)
def test_comparisons_are_type_bracketed(
    spec: dict[str, Any], doc: dict[str, Any], expected: bool
) -> None:
    """$gt/$gte/$lt/$lte compare only within a type; NaN only equals NaN."""
    assert m(spec, doc) is expected


def test_dates_compare_by_instant_naive_is_utc() -> None:
    """Dates ({'$date'} or datetime, naive = UTC) compare by instant, never with strings."""
    doc = {"d": datetime(2021, 1, 1)}
    assert m({"d": {"$gt": {"$date": "2020-01-01T00:00:00Z"}}}, doc)
    assert m({"d": {"$date": "2021-01-01T01:00:00+01:00"}}, doc)
    assert m({"d": datetime(2021, 1, 1, tzinfo=timezone.utc)}, doc)
    assert not m({"d": {"$gt": "2020"}}, doc)
    assert m({"d": {"$lt": datetime(2021, 1, 1, 1, tzinfo=timezone(timedelta(hours=-1)))}}, doc)
    assert m({"d": datetime(2021, 1, 1)}, {"d": {"$date": "2021-01-01T00:00:00Z"}})
    assert m({"d": {"$type": "date"}}, {"d": {"$date": "2021-01-01"}})


def test_extreme_dates_never_raise() -> None:
    """datetime.min with a positive offset compares without overflowing."""
    odd = datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))
    assert m({"d": {"$lt": datetime(2000, 1, 1)}}, {"d": odd})
    assert not m({"d": datetime.max}, {"d": odd})


# ---------------------------------------------------------------------- $in / $all


def test_in_with_regexes_and_null() -> None:
    """$in accepts regexes (match strings) and null (matches missing)."""
    f = compile_filter({"a": {"$in": [re.compile("^x"), None, 3]}})
    assert f({"a": "xyz"})
    assert f({})
    assert f({"a": 3.0})
    assert f({"a": ["q", "x"]})
    assert not f({"a": "yx"})


def test_in_empty_matches_nothing() -> None:
    """$in: [] matches no document."""
    assert not m({"a": {"$in": []}}, {"a": 1})


def test_all() -> None:
    """$all needs every value; [] matches nothing; a scalar field works too."""
    assert m({"a": {"$all": [1, 2]}}, {"a": [2, 3, 1]})
    assert not m({"a": {"$all": [1, 4]}}, {"a": [2, 3, 1]})
    assert not m({"a": {"$all": []}}, {"a": [1]})
    assert m({"a": {"$all": [1]}}, {"a": 1})
    assert m({"a": {"$all": [[1, 2]]}}, {"a": [[1, 2], 3]})
    both = {"$all": [{"$elemMatch": {"$gt": 5}}, {"$elemMatch": {"$lt": 1}}]}
    assert m({"a": both}, {"a": [0, 9]})
    assert not m({"a": both}, {"a": [0, 1]})


# ------------------------------------------------------------------ element ops


def test_exists() -> None:
    """$exists true matches present fields (null included); false the absent ones."""
    assert m({"a": {"$exists": True}}, {"a": None})
    assert not m({"a": {"$exists": False}}, {"a": None})
    assert m({"a.b": {"$exists": False}}, {"a": [1]})
    assert m({"a": {"$exists": 1}}, {"a": []})


@pytest.mark.parametrize(
    ("t", "value", "expected"),
    [
        ("array", [1], True),
        ("int", [1], True),
        ("number", True, False),
        ("number", 1.5, True),
        ("bool", True, True),
        (16, 2**40, False),
        ("long", 2**40, True),
        ("double", 1, False),
        ("null", None, True),
        ("object", {"b": 1}, True),
        ("string", "x", True),
        (["string", "double"], 2.0, True),
        (2.0, "x", True),
    ],
)
def test_type(t: Any, value: Any, expected: bool) -> None:
    """$type accepts aliases, numbers and lists of them; arrays match 'array' and elements."""
    assert m({"a": {"$type": t}}, {"a": value}) is expected


def test_type_never_matches_missing() -> None:
    """$type: 'null' does not match a missing field."""
    assert not m({"a": {"$type": "null"}}, {})


def test_size() -> None:
    """$size matches arrays of exactly that length, never traversing into elements."""
    assert m({"a": {"$size": 2}}, {"a": [1, 2]})
    assert m({"a": {"$size": 1}}, {"a": [[1, 2]]})
    assert not m({"a": {"$size": 2}}, {"a": [[1, 2]]})
    assert m({"a": {"$size": 0}}, {"a": []})
    assert m({"a.b": {"$size": 1}}, {"a": [{"b": [5]}]})
    assert m({"a": {"$size": 2.0}}, {"a": [1, 2]})


def test_elem_match_object_form() -> None:
    """$elemMatch with field conditions needs one subdocument satisfying all of them."""
    doc = {"a": [{"b": 1, "c": 0}, {"b": 2, "c": 5}]}
    assert not m({"a": {"$elemMatch": {"b": 1, "c": {"$gt": 1}}}}, doc)
    assert m({"a.b": 1, "a.c": {"$gt": 1}}, doc)
    assert m({"a": {"$elemMatch": {"b": 2, "c": {"$gt": 1}}}}, doc)
    assert m({"a": {"$elemMatch": {"$or": [{"b": 9}, {"c": 0}]}}}, doc)
    assert not m({"a": {"$elemMatch": {"b": 1}}}, {"a": {"b": 1}})


def test_regex_and_options() -> None:
    """$regex searches strings only; $options i/m/s/x apply; a bare regex value works."""
    assert m({"a": {"$regex": "AB", "$options": "i"}}, {"a": "xab"})
    assert not m({"a": {"$regex": "AB"}}, {"a": "xab"})
    assert m({"a": {"$regex": "^b", "$options": "m"}}, {"a": "a\nb"})
    assert m({"a": re.compile("^x")}, {"a": ["q", "xy"]})
    assert not m({"a": {"$regex": "1"}}, {"a": 1})
    assert m({"a": {"$regex": re.compile("a.c", re.S)}}, {"a": "a\nc"})


def test_mod_truncates_like_cpp() -> None:
    """$mod uses truncated division (sign of the dividend) and truncates floats."""
    assert m({"a": {"$mod": [3, -2]}}, {"a": -5})
    assert not m({"a": {"$mod": [3, 1]}}, {"a": -5})
    assert m({"a": {"$mod": [4, 1]}}, {"a": 5.9})
    assert m({"a": {"$mod": [2.5, 0]}}, {"a": 4})
    assert not m({"a": {"$mod": [2, 0]}}, {"a": NAN})
    assert not m({"a": {"$mod": [2, 0]}}, {"a": True})
    assert not m({"a": {"$mod": [2, 0]}}, {"a": 1e300})
    assert m({"a": {"$mod": [-1, 0]}}, {"a": -(2**63)})


# ---------------------------------------------------------------------- logical


def test_not() -> None:
    """$not negates the whole condition (missing fields match); accepts a regex."""
    assert m({"a": {"$not": {"$gt": 5}}}, {})
    assert not m({"a": {"$not": {"$gt": 5}}}, {"a": [1, 10]})
    assert m({"a": {"$not": re.compile("^x")}}, {"a": "y"})
    assert m({"a": {"$not": {"$regex": "^x"}}}, {"a": 3})


def test_and_or_nor() -> None:
    """$and, $or and $nor combine subfilters."""
    doc = {"a": 1, "b": 2}
    assert m({"$and": [{"a": 1}, {"b": 2}]}, doc)
    assert m({"$or": [{"a": 9}, {"b": 2}]}, doc)
    assert not m({"$nor": [{"a": 9}, {"b": 2}]}, doc)
    assert m({"$nor": [{"a": 9}]}, doc)
    assert m({"$comment": "ignored", "a": 1}, doc)


# ------------------------------------------------------------------ invalid specs


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"$and": []}, "$and"),
        ({"$or": {}}, "$or"),
        ({"$and": [1]}, "$and.0"),
        ({"a": {"$in": 1}}, "a.$in"),
        ({"a": {"$nin": "x"}}, "a.$nin"),
        ({"a": {"$in": [{"$gt": 1}]}}, "a.$in.0"),
        ({"a": {"$size": 1.5}}, "a.$size"),
        ({"a": {"$size": "1"}}, "a.$size"),
        ({"a": {"$size": -1}}, "a.$size"),
        ({"a": {"$size": True}}, "a.$size"),
        ({"a": {"$regex": "("}}, "a.$regex"),
        ({"a": {"$regex": 5}}, "a.$regex"),
        ({"a": {"$regex": "x", "$options": "q"}}, "a.$regex"),
        ({"a": {"$options": "i"}}, "a.$options"),
        ({"a": {"$mod": [1]}}, "a.$mod"),
        ({"a": {"$mod": [1, 2, 3]}}, "a.$mod"),
        ({"a": {"$mod": [0, 1]}}, "a.$mod"),
        ({"a": {"$mod": "x"}}, "a.$mod"),
        ({"a": {"$mod": [NAN, 1]}}, "a.$mod"),
        ({"$gt": 1}, "$gt"),
        ({"$not": {"a": 1}}, "$not"),
        ({"$where": "1"}, "$where"),
        ({"a": {"$not": 5}}, "a.$not"),
        ({"a": {"$not": {}}}, "a.$not"),
        ({"a": {"$not": {"b": 1}}}, "a.$not.b"),
        ({"a": {"$foo": 1}}, "a.$foo"),
        ({"a": {"$gt": 1, "b": 2}}, "a.b"),
        ({"a": {"$type": "nope"}}, "a.$type"),
        ({"a": {"$type": 99}}, "a.$type"),
        ({"a": {"$type": True}}, "a.$type"),
        ({"a": {"$type": []}}, "a.$type"),
        ({"a": {"$mod": [2.0**63, 1]}}, "a.$mod"),
        ({"a": {"$all": 1}}, "a.$all"),
        ({"a": {"$all": [{"$gt": 1}]}}, "a.$all.0"),
        ({"a": {"$all": [{"$elemMatch": {"b": 1}}, 1]}}, "a.$all"),
        ({"a": {"$elemMatch": 1}}, "a.$elemMatch"),
        ({"a": {"$elemMatch": {"$gt": 1, "b": 1}}}, "a.$elemMatch.b"),
        ({"a": {"$date": "not a date"}}, "a"),
        ({"a": {"$ne": re.compile("x")}}, "a.$ne"),
        ({"a": {"$gt": re.compile("x")}}, "a.$gt"),
        ({"a": {1, 2}}, "a"),
        ({"a": {"$eq": object()}}, "a.$eq"),
        ({"a": {"$regex": "a\x00"}}, "a.$regex"),
    ],
)
def test_invalid_specs_raise_invalid_filter(spec: dict[str, Any], path: str) -> None:
    """Specs MongoDB rejects raise InvalidFilter naming the offending path."""
    with pytest.raises(InvalidFilter) as info:
        compile_filter(spec)
    assert info.value.path == path
    assert info.value.reason
    assert isinstance(info.value, ValueError)

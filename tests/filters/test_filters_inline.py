"""The generated (inlined) predicates answer exactly as the closures they are built from.

A compiled filter is one generated function when its parts carry expression forms (see
``taskengine.filters._predicates``). These properties compare it with the same filter
compiled as closures only (``closures_only()``), and in the mongo dialect with the
independent reference evaluator, on generated specs and on documents built to hit the
specialised paths: dates (naive, aware with fixed offsets, equal instants written with
different offsets, ``{"$date"}`` wrappers, zones that are not fixed offsets, datetimes
outside the range a bound can be written in), arrays mixing types, nested paths, and
``$or`` of literals on one field (compiled as a set lookup).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_filter import evaluate
from strategies import PATHS, documents, mongo_specs, scalars, values, wix_specs

from taskengine.errors import InvalidFilter
from taskengine.filters import compile_filter
from taskengine.filters._inline import closures_only, inline_of


class _Shifting(tzinfo):
    """A zone that is not a fixed offset: +1 h before 2020-06-01 (wall time), +2 h after."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        assert dt is not None
        return timedelta(hours=1 if dt.replace(tzinfo=None) < datetime(2020, 6, 1) else 2)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


class _Broken(tzinfo):
    """A zone whose offset is unknown (``utcoffset`` is ``None``: the wall time is UTC)."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None

    def dst(self, dt: datetime | None) -> None:
        return None


class _Stamp(datetime):
    """A datetime subclass (what some libraries hand over)."""


BASE = datetime(2020, 6, 1)
OFFSETS = [timedelta(0), timedelta(hours=1), timedelta(hours=-5), timedelta(minutes=330)]

walls = st.integers(-3, 3).map(lambda h: BASE + timedelta(hours=h))
zones = st.one_of(
    st.none(),
    st.just(timezone.utc),
    st.sampled_from(OFFSETS).map(timezone),
    st.just(_Shifting()),
    st.just(_Broken()),
)


@st.composite
def _dates(draw: st.DrawFn) -> Any:
    """Dates near one instant: equal instants in different zones happen often."""
    wall = draw(walls)
    zone = draw(zones)
    form = draw(st.sampled_from(["plain", "shifted", "wrapper", "subclass", "extreme"]))
    if form == "extreme":
        return draw(
            st.sampled_from(
                [
                    datetime.min,
                    datetime.max,
                    datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),
                    datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
                ]
            )
        )
    if form == "wrapper":
        return {"$date": wall.isoformat() + "Z"}
    if form == "subclass":
        return _Stamp(wall.year, wall.month, wall.day, wall.hour, tzinfo=zone)
    if form == "shifted" and isinstance(zone, timezone):
        # the same instant as ``wall`` read as UTC, written in ``zone``
        return wall.replace(tzinfo=timezone.utc).astimezone(zone)
    return wall.replace(tzinfo=zone)


date_values = _dates()
mixed = st.one_of(date_values, scalars)
date_docs = st.fixed_dictionaries(
    {},
    optional={
        "a": st.one_of(mixed, st.lists(mixed, max_size=3)),
        "b": st.one_of(
            st.fixed_dictionaries({}, optional={"c": mixed, "0": mixed}),
            st.lists(st.fixed_dictionaries({}, optional={"c": mixed}), max_size=2),
        ),
    },
)
date_paths = st.sampled_from(["a", "b.c", "b.0", "a.0"])
cmp_ops = st.sampled_from(["$gt", "$gte", "$lt", "$lte"])


@st.composite
def date_conditions(draw: st.DrawFn) -> Any:
    """A comparison, range, equality or ``$in`` against dates."""
    shape = draw(st.sampled_from(["cmp", "range", "eq", "ne", "in", "literal"]))
    if shape == "cmp":
        return {draw(cmp_ops): draw(date_values)}
    if shape == "range":
        low = draw(st.sampled_from(["$gt", "$gte"]))
        high = draw(st.sampled_from(["$lt", "$lte"]))
        return {low: draw(date_values), high: draw(date_values)}
    if shape == "eq":
        return {"$eq": draw(date_values)}
    if shape == "ne":
        return {"$ne": draw(date_values)}
    if shape == "in":
        return {"$in": draw(st.lists(st.one_of(date_values, scalars), min_size=1, max_size=3))}
    return draw(date_values)


def _both(spec: dict[str, Any], dialect: str) -> tuple[Any, Any]:
    """The filter compiled with inlining and as closures only (or two ``None`` when the
    spec is invalid: then both ways reject it)."""
    try:
        fast = compile_filter(spec, dialect)  # type: ignore[arg-type]
    except InvalidFilter:
        with closures_only(), pytest.raises(InvalidFilter):
            compile_filter(spec, dialect)  # type: ignore[arg-type]
        return None, None
    with closures_only():
        plain = compile_filter(spec, dialect)  # type: ignore[arg-type]
    return fast, plain


# --------------------------------------------------------------------------- mongo


@settings(max_examples=200)
@given(mongo_specs(), documents)
def test_mongo_generated_agrees_with_closures_and_reference(
    spec: dict[str, Any], doc: dict[str, Any]
) -> None:
    """On any valid spec the generated function, the closures and the reference agree."""
    fast, plain = _both(spec, "mongo")
    expected = evaluate(spec, doc)
    assert plain(doc) is expected
    assert fast(doc) is expected


@settings(max_examples=200)
@given(date_paths, date_conditions(), date_docs)
def test_mongo_date_comparisons_agree(path: str, cond: Any, doc: dict[str, Any]) -> None:
    """Dates: naive = UTC, equal instants with different offsets, wrappers, odd zones,
    subclasses, bounds outside ``datetime``'s range and arrays of mixed types."""
    spec = {path: cond}
    fast, plain = _both(spec, "mongo")
    if fast is None:
        return
    expected = evaluate(spec, doc)
    assert plain(doc) is expected
    assert fast(doc) is expected


@settings(max_examples=150)
@given(date_paths, st.lists(st.one_of(scalars, date_values), min_size=2, max_size=4), date_docs)
def test_or_of_literals_on_one_field_is_a_set_lookup(
    path: str, literals: list[Any], doc: dict[str, Any]
) -> None:
    """``$or``/``$nor`` of ``{f: literal}`` on one field (compiled as ``$in``) agrees with the
    reference in mongo and with the ``$or`` of the single filters in wix."""
    subs = [{path: v} for v in literals]
    try:
        compile_filter({"$or": subs})
        compile_filter({"$or": subs}, "wix")
    except InvalidFilter:
        return  # a date of a kind the value model does not take
    for op in ("$or", "$nor"):
        spec = {op: subs}
        assert compile_filter(spec)(doc) is evaluate(spec, doc)
    wix = compile_filter({"$or": subs}, "wix")(doc)
    assert wix is any(compile_filter(s, "wix")(doc) for s in subs)


# ----------------------------------------------------------------------------- wix


@settings(max_examples=200)
@given(wix_specs(), documents)
def test_wix_generated_agrees_with_closures(spec: dict[str, Any], doc: dict[str, Any]) -> None:
    """On any valid wix spec the generated function answers as the closures."""
    fast, plain = _both(spec, "wix")
    assert fast(doc) is plain(doc)


@settings(max_examples=200)
@given(date_paths, date_conditions(), date_docs)
def test_wix_date_comparisons_agree(path: str, cond: Any, doc: dict[str, Any]) -> None:
    """Wix date comparisons and equality: generated == closures on the odd dates too."""
    if isinstance(cond, dict) and "$in" in cond:
        cond = {"$hasSome": cond["$in"]} if len(cond["$in"]) > 1 else cond
    spec = {path: cond}
    fast, plain = _both(spec, "wix")
    if fast is not None:
        assert fast(doc) is plain(doc)


@settings(max_examples=100)
@given(PATHS, st.lists(values, min_size=1, max_size=3), documents)
def test_wix_not_of_generated_is_complement(path: str, vs: list[Any], doc: dict[str, Any]) -> None:
    """A negated generated filter is the complement of the filter."""
    spec = {path: {"$in": vs}}
    f = compile_filter(spec, "wix")
    assert compile_filter({"$not": spec}, "wix")(doc) is not f(doc)


# -------------------------------------------------------------------------- examples


def test_common_shapes_become_one_function() -> None:
    """The benchmark's shapes compile to one generated function (no call per operator)."""
    when = datetime(2020, 1, 1, tzinfo=timezone.utc)
    for dialect, spec in [
        ("mongo", {"$or": [{"s": "x"}, {"n": {"$lt": 3}}, {"c": "y"}]}),
        ("mongo", {"d": {"$gte": when, "$lt": when + timedelta(days=1)}}),
        ("mongo", {"a.b": "x"}),
        ("wix", {"$or": [{"s": "x"}, {"n": {"$lt": 3}}, {"c": "y"}]}),
        ("wix", {"d": {"$gte": when, "$lt": when + timedelta(days=1)}}),
    ]:
        f = compile_filter(spec, dialect)  # type: ignore[arg-type]
        assert f.func.__name__ == "_generated"
        assert inline_of(f.func) is not None


@pytest.mark.parametrize("dialect", ["mongo", "wix"])
def test_spec_text_never_becomes_code(dialect: str) -> None:
    """Field names and values that look like code are data in the generated function."""
    key = "x') or __import__('os') or ('"
    value = "'); raise SystemExit; ('"
    f = compile_filter({key: value, "$or": [{key: 1}, {"y\n z": {"$gt": 2}}]}, dialect)  # type: ignore[arg-type]
    assert f({key: value, "y\n z": 3}) is True
    assert f({key: value}) is False
    assert f({key: "other", "y\n z": 3}) is False


@pytest.mark.parametrize("dialect", ["mongo", "wix"])
def test_deep_and_wide_filters_fall_back_and_agree(dialect: str) -> None:
    """Past the size limits of generated code, the closures take over with the same answers."""
    deep: dict[str, Any] = {"a": 1}
    for i in range(40):
        deep = {"$or": [deep, {f"k{i}": i}]} if i % 2 else {"$and": [deep, {"b": {"$ne": i}}]}
    wide = {"$and": [{f"f{i}": {"$gte": i}} for i in range(100)]}
    for spec, doc in [
        (deep, {"a": 1}),
        (deep, {"a": 2, "k39": 39}),
        (deep, {"a": 2}),
        (wide, {f"f{i}": i for i in range(100)}),
        (wide, {f"f{i}": i - 1 for i in range(100)}),
    ]:
        fast, plain = _both(spec, dialect)
        assert fast(doc) is plain(doc)
    assert compile_filter(deep, dialect)({"a": 1}) is True  # type: ignore[arg-type]
    assert compile_filter(wide, dialect)({f"f{i}": i for i in range(100)}) is True  # type: ignore[arg-type]


def test_equal_instants_in_different_zones_match() -> None:
    """A date written with another offset (or naive, meaning UTC) is the same instant."""
    utc = datetime(2020, 1, 1, 12, tzinfo=timezone.utc)
    plus2 = utc.astimezone(timezone(timedelta(hours=2)))
    naive = datetime(2020, 1, 1, 12)
    for dialect in ("mongo", "wix"):
        for bound in (utc, plus2, naive, {"$date": "2020-01-01T12:00:00Z"}):
            for v in (utc, plus2, naive):
                for op, want in (("$eq", True), ("$gte", True), ("$lte", True), ("$gt", False)):
                    f = compile_filter({"d": {op: bound}}, dialect)  # type: ignore[arg-type]
                    assert f({"d": v}) is want, (dialect, bound, v, op)
                    assert f({"d": [1, "x", v]}) is want
        assert compile_filter({"d": {"$gt": utc}}, dialect)({"d": 5}) is False  # type: ignore[arg-type]

"""Property tests: the laws of the filter language, on generated specs and documents."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from reference_filter import evaluate
from strategies import (
    PATHS,
    documents,
    junk,
    mongo_conditions,
    mongo_specs,
    scalars,
    values,
    wix_conditions,
    wix_operator_objects,
    wix_specs,
)

from taskengine._values import values_equal
from taskengine.errors import InvalidFilter
from taskengine.filters import compile_filter

# ------------------------------------------------------------------------- mongo


@given(mongo_specs(), documents)
def test_compiled_agrees_with_reference(spec: dict[str, Any], doc: dict[str, Any]) -> None:
    """The compiled mongo filter agrees with the independent reference evaluator."""
    assert compile_filter(spec)(doc) is evaluate(spec, doc)


@given(PATHS, mongo_conditions(), documents)
def test_field_condition_agrees_with_reference(path: str, cond: Any, doc: dict[str, Any]) -> None:
    """Single-field conditions (the specialised fast paths) agree with the reference."""
    spec = {path: cond}
    assert compile_filter(spec)(doc) is evaluate(spec, doc)


@settings(max_examples=60)
@given(mongo_specs(), documents)
def test_nor_is_complement(spec: dict[str, Any], doc: dict[str, Any]) -> None:
    """{$nor: [f]} matches exactly the documents f rejects."""
    assert compile_filter({"$nor": [spec]})(doc) is not compile_filter(spec)(doc)


@given(PATHS, mongo_conditions(depth=1), documents)
def test_not_is_complement(path: str, cond: Any, doc: dict[str, Any]) -> None:
    """{f: {$not: ops}} matches exactly the documents {f: ops} rejects."""
    if not (isinstance(cond, dict) and cond and next(iter(cond)).startswith("$")) or (
        "$date" in cond
    ):
        cond = {"$eq": cond}
    assert compile_filter({path: {"$not": cond}})(doc) is not compile_filter({path: cond})(doc)


@settings(max_examples=60)
@given(mongo_specs(depth=1), mongo_specs(depth=1), documents)
def test_and_or_commute(a: dict[str, Any], b: dict[str, Any], doc: dict[str, Any]) -> None:
    """$and and $or are commutative."""
    assert compile_filter({"$and": [a, b]})(doc) is compile_filter({"$and": [b, a]})(doc)
    assert compile_filter({"$or": [a, b]})(doc) is compile_filter({"$or": [b, a]})(doc)


@settings(max_examples=60)
@given(mongo_specs(), documents)
def test_singleton_and_or_are_identity(spec: dict[str, Any], doc: dict[str, Any]) -> None:
    """$and: [f] and $or: [f] both equal f."""
    expected = compile_filter(spec)(doc)
    assert compile_filter({"$and": [spec]})(doc) is expected
    assert compile_filter({"$or": [spec]})(doc) is expected


@settings(max_examples=60)
@given(PATHS, scalars, scalars, documents)
def test_in_is_or_of_eq(path: str, a: Any, b: Any, doc: dict[str, Any]) -> None:
    """{f: {$in: [a, b]}} == {$or: [{f: {$eq: a}}, {f: {$eq: b}}]}."""
    lhs = compile_filter({path: {"$in": [a, b]}})(doc)
    rhs = compile_filter({"$or": [{path: {"$eq": a}}, {path: {"$eq": b}}]})(doc)
    assert lhs is rhs


@settings(max_examples=60)
@given(PATHS, st.lists(scalars, max_size=4), documents)
def test_nin_is_not_in(path: str, vs: list[Any], doc: dict[str, Any]) -> None:
    """$nin matches exactly what $in rejects."""
    assert compile_filter({path: {"$nin": vs}})(doc) is not compile_filter({path: {"$in": vs}})(doc)


@settings(max_examples=60)
@given(PATHS, values, documents)
def test_ne_is_not_eq(path: str, v: Any, doc: dict[str, Any]) -> None:
    """$ne matches exactly what $eq rejects."""
    assert compile_filter({path: {"$ne": v}})(doc) is not compile_filter({path: {"$eq": v}})(doc)


@given(junk, documents)
def test_compile_raises_only_invalid_filter_and_eval_never_raises(
    spec: Any, doc: dict[str, Any]
) -> None:
    """On arbitrary input, compiling raises only InvalidFilter; a valid filter never raises."""
    for dialect in ("mongo", "wix"):
        try:
            f = compile_filter(spec, dialect=dialect)  # type: ignore[arg-type]
        except InvalidFilter:
            continue
        assert f(doc) in (True, False)


@settings(max_examples=60)
@given(mongo_specs())
def test_equal_specs_give_equal_filters(spec: dict[str, Any]) -> None:
    """Compiling the same spec twice gives equal filters with equal hashes."""
    a, b = compile_filter(spec), compile_filter(spec)
    assert a == b
    assert hash(a) == hash(b)


# --------------------------------------------------------------------------- wix


@given(PATHS, wix_conditions(), documents)
def test_wix_field_condition_never_raises(path: str, cond: Any, doc: dict[str, Any]) -> None:
    """Valid wix conditions compile and evaluate to a bool without raising."""
    assert compile_filter({path: cond}, dialect="wix")(doc) in (True, False)


@given(wix_specs(), documents)
def test_wix_not_is_complement(spec: dict[str, Any], doc: dict[str, Any]) -> None:
    """Top-level $not matches exactly the documents its filter rejects."""
    f = compile_filter(spec, dialect="wix")
    assert compile_filter({"$not": spec}, dialect="wix")(doc) is not f(doc)
    assert compile_filter({"$not": [spec]}, dialect="wix")(doc) is not f(doc)


@given(PATHS, wix_operator_objects(), documents)
def test_wix_field_not_is_top_level_not_of_the_field(
    path: str, ops: dict[str, Any], doc: dict[str, Any]
) -> None:
    """A field-level $not is the complement of its operators on that field."""
    plain = compile_filter({path: ops}, dialect="wix")(doc)
    field_not = compile_filter({path: {"$not": ops}}, dialect="wix")(doc)
    assert field_not is not plain
    assert field_not is compile_filter({"$not": {path: ops}}, dialect="wix")(doc)


@settings(max_examples=60)
@given(PATHS, scalars, documents)
def test_wix_ne_is_not_eq(path: str, v: Any, doc: dict[str, Any]) -> None:
    """In the wix dialect $ne is the complement of $eq."""
    eq = compile_filter({path: {"$eq": v}}, dialect="wix")(doc)
    assert compile_filter({path: {"$ne": v}}, dialect="wix")(doc) is not eq


@settings(max_examples=60)
@given(PATHS, st.lists(scalars, max_size=3), documents)
def test_wix_nin_is_not_in_and_in_is_has_some(
    path: str, vs: list[Any], doc: dict[str, Any]
) -> None:
    """$nin is the complement of $in; $in agrees with $hasSome."""
    isin = compile_filter({path: {"$in": vs}}, dialect="wix")(doc)
    assert compile_filter({path: {"$nin": vs}}, dialect="wix")(doc) is not isin
    assert compile_filter({path: {"$hasSome": vs}}, dialect="wix")(doc) is isin


@settings(max_examples=60)
@given(PATHS, documents)
def test_wix_exists_false_is_null(path: str, doc: dict[str, Any]) -> None:
    """$exists: false == {f: null}, and $exists: true is its complement."""
    null = compile_filter({path: None}, dialect="wix")(doc)
    assert compile_filter({path: {"$exists": False}}, dialect="wix")(doc) is null
    assert compile_filter({path: {"$exists": True}}, dialect="wix")(doc) is not null


# ------------------------------------------------------------------------ values


@settings(max_examples=60)
@given(values)
def test_values_equal_is_reflexive(v: Any) -> None:
    """Every value equals itself (NaN included)."""
    assert values_equal(v, v)


@settings(max_examples=60)
@given(values, values)
def test_values_equal_is_symmetric(a: Any, b: Any) -> None:
    """values_equal(a, b) == values_equal(b, a)."""
    assert values_equal(a, b) is values_equal(b, a)


def test_values_equal_examples() -> None:
    """values_equal: 1 == 1.0, True != 1, dates by instant, dicts by content, lists in order."""
    from datetime import datetime, timedelta, timezone

    assert values_equal(1, 1.0)
    assert not values_equal(True, 1)
    assert not values_equal(0, False)
    assert values_equal(float("nan"), float("nan"))
    assert values_equal(
        datetime(2020, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))), datetime(2020, 1, 1)
    )
    assert values_equal({"$date": "2020-01-01T00:00:00Z"}, datetime(2020, 1, 1))
    assert values_equal({"a": 1, "b": [2]}, {"b": [2.0], "a": 1})
    assert not values_equal([1, 2], [2, 1])
    assert not values_equal("1", 1)
    assert not values_equal(None, [])

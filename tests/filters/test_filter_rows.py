"""``Filter.row_predicate``: a filter over a row of an item's values answers as on the item."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.filters import compile_filter
from taskengine.filters._inline import closures_only
from tests.strategies import KEYS, mongo_specs, values, wix_specs

_DOC_KEYS = st.sampled_from([*KEYS, "a.b", "a.0", "_id"])
_docs = st.dictionaries(_DOC_KEYS, values, max_size=5)
_specs = st.one_of(
    mongo_specs(depth=2).map(lambda s: (s, "mongo")),
    wix_specs(depth=2).map(lambda s: (s, "wix")),
)


class _Boxed(tuple):  # type: ignore[type-arg]
    """A container in a row's own form: a one-tuple holding the value (``thaw`` opens it)."""

    __slots__ = ()


def _box(value: Any) -> Any:
    return (value,) if isinstance(value, (dict, list)) else value


def _row(doc: dict[str, Any], order: list[str]) -> tuple[list[Any], dict[str, int]]:
    """The doc as a row: a leading slot (as MemoryStorage's shape number), then its
    values in ``order``, containers boxed."""
    row: list[Any] = ["shape"]
    positions: dict[str, int] = {}
    for key in order:
        positions[key] = len(row)
        row.append(_box(doc[key]))
    return row, positions


@settings(max_examples=500)
@given(spec=_specs, doc=_docs, data=st.data())
def test_a_filter_answers_the_same_on_a_row(
    spec: tuple[dict[str, Any], str], doc: dict[str, Any], data: st.DataObject
) -> None:
    compiled = compile_filter(spec[0], spec[1])  # type: ignore[arg-type]
    order = data.draw(st.permutations(list(doc)))
    row, positions = _row(doc, order)
    test = compiled.row_predicate(positions, lambda boxed: boxed[0])
    if test is None:
        return  # no row form: the storage uses the filter on items
    assert bool(test(tuple(row))) == compiled(doc)


@settings(max_examples=200)
@given(spec=_specs, doc=_docs)
def test_scalar_rows_need_no_thaw(spec: tuple[dict[str, Any], str], doc: dict[str, Any]) -> None:
    compiled = compile_filter(spec[0], spec[1])  # type: ignore[arg-type]
    scalars = {k: v for k, v in doc.items() if not isinstance(v, (dict, list))}
    row, positions = _row(scalars, list(scalars))
    test = compiled.row_predicate(positions)
    if test is not None:
        assert bool(test(tuple(row))) == compiled(scalars)


@pytest.mark.parametrize(
    ("spec", "dialect"),
    [
        ({"bucket": {"$gte": 50}}, "mongo"),
        ({"a": "x", "b": {"$in": [1, 2]}}, "mongo"),
        ({"$or": [{"a": 1}, {"b": {"$exists": False}}]}, "mongo"),
        ({"name": {"$startsWith": "AL"}}, "wix"),
    ],
)
def test_common_filters_have_a_row_form(spec: dict[str, Any], dialect: str) -> None:
    compiled = compile_filter(spec, dialect)  # type: ignore[arg-type]
    test = compiled.row_predicate({"bucket": 1, "a": 2})
    assert test is not None
    row = ("shape", 70, "x")
    assert bool(test(row)) == compiled({"bucket": 70, "a": "x"})


def test_a_filter_without_an_expression_form_has_no_row_form() -> None:
    with closures_only():
        compiled = compile_filter({"bucket": {"$gte": 50}})
    assert compiled.row_predicate({"bucket": 1}) is None


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ({"tags": "sale"}, ["new", "sale"], True),
        ({"tags": {"$size": 2}}, ["new", "sale"], True),
        ({"tags": {"$size": 1}}, ["new", "sale"], False),
        ({"tags": {"$type": "object"}}, {"k": 1}, True),
    ],
)
def test_containers_are_thawed_before_the_test(
    spec: dict[str, Any], value: Any, expected: bool
) -> None:
    compiled = compile_filter(spec)
    test = compiled.row_predicate({"tags": 1}, lambda boxed: boxed[0])
    assert test is not None
    assert compiled({"tags": value}) is expected
    assert bool(test(("shape", (value,)))) is expected

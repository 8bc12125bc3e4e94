"""``Filter.top_level_fields()``: the keys outside it never change a filter's answer."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskengine.filters import compile_filter
from tests.strategies import KEYS, mongo_specs, values, wix_specs

# Literal dotted keys too: a path "a.b" must keep a key "a.b" as well as "a".
_DOC_KEYS = st.sampled_from([*KEYS, "a.b", "a.0", "_id"])
_docs = st.dictionaries(_DOC_KEYS, values, max_size=5)


def _only(doc: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if key in fields}


@settings(max_examples=400)
@given(
    spec=st.one_of(
        mongo_specs(depth=2).map(lambda s: (s, "mongo")),
        wix_specs(depth=2).map(lambda s: (s, "wix")),
    ),
    doc=_docs,
)
def test_a_filter_answers_the_same_on_its_fields_alone(
    spec: tuple[dict[str, Any], str], doc: dict[str, Any]
) -> None:
    compiled = compile_filter(spec[0], spec[1])  # type: ignore[arg-type]
    fields = compiled.top_level_fields()
    assert fields is not None  # every operator these specs use names its fields
    assert compiled(_only(doc, fields)) == compiled(doc)


@pytest.mark.parametrize(
    ("spec", "dialect", "expected"),
    [
        ({}, "mongo", set()),
        ({"a.b": 1, "$or": [{"x": 1}, {"y": {"$gt": 2}}]}, "mongo", {"a.b", "a", "x", "y"}),
        ({"$nor": [{"q": 1}], "$comment": "why"}, "mongo", {"q"}),
        ({"$not": [{"q": 1}], "$and": [{"r": None}]}, "wix", {"q", "r"}),
        ({"a": {"$not": {"$eq": 1}}}, "wix", {"a"}),
    ],
)
def test_the_fields_a_filter_names(spec: dict[str, Any], dialect: str, expected: set[str]) -> None:
    assert compile_filter(spec, dialect).top_level_fields() == frozenset(expected)  # type: ignore[arg-type]

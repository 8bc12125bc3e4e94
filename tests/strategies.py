"""Shared hypothesis strategies: JSON-like documents (with dates) and filter specs.

Other test modules may import these. Keys and strings come from small alphabets so
that random filters and documents actually meet (same field names, equal values).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

KEYS = ["a", "b", "c", "0", "1"]
FIELD_NAMES = st.sampled_from(KEYS)
PATHS = st.sampled_from(["a", "b", "c", "a.b", "a.0", "a.b.c", "a.0.b", "b.1", "a.c", "0"])

texts = st.text(alphabet="abAB0 ", max_size=4)

naive_datetimes = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)).map(
    lambda d: d.replace(microsecond=0)
)
aware_datetimes = st.builds(
    lambda d, h: d.replace(tzinfo=timezone(timedelta(hours=h))),
    naive_datetimes,
    st.sampled_from([0, 1, -5]),
)
datetimes = st.one_of(naive_datetimes, aware_datetimes)
date_wrappers = naive_datetimes.map(lambda d: {"$date": d.isoformat() + "Z"})
dates = st.one_of(datetimes, date_wrappers)

numbers = st.one_of(
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([0.0, 1.0, -1.0, 1.5, 2.5, float("nan"), float("inf"), 2**31, 2**40]),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    texts,
    dates,
)


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """JSON-like values (plus dates): scalars, lists and dicts with small keys."""
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(FIELD_NAMES, children, max_size=3),
        ),
        max_leaves=max_leaves,
    )


values = json_values()

documents = st.dictionaries(FIELD_NAMES, values, max_size=4)
"""Documents: dicts of JSON-like values with keys from a small set."""

items = documents.map(lambda d: {"_id": "x", **d})
"""Documents with a string ``_id`` (what storage holds)."""

# ------------------------------------------------------------------- mongo specs

regexes = st.sampled_from([re.compile("^a"), re.compile("b"), re.compile("A", re.I)])
type_names = st.sampled_from(
    ["double", "string", "object", "array", "bool", "date", "null", "int", "long", "number"]
)


def mongo_conditions(depth: int = 2) -> st.SearchStrategy[Any]:
    """Operator objects / literals for one field in the mongo dialect (all valid)."""
    simple = st.one_of(
        values,
        st.builds(lambda v: {"$eq": v}, values),
        st.builds(lambda v: {"$ne": v}, values),
        st.builds(lambda op, v: {op: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), scalars),
        st.builds(lambda a, b: {"$gt": a, "$lt": b}, numbers, numbers),
        st.builds(lambda vs: {"$in": vs}, st.lists(st.one_of(scalars, regexes), max_size=3)),
        st.builds(lambda vs: {"$nin": vs}, st.lists(scalars, max_size=3)),
        st.builds(lambda b: {"$exists": b}, st.booleans()),
        st.builds(lambda t: {"$type": t}, type_names),
        st.builds(lambda n: {"$size": n}, st.integers(min_value=0, max_value=3)),
        st.builds(lambda vs: {"$all": vs}, st.lists(scalars, max_size=2)),
        st.builds(lambda p: {"$regex": p}, st.sampled_from(["^a", "b$", "A"])),
        st.builds(lambda p: {"$regex": p, "$options": "i"}, st.sampled_from(["^a", "b"])),
        st.builds(lambda d, r: {"$mod": [d, r]}, st.sampled_from([2, 3, -2]), st.integers(-1, 1)),
        regexes,
    )
    if depth <= 0:
        return simple
    inner = mongo_conditions(depth - 1)
    operator_objects = inner.filter(
        lambda c: (
            isinstance(c, dict) and bool(c) and next(iter(c)).startswith("$") and "$date" not in c
        )
    )
    return st.one_of(
        simple,
        st.builds(lambda c: {"$not": c}, operator_objects),
        st.builds(lambda r: {"$not": r}, regexes),
        st.builds(lambda c: {"$elemMatch": c}, operator_objects),
        st.builds(lambda s: {"$elemMatch": s}, mongo_specs(depth - 1)),
    )


def mongo_specs(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """Valid mongo filter documents: field conditions and logical operators."""
    fields = st.dictionaries(PATHS, st.deferred(lambda: mongo_conditions(depth)), max_size=2)
    if depth <= 0:
        return fields
    sub = st.deferred(lambda: mongo_specs(depth - 1))
    return st.one_of(
        fields,
        st.builds(
            lambda op, subs: {op: subs},
            st.sampled_from(["$and", "$or", "$nor"]),
            st.lists(sub, min_size=1, max_size=3),
        ),
    )


# ----------------------------------------------------------------------- wix specs

wix_scalars = st.one_of(st.none(), st.booleans(), numbers, texts, dates)


def wix_operator_objects() -> st.SearchStrategy[dict[str, Any]]:
    """Valid wix operator objects with one or two operators (``{"$gt": 1, "$lt": 3}``)."""
    comparable = st.one_of(st.booleans(), st.integers(-3, 3), st.floats(-3, 3), texts, dates)
    one = st.one_of(
        st.builds(lambda v: {"$eq": v}, wix_scalars),
        st.builds(lambda v: {"$ne": v}, wix_scalars),
        st.builds(
            lambda op, v: {op: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), comparable
        ),
        st.builds(
            lambda op, vs: {op: vs},
            st.sampled_from(["$in", "$nin", "$hasSome", "$hasAll"]),
            st.lists(wix_scalars, max_size=3),
        ),
        st.builds(
            lambda op, s: {op: s}, st.sampled_from(["$startsWith", "$endsWith", "$contains"]), texts
        ),
        st.builds(lambda b: {"$exists": b}, st.booleans()),
    )
    return st.one_of(one, st.builds(lambda a, b: {**a, **b}, one, one))


def wix_conditions() -> st.SearchStrategy[Any]:
    """Valid field conditions in the wix dialect."""
    comparable = st.one_of(st.booleans(), st.integers(-3, 3), st.floats(-3, 3), texts, dates)
    return st.one_of(
        st.builds(lambda ops: {"$not": ops}, wix_operator_objects()),
        wix_scalars,
        st.lists(wix_scalars, max_size=2),
        st.builds(lambda v: {"$eq": v}, wix_scalars),
        st.builds(lambda v: {"$ne": v}, wix_scalars),
        st.builds(
            lambda op, v: {op: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), comparable
        ),
        st.builds(
            lambda op, vs: {op: vs},
            st.sampled_from(["$in", "$nin", "$hasSome", "$hasAll"]),
            st.lists(wix_scalars, max_size=3),
        ),
        st.builds(
            lambda op, s: {op: s}, st.sampled_from(["$startsWith", "$endsWith", "$contains"]), texts
        ),
        st.builds(lambda b: {"$exists": b}, st.booleans()),
    )


def wix_specs(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """Valid wix filters."""
    fields = st.dictionaries(PATHS, wix_conditions(), max_size=2)
    if depth <= 0:
        return fields
    sub = st.deferred(lambda: wix_specs(depth - 1))
    return st.one_of(
        fields,
        st.builds(
            lambda op, subs: {op: subs},
            st.sampled_from(["$and", "$or"]),
            st.lists(sub, min_size=1, max_size=3),
        ),
        st.builds(lambda s: {"$not": s}, sub),
    )


# ---------------------------------------------------------------- arbitrary junk

junk = st.recursive(
    st.one_of(
        scalars,
        st.sampled_from(["$eq", "$in", "$and", "$not", "$regex", "(", "$date", "$foo"]),
        regexes,
        st.just(object()),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "a",
                        "a.b",
                        "$and",
                        "$or",
                        "$nor",
                        "$not",
                        "$eq",
                        "$ne",
                        "$gt",
                        "$in",
                        "$nin",
                        "$all",
                        "$size",
                        "$type",
                        "$mod",
                        "$regex",
                        "$options",
                        "$elemMatch",
                        "$exists",
                        "$date",
                        "$hasSome",
                        "$hasAll",
                        "$startsWith",
                        "$contains",
                        "$foo",
                        "$where",
                    ]
                ),
                st.integers(0, 2),
            ),
            children,
            max_size=3,
        ),
    ),
    max_leaves=10,
)
"""Arbitrary spec-like junk: compiling it may fail, but only with InvalidFilter."""

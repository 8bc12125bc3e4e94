"""Hypothesis strategies for filters pushed into SQL: storable documents and specs that meet them.

Values are chosen where SQL and Python are most likely to part: integers and reals at
the 32-, 53- and 64-bit edges, ``-0.0``, strings with ``U+0000``, quotes, ``%``/``_``
and characters whose case folding leaves ASCII (Kelvin sign, long s, sharp s, dotted
I), dates at several offsets (with seconds and microseconds) within a day of a few
anchor instants, keys that a SQL JSON path cannot spell. Filter operands come from the
same pools, so filters and documents meet.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

KEYS = ["a", "b", "c", "0", "1", 'q"', "é", ""]
PATHS = st.sampled_from(
    ["a", "b", "c", "a.b", "a.0", "a.b.c", "a.0.b", "b.1", "0", 'q"', "é", "a.é"]
)

ints = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(
        [
            2**31 - 1,
            2**31,
            -(2**31),
            -(2**31) - 1,
            2**53,
            2**53 + 1,
            -(2**53) - 1,
            2**63 - 1,
            -(2**63),
            10**15,
        ]
    ),
)
reals = st.one_of(
    st.sampled_from(
        [
            0.0,
            -0.0,
            0.1,
            0.5,
            1.0,
            -1.0,
            1.5,
            2.5,
            2.0**53,
            2.0**53 + 2,
            1e300,
            -1e-300,
            5e-324,
            2.0**31,
            9.2233720368547758e18,
            -9.2233720368547758e18,
        ]
    ),
    st.floats(-4, 4, allow_nan=False).map(lambda f: round(f, 2)),
)
texts = st.text(
    alphabet=st.sampled_from(
        [
            "a",
            "A",
            "b",
            "B",
            "é",
            "É",
            "ß",
            "\u212a",
            "k",
            "ſ",
            "s",
            "İ",
            "i",
            "\x00",
            "%",
            "_",
            "'",
            '"',
            "\\",
            "\U0001f600",
        ]
    ),
    max_size=4,
)
_ANCHORS = [datetime(2020, 1, 1), datetime(2020, 1, 1, 12, 30), datetime(1999, 12, 31, 23, 59, 59)]
_ZONES = [
    None,
    timezone.utc,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(-timedelta(hours=8)),
    timezone(timedelta(hours=23, minutes=59)),
    timezone(timedelta(seconds=3723)),
]
datetimes = st.builds(
    lambda anchor, shift, micro, zone: (anchor + timedelta(minutes=shift)).replace(
        microsecond=micro, tzinfo=zone
    ),
    st.sampled_from(_ANCHORS),
    st.sampled_from([0, -1, 1, -600, 600, -1439, 1439, -1441, 1441, 3000]),
    st.sampled_from([0, 0, 1, 500000]),
    st.sampled_from(_ZONES),
)
date_wrappers = datetimes.map(lambda d: {"$date": d.isoformat()})
scalars = st.one_of(st.none(), st.booleans(), ints, reals, texts, datetimes)
operands = st.one_of(scalars, date_wrappers, st.sampled_from([math.inf, -math.inf, 2**70]))


def values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Storable values: scalars, lists and dicts of them."""
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )


documents = st.dictionaries(st.sampled_from(KEYS), values(), max_size=4)
"""Storable documents (without ``_id``)."""


def storable(value: Any) -> Any:
    """``value`` with NaN and infinities (which storage refuses) replaced by 1.5."""
    if isinstance(value, float) and not math.isfinite(value):
        return 1.5
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    return value


# ---------------------------------------------------- operands taken from the documents


def _walk(value: Any, path: str, out: list[tuple[str, Any]]) -> None:
    """Every ``(dotted path, value)`` inside ``value``: keys, indexes, and paths past arrays."""
    out.append((path, value))
    if isinstance(value, dict):
        for k, v in value.items():
            _walk(v, f"{path}.{k}" if path else k, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{path}.{i}", out)
            if isinstance(v, dict):  # the mongo dialect fans out over arrays of objects
                for k, inner in v.items():
                    _walk(inner, f"{path}.{k}", out)


def _variants(v: Any) -> list[Any]:
    """Values equal to ``v`` in another form, or just beside it."""
    if isinstance(v, bool) or v is None:
        return [v]
    if isinstance(v, int):
        out: list[Any] = [v, v + 1, v - 1]
        if abs(v) < 2**60:
            out.append(float(v))
        return out
    if isinstance(v, float):
        out = [v, math.nextafter(v, math.inf), math.nextafter(v, -math.inf), -v]
        if math.isfinite(v) and v == int(v) and abs(v) < 2**63:
            out.append(int(v))
        return out
    if isinstance(v, str):
        return [v, v[:1], v[:2], v[1:], v[-1:], v.upper(), v.lower(), v.casefold(), v + "a"]
    if isinstance(v, datetime):
        aware = v if v.tzinfo is not None else v.replace(tzinfo=timezone.utc)
        return [
            v,
            v + timedelta(hours=1),
            v - timedelta(hours=7),
            v + timedelta(days=1),
            v - timedelta(microseconds=1),
            aware.astimezone(timezone(timedelta(hours=-3))),
            aware.astimezone(timezone.utc),
            {"$date": aware.isoformat()},
        ]
    if isinstance(v, dict):
        return [v, dict(reversed(list(v.items())))]
    if isinstance(v, list):
        return [v, v[::-1], v[:-1]]
    return [v]


Field = tuple[str, list[Any]]
"""A path, and operands that meet what the documents hold there (may be empty)."""

any_field: st.SearchStrategy[Field] = PATHS.map(lambda p: (p, []))


def linked(docs: list[dict[str, Any]]) -> st.SearchStrategy[Field]:
    """Paths the documents have, each with their values there and near variants.

    Filters built on them meet the documents: the same fields, equal values, values just
    beside them, the same date at another offset, an object with its keys reordered.
    """
    pairs: list[tuple[str, Any]] = []
    for doc in docs:
        _walk(doc, "", pairs)
    found: dict[str, list[Any]] = {}
    for path, value in pairs:
        if path and not path.startswith("$"):
            found.setdefault(path, []).extend(_variants(value))
    if not found:
        return any_field
    known = st.sampled_from(sorted(found.items(), key=lambda kv: kv[0]))
    return st.one_of(known, known, known, any_field)


def _pool(candidates: list[Any]) -> st.SearchStrategy[Any]:
    if not candidates:
        return operands
    near = st.sampled_from(candidates)
    return st.one_of(near, near, near, operands)


# ------------------------------------------------------------------------ mongo specs


_CMP = st.sampled_from(["$gt", "$gte", "$lt", "$lte"])
_REGEXES = st.sampled_from(
    [
        re.compile("^a"),
        re.compile("^é"),
        re.compile("b"),
        re.compile("^A", re.I),
        re.compile("^a\x00"),
    ]
)


def _literal_pool(pool: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        pool,
        st.lists(scalars, max_size=2),
        st.dictionaries(st.sampled_from(KEYS), scalars, max_size=2),
    )


def _mongo_ops(depth: int, pool: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    _literals = _literal_pool(pool)
    one = st.one_of(
        st.builds(lambda v: {"$eq": v}, _literals),
        st.builds(lambda v: {"$ne": v}, _literals),
        st.builds(lambda op, v: {op: v}, _CMP, _literals),
        st.builds(lambda a, b: {"$gte": a, "$lt": b}, ints | reals, ints | reals),
        st.builds(lambda vs: {"$in": vs}, st.lists(st.one_of(_literals, _REGEXES), max_size=3)),
        st.builds(lambda vs: {"$nin": vs}, st.lists(_literals, max_size=3)),
        st.builds(lambda b: {"$exists": b}, st.sampled_from([True, False, 0, 1, None])),
        st.builds(
            lambda t: {"$type": t},
            st.sampled_from(
                [
                    "double",
                    "string",
                    "object",
                    "array",
                    "bool",
                    "date",
                    "null",
                    "int",
                    "long",
                    "number",
                    ["int", "string"],
                    19,
                ]
            ),
        ),
        st.builds(lambda n: {"$size": n}, st.integers(0, 3)),
        st.builds(lambda vs: {"$all": vs}, st.lists(_literals, max_size=2)),
        st.builds(lambda p: {"$regex": p}, st.sampled_from(["^a", "^ab", "b$", "^\\w", "^é"])),
        st.builds(lambda p: {"$regex": p, "$options": "i"}, st.sampled_from(["^a", "b"])),
        st.builds(
            lambda d, r: {"$mod": [d, r]}, st.sampled_from([2, 3, -2, 2**62]), st.integers(-1, 1)
        ),
        st.builds(lambda c: {"$elemMatch": c}, st.just({"$gt": 0})),
    )
    if depth <= 0:
        return one
    return st.one_of(
        one,
        st.builds(lambda c: {"$not": c}, _mongo_ops(depth - 1, pool)),
        st.builds(lambda r: {"$not": r}, _REGEXES),
    )


def _mongo_field(field: Field) -> st.SearchStrategy[tuple[str, Any]]:
    pool = _pool(field[1])
    condition = st.one_of(_literal_pool(pool), _REGEXES, _mongo_ops(1, pool))
    return st.tuples(st.just(field[0]), condition)


def mongo_specs(
    depth: int = 2, fields: st.SearchStrategy[Field] = any_field
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid mongo filters on ``fields`` (paths and the operands to use there)."""
    conditions = st.lists(fields.flatmap(_mongo_field), min_size=1, max_size=2).map(dict)
    if depth <= 0:
        return conditions
    sub = st.deferred(lambda: mongo_specs(depth - 1, fields))
    return st.one_of(
        conditions,
        conditions,
        st.builds(
            lambda op, subs: {op: subs},
            st.sampled_from(["$and", "$or", "$nor"]),
            st.lists(sub, min_size=1, max_size=3),
        ),
    )


# -------------------------------------------------------------------------- wix specs


def _comparable(v: Any) -> bool:
    return (
        v is not None
        and not isinstance(v, list)
        and (not isinstance(v, dict) or "$date" in v)
        and not (isinstance(v, float) and v != v)
    )


def _wix_ops(
    pool: st.SearchStrategy[Any], strings: st.SearchStrategy[str]
) -> st.SearchStrategy[dict[str, Any]]:
    _wix_values = st.one_of(
        pool,
        st.lists(scalars, max_size=2),
        st.dictionaries(st.sampled_from(KEYS), scalars, max_size=2),
    )
    _wix_comparable = pool.filter(_comparable)
    _needles = st.one_of(strings, st.sampled_from(["a", "A", "ab", "K", "SS", "s", "É", ""]))
    one = st.one_of(
        st.builds(lambda v: {"$eq": v}, _wix_values),
        st.builds(lambda v: {"$ne": v}, _wix_values),
        st.builds(lambda op, v: {op: v}, _CMP, _wix_comparable),
        st.builds(
            lambda op, vs: {op: vs},
            st.sampled_from(["$in", "$nin", "$hasSome", "$hasAll"]),
            st.lists(_wix_values, max_size=3),
        ),
        st.builds(
            lambda op, s: {op: s},
            st.sampled_from(["$startsWith", "$endsWith", "$contains"]),
            _needles,
        ),
        st.builds(lambda b: {"$exists": b}, st.booleans()),
    )
    return st.one_of(one, st.builds(lambda a, b: {**a, **b}, one, one))


def _wix_field(field: Field) -> st.SearchStrategy[tuple[str, Any]]:
    pool = _pool(field[1])
    words = [v for v in field[1] if isinstance(v, str)]
    strings = st.one_of(st.sampled_from(words), texts) if words else texts
    values = st.one_of(pool, st.lists(scalars, max_size=2))
    condition = st.one_of(
        values,
        _wix_ops(pool, strings),
        st.builds(lambda ops: {"$not": ops}, _wix_ops(pool, strings)),
    )
    return st.tuples(st.just(field[0]), condition)


def wix_specs(
    depth: int = 2, fields: st.SearchStrategy[Field] = any_field
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid wix filters on ``fields`` (paths and the operands to use there)."""
    conditions = st.lists(fields.flatmap(_wix_field), min_size=1, max_size=2).map(dict)
    if depth <= 0:
        return conditions
    sub = st.deferred(lambda: wix_specs(depth - 1, fields))
    return st.one_of(
        conditions,
        conditions,
        st.builds(
            lambda op, subs: {op: subs},
            st.sampled_from(["$and", "$or"]),
            st.lists(sub, min_size=1, max_size=3),
        ),
        st.builds(lambda s: {"$not": s}, sub),
    )

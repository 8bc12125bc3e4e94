"""The ``wix`` dialect in SQL: a compiled spec as a :class:`~taskengine.filters._sql.Bound`.

It mirrors :mod:`taskengine.filters._wix` over an already valid spec. A field is one
value (a dotted path does not fan out); on an array, ``$eq`` of a non-array value, the
range and string operators and ``$in``/``$hasSome`` hold when some element passes;
``$ne``, ``$nin`` and field-level ``$not`` negate. A numeric part of a path indexes an
array, which SQL's object path does not: rows where such a part meets an array are
decided in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskengine.filters._sql import (
    FALSE,
    UNKNOWN,
    Bound,
    all_of,
    any_of,
    exact,
    negate,
    sql_and,
    sql_not,
    sql_or,
)
from taskengine.filters._sql_backend import Backend, Leaf, Ref
from taskengine.filters._sql_values import compare, equal, is_date_operand, is_null, one_of

__all__ = ["wix_bound"]

_CMP = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def wix_bound(spec: Mapping[str, Any], b: Backend) -> Bound:
    """The bound of a valid wix spec."""
    return _doc(spec, b)


def _doc(spec: Mapping[str, Any], b: Backend) -> Bound:
    parts = []
    for key, value in spec.items():
        if key == "$and":
            parts.append(all_of([_doc(sub, b) for sub in value]))
        elif key == "$or":
            parts.append(any_of([_doc(sub, b) for sub in value]))
        elif key == "$not":
            parts.append(negate(_doc(value[0] if value.__class__ is list else value, b)))
        else:
            parts.append(_field(key, value, b))
    return all_of(parts)


def _is_operator_object(value: object) -> bool:
    if value.__class__ is not dict or not value or is_date_operand(value):
        return False
    return any(k.startswith("$") for k in value)


def _is_index(part: str) -> bool:
    return part.isascii() and part.isdigit() and str(int(part)) == part


def _field(key: str, value: Any, b: Backend) -> Bound:
    path = key.split(".")
    if not b.addressable(path):
        return UNKNOWN
    ref = b.field(path)
    if _is_operator_object(value):
        bound = all_of([_op(ref, op, arg, b) for op, arg in value.items()])
    else:
        bound = _eq(ref, value, b)
    # A numeric part indexes an array; SQL reads it as an object key: Python decides there.
    plain = sql_and([b.not_array_at(path[:i]) for i in range(1, len(path)) if _is_index(path[i])])
    return Bound(sql_or([sql_not(plain), bound.where]), sql_and([plain, bound.sure]))


def _some(ref: Ref, leaf: Leaf, b: Backend) -> Bound:
    """A test on the field: on an array, some element passes it."""
    return b.if_array(ref, b.some_element(ref, leaf), leaf(ref))


_SCALARS = (str, int, float, bool)


def _scalar(c: object) -> bool:
    return c.__class__ in _SCALARS


def _eq(ref: Ref, c: Any, b: Backend) -> Bound:
    if c is None:
        return is_null(b, ref)
    if c.__class__ is list:
        return equal(b, ref, c, ordered=False)
    if _scalar(c):
        contained = b.contains(ref, [c])
        if contained is not None:
            return contained
    return _some(ref, lambda e: equal(b, e, c, ordered=False), b)


def _some_member(ref: Ref, values: list[Any], b: Backend) -> Bound:
    """``$in``/``$hasSome``: the field (or, on an array, an element) equals one of
    ``values``; the scalars as one containment test where the backend has one."""
    scalars = [c for c in values if _scalar(c)]
    contained = b.contains(ref, scalars) if scalars else None
    if contained is None:
        return _some(ref, _member(values, b), b)
    rest = [c for c in values if not _scalar(c)]
    return any_of([contained, _some(ref, _member(rest, b), b)]) if rest else contained


def _member(values: list[Any], b: Backend) -> Leaf:
    literals = [c for c in values if c is not None]
    null = len(literals) < len(values)

    def leaf(ref: Ref) -> Bound:
        found = [one_of(b, ref, literals, ordered=False)]
        return any_of([*found, is_null(b, ref)] if null else found)

    return leaf


def _has(ref: Ref, c: Any, b: Backend) -> Bound:
    """``$hasAll`` for one value: an element equals it, or the (non-null) field does."""
    if c is None:
        return b.if_array(ref, b.some_element(ref, lambda e: is_null(b, e)), exact(FALSE))
    return _eq(ref, c, b) if c.__class__ is not list else _some_equal(ref, c, b)


def _some_equal(ref: Ref, c: Any, b: Backend) -> Bound:
    return _some(ref, lambda e: equal(b, e, c, ordered=False), b)


def _op(ref: Ref, op: str, arg: Any, b: Backend) -> Bound:
    if op == "$eq":
        return _eq(ref, arg, b)
    if op == "$ne":
        return negate(_eq(ref, arg, b))
    if op in _CMP:
        sql_op = _CMP[op]
        return _some(ref, lambda e: compare(b, e, sql_op, arg), b)
    if op in ("$in", "$hasSome"):
        return _some_member(ref, arg, b)
    if op == "$nin":
        return negate(_some_member(ref, arg, b))
    if op == "$hasAll":
        return all_of([_has(ref, c, b) for c in arg])
    if op in ("$startsWith", "$endsWith", "$contains"):
        needle = arg.casefold()
        kind = op[1:]
        return _some(ref, lambda e: b.folded(e, kind, needle), b)
    if op == "$exists":
        null = is_null(b, ref)
        return negate(null) if arg else null
    if op == "$not":
        return negate(all_of([_op(ref, inner, x, b) for inner, x in arg.items()]))
    raise AssertionError(f"a compiled wix filter has no {op}")  # pragma: no cover

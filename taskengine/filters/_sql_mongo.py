"""The ``mongo`` dialect in SQL: a compiled spec as a :class:`~taskengine.filters._sql.Bound`.

It mirrors :mod:`taskengine.filters._mongo` over an already valid spec. A field's
conditions are tested on the value its path reaches: on an array, a condition holds
when some element passes it or the array itself does (``$size`` and ``$elemMatch``
look at the array itself only); ``$ne``, ``$nin``, ``$not`` and ``$exists: false``
negate a whole field condition. A dotted path is exact where it meets no array before
its last part (MongoDB fans out over those; such rows are decided in Python).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from taskengine.filters._mongo_condition import regex_cond
from taskengine.filters._mongo_element import CMP_OPS
from taskengine.filters._mongo_operands import (
    compile_regex,
    is_operator_object,
    mod_args,
    size_arg,
    truthy,
)
from taskengine.filters._mongo_types import INT32_MAX, INT32_MIN, NUMBER_ALIAS, type_codes
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
from taskengine.filters._sql_backend import NUMBER, Backend, Leaf, Ref
from taskengine.filters._sql_values import compare, equal, is_null, one_of

__all__ = ["mongo_bound"]

_TEXT = frozenset({"text"})
_ARRAY = frozenset({"array"})


@attrs.frozen
class _Test:
    """A test on each value the path yields (``expand``: also each array element).

    ``equals``: set when the leaf is "equals one of these scalars" (strings, numbers,
    booleans), so a backend may test the field with one containment test.
    """

    leaf: Leaf
    expand: bool = True
    equals: tuple[Any, ...] = ()


@attrs.frozen
class _Not:
    """The negation of the conjunction of field conditions."""

    children: tuple[_Test | _Not, ...]


_Cond = _Test | _Not


def mongo_bound(spec: Mapping[str, Any], b: Backend) -> Bound:
    """The bound of a valid mongo spec."""
    return _doc(spec, b)


def _doc(spec: Mapping[str, Any], b: Backend) -> Bound:
    parts = []
    for key, value in spec.items():
        if key.startswith("$"):
            if key == "$comment":
                continue
            subs = [_doc(sub, b) for sub in value]
            if key == "$and":
                parts.append(all_of(subs))
            elif key == "$or":
                parts.append(any_of(subs))
            else:  # $nor
                parts.append(negate(any_of(subs)))
        else:
            parts.append(_field(key, value, b))
    return all_of(parts)


def _field(key: str, value: Any, b: Backend) -> Bound:
    path = key.split(".")
    conds = _operators(value, b) if is_operator_object(value) else [_literal(value, b)]
    if not b.addressable(path):
        return UNKNOWN
    ref = b.field(path)
    bound = all_of([_at(ref, cond, b) for cond in conds])
    if len(path) == 1:
        return bound
    # Through objects only, the path reaches one value as SQL's does; through an
    # array MongoDB fans out, and Python decides.
    plain = sql_and([b.not_array_at(path[:i]) for i in range(1, len(path))])
    return Bound(sql_or([sql_not(plain), bound.where]), sql_and([plain, bound.sure]))


def _at(ref: Ref, cond: _Cond, b: Backend) -> Bound:
    """A field condition on the value ``ref`` (the path's end)."""
    if isinstance(cond, _Not):
        return negate(all_of([_at(ref, child, b) for child in cond.children]))
    if cond.equals:
        # A scalar is never equal to the array itself: the value or an element equals it.
        contained = b.contains(ref, cond.equals)
        if contained is not None:
            return contained
    leaf = cond.leaf
    on_array = [leaf(b.itself(ref))]
    if cond.expand:
        on_array.insert(0, b.some_element(ref, leaf))
    return b.if_array(ref, any_of(on_array), leaf(ref))


def _literal(value: Any, b: Backend) -> _Cond:
    if isinstance(value, re.Pattern):
        return _Test(_regex(compile_regex(value, None, ""), b))
    return _equal_test(value, b)


_SCALARS = (str, int, float, bool)


def _equal_test(c: Any, b: Backend) -> _Test:
    """``$eq c``, marked as a scalar equality when ``c`` is one."""
    return _Test(_eq(c, b), equals=(c,) if c.__class__ in _SCALARS else ())


def _operators(ops: Mapping[str, Any], b: Backend) -> list[_Cond]:
    conds: list[_Cond] = []
    for op, arg in ops.items():
        conds.extend(_operator(op, arg, ops, b))
    return conds


def _operator(op: str, arg: Any, ops: Mapping[str, Any], b: Backend) -> Sequence[_Cond]:
    if op == "$eq":
        return [_equal_test(arg, b)]
    if op == "$ne":
        return [_Not((_equal_test(arg, b),))]
    if op in CMP_OPS:
        return [_Test(_cmp(op, arg, b))]
    if op == "$in":
        return [_in_test(arg, b)]
    if op == "$nin":
        return [_Not((_in_test(arg, b),))]
    if op == "$exists":
        test = _Test(lambda ref: exact(sql_not(b.is_missing(ref))))
        return [test] if truthy(arg) else [_Not((test,))]
    if op == "$type":
        return [_Test(_type(type_codes(arg, ""), b))]
    if op == "$size":
        n = size_arg(arg, "")
        return [_Test(lambda ref: b.length_is(ref, n), expand=False)]
    if op == "$all":
        return _all(arg, b)
    if op == "$elemMatch":
        return [_Test(_some_array(b), expand=False)]
    if op == "$regex":
        return [_Test(_regex(compile_regex(arg, ops.get("$options"), ""), b))]
    if op == "$options":
        return []
    if op == "$mod":
        divisor, remainder = mod_args(arg, "")
        return [_Test(lambda ref: b.mod(ref, divisor, remainder))]
    if op == "$not":
        if isinstance(arg, re.Pattern):
            return [_Not((_Test(_regex(compile_regex(arg, None, ""), b)),))]
        return [_Not(tuple(_operators(arg, b)))]
    raise AssertionError(f"a compiled mongo filter has no {op}")  # pragma: no cover


def _some_array(b: Backend) -> Leaf:
    """Only arrays can pass (``$elemMatch``): necessary, never sure."""
    return lambda ref: Bound(b.type_in(ref, _ARRAY).where, FALSE)


def _all(items: list[Any], b: Backend) -> list[_Cond]:
    if not items:
        return [_Test(lambda ref: exact(FALSE))]
    if isinstance(items[0], dict) and next(iter(items[0]), None) == "$elemMatch":
        return [_Test(_some_array(b), expand=False) for _ in items]
    return [_literal(x, b) for x in items]


def _eq(c: Any, b: Backend) -> Leaf:
    """``$eq c`` on one value: ``null`` also matches a missing field."""
    if c is None:
        return lambda ref: is_null(b, ref)
    return lambda ref: equal(b, ref, c, ordered=True)


def _cmp(op: str, c: Any, b: Backend) -> Leaf:
    sql_op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
    if c is None:
        if op in ("$gte", "$lte"):
            return lambda ref: is_null(b, ref)
        return lambda ref: exact(FALSE)
    if c.__class__ is float and c != c:
        return lambda ref: exact(FALSE)  # only NaN is >= NaN, and none is stored
    return lambda ref: compare(b, ref, sql_op, c)


def _in_test(values: list[Any], b: Backend) -> _Test:
    """``$in``, marked as a scalar equality when every value is a scalar."""
    scalars = all(c.__class__ in _SCALARS for c in values)
    return _Test(_in(values, b), equals=tuple(values) if values and scalars else ())


def _in(values: list[Any], b: Backend) -> Leaf:
    tests = [_regex(c, b) for c in values if isinstance(c, re.Pattern)]
    if any(c is None for c in values):
        tests.append(_eq(None, b))
    literals = [c for c in values if c is not None and not isinstance(c, re.Pattern)]
    if literals:
        tests.append(lambda ref: one_of(b, ref, literals, ordered=True))
    return lambda ref: any_of([test(ref) for test in tests])


def _regex(rx: re.Pattern[str], b: Backend) -> Leaf:
    """A string the pattern finds: exact for ``^literal``, else any string may."""
    fast = regex_cond(rx).fast
    if fast is not None and fast[0] == "prefix":
        prefix: str = fast[1]
        return lambda ref: b.prefix(ref, prefix)
    return lambda ref: Bound(b.type_in(ref, _TEXT).where, FALSE)


def _type(codes: frozenset[int], b: Backend) -> Leaf:
    def leaf(ref: Ref) -> Bound:
        parts = []
        for code in codes:
            if code == 1:
                parts.append(b.type_in(ref, frozenset({"real"})))
            elif code == 2:
                parts.append(b.type_in(ref, _TEXT))
            elif code == 3:
                plain = negate(b.is_date(ref))
                parts.append(all_of([b.type_in(ref, frozenset({"object"})), plain]))
            elif code == 4:
                parts.append(b.type_in(ref, _ARRAY))
            elif code == 8:
                parts.append(b.type_in(ref, frozenset({"true", "false"})))
            elif code == 9:
                parts.append(b.is_date(ref))
            elif code == 10:
                parts.append(b.type_in(ref, frozenset({"null"})))
            elif code in (16, 18):
                ints = frozenset({"integer"})
                in32 = all_of(
                    [b.number(ref, ">=", INT32_MIN, ints), b.number(ref, "<=", INT32_MAX, ints)]
                )
                if code == 16:
                    parts.append(in32)
                else:
                    parts.append(all_of([b.type_in(ref, ints), negate(in32)]))
            elif code == NUMBER_ALIAS:
                parts.append(b.type_in(ref, NUMBER))
        return any_of(parts) if parts else exact(FALSE)

    return leaf

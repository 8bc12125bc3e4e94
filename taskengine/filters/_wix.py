"""The ``wix`` filter dialect: the task API's query language, compiled.

Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $hasSome $hasAll $startsWith
$endsWith $contains $exists $and $or $not`` (see docs/filters.md). The rules:

* A field is named by a dotted path through subdocuments (a numeric component
  also indexes an array). ``{f: v}`` is ``{f: {"$eq": v}}``; several operators on
  one field must all hold.
* Equality is type-strict (``1 == 1.0``, ``True != 1``, dates by instant with naive
  = UTC, objects by content, arrays element by element) and case-sensitive.
* On an array field ``$eq v`` means some element equals ``v``, ``$ne v`` that no
  element does; an array operand means whole-array equality. Comparisons, ``$in``
  and the string operators likewise hold when some element satisfies them.
* ``$gt/$gte/$lt/$lte`` compare numbers with numbers, strings with strings (by code
  point), dates with dates, booleans with booleans; anything else never matches.
* ``$startsWith/$endsWith/$contains`` are case-insensitive and match strings only.
* ``$hasSome`` = the field's values (the elements of an array, or the value itself)
  intersect the list; ``$hasAll`` = they include every listed value.
* ``{f: null}`` and ``$exists: false`` match a missing or null field; ``$exists:
  true`` and ``$ne: null`` match any non-null value (``""`` and ``[]`` included).
* Top-level ``$not`` takes an object or a one-element list. A field-level ``$not``
  takes an object of operators and matches where they do not all hold (a missing
  field included): ``{f: {"$not": ops}}`` is ``{"$not": {f: ops}}``. ``$regex`` is
  rejected.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from taskengine._values import (
    date_instant,
    find_foreign,
    is_date_wrapper,
    values_equal,
)
from taskengine.errors import InvalidFilter
from taskengine.filters._inline import (
    ARG,
    FIRST,
    Inline,
    as_inline,
    date_compare,
    fresh,
    generate,
    inlining,
    some_element,
    with_inline,
)
from taskengine.filters._predicates import (
    MISSING,
    Predicate,
    all_of,
    any_of,
    compile_each,
    equals,
    fields,
    is_null,
    negate,
    one_field_literals,
)
from taskengine.filters._wix_fields import MARK, field_pred

__all__ = ["compile_wix"]

Test = Callable[[Any], bool]


_FIELD_OPS: Final = frozenset(
    {
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$in",
        "$nin",
        "$hasSome",
        "$hasAll",
        "$startsWith",
        "$endsWith",
        "$contains",
        "$exists",
    }
)


def _check_value(value: object, path: str) -> None:
    """Reject values outside the value model, and ``"$date"`` dicts that are not dates."""
    found = find_foreign(value, path, dates=True)
    if found is not None:
        raise InvalidFilter(*found)


def _is_operator_object(value: object) -> bool:
    if value.__class__ is not dict or not value:
        return False
    if is_date_wrapper(value):
        return False
    return any(isinstance(k, str) and k.startswith("$") for k in value)


# ------------------------------------------------------------------ single values


def _eq_scalar(c: object) -> Test:
    """Equality of one (non-array) value with the constant ``c``."""
    return equals(c, ordered=False)


def _eq_test(c: object) -> Test:
    """``$eq c`` on a field value (arrays: some element, or the whole array)."""
    if c is None:
        return is_null
    if c.__class__ is list:
        return lambda v: v.__class__ is list and values_equal(v, c)
    return _some(_eq_scalar(c))


def _some(scalar: Test) -> Test:
    """Lift a test on one value to a field: an array matches when some element does."""

    def test(v: Any) -> bool:
        if v.__class__ is list:
            for e in v:  # noqa: SIM110
                if scalar(e):
                    return True
            return False
        return scalar(v)

    if not inlining():
        return test
    loop = as_inline(some_element(scalar, whole=False))
    one = as_inline(scalar)
    inline = Inline(
        f"({loop.later()} if {FIRST}.__class__ is list else {one.later()})",
        {**loop.env, **one.env},
    )
    return with_inline(test, inline)


_PY_OPS: Final[dict[str, str]] = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_CMP: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def _is_num(v: Any) -> bool:
    k = v.__class__
    return k is int or k is float


def _cmp_scalar(op: str, c: object, path: str) -> Test:
    """``$gt/$gte/$lt/$lte c`` on one value: same kind only (type-strict)."""
    cls = c.__class__
    cmp = _CMP[op]
    py, name = _PY_OPS[op], fresh("c")
    if cls is int or cls is float:
        if c != c:
            raise InvalidFilter(path, f"{op} cannot compare with NaN")
        k = fresh("k")
        number = Inline(
            f"((({k} := {FIRST}.__class__) is int or {k} is float) and {ARG} {py} {name})",
            {name: c},
        )
        return with_inline(lambda v: _is_num(v) and cmp(v, c), number)
    if cls is str:
        text = Inline(f"({FIRST}.__class__ is str and {ARG} {py} {name})", {name: c})
        return with_inline(lambda v: v.__class__ is str and cmp(v, c), text)
    if cls is bool:
        flag = Inline(f"({FIRST}.__class__ is bool and {ARG} {py} {name})", {name: c})
        return with_inline(lambda v: v.__class__ is bool and cmp(v, c), flag)
    if isinstance(c, datetime) or is_date_wrapper(c):
        bound = date_instant(c)
        assert bound is not None

        def date(v: Any) -> bool:
            k = v.__class__
            if k is datetime or k is dict or isinstance(v, datetime):
                d = date_instant(v)
                return d is not None and cmp(d, bound)
            return False

        if not inlining():
            return date
        return with_inline(date, date_compare([(py, bound)], date))
    raise InvalidFilter(path, f"{op} needs a number, string, boolean or date")


def _values_of(v: Any) -> list[Any]:
    if v.__class__ is list:
        return v
    if v is MISSING or v is None:
        return []
    return [v]


def _member(values: Sequence[object]) -> Test:
    """Whether one value equals one of ``values`` (type-strict; no hash traps)."""
    strs = frozenset(x for x in values if x.__class__ is str)
    nums = frozenset(x for x in values if x.__class__ in (int, float) and x == x)
    rest = [_eq_scalar(x) for x in values if x.__class__ not in (str, int, float) or x != x]

    def test(v: Any) -> bool:
        k = v.__class__
        if k is str:
            return v in strs
        if (k is int or k is float) and v in nums:
            return True
        for t in rest:  # noqa: SIM110
            if t(v):
                return True
        return False

    if rest or not inlining():
        return test
    ss, nn, k = fresh("strs"), fresh("nums"), fresh("k")
    other = f"(({k} is int or {k} is float) and {ARG} in {nn})" if nums else "False"
    inline = Inline(
        f"({ARG} in {ss} if ({k} := {FIRST}.__class__) is str else {other})", {ss: strs, nn: nums}
    )
    return with_inline(test, inline)


def _string_test(op: str, needle: object, path: str) -> Test:
    if not isinstance(needle, str):
        raise InvalidFilter(path, f"{op} needs a string")
    n = needle.casefold()
    name = fresh("s")
    if op == "$startsWith":
        test: Test = lambda v: v.__class__ is str and v.casefold().startswith(n)  # noqa: E731
        expr = f"{ARG}.casefold().startswith({name})"
    elif op == "$endsWith":
        test = lambda v: v.__class__ is str and v.casefold().endswith(n)  # noqa: E731
        expr = f"{ARG}.casefold().endswith({name})"
    else:
        test = lambda v: v.__class__ is str and n in v.casefold()  # noqa: E731
        expr = f"{name} in {ARG}.casefold()"
    return _some(with_inline(test, Inline(f"({FIRST}.__class__ is str and {expr})", {name: n})))


def _list_arg(op: str, arg: object, path: str) -> list[Any]:
    if arg.__class__ is not list:
        raise InvalidFilter(path, f"{op} needs an array")
    _check_value(arg, path)
    return arg


def _op_test(op: str, arg: Any, path: str) -> Test:
    """One field operator as a test on the field's value (MISSING when absent)."""
    if op == "$eq":
        _check_value(arg, path)
        return _eq_test(arg)
    if op == "$ne":
        _check_value(arg, path)
        return negate(_eq_test(arg))
    if op in ("$gt", "$gte", "$lt", "$lte"):
        _check_value(arg, path)
        scalar = _cmp_scalar(op, arg, path)
        test = _some(scalar)
        if inlining():
            is_date = isinstance(arg, datetime) or is_date_wrapper(arg)
            kind = "num" if arg.__class__ in (int, float) else "date" if is_date else ""
            if kind:
                bound = arg if kind == "num" else date_instant(arg)
                setattr(test, MARK, (kind, _PY_OPS[op], bound))
        return test
    if op in ("$in", "$nin", "$hasSome"):
        member = _member(_list_arg(op, arg, path))
        some = _some(member)
        if op == "$nin":
            return negate(some)
        return some
    if op == "$hasAll":
        wanted = _list_arg(op, arg, path)
        tests = [_eq_scalar(x) for x in wanted]

        def has_all(v: Any) -> bool:
            have = _values_of(v)
            for t in tests:
                for e in have:
                    if t(e):
                        break
                else:
                    return False
            return True

        return has_all
    if op in ("$startsWith", "$endsWith", "$contains"):
        return _string_test(op, arg, path)
    if op == "$exists":
        if arg.__class__ is not bool:
            raise InvalidFilter(path, "$exists needs true or false")
        if arg:
            return negate(is_null)
        return is_null
    if op == "$not":
        return _not_test(arg, path)
    if op == "$regex":
        raise InvalidFilter(path, "$regex is not supported in this dialect")
    raise InvalidFilter(path, f"unknown operator: {op}")


def _not_test(arg: Any, path: str) -> Test:
    """Field-level ``$not``: true where the operators of ``arg`` do not all hold."""
    if not isinstance(arg, Mapping) or not arg:
        raise InvalidFilter(path, "$not needs an object of operators")
    tests = []
    for op, inner in arg.items():
        if not (isinstance(op, str) and op.startswith("$")) or op == "$date":
            raise InvalidFilter(f"{path}.{op}", "$not needs an object of operators")
        tests.append(_op_test(op, inner, f"{path}.{op}"))
    return negate(all_of(tests))


# ------------------------------------------------------------------------ compile


def _negate(inner: Predicate) -> Predicate:
    return negate(inner)


def _sub_docs(op: str, arg: object, path: str) -> list[Predicate]:
    return compile_each(
        arg,
        path,
        _compile_doc,
        not_list=f"{op} needs an array of filters",
        empty=f"{op} needs at least one filter",
        not_object=f"{op} entries must be objects",
    )


def _compile_doc(spec: Mapping[str, Any], path: str) -> Predicate:
    preds: list[Predicate] = []
    for key, value, where in fields(spec, path):
        if key == "$and":
            preds.append(all_of(_sub_docs(key, value, where)))
        elif key == "$or":
            same = one_field_literals(value)
            if same is not None:  # {$or: [{f: 1}, {f: 2}]} is {f: {$in: [1, 2]}}
                field, literals = same
                preds.append(field_pred(field, [_op_test("$in", literals, where)]))
            else:
                preds.append(any_of(_sub_docs(key, value, where)))
        elif key == "$not":
            if value.__class__ is list:
                if len(value) != 1:
                    raise InvalidFilter(where, "$not takes an object or a one-element list")
                value = value[0]
                where = f"{where}.0"
            if not isinstance(value, Mapping):
                raise InvalidFilter(where, "$not takes an object or a one-element list")
            preds.append(_negate(_compile_doc(value, where)))
        elif key == "$regex":
            raise InvalidFilter(where, "$regex is not supported in this dialect")
        elif key.startswith("$"):
            raise InvalidFilter(where, f"unknown top level operator: {key}")
        elif _is_operator_object(value):
            if "$date" in value:
                raise InvalidFilter(where, '"$date" needs an ISO-8601 date string and no other key')
            tests = []
            for op, arg in value.items():
                if not (isinstance(op, str) and op.startswith("$")):
                    raise InvalidFilter(f"{where}.{op}", f"unknown operator: {op}")
                tests.append(_op_test(op, arg, f"{where}.{op}"))
            preds.append(field_pred(key, tests))
        else:
            _check_value(value, where)
            preds.append(field_pred(key, [_eq_test(value)]))
    return all_of(preds)


def compile_wix(spec: Mapping[str, Any]) -> Predicate:
    """Compile a wix filter into a predicate; raises only ``InvalidFilter``."""
    return generate(_compile_doc(spec, ""))

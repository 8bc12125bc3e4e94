"""Single-value tests of the ``mongo`` dialect: one yielded value against one operator.

A test receives one value yielded by a path (or ``MISSING``) and answers whether it
satisfies the operator: MongoDB's ``matchesSingleElement``. Equality and comparisons
are type-bracketed (see :mod:`taskengine.filters._mongo`); each test is a closure
specialised at compile time for its operand's type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from taskengine._values import (
    INT64_MAX,
    INT64_MIN,
    RANK_DATE,
    compare_values,
    date_instant,
    type_rank,
)
from taskengine.filters._inline import ARG, FIRST, Inline, date_compare, fresh, with_inline
from taskengine.filters._mongo_types import NUMBER_ALIAS, NUMBER_CODES, type_code
from taskengine.filters._predicates import MISSING, equals

__all__ = [
    "CMP_OPS",
    "Test",
    "cmp_test",
    "eq_test",
    "exists_test",
    "in_test",
    "mod_test",
    "never",
    "regex_test",
    "size_test",
    "type_test",
]

Test = Callable[[Any], bool]


def regex_test(rx: re.Pattern[str]) -> Test:
    """A string that ``rx`` finds a match in."""
    search = rx.search

    def test(v: Any) -> bool:
        return v.__class__ is str and search(v) is not None

    name = fresh("search")
    return with_inline(
        test, Inline(f"({FIRST}.__class__ is str and {name}({ARG}) is not None)", {name: search})
    )


def eq_test(c: object) -> Test:
    """``$eq c`` on one value (``null`` also matches a missing field)."""
    return equals(c, ordered=True)


CMP_OPS: Final = ("$gt", "$gte", "$lt", "$lte")


def cmp_test(op: str, c: object) -> Test:
    """``$gt/$gte/$lt/$lte c`` on one value (type-bracketed)."""
    cls = c.__class__
    inclusive = op in ("$gte", "$lte")
    if cls is int or cls is float:
        if c != c:  # NaN: only >=/<= NaN match, and only NaN
            if inclusive:
                return eq_test(c)
            return never
        num = c
        name, k = fresh("c"), fresh("k")
        number = Inline(
            f"((({k} := {FIRST}.__class__) is int or {k} is float) and {ARG} {_PY_OPS[op]} {name})",
            {name: num},
        )
        if op == "$gt":

            def test(v: Any) -> bool:
                k = v.__class__
                return (k is int or k is float) and v > num

        elif op == "$gte":

            def test(v: Any) -> bool:
                k = v.__class__
                return (k is int or k is float) and v >= num

        elif op == "$lt":

            def test(v: Any) -> bool:
                k = v.__class__
                return (k is int or k is float) and v < num

        else:

            def test(v: Any) -> bool:
                k = v.__class__
                return (k is int or k is float) and v <= num

        return with_inline(test, number)
    if isinstance(c, str):
        s: str = c
        name = fresh("c")
        text = Inline(f"({FIRST}.__class__ is str and {ARG} {_PY_OPS[op]} {name})", {name: s})
        if op == "$gt":
            return with_inline(lambda v: v.__class__ is str and v > s, text)
        if op == "$gte":
            return with_inline(lambda v: v.__class__ is str and v >= s, text)
        if op == "$lt":
            return with_inline(lambda v: v.__class__ is str and v < s, text)
        return with_inline(lambda v: v.__class__ is str and v <= s, text)
    if c is None:
        return eq_test(None) if inclusive else never
    rank = type_rank(c)
    want = _CMP_WANT[op]
    if rank == RANK_DATE:
        instant = date_instant(c)
        assert instant is not None

        def date_test(v: Any) -> bool:
            k = v.__class__
            if k is datetime or k is dict or isinstance(v, datetime):
                d = date_instant(v)
                if d is None:
                    return False
                return (-1 if d < instant else (1 if d > instant else 0)) in want
            return False

        return with_inline(date_test, date_compare([(_PY_OPS[op], instant)], date_test))

    def generic(v: Any) -> bool:
        if v is MISSING or type_rank(v) != rank:
            return False
        return compare_values(v, c) in want

    return generic


_PY_OPS: Final[dict[str, str]] = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}

_CMP_WANT: Final[dict[str, frozenset[int]]] = {
    "$gt": frozenset({1}),
    "$gte": frozenset({0, 1}),
    "$lt": frozenset({-1}),
    "$lte": frozenset({-1, 0}),
}


def never(v: Any) -> bool:
    return False


def exists_test(v: Any) -> bool:
    return v is not MISSING


with_inline(exists_test, Inline(f"({FIRST} is not _MISSING)", {}))


def in_test(values: Sequence[object]) -> Test:
    """``$in [...]`` on one value: equality with any literal, or any regex matching."""
    strs: set[str] = set()
    nums: set[float] = set()
    has_nan = has_true = has_false = has_null = False
    regexes: list[re.Pattern[str]] = []
    others: list[Test] = []
    for c in values:
        cls = c.__class__
        if cls is str:
            strs.add(c)  # type: ignore[arg-type]
        elif cls is bool:
            if c:
                has_true = True
            else:
                has_false = True
        elif cls is int or cls is float:
            if c != c:
                has_nan = True
            else:
                nums.add(c)  # type: ignore[arg-type]
        elif c is None:
            has_null = True
        elif isinstance(c, re.Pattern):
            regexes.append(c)
        else:
            others.append(eq_test(c))
    fstrs = frozenset(strs)
    fnums = frozenset(nums)
    searches = tuple(rx.search for rx in regexes)
    rest = tuple(others)
    simple = not (has_nan or has_true or has_false or has_null or searches or rest)

    if simple:

        def fast(v: Any) -> bool:
            k = v.__class__
            if k is str:
                return v in fstrs
            if k is int or k is float:
                return v in fnums
            return False

        ss, nn, k = fresh("strs"), fresh("nums"), fresh("k")
        inline = Inline(
            f"({ARG} in {ss} if ({k} := {FIRST}.__class__) is str"
            f" else (({k} is int or {k} is float) and {ARG} in {nn}))",
            {ss: fstrs, nn: fnums},
        )
        return with_inline(fast, inline)

    def test(v: Any) -> bool:
        k = v.__class__
        if k is str:
            if v in fstrs:
                return True
            for search in searches:  # noqa: SIM110
                if search(v) is not None:
                    return True
            return False
        if k is int or k is float:
            return v in fnums or (has_nan and v != v)
        if k is bool:
            return has_true if v else has_false
        if v is None or v is MISSING:
            return has_null
        for t in rest:  # noqa: SIM110
            if t(v):
                return True
        return False

    return test


def type_test(codes: frozenset[int]) -> Test:
    """``$type``: a value whose BSON type number is one of ``codes``."""
    wants_number = NUMBER_ALIAS in codes
    plain = codes - {NUMBER_ALIAS}

    def test(v: Any) -> bool:
        if v is MISSING:
            return False
        code = type_code(v)
        return code in plain or (wants_number and code in NUMBER_CODES)

    return test


def size_test(n: int) -> Test:
    """``$size n``: an array of ``n`` elements."""

    def test(v: Any) -> bool:
        return v.__class__ is list and len(v) == n

    name = fresh("n")
    return with_inline(
        test, Inline(f"({FIRST}.__class__ is list and len({ARG}) == {name})", {name: n})
    )


def mod_test(divisor: int, remainder: int) -> Test:
    """``$mod``: the dividend is truncated toward zero; one not representable as an
    int64 (or NaN, infinite, not a number) never matches; C++ remainder sign."""
    ad = abs(divisor)

    def test(v: Any) -> bool:
        k = v.__class__
        if k is int:
            a: int = v
        elif k is float:
            if v != v or v >= 9.2233720368547758e18 or v < -9.2233720368547758e18:
                return False  # NaN, infinities and out-of-range doubles
            a = int(v)
        else:
            return False
        if a > INT64_MAX or a < INT64_MIN:
            return False
        r = abs(a) % ad
        return (r if a >= 0 else -r) == remainder

    return test

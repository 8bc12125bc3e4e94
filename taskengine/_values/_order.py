"""Order and equality in the value model: type ranks, the total order, the equalities.

Three rules make Python's own operators wrong for these values, and every function
here handles them: ``True == 1`` (booleans are not numbers here), naive vs aware
datetimes (``<`` raises between them), and NaN (equal to itself here, as in MongoDB).

The canonical type order is MongoDB's BSON order restricted to these values::

    null < numbers < strings < objects < arrays < booleans < dates < regexes < others
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from taskengine._values._dates import date_instant, is_date_wrapper

RANK_NULL: Final = 5
RANK_NUMBER: Final = 10
RANK_STRING: Final = 15
RANK_OBJECT: Final = 20
RANK_ARRAY: Final = 25
RANK_BOOL: Final = 40
RANK_DATE: Final = 45
RANK_REGEX: Final = 50
RANK_OTHER: Final = 100

_PATTERN_TYPE: Final = re.Pattern
_ZERO: Final = timedelta(0)


def type_rank(value: object) -> int:
    """The canonical (BSON) type order of ``value``; equal ranks are comparable."""
    cls = value.__class__
    if value is None:
        return RANK_NULL
    if cls is str:
        return RANK_STRING
    if cls is bool:
        return RANK_BOOL
    if cls is int or cls is float:
        return RANK_NUMBER
    if cls is dict:
        return RANK_DATE if is_date_wrapper(value) else RANK_OBJECT
    if cls is list:
        return RANK_ARRAY
    if isinstance(value, datetime):
        return RANK_DATE
    if isinstance(value, bool):
        return RANK_BOOL
    if isinstance(value, (int, float)):
        return RANK_NUMBER
    if isinstance(value, str):
        return RANK_STRING
    if isinstance(value, dict):
        return RANK_DATE if is_date_wrapper(value) else RANK_OBJECT
    if isinstance(value, list):
        return RANK_ARRAY
    if isinstance(value, _PATTERN_TYPE):
        return RANK_REGEX
    return RANK_OTHER


def _number_cmp(a: float, b: float) -> int:
    # NaN sorts below every number and equals itself (BSON order).
    if a != a:
        return 0 if b != b else -1
    if b != b:
        return 1
    return _sign(a, b)


def _sign(a: Any, b: Any) -> int:
    """-1, 0 or 1 as ``a`` is below, equal to or above ``b`` (same-rank values)."""
    return -1 if a < b else (1 if a > b else 0)


def _date_key(value: object) -> timedelta:
    key = date_instant(value)
    return _ZERO if key is None else key


def compare_values(a: object, b: object) -> int:
    """Total order of two values (negative, zero, positive), MongoDB's sort order.

    Different type ranks order by rank; numbers numerically (NaN lowest); strings by
    code point; dates by instant; arrays element by element, then by length;
    objects field by field in their own order (value type, then key, then value).
    """
    ra, rb = type_rank(a), type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == RANK_NUMBER:
        return _number_cmp(a, b)  # type: ignore[arg-type]
    if ra in (RANK_STRING, RANK_BOOL):
        return _sign(a, b)
    if ra == RANK_DATE:
        return _sign(_date_key(a), _date_key(b))
    if ra == RANK_ARRAY:
        for x, y in zip(a, b, strict=False):  # type: ignore[call-overload]
            c = compare_values(x, y)
            if c:
                return c
        return _sign(len(a), len(b))  # type: ignore[arg-type]
    if ra == RANK_OBJECT:
        ia, ib = iter(a.items()), iter(b.items())  # type: ignore[attr-defined]
        for (ka, va), (kb, vb) in zip(ia, ib, strict=False):
            ta, tb = type_rank(va), type_rank(vb)
            if ta != tb:
                return -1 if ta < tb else 1
            if ka != kb:
                sa, sb = str(ka), str(kb)  # keys are strings; str() keeps odd ones orderable
                return -1 if sa < sb else 1
            c = compare_values(va, vb)
            if c:
                return c
        return _sign(len(a), len(b))  # type: ignore[arg-type]
    if ra == RANK_REGEX:
        return _sign((a.pattern, a.flags), (b.pattern, b.flags))  # type: ignore[attr-defined]
    return 0 if _other_equal(a, b) else (-1 if id(a) < id(b) else 1)


def _other_equal(a: object, b: object) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _equal(a: object, b: object, ordered: bool) -> bool:
    ra = type_rank(a)
    if ra != type_rank(b):
        return False
    if ra == RANK_NUMBER:
        return a == b or (a != a and b != b)
    if ra in (RANK_STRING, RANK_BOOL, RANK_NULL):
        return a == b
    if ra == RANK_DATE:
        return _date_key(a) == _date_key(b)
    if ra == RANK_ARRAY:
        if len(a) != len(b):  # type: ignore[arg-type]
            return False
        return all(_equal(x, y, ordered) for x, y in zip(a, b, strict=False))  # type: ignore[call-overload]
    if ra == RANK_OBJECT:
        if len(a) != len(b):  # type: ignore[arg-type]
            return False
        if ordered:
            return all(
                ka == kb and _equal(va, vb, True)
                for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=False)  # type: ignore[attr-defined]
            )
        other: Mapping[str, Any] = b  # type: ignore[assignment]
        return all(
            k in other and _equal(v, other[k], False)
            for k, v in a.items()  # type: ignore[attr-defined]
        )
    if ra == RANK_REGEX:
        pa: re.Pattern[str] = a  # type: ignore[assignment]
        pb: re.Pattern[str] = b  # type: ignore[assignment]
        return pa.pattern == pb.pattern and pa.flags == pb.flags
    return _other_equal(a, b)


def values_equal(a: object, b: object) -> bool:
    """Type-strict equality of two values, with dicts compared by content.

    ``1 == 1.0``; ``True != 1``; NaN equals NaN; dates by instant (naive = UTC;
    a ``{"$date": ...}`` wrapper equals the datetime it stands for); dicts by
    content regardless of key order; lists element by element.
    """
    return _equal(a, b, False)


def bson_equal(a: object, b: object) -> bool:
    """Like :func:`values_equal`, but dicts must also list their keys in the same order.

    This is MongoDB's embedded-document equality.
    """
    return _equal(a, b, True)


def is_nan(value: object) -> bool:
    """Whether ``value`` is a float NaN."""
    return isinstance(value, float) and math.isnan(value)


def equal_to(c: object, *, ordered: bool) -> Callable[[Any], bool]:
    """A test ``v -> bool`` of equality with the constant ``c``, specialised to its type.

    The same answers as :func:`bson_equal` (``ordered``) or :func:`values_equal`, without
    their dispatch on every call: what filters compile their equality operators to.
    ``None`` equals ``None`` only (a filter adds its missing-field rule around this).
    """
    cls = c.__class__
    if c is None:
        return _is_none
    if cls is str:
        return lambda v: v.__class__ is str and v == c
    if cls is bool:
        return lambda v: v is c
    if cls is int or cls is float:
        if c != c:
            return lambda v: v.__class__ is float and v != v

        def number(v: Any) -> bool:
            k = v.__class__
            return (k is int or k is float) and v == c

        return number
    if isinstance(c, datetime) or is_date_wrapper(c):
        instant = date_instant(c)

        def date(v: Any) -> bool:
            k = v.__class__
            if k is datetime or k is dict or isinstance(v, datetime):
                return date_instant(v) == instant
            return False

        return date
    if ordered:
        if cls is list or cls is dict:

            def container(v: Any) -> bool:
                k = v.__class__
                return (k is list or k is dict) and bson_equal(v, c)

            return container
        return lambda v: bson_equal(v, c)
    return lambda v: values_equal(v, c)


def _is_none(v: Any) -> bool:
    return v is None


def identical(a: Any, b: Any) -> bool:
    """Whether two values are the same JSON value: same types, same keys in the same order.

    Stricter than :func:`values_equal` (``1`` is not identical to ``1.0``,
    ``{"a":1,"b":2}`` not to ``{"b":2,"a":1}``, dates need the same ``tzinfo``): it
    decides whether a changed value must be written.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, float) and a != a:
        return bool(b != b)
    if isinstance(a, datetime):
        return bool(a == b and a.tzinfo == b.tzinfo)
    return bool(a == b)

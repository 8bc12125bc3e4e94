"""Value tests in SQL shared by both dialects: equality and type-bracketed comparison.

The rules are the value model's (:mod:`taskengine._values`): numbers compare with
numbers (``1 == 1.0``, booleans apart), strings by code point, booleans with booleans
(``false < true``), dates with dates by instant, arrays element by element. Stored
values are never NaN or infinite, which decides some operands at translation time.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from taskengine._values import INT64_MAX, INT64_MIN, date_instant, is_date_wrapper
from taskengine.filters._sql import (
    FALSE,
    SQL,
    UNKNOWN,
    Bound,
    all_of,
    any_of,
    exact,
    join,
    negate,
    sql_and,
)
from taskengine.filters._sql_backend import NUMBER, Backend, Ref, both, case_when

__all__ = ["compare", "date", "equal", "is_date_operand", "is_null", "number", "one_of"]

_TRUE_OR_FALSE: Final = {True: frozenset({"true"}), False: frozenset({"false"})}


def is_null(b: Backend, ref: Ref) -> Bound:
    """Missing or ``null``."""
    null = b.type_in(ref, frozenset({"null"}))
    return any_of([exact(b.is_missing(ref)), null])


def _holds(op: str, a: Any, c: Any) -> bool:
    result: bool = {"=": a == c, "<": a < c, "<=": a <= c, ">": a > c, ">=": a >= c}[op]
    return result


def number(b: Backend, ref: Ref, op: str, c: int | float) -> Bound:
    """A number with ``value op c``, for any Python number ``c``."""
    if c != c:  # NaN is never stored; NaN compares with nothing else
        return exact(FALSE)
    if c in (math.inf, -math.inf):
        # Stored numbers are finite: the answer is the same for every one of them.
        return b.type_in(ref, NUMBER) if _holds(op, 0, c) else exact(FALSE)
    if c.__class__ is int and not INT64_MIN <= c <= INT64_MAX:
        try:
            as_float = float(c)
        except OverflowError:
            as_float = math.nan
        if as_float != c:
            return Bound(b.type_in(ref, NUMBER).where, FALSE)
        c = as_float  # the same number, in a form the database can take
    return b.number(ref, op, c)


def _bools(op: str, c: bool) -> frozenset[str]:
    return frozenset(name for v in (False, True) if _holds(op, v, c) for name in _TRUE_OR_FALSE[v])


def is_date_operand(c: object) -> bool:
    """Whether a filter operand is a date (a ``datetime`` or a ``{"$date": ISO}`` wrapper)."""
    return isinstance(c, datetime) or is_date_wrapper(c)


def equal(b: Backend, ref: Ref, c: object, *, ordered: bool) -> Bound:
    """The value equals ``c`` (``None``: is ``null``, not missing).

    ``ordered``: objects must list their keys in the same order (the mongo dialect).
    """
    cls = c.__class__
    if cls is bool:
        return b.type_in(ref, _TRUE_OR_FALSE[c])  # type: ignore[index]
    if cls is int or cls is float:
        return number(b, ref, "=", c)  # type: ignore[arg-type]
    if cls is str:
        return b.text(ref, "=", c)  # type: ignore[arg-type]
    if c is None:
        return b.type_in(ref, frozenset({"null"}))
    if is_date_operand(c):
        return date(b, ref, "=", c)
    if cls is list:
        return _equal_list(b, ref, c, ordered=ordered)  # type: ignore[arg-type]
    if cls is dict:
        return _equal_dict(b, ref, c, ordered=ordered)  # type: ignore[arg-type]
    return exact(FALSE)  # a regex: no stored value is one


def one_of(b: Backend, ref: Ref, values: list[Any], *, ordered: bool) -> Bound:
    """The value equals one of ``values`` (none ``None``): numbers and strings each as one
    ``IN`` list, the rest one by one."""
    nums: list[int | float] = []
    strs: list[str] = []
    parts: list[Bound] = []
    for c in values:
        cls = c.__class__
        if cls is str:
            strs.append(c)
        elif (cls is int and INT64_MIN <= c <= INT64_MAX) or (cls is float and math.isfinite(c)):
            nums.append(c)
        else:
            parts.append(equal(b, ref, c, ordered=ordered))
    if nums:
        parts.append(b.number_in(ref, nums) if len(nums) > 1 else b.number(ref, "=", nums[0]))
    if strs:
        parts.append(b.text_in(ref, strs) if len(strs) > 1 else b.text(ref, "=", strs[0]))
    return any_of(parts)


def _equal_list(b: Backend, ref: Ref, c: list[Any], *, ordered: bool) -> Bound:
    """An array of the same length whose elements are equal one by one."""
    is_array = b.type_in(ref, frozenset({"array"}))
    length = b.length_is(ref, len(c))
    if is_array.where == FALSE:
        return exact(FALSE)
    parts = [equal(b, b.item(ref, i), x, ordered=ordered) for i, x in enumerate(c)]
    inner = all_of(parts)
    # element tests read inside the array: only where it is one (CASE keeps them there)
    return all_of([length, _inside(b, ref, "array", inner)])


def _equal_dict(b: Backend, ref: Ref, c: dict[str, Any], *, ordered: bool) -> Bound:
    """An object (not a date) with the same keys and equal values."""
    if not b.addressable(list(c)):
        return Bound(b.type_in(ref, frozenset({"object"})).where, FALSE)
    is_object = b.type_in(ref, frozenset({"object"}))
    if is_object.where == FALSE:
        return exact(FALSE)
    inner = all_of(
        [exact(b.key_count_is(ref, len(c)))]
        + [equal(b, b.member(ref, k), v, ordered=ordered) for k, v in c.items()]
    )
    bound = all_of([is_object, negate(b.is_date(ref)), _inside(b, ref, "object", inner)])
    if ordered and len(c) > 1:
        return Bound(bound.where, FALSE)  # key order is not checked in SQL
    return bound


def _inside(b: Backend, ref: Ref, kind: str, inner: Bound) -> Bound:
    """``inner`` evaluated only where ``ref`` is of ``kind`` (FALSE elsewhere)."""
    check = b.type_in(ref, frozenset({kind})).where
    return both(lambda pick: case_when(check, pick(inner)), [inner])


def compare(b: Backend, ref: Ref, op: str, c: object) -> Bound:
    """``value op c`` within ``c``'s type bracket (``op``: ``< <= > >=``).

    ``c`` is a number, string, boolean, date, array or object (the callers decide
    ``null`` and regexes).
    """
    cls = c.__class__
    if cls is bool:
        return b.type_in(ref, _bools(op, c))  # type: ignore[arg-type]
    if cls is int or cls is float:
        return number(b, ref, op, c)  # type: ignore[arg-type]
    if cls is str:
        return b.text(ref, op, c)  # type: ignore[arg-type]
    if is_date_operand(c):
        return date(b, ref, op, c)
    if cls is list:
        return Bound(b.type_in(ref, frozenset({"array"})).where, FALSE)
    if cls is dict:
        return Bound(b.type_in(ref, frozenset({"object"})).where, FALSE)
    return UNKNOWN


# -------------------------------------------------------------------------------- dates

_UTC: Final = timezone.utc
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)
_DAY: Final = timedelta(days=1)


def _utc_text(instant: timedelta) -> str | None:
    """The naive ISO text of an instant as ``datetime.isoformat`` writes it, if in range."""
    try:
        return (_EPOCH + instant).replace(tzinfo=None).isoformat()
    except OverflowError:
        return None


def date(b: Backend, ref: Ref, op: str, c: object) -> Bound:
    """A date with ``value op c``, by instant (``op``: ``= < <= > >=``).

    A stored date is ``{"$date": isoformat()}``: ``YYYY-MM-DDTHH:MM:SS``, then
    ``.ffffff`` unless the microseconds are 0, then the offset of an aware date. For a
    naive date or one at ``+00:00``, that wall time read as text orders as the instant
    does, so the comparison is exact. A date at another offset lies less than a day
    from its wall time: it is compared with a day's margin, and decided in Python when
    it falls within the margin.
    """
    instant = date_instant(c)
    is_date = b.is_date(ref)
    if instant is None or is_date.where == FALSE:
        return exact(FALSE)
    at, lo, hi = _utc_text(instant), _utc_text(instant - _DAY), _utc_text(instant + _DAY)
    if at is None or lo is None or hi is None:
        return Bound(is_date.where, FALSE)
    text = b.date_text(ref)
    # Naive, or at +00:00 (no other part of the text holds a '+'): the wall time is UTC.
    utc_wall = b.text_replace(text, "+00:00", "")
    utc = join(b.text_length(utc_wall), " IN (19, 26)")
    # Elsewhere, the wall time to the second (truncating keeps the order, never makes
    # a later time earlier) within a day of c, or surely past the margin.
    wall, lo, hi = b.text_slice(text, 1, 19), lo[:19], hi[:19]
    if op == "=":
        near, far = sql_and([b.compare_text(wall, ">=", lo), b.compare_text(wall, "<=", hi)]), FALSE
    elif op in (">", ">="):
        near, far = b.compare_text(wall, ">=", lo), b.compare_text(wall, ">", hi)
    else:
        near, far = b.compare_text(wall, "<=", hi), b.compare_text(wall, "<", lo)
    at_utc = b.compare_text(utc_wall, op, at)

    def on_dates(other_zone: SQL) -> SQL:
        inner = join("CASE WHEN ", utc, " THEN ", at_utc, " ELSE ", other_zone, " END")
        return case_when(is_date.where, inner)

    return Bound(on_dates(near), on_dates(far))

"""Value semantics shared by the filter dialects and the field operations.

Values are JSON-like (``str``, ``int``, ``float``, ``bool``, ``None``, ``list``,
``dict`` with ``str`` keys) plus :class:`datetime.datetime`. A dict with exactly one
key ``"$date"`` whose value is an ISO-8601 string is a date wrapper: it means that date
everywhere (equality, ordering, type). A naive datetime is taken to be UTC.

Three rules make Python's own operators wrong for these values, and every function
here handles them: ``True == 1`` (booleans are not numbers here), naive vs aware
datetimes (``<`` raises between them), and NaN (equal to itself here, as in MongoDB).

The canonical type order is MongoDB's BSON order restricted to these values::

    null < numbers < strings < objects < arrays < booleans < dates < regexes < others
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final

__all__ = [
    "RANK_ARRAY",
    "RANK_BOOL",
    "RANK_DATE",
    "RANK_NULL",
    "RANK_NUMBER",
    "RANK_OBJECT",
    "RANK_OTHER",
    "RANK_REGEX",
    "RANK_STRING",
    "as_utc",
    "bson_equal",
    "compare_values",
    "date_instant",
    "is_date_wrapper",
    "is_nan",
    "parse_iso_datetime",
    "to_datetime",
    "type_rank",
    "values_equal",
]

RANK_NULL: Final = 5
RANK_NUMBER: Final = 10
RANK_STRING: Final = 15
RANK_OBJECT: Final = 20
RANK_ARRAY: Final = 25
RANK_BOOL: Final = 40
RANK_DATE: Final = 45
RANK_REGEX: Final = 50
RANK_OTHER: Final = 100

_UTC: Final = timezone.utc
_PATTERN_TYPE: Final = re.Pattern

# Python 3.10's datetime.fromisoformat accepts neither "Z" nor arbitrary fraction
# lengths, so ISO-8601 is parsed here once for every supported version.
_ISO_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?",
    re.ASCII,
)


@functools.lru_cache(maxsize=4096)
def parse_iso_datetime(text: str) -> datetime | None:
    """Parse an ISO-8601 date or date-time; ``None`` when ``text`` is not one.

    ``Z`` or an offset gives an aware datetime; no zone gives a naive one (meaning
    UTC). Fractions beyond microseconds are truncated. Results are cached, since
    the same wrapper strings recur across documents.
    """
    m = _ISO_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, zulu, sign, oh, om = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz: timezone | None = None
    if zulu:
        tz = _UTC
    elif sign:
        delta = timedelta(hours=int(oh), minutes=int(om))
        if delta >= timedelta(hours=24):
            return None
        tz = timezone(-delta if sign == "-" else delta)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
    except ValueError:
        return None


def is_date_wrapper(value: object) -> bool:
    """Whether ``value`` is ``{"$date": "<ISO-8601>"}`` (exactly that key, a valid date)."""
    if type(value) is not dict or len(value) != 1:
        return False
    text = value.get("$date")
    return type(text) is str and parse_iso_datetime(text) is not None


def to_datetime(value: object) -> datetime | None:
    """The datetime ``value`` stands for, or ``None`` when it is not a date.

    Accepts a ``datetime`` (returned as is) or a ``{"$date": ISO}`` wrapper whose
    string has ``Z``, an offset, or no zone (naive, meaning UTC).
    """
    if isinstance(value, datetime):
        return value
    if type(value) is dict and len(value) == 1:
        text = value.get("$date")
        if type(text) is str:
            return parse_iso_datetime(text)
    return None


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (a naive one is taken to be UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


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
    return -1 if a < b else (1 if a > b else 0)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)
_ZERO: Final = timedelta(0)


def date_instant(value: object) -> timedelta | None:
    """The instant ``value`` stands for, as a ``timedelta`` since the Unix epoch.

    ``None`` when ``value`` is not a date (a ``datetime`` or a ``{"$date": ISO}``
    wrapper). A naive datetime is taken to be UTC. Unlike :func:`as_utc` this never
    overflows, even for ``datetime.min`` with a positive offset.
    """
    dt = to_datetime(value)
    if dt is None:
        return None
    try:
        if dt.tzinfo is None or dt.utcoffset() is None:
            dt = dt.replace(tzinfo=_UTC)
        return dt - _EPOCH
    except Exception:  # a misbehaving tzinfo: treat the wall time as UTC
        return dt.replace(tzinfo=_UTC) - _EPOCH


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
        return -1 if a < b else (1 if a > b else 0)  # type: ignore[operator]
    if ra == RANK_DATE:
        da, db = _date_key(a), _date_key(b)
        return -1 if da < db else (1 if da > db else 0)
    if ra == RANK_ARRAY:
        for x, y in zip(a, b, strict=False):  # type: ignore[call-overload]
            c = compare_values(x, y)
            if c:
                return c
        la, lb = len(a), len(b)  # type: ignore[arg-type]
        return -1 if la < lb else (1 if la > lb else 0)
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
        la, lb = len(a), len(b)  # type: ignore[arg-type]
        return -1 if la < lb else (1 if la > lb else 0)
    if ra == RANK_REGEX:
        ka2 = (a.pattern, a.flags)  # type: ignore[attr-defined]
        kb2 = (b.pattern, b.flags)  # type: ignore[attr-defined]
        return -1 if ka2 < kb2 else (1 if ka2 > kb2 else 0)
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

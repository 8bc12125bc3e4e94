"""Which values the value model admits: in a filter literal, and in a stored item.

Two rules, one walk each:

* :func:`find_foreign` is the value model itself (what a filter literal may hold):
  ``str``, ``int``, ``float``, ``bool``, ``None``, ``datetime``, lists of those and dicts
  with ``str`` keys, plus the leaf types a caller adds (the mongo dialect adds compiled
  regexes).
* :func:`storable` is the narrower rule of everything stored (see docs/durability.md):
  no NaN or infinite float (JSON has no spelling for them), no ``int`` outside
  :data:`INT64_MIN`..:data:`INT64_MAX`, no string that is not valid Unicode (a lone
  surrogate cannot be encoded as UTF-8), and a ``{"$date": "<ISO-8601>"}`` dict becomes
  the ``datetime`` it names; an aware ``datetime`` keeps its UTC offset as a
  ``datetime.timezone`` (what JSON text can carry). The storage's per-shape checkers
  (``taskengine.storage._shapes``) are a fast form of this rule built on the same
  constants, and a property test holds them to it.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Final

from taskengine._values._dates import DATE_KEY, is_date_wrapper, parse_iso_datetime

INT64_MIN: Final = -(2**63)
"""The smallest storable ``int`` (signed 64-bit, what SQLite and BSON hold)."""
INT64_MAX: Final = 2**63 - 1
"""The largest storable ``int``."""

TOO_DEEP: Final = "value is nested too deeply (or contains itself)"
"""Why a value nested past the interpreter's recursion limit is refused."""


class Unstorable(Exception):
    """A refused value: ``reason``, and the ``path`` to it (innermost part first).

    The path is collected while the recursion unwinds, so it costs nothing on success.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    @property
    def dotted_path(self) -> str:
        """The dotted path inside the checked value (``""`` = the value itself)."""
        return ".".join(reversed(self.path))


def encodable(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (it has no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_storable(value: object) -> tuple[str, str] | None:
    """Why ``value`` cannot be stored as an item's field value, or ``None`` if it can.

    The rule the storage applies to every value of an item, so a value accepted here is
    accepted (and normalised the same way) inside any item on every adapter.

    Returns:
        ``(dotted path inside value, reason)`` of the first refused part (path ``""`` =
        the value itself), or ``None``.
    """
    try:
        storable(value)
    except Unstorable as bad:
        return bad.dotted_path, bad.reason
    except RecursionError:
        return "", TOO_DEEP
    return None


def storable(value: Any) -> Any:
    """The normalised private copy of a storable ``value`` (containers copied).

    Raises:
        Unstorable: the first refused part, with its path.
        RecursionError: nesting deeper than the interpreter's recursion limit.
    """
    kind = type(value)
    if kind is str:
        if not value.isascii():
            _check_text(value)
        return value
    if kind is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value
        raise Unstorable("int outside the signed 64-bit range")
    if kind is float:
        if math.isfinite(value):
            return value
        raise Unstorable(f"float {value!r} is not finite (NaN and infinity cannot be stored)")
    if value is None or kind is bool:
        return value
    if kind is dict:
        if len(value) == 1 and type(value.get(DATE_KEY)) is str:
            date = parse_iso_datetime(value[DATE_KEY])
            if date is None:
                raise Unstorable(f"{{'$date': {value[DATE_KEY]!r}}} is not an ISO-8601 date")
            return _storable_date(date)
        return storable_dict(value)
    if kind is list:
        return _storable_list(value)
    if kind is datetime:
        return _storable_date(value)
    raise Unstorable(f"{kind.__name__} is not a storable value (JSON types and datetime only)")


def storable_dict(value: dict[Any, Any]) -> dict[str, Any]:
    """:func:`storable` of a dict (the form an item itself takes).

    Raises:
        Unstorable: as :func:`storable`.
    """
    out: dict[str, Any] = {}
    key: Any = None
    try:
        for key, item in value.items():
            if type(key) is not str:
                raise Unstorable(f"keys must be strings, got {type(key).__name__} {key!r}")
            if not key.isascii():
                _check_text(key)
            out[key] = storable(item)
    except Unstorable as bad:
        bad.path.append(str(key))
        raise
    return out


def _storable_list(value: list[Any]) -> list[Any]:
    out: list[Any] = []
    try:
        for item in value:
            out.append(storable(item))
    except Unstorable as bad:
        bad.path.append(str(len(out)))
        raise
    return out


def _storable_date(value: datetime) -> datetime:
    tz = value.tzinfo
    if tz is None or type(tz) is timezone:
        return value
    offset = value.utcoffset()
    if offset is None:
        raise Unstorable("datetime has a tzinfo without a UTC offset")
    return value.replace(tzinfo=timezone(offset))


def _check_text(text: str) -> None:
    if not encodable(text):
        raise Unstorable("string is not valid Unicode (lone surrogate)")


def find_foreign(
    value: object, path: str, leaves: tuple[type, ...] = (), *, dates: bool = False
) -> tuple[str, str] | None:
    """The first part of ``value`` outside the value model: ``(path, reason)``, or ``None``.

    Args:
        value: a filter literal.
        path: where ``value`` is (parts inside it are added as ``.key`` / ``.index``).
        leaves: extra leaf types allowed besides ``datetime``.
        dates: also refuse a dict with a ``"$date"`` key that is not a date wrapper.
    """
    cls = value.__class__
    if cls in (str, int, float, bool) or value is None:
        return None
    if cls is list:
        items: list[Any] = value  # type: ignore[assignment]
        for i, item in enumerate(items):
            found = find_foreign(item, f"{path}.{i}", leaves, dates=dates)
            if found is not None:
                return found
        return None
    if cls is dict:
        obj: dict[Any, Any] = value  # type: ignore[assignment]
        if dates and DATE_KEY in obj and not is_date_wrapper(obj):
            return path, '"$date" needs an ISO-8601 date string and no other key'
        for k, v in obj.items():
            if not isinstance(k, str):
                return path, f"object keys must be strings, not {k!r}"
            found = find_foreign(v, f"{path}.{k}", leaves, dates=dates)
            if found is not None:
                return found
        return None
    if isinstance(value, (datetime, *leaves)):
        return None
    return path, f"unsupported value of type {type(value).__name__}"

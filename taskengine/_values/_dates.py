"""Dates in the value model: recognising, parsing and formatting them.

A date is a :class:`datetime.datetime` or a ``{"$date": "<ISO-8601>"}`` wrapper (a dict
with exactly that key). A naive datetime means UTC. Three text forms exist, each with one
reader and one writer here:

* user input (filters, items, task options): :func:`parse_iso_datetime`, the same subset
  of ISO-8601 on every supported Python version (see docs/filters.md);
* the stored and wire form of a date inside a value: :func:`date_text` and its exact
  inverse :func:`date_from_text` (naive/aware form and microseconds survive);
* task timestamps (``createdAt``...): :func:`format_timestamp`/:func:`parse_timestamp`,
  UTC with milliseconds and ``Z`` (see docs/lifecycle.md); task options' dates:
  :func:`format_utc`/:func:`parse_date` (see docs/task-types.md).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Final

DATE_KEY: Final = "$date"
"""The one key of a date wrapper ``{"$date": "<ISO-8601>"}``."""

_UTC: Final = timezone.utc
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)

# Python 3.10's datetime.fromisoformat accepts neither "Z" nor arbitrary fraction
# lengths, so ISO-8601 is parsed here once for every supported version. An offset may
# carry seconds and microseconds, as datetime.isoformat() writes them.
_ISO_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2})(?::(\d{2})(?:\.(\d{6}))?)?)?",
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
    year, month, day, hour, minute, second, frac, zulu, sign, oh, om, os_, ous = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz: timezone | None = None
    if zulu:
        tz = _UTC
    elif sign:
        delta = timedelta(
            hours=int(oh), minutes=int(om), seconds=int(os_ or 0), microseconds=int(ous or 0)
        )
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
    text = value.get(DATE_KEY)
    return type(text) is str and parse_iso_datetime(text) is not None


def to_datetime(value: object) -> datetime | None:
    """The datetime ``value`` stands for, or ``None`` when it is not a date.

    Accepts a ``datetime`` (returned as is) or a ``{"$date": ISO}`` wrapper whose
    string has ``Z``, an offset, or no zone (naive, meaning UTC).
    """
    if isinstance(value, datetime):
        return value
    if type(value) is dict and len(value) == 1:
        text = value.get(DATE_KEY)
        if type(text) is str:
            return parse_iso_datetime(text)
    return None


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (a naive one is taken to be UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


def utc_ms(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime truncated to whole milliseconds.

    Timestamps are kept at millisecond precision so that they survive a JSON round
    trip (``"2026-01-01T10:00:00.123Z"``) exactly. A naive datetime is taken as UTC.
    """
    moment = as_utc(moment)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


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


def date_text(value: datetime) -> str:
    """The stored and wire text of a date inside a value: ``value.isoformat()``."""
    return value.isoformat()


def date_from_text(text: str) -> datetime:
    """The date :func:`date_text` wrote, exactly (naive/aware form, offset, microseconds).

    Raises:
        ValueError: ``text`` is not what :func:`date_text` writes.
    """
    # Not datetime.fromisoformat alone: CPython 3.11 drops the microseconds of an offset
    # (``+00:00:00.000001`` reads as UTC), which moves the instant.
    parsed = parse_iso_datetime(text)
    return datetime.fromisoformat(text) if parsed is None else parsed


def format_timestamp(moment: datetime) -> str:
    """``moment`` as ISO-8601 UTC with milliseconds and ``Z``: ``2026-01-01T10:00:00.123Z``."""
    moment = utc_ms(moment)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp with a zone (``Z`` or an offset) into UTC milliseconds.

    Raises:
        ValueError: not an ISO-8601 timestamp, or one without a time zone.
    """
    if not isinstance(text, str):
        raise ValueError("must be an ISO-8601 timestamp string")
    moment = parse_iso_datetime(text)
    if moment is None:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    if moment.tzinfo is None:
        raise ValueError(f"timestamp needs a time zone (e.g. 'Z'): {text!r}")
    return utc_ms(moment)


def format_utc(value: datetime) -> str:
    """An ISO-8601 UTC string with a ``Z`` suffix (naive datetimes are taken as UTC)."""
    text = as_utc(value).isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def parse_date(value: object) -> datetime | None:
    """An aware datetime from an ISO-8601 string, ``{"$date": ISO}`` or a datetime.

    A value without an offset is taken as UTC. Returns ``None`` when ``value`` is not a
    date (never raises).
    """
    if isinstance(value, Mapping) and len(value) == 1 and DATE_KEY in value:
        value = value[DATE_KEY]
    if isinstance(value, datetime):
        parsed: datetime | None = value
    elif isinstance(value, str):
        parsed = parse_iso_datetime(value.strip())
    else:
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_UTC)
    return parsed

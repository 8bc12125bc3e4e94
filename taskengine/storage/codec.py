"""Item values: validation, cheap private copies, and JSON text with dates.

Both adapters go through :func:`admit` on the way in, so they accept and reject exactly
the same values and normalise them the same way:

* a dict that is exactly ``{"$date": "<ISO-8601>"}`` becomes a ``datetime`` (the filter
  language reads that form as a date too, so a user dict of that shape cannot exist);
* an aware ``datetime`` keeps its UTC offset as a ``datetime.timezone`` (what JSON text
  can carry); a naive one stays naive;
* NaN and infinite floats are refused (JSON has no spelling for them), as are ints
  outside the signed 64-bit range, non-``str`` keys, strings that are not valid Unicode
  (lone surrogates cannot be encoded as UTF-8), and every other type.

In JSON text a date is ``{"$date": datetime.isoformat()}``, which
``datetime.fromisoformat`` reads back exactly (naive/aware form and microseconds).

The rules themselves are the value model's (:mod:`taskengine._values`); this module
applies them to whole items. :func:`check_storable` and :func:`parse_date` (its ISO-8601
parser) are the value model's, re-exported for adapter authors.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from taskengine._values import (
    DATE_KEY,
    TOO_DEEP,
    Unstorable,
    check_storable,
    date_from_text,
    date_text,
    encodable,
    storable_dict,
)
from taskengine._values import parse_iso_datetime as parse_date
from taskengine.errors import InvalidItem
from taskengine.storage._shapes import Plan, copy_planned, intern_plan, plan_dict

__all__ = [
    "Plan",
    "admit",
    "admit_entry",
    "admit_text",
    "check_id",
    "check_planned",
    "check_storable",
    "copy_item",
    "copy_planned",
    "count_accepted",
    "decode",
    "encode",
    "lookup_id",
    "parse_date",
    "plan_of",
]


def check_id(value: object) -> str:
    """Return ``value`` if it is a usable ``_id`` (non-empty, valid Unicode ``str``).

    Raises:
        InvalidItem: naming the ``_id`` path and the rule.
    """
    if type(value) is not str:
        raise InvalidItem(f"_id must be a string, got {type(value).__name__}", path="_id")
    if not value:
        raise InvalidItem("_id must not be empty", path="_id")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidItem("_id is not valid Unicode (lone surrogate)", path="_id") from None
    return value


def lookup_id(value: object) -> str | None:
    """``value`` as an id to look up, or ``None`` when no stored item can have it.

    Raises:
        InvalidItem: ``value`` is not a string.
    """
    if type(value) is not str:
        raise InvalidItem(f"_id must be a string, got {type(value).__name__}", path="_id")
    if value and (value.isascii() or encodable(value)):
        return value
    return None


def admit(item: object) -> tuple[str, dict[str, Any]]:
    """Validate an incoming item and return ``(_id, private normalised copy)``.

    Raises:
        InvalidItem: naming the item, the dotted path of the bad value and the rule.
    """
    if not isinstance(item, Mapping):
        raise InvalidItem(f"an item must be a dict, got {type(item).__name__}")
    raw_id = item.get("_id")
    if raw_id is None and "_id" not in item:
        raise InvalidItem("_id is required", path="_id")
    item_id = check_id(raw_id)
    try:
        doc = storable_dict(item if type(item) is dict else dict(item))
    except Unstorable as bad:
        raise InvalidItem(bad.reason, item_id=item_id, path=bad.dotted_path) from None
    except RecursionError:
        raise InvalidItem(TOO_DEEP, item_id=item_id) from None
    return item_id, doc


def copy_item(doc: dict[str, Any]) -> dict[str, Any]:
    """A private copy of an admitted item: containers copied, scalars shared.

    Several times faster than ``copy.deepcopy`` because every leaf is immutable.
    """
    copied: dict[str, Any] = _copy_container(doc)
    return copied


def _copy_container(value: Any) -> Any:
    out = value.copy()
    pairs = value.items() if type(value) is dict else enumerate(value)
    for key, inner in pairs:
        kind = type(inner)
        if kind is dict or kind is list:
            out[key] = _copy_container(inner)
    return out


def plan_of(value: dict[str, Any] | list[Any]) -> Plan:
    """The :data:`Plan` of an admitted dict or list (interned)."""
    pairs = value.items() if type(value) is dict else enumerate(value)
    plan = tuple(
        (key, plan_of(item)) for key, item in pairs if type(item) is dict or type(item) is list
    )
    return intern_plan(plan)


def admit_entry(item: object) -> tuple[str, tuple[dict[str, Any], Plan]]:
    """Like :func:`admit`, and also the copy's :data:`Plan`: ``(_id, (copy, plan))``.

    A plain item is checked by :func:`check_planned` and copied by its plan; anything
    needing normalisation or an error message goes through :func:`admit`, so results
    and errors are the same.

    Raises:
        InvalidItem: as :func:`admit`.
    """
    checked = check_planned(item)
    if checked is not None:
        plan = checked[1]
        return checked[0], (copy_planned(item, plan), plan)
    item_id, doc = admit(item)
    return item_id, (doc, plan_of(doc))


def check_planned(item: object) -> tuple[str, Plan] | None:
    """``(_id, plan)`` of an item storable as it is (no copy made), else ``None``.

    ``None`` means the item needs :func:`admit_entry`: it is not a plain ``dict``, needs
    normalising (a ``{"$date": ...}`` dict, a non-``timezone`` tzinfo), or is refused.
    Checking without copying lets a writer copy each item just before storing it, so
    each new copy replaces an old one at once (no batch of fresh copies pending, which
    is what makes Python's cyclic garbage collector run).
    """
    if type(item) is dict:
        item_id = item.get("_id")
        if type(item_id) is str and item_id and item_id.isascii():
            try:
                plan = plan_dict(item)
            except RecursionError:
                return None
            if plan is not None:
                return item_id, plan
    return None


def _default(value: object) -> object:
    if type(value) is datetime:
        return {DATE_KEY: date_text(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
    separators=(",", ":"),
    default=_default,
)
_DECODER = json.JSONDecoder()


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        text = obj.get(DATE_KEY)
        if type(text) is str:
            return date_from_text(text)
    return obj


_DATE_DECODER = json.JSONDecoder(object_hook=_hook)
_DATE_MARK = '"$date"'


def encode(doc: dict[str, Any]) -> str:
    """JSON text for an admitted item (dates as ``{"$date": ISO}``)."""
    return _ENCODER.encode(doc)


def decode(text: str) -> dict[str, Any]:
    """The item that :func:`encode` wrote; ``{"$date": ISO}`` objects become dates."""
    scan = _DATE_SCAN if _DATE_MARK in text else _PLAIN_SCAN
    try:
        result, end = scan(text, 0)
    except StopIteration:
        end = -1
    if end != len(text):  # not our compact text: the full decoder (and its errors)
        return _full_decode(text)
    return result  # type: ignore[no-any-return]


# ``scan_once`` is the C scanner behind ``JSONDecoder.decode`` without the two regex
# passes for surrounding whitespace, which text written by ``encode`` never has: about
# twice as fast on small items. Anything it does not consume whole goes to the full
# decoder.
_PLAIN_SCAN = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]  # typeshed
_DATE_SCAN = json.scanner.make_scanner(_DATE_DECODER)  # type: ignore[arg-type]


def _full_decode(text: str) -> dict[str, Any]:
    if _DATE_MARK in text:
        result: dict[str, Any] = _DATE_DECODER.decode(text)
    else:
        result = _DECODER.decode(text)
    return result


def count_accepted(texts: Iterable[str], accept: Callable[[dict[str, Any]], bool]) -> int:
    """How many of the documents :func:`encode` wrote ``accept`` takes.

    Each text is decoded once, as :func:`decode` would, straight into ``accept`` (dates
    are revived only in texts that hold one); nothing is kept.
    """
    plain, dated, mark, size = _PLAIN_SCAN, _DATE_SCAN, _DATE_MARK, len
    total = 0
    for text in texts:
        try:
            item, end = dated(text, 0) if mark in text else plain(text, 0)
        except StopIteration:
            end = -1
        if end != size(text):
            item = _full_decode(text)
        if accept(item):
            total += 1
    return total


def admit_text(item: object) -> tuple[str, str]:
    """Validate an incoming item and return ``(_id, JSON text of its normalised form)``.

    Same result and errors as ``encode(admit(item)[1])``; an item that needs no
    normalisation (the common case) is checked in place and encoded without a copy.

    Raises:
        InvalidItem: as :func:`admit`.
    """
    checked = check_planned(item)
    if checked is not None:
        return checked[0], _ENCODER.encode(item)
    item_id, doc = admit(item)
    return item_id, _ENCODER.encode(doc)

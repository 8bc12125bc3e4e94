"""BSON type numbers for the ``mongo`` dialect: what ``$type`` names and what a value is.

A document value has one BSON type number (:func:`type_code`); a ``$type`` argument
names a set of them by number or alias (:func:`type_codes`), where the alias
``"number"`` stands for every numeric type at once (:data:`NUMBER_ALIAS`).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Final

from taskengine._values import is_date_wrapper
from taskengine.errors import InvalidFilter

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "NUMBER_ALIAS",
    "NUMBER_CODES",
    "TYPE_ALIASES",
    "type_code",
    "type_codes",
]

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1

# $type aliases and codes (BSON type numbers).
TYPE_ALIASES: Final[dict[str, int]] = {
    "double": 1,
    "string": 2,
    "object": 3,
    "array": 4,
    "binData": 5,
    "undefined": 6,
    "objectId": 7,
    "bool": 8,
    "date": 9,
    "null": 10,
    "regex": 11,
    "dbPointer": 12,
    "javascript": 13,
    "symbol": 14,
    "javascriptWithScope": 15,
    "int": 16,
    "timestamp": 17,
    "long": 18,
    "decimal": 19,
    "minKey": -1,
    "maxKey": 127,
}
_VALID_CODES: Final = frozenset(TYPE_ALIASES.values())
NUMBER_CODES: Final = frozenset({1, 16, 18, 19})
NUMBER_ALIAS: Final = -1000  # internal code for the "number" alias


def type_code(value: object) -> int:
    """The BSON type number of a document value (0 for missing or unknown)."""
    cls = value.__class__
    if cls is str:
        return 2
    if cls is bool:
        return 8
    if cls is int:
        return 16 if INT32_MIN <= value <= INT32_MAX else 18  # type: ignore[operator]
    if cls is float:
        return 1
    if value is None:
        return 10
    if cls is list:
        return 4
    if cls is dict:
        return 9 if is_date_wrapper(value) else 3
    if isinstance(value, datetime):
        return 9
    if isinstance(value, re.Pattern):
        return 11
    return 0


def type_codes(arg: object, path: str) -> frozenset[int]:
    """The type numbers a ``$type`` argument (one alias or code, or an array) names."""
    items = arg if arg.__class__ is list else [arg]
    if not items:
        raise InvalidFilter(path, "$type must match at least one type")
    codes: set[int] = set()
    for i, t in enumerate(items):
        where = f"{path}.{i}" if arg.__class__ is list else path
        if isinstance(t, str):
            if t == "number":
                codes.add(NUMBER_ALIAS)
            elif t in TYPE_ALIASES:
                codes.add(TYPE_ALIASES[t])
            else:
                raise InvalidFilter(where, f"unknown type name alias: {t}")
        elif t.__class__ in (int, float):
            if t != t or t in (math.inf, -math.inf) or int(t) != t:
                raise InvalidFilter(where, f"invalid numerical type code: {t}")
            if int(t) not in _VALID_CODES:
                raise InvalidFilter(where, f"invalid numerical type code: {t}")
            codes.add(int(t))
        else:
            raise InvalidFilter(where, "type must be represented as a number or a string")
    return frozenset(codes)

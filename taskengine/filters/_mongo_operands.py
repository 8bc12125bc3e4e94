"""Operands of the ``mongo`` dialect: checking and reading the arguments of operators.

Everything here runs at compile time and raises :class:`~taskengine.errors.InvalidFilter`
with MongoDB's wording for a malformed argument.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

from taskengine._values import find_foreign, is_date_wrapper
from taskengine.errors import InvalidFilter
from taskengine.filters._mongo_types import INT32_MAX

__all__ = [
    "check_value",
    "compile_regex",
    "in_values",
    "is_operator_object",
    "mod_args",
    "size_arg",
    "truthy",
    "validate_date_literal",
]


def check_value(value: object, path: str) -> None:
    """Reject values outside the value model (compiled regexes are allowed here)."""
    found = find_foreign(value, path, _REGEX_LEAF)
    if found is not None:
        raise InvalidFilter(*found)


_REGEX_LEAF: Final = (re.Pattern,)


def is_operator_object(value: object) -> bool:
    """A dict whose first key starts with ``$`` (and is not a date wrapper)."""
    if value.__class__ is not dict or not value:
        return False
    first = next(iter(value))
    if not (isinstance(first, str) and first.startswith("$")):
        return False
    return not (first == "$date" and len(value) == 1)


def validate_date_literal(value: object, path: str) -> None:
    """Reject a ``$date`` object that is not a well-formed date wrapper."""
    if value.__class__ is dict and "$date" in value and not is_date_wrapper(value):
        raise InvalidFilter(path, '"$date" needs an ISO-8601 date string and no other key')


def compile_regex(pattern: object, options: object, path: str) -> re.Pattern[str]:
    """Compile a ``$regex`` (a string or compiled pattern) with ``$options``."""
    flags = 0
    if options is not None:
        if not isinstance(options, str):
            raise InvalidFilter(path, "$options must be a string")
        for ch in options:
            if ch == "i":
                flags |= re.IGNORECASE
            elif ch == "m":
                flags |= re.MULTILINE
            elif ch == "s":
                flags |= re.DOTALL
            elif ch == "x":
                flags |= re.VERBOSE
            elif ch == "u":
                pass
            else:
                raise InvalidFilter(path, f"invalid flag in regex options: {ch!r}")
    if isinstance(pattern, re.Pattern):
        if not isinstance(pattern.pattern, str):
            raise InvalidFilter(path, "a regex must be a str pattern")
        if options and (pattern.flags & ~re.UNICODE):
            raise InvalidFilter(path, "options set in both $regex and $options")
        if not flags:
            return pattern
        source = pattern.pattern
        flags |= pattern.flags
    elif isinstance(pattern, str):
        source = pattern
    else:
        raise InvalidFilter(path, "$regex has to be a string")
    if "\x00" in source:
        raise InvalidFilter(path, "regular expression cannot contain an embedded null byte")
    try:
        return re.compile(source, flags)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise InvalidFilter(path, f"invalid regular expression: {exc}") from None


def truthy(arg: object) -> bool:
    """BSON ``trueValue``: false, null, 0 and NaN are false; everything else true."""
    if arg is None or arg is False:
        return False
    if arg.__class__ in (int, float):
        return bool(arg) and arg == arg
    return True


def in_values(arg: object, path: str, op: str) -> list[Any]:
    """The checked array of a ``$in``/``$nin`` (literals and regexes, no operators)."""
    if arg.__class__ is not list:
        raise InvalidFilter(path, f"{op} needs an array")
    values: list[Any] = arg
    for i, v in enumerate(values):
        where = f"{path}.{i}"
        check_value(v, where)
        if is_operator_object(v):
            raise InvalidFilter(where, f"cannot nest $ under {op}")
        validate_date_literal(v, where)
        if isinstance(v, re.Pattern):
            compile_regex(v, None, where)
    return values


def size_arg(arg: object, path: str) -> int:
    """The array length a ``$size`` asks for: a whole, non-negative int32."""
    cls = arg.__class__
    if cls is int:
        size: int = arg  # type: ignore[assignment]
    elif cls is float:
        f: float = arg  # type: ignore[assignment]
        if f != f or f in (math.inf, -math.inf) or int(f) != f:
            raise InvalidFilter(path, "$size must be a whole number")
        size = int(f)
    else:
        raise InvalidFilter(path, "$size needs a number")
    if size < 0:
        raise InvalidFilter(path, "$size may not be negative")
    if size > INT32_MAX:
        raise InvalidFilter(path, "$size must be representable as a 32-bit integer")
    return size


def mod_args(arg: object, path: str) -> tuple[int, int]:
    """``(divisor, remainder)`` of a ``$mod``, each truncated to an int64."""
    if arg.__class__ is not list:
        raise InvalidFilter(path, "malformed mod, needs to be an array")
    items: list[Any] = arg
    if len(items) < 2:
        raise InvalidFilter(path, "malformed mod, not enough elements")
    if len(items) > 2:
        raise InvalidFilter(path, "malformed mod, too many elements")
    out: list[int] = []
    for name, x in zip(("divisor", "remainder"), items, strict=True):
        if x.__class__ not in (int, float):
            raise InvalidFilter(path, f"malformed mod, {name} not a number")
        if x != x or x in (math.inf, -math.inf):
            raise InvalidFilter(path, f"malformed mod, {name} value is invalid (NaN or Infinity)")
        if not -(2.0**63) <= x < 2.0**63:
            raise InvalidFilter(
                path, f"malformed mod, {name} value is invalid (out of bounds for an int64)"
            )
        out.append(int(x))
    if out[0] == 0:
        raise InvalidFilter(path, "divisor cannot be 0")
    return out[0], out[1]

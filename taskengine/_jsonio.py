"""The JSON wire format shared by the HTTP app and the command line: reading and writing.

The HTTP error envelopes are built by :mod:`taskengine.http`, their one owner.

Parsing is deliberately tolerant in one way and strict in the others:

* a comma right before a closing ``}`` or ``]`` (outside strings) is accepted, because the
  reference API's own ``curl`` example for DELETE_BY_QUERY has one and its examples must work
  verbatim;
* everything else is standard JSON (RFC 8259): no comments, no single quotes, no ``NaN`` or
  ``Infinity``, UTF-8 only;
* nesting deeper than :data:`MAX_DEPTH` is refused before the decoder sees it, so a hostile
  body can never reach the interpreter's recursion limit.

Every failure is an :class:`~taskengine.errors.InvalidRequest` whose single violation names
the source (``body``, a file name, ``line 12``) and, for syntax errors, the line and column.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from taskengine._values import DATE_KEY, date_text, encodable
from taskengine.errors import InvalidRequest, Violation

__all__ = [
    "MAX_DEPTH",
    "TOO_DEEP",
    "check_json",
    "dumps",
    "json_type_name",
    "parse_json",
    "parse_json_object",
]

MAX_DEPTH = 64
"""The deepest nesting of objects and arrays a parsed document may have."""

# One pass finds everything that matters outside strings: a whole string (skipped), a lone
# quote (an unterminated string: the decoder reports it, so the scan stops), a trailing
# comma, and the brackets that change the depth.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|"|,(?=\s*[}\]])|[{\[]|[}\]]', re.DOTALL)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _line_column(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def _follows_opener_or_comma(text: str, pos: int) -> bool:
    pos -= 1
    while pos >= 0 and text[pos] in " \t\r\n":
        pos -= 1
    return pos < 0 or text[pos] in "{[,"


def _prepare(text: str, source: str) -> str:
    """Blank out trailing commas (keeping every offset) and enforce the depth limit."""
    chars: list[str] | None = None
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        first = token[0]
        if first == '"':
            if len(token) == 1:
                break
            continue
        if first == ",":
            if _follows_opener_or_comma(text, match.start()):
                continue  # "[,]" and "[1,,]" stay errors: only a real trailing comma goes
            if chars is None:
                chars = list(text)
            # A space instead of deleting keeps line/column numbers of later errors exact.
            chars[match.start()] = " "
        elif first in "{[":
            depth += 1
            if depth > MAX_DEPTH:
                line, column = _line_column(text, match.start())
                raise InvalidRequest(
                    [
                        Violation(
                            source,
                            f"nested deeper than {MAX_DEPTH} levels (line {line} column {column})",
                        )
                    ]
                )
        else:
            depth -= 1
    return text if chars is None else "".join(chars)


def parse_json(data: bytes | str, *, source: str = "body") -> Any:
    """Parse one JSON document with the tolerance and limits described in the module.

    Args:
        data: UTF-8 bytes or text.
        source: what the violation's ``field`` names when parsing fails (``"body"``,
            a file name, ``"line 7"``).

    Raises:
        InvalidRequest: one violation at ``source``: not UTF-8, empty, not JSON (with line
            and column), ``NaN``/``Infinity``, or nested deeper than :data:`MAX_DEPTH`.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                [Violation(source, f"not UTF-8 text (bad byte at offset {exc.start})")]
            ) from None
    else:
        text = data
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise InvalidRequest([Violation(source, "empty: expected a JSON document")])
    if text.count("{") + text.count("[") <= MAX_DEPTH:
        # Fast path: too few brackets to break the depth limit, and most documents have
        # no trailing comma; only a document json refuses goes through the full scan.
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except ValueError:
            pass
    prepared = _prepare(text, source)
    try:
        return json.loads(prepared, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            [Violation(source, f"not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})")]
        ) from None
    except ValueError as exc:
        raise InvalidRequest([Violation(source, f"not valid JSON: {exc}")]) from None
    except RecursionError:
        # Unreachable with MAX_DEPTH well under the recursion limit; kept so that a lower
        # interpreter limit still yields a clean error, never a traceback.
        raise InvalidRequest([Violation(source, "nested too deeply")]) from None


def parse_json_object(data: bytes | str, *, source: str = "body") -> dict[str, Any]:
    """Like :func:`parse_json`, and the document must be a JSON object.

    Raises:
        InvalidRequest: as :func:`parse_json`, or ``<source>: must be a JSON object, got
            an array``.
    """
    value = parse_json(data, source=source)
    if not isinstance(value, dict):
        raise InvalidRequest(
            [Violation(source, f"must be a JSON object, got {json_type_name(value)}")]
        )
    return value


def json_type_name(value: object) -> str:
    """The JSON name of a parsed value's type, with an article (``"an array"``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return {DATE_KEY: date_text(value)}
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Serialise a wire value: UTF-8 friendly (no ``\\u`` escapes), compact unless indented.

    A ``datetime`` anywhere in ``value`` becomes ``{"$date": "<ISO-8601>"}``, the wire form
    of a date in items and filters.
    """
    if indent is None:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_default
        )
    return json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=False, default=_default)


TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
"""The :func:`check_json` violation for a value nested deeper than the wire allows."""


def check_json(value: Any, path: str, violations: list[Violation], depth: int = MAX_DEPTH) -> None:
    """Record a violation under ``path`` for each part of ``value`` JSON text cannot carry.

    A task is stored and served as JSON text, so every string and object key in its spec
    must be valid Unicode (no lone surrogates), every number finite, and every object key
    a string; ``datetime`` is allowed (its JSON form is ``{"$date": ISO}``). Containers may
    nest ``depth`` levels (the wire's limit, so no later walk can exhaust the stack); past
    that the violation is :data:`TOO_DEEP`. Checking this once at create time makes every
    task store (memory or SQLite) accept the same specs.
    """
    if isinstance(value, Mapping | list | tuple):
        if depth <= 0:
            violations.append(Violation(path, TOO_DEEP))
            return
        depth -= 1
    if isinstance(value, str):
        if not (value.isascii() or encodable(value)):
            violations.append(Violation(path, "string is not valid Unicode (lone surrogate)"))
    elif isinstance(value, bool | int | datetime) or value is None:
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            violations.append(Violation(path, f"{value!r} is not a finite number"))
    elif isinstance(value, Mapping):
        for key, element in value.items():
            if not isinstance(key, str):
                violations.append(Violation(path, f"object key {key!r} is not a string"))
                continue
            where = f"{path}.{key}" if path else key
            if not (key.isascii() or encodable(key)):
                violations.append(Violation(where, "key is not valid Unicode (lone surrogate)"))
                continue
            check_json(element, where, violations, depth)
    elif isinstance(value, list | tuple):
        for index, element in enumerate(value):
            check_json(element, f"{path}.{index}", violations, depth)
    else:
        violations.append(Violation(path, f"not a JSON value ({type(value).__name__})"))

"""The PostgreSQL backend: JSONB operators over a ``jsonb`` copy of the stored item.

It generates SQL text for psycopg (``%s`` placeholders, so a literal ``%`` is doubled).
The document expression is a ``jsonb`` column derived from the item's exact JSON text,
``NULL`` where JSONB cannot hold the item (a string with ``U+0000``): such rows are
decided in Python (:meth:`PostgresJSONB.finish`).

JSONB loses what the value model keeps apart, and each loss becomes a row-wise "decide
in Python" rather than a wrong answer:

* ``1`` and ``1.0`` are both ``number`` (a ``numeric`` of the decimal text): tests on
  integers or reals alone (``$type: "int"``) are necessary conditions only. Number
  comparisons are exact for operands below 2**53 in magnitude, where a ``numeric``
  holding the shortest decimal text of a double orders as the double does against
  every integer and double; beyond that they are necessary conditions only.
* Strings compare with ``COLLATE "C"`` (UTF-8 bytes: code point order) and fold case
  in SQL only when ASCII, as on SQLite.

Equality of a field with scalars (``$eq``, ``$in``, ``$hasSome``, ``$hasAll`` of strings,
booleans and numbers below 2**53) is JSONB containment, ``COALESCE(field @> 'c', FALSE)``
(:meth:`PostgresJSONB.contains`): a scalar contains a scalar it equals, an array one of its
own elements (not one nested deeper), an object none; strings compare byte for byte,
numbers as ``numeric``, booleans apart. That is the value model's equality on a field or
its elements, the same answer as the per-element form at a third of its cost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Final

from taskengine.filters._sql import (
    FALSE,
    SQL,
    TRUE,
    Bound,
    any_of,
    exact,
    join,
    sql_and,
    sql_not,
    sql_or,
)
from taskengine.filters._sql_backend import NUMBER, Backend, Ref, case_when

__all__ = ["PostgresJSONB"]

_TYPE_NAMES: Final = {
    "null": "null",
    "text": "string",
    "array": "array",
    "object": "object",
}
_EXACT_BELOW: Final = 2**53
"""Numbers below this magnitude compare exactly as ``numeric`` (see the module docstring)."""
_MAX_CONTAINED: Final = 8
"""The most values :meth:`PostgresJSONB.contains` tests one by one (a longer ``IN`` list
is hashed by the per-element form)."""


def _scalar_json(c: object) -> str | None:
    """The JSON text of a scalar operand whose JSONB equality is the value model's, or
    ``None`` (a number beyond 2**53, not finite; a string JSONB cannot hold)."""
    cls = c.__class__
    if cls is bool:
        return "true" if c else "false"
    if cls is int:
        return str(c) if abs(c) < _EXACT_BELOW else None  # type: ignore[arg-type]
    if cls is float:
        ok = math.isfinite(c) and abs(c) < _EXACT_BELOW  # type: ignore[arg-type]
        return repr(c) if ok else None
    if cls is str:
        if "\x00" in c:  # type: ignore[operator]
            return None
        try:
            c.encode("utf-8")  # type: ignore[attr-defined]
        except UnicodeEncodeError:  # a lone surrogate: no JSONB string holds one
            return None
        return json.dumps(c, ensure_ascii=False)
    return None


class PostgresJSONB(Backend):
    """PostgreSQL's JSONB functions over a ``jsonb`` document column.

    Args:
        document: the ``jsonb`` column (``NULL`` for items JSONB cannot hold).
    """

    name = "postgresql"
    placeholder = "%s"
    max_params = 30000  # PostgreSQL takes 65535 bind parameters

    def literal(self, text: str) -> str:
        """A string literal, with ``%`` doubled for psycopg's placeholders."""
        return "'" + text.replace("'", "''").replace("%", "%%") + "'"

    def addressable(self, parts: Sequence[str]) -> bool:
        """Any key but ``$date`` and the empty one (JSONB keys are compared unescaped)."""
        return all(part and part != "$date" and "\x00" not in part for part in parts)

    def finish(self, bound: Bound) -> Bound:
        """Rows whose ``jsonb`` is ``NULL`` may match and are never sure (Python decides).

        A constant needs no guard: translations fold to one only what holds of every
        item (``{}``, ``$in: []``), never what follows from what JSONB holds.
        """
        if bound.exact and bound.where in (TRUE, FALSE):
            return bound
        missing = SQL(f"{self.document} IS NULL")
        return Bound(
            sql_or([missing, bound.where]),
            sql_and([sql_not(missing), bound.sure]),
            # Where the rest is exact, only the rows without jsonb are undecided.
            gap=missing if bound.exact else None,
        )

    def _only_without_jsonb(self) -> Bound:
        """Never true of an item JSONB holds (it may be of one it cannot: never a constant,
        which :meth:`finish` would not guard)."""
        return Bound(SQL(f"{self.document} IS NULL"), FALSE)

    def _at(self, base: str, parts: Sequence[str]) -> str:
        return base + "".join(f" -> {self.literal(p)}" for p in parts)

    def field(self, parts: Sequence[str]) -> Ref:
        """``document -> 'a' -> 'b'``."""
        value = SQL(f"({self._at(self.document, parts)})")
        return Ref(join("jsonb_typeof(", value, ")"), value, value)

    def not_array_at(self, parts: Sequence[str]) -> SQL:
        """True where the value at ``parts`` is not an array."""
        return SQL(f"COALESCE(jsonb_typeof({self._at(self.document, parts)}), '') <> 'array'")

    def element(self, alias: str) -> Ref:
        """An element of ``jsonb_array_elements`` under ``alias``."""
        value = SQL(f"{alias}.value")
        return Ref(SQL(f"jsonb_typeof({alias}.value)"), value, value, missing=False)

    def each(self, ref: Ref, alias: str, condition: SQL) -> SQL:
        """``EXISTS (SELECT 1 FROM jsonb_array_elements(...) AS alias(value) WHERE ...)``."""
        return join(
            "EXISTS (SELECT 1 FROM jsonb_array_elements(",
            ref.source,
            f") AS {alias}(value) WHERE ",
            condition,
            ")",
        )

    def member(self, ref: Ref, key: str) -> Ref:
        """``value -> 'key'``."""
        value = join("(", ref.value, f" -> {self.literal(key)})")
        return Ref(join("jsonb_typeof(", value, ")"), value, value)

    def item(self, ref: Ref, index: int) -> Ref:
        """``value -> index``."""
        value = join("(", ref.value, f" -> {int(index)})")
        return Ref(join("jsonb_typeof(", value, ")"), value, value)

    def key_count_is(self, ref: Ref, n: int) -> SQL:
        """True where the object has ``n`` keys."""
        return join("(SELECT count(*) FROM jsonb_object_keys(", ref.value, ")) = ", self.param(n))

    def _names(self, ref: Ref, names: Sequence[str]) -> SQL:
        if not names:
            return FALSE
        if len(names) == 1:
            test = f" = '{names[0]}'"
        else:
            test = " IN (" + ", ".join(f"'{n}'" for n in names) + ")"
        if ref.missing:
            return join("COALESCE(", ref.type, ", '')", test)
        return join(ref.type, test)

    def type_in(self, ref: Ref, types: frozenset[str]) -> Bound:
        """Whether the value has one of ``types``; ``integer`` or ``real`` alone is unsure."""
        if ref.known is not None:
            return exact(TRUE if ref.known in types else FALSE)
        names = [_TYPE_NAMES[t] for t in types if t in _TYPE_NAMES]
        numbers = types & NUMBER
        if numbers:
            names.append("number")
        parts = []
        if {"true", "false"} <= types:
            names.append("boolean")
        elif "true" in types or "false" in types:
            value = "true" if "true" in types else "false"
            is_bool = self._names(ref, ["boolean"])
            parts.append(case_when(is_bool, join(ref.value, f" = '{value}'::jsonb")))
        where = sql_or([self._names(ref, sorted(names)), *parts])
        if numbers == NUMBER or not numbers:
            return exact(where)
        # integer or real alone: JSONB has one number type
        others = types - NUMBER
        return Bound(where, self.type_in(ref, others).sure if others else FALSE)

    def _typed(self, ref: Ref, types: frozenset[str], then: SQL) -> SQL:
        return case_when(self.type_in(ref, types).where, then)

    def _text(self, ref: Ref) -> SQL:
        return join("(", ref.value, " #>> '{}')")

    def number(self, ref: Ref, op: str, c: int | float, kinds: frozenset[str] = NUMBER) -> Bound:
        """``value::numeric op c``: exact below 2**53 when both kinds of number are asked."""
        if not abs(c) < _EXACT_BELOW:
            return Bound(self.type_in(ref, NUMBER).where, FALSE)
        test = join("(", ref.value, f")::numeric {op} CAST(", self.param(repr(c)), " AS numeric)")
        compared = self._typed(ref, NUMBER, test)
        if kinds != NUMBER:
            return Bound(compared, FALSE)  # JSONB does not tell integers from reals
        return exact(compared)

    def number_in(self, ref: Ref, values: Sequence[int | float]) -> Bound:
        """Numbers below 2**53 as one ``IN`` list of numerics, the others one by one."""
        small = [c for c in values if abs(c) < _EXACT_BELOW]
        parts = [self.number(ref, "=", c) for c in values if not abs(c) < _EXACT_BELOW]
        if small:
            marks = ", ".join("CAST(%s AS numeric)" for _ in small)
            test = join("(", ref.value, ")::numeric IN (", SQL(marks, tuple(map(repr, small))), ")")
            parts.append(exact(self._typed(ref, NUMBER, test)))
        return any_of(parts)

    def text_in(self, ref: Ref, values: Sequence[str]) -> Bound:
        """Strings in one ``IN`` list (one holding U+0000 matches no item JSONB holds)."""
        plain = [s for s in values if "\x00" not in s]
        parts = [self._only_without_jsonb()] if len(plain) < len(values) else []
        if plain:
            marks = ", ".join(self.placeholder for _ in plain)
            test = join(self._text(ref), ' COLLATE "C" IN (', SQL(marks, tuple(plain)), ")")
            parts.append(exact(self._typed(ref, frozenset({"text"}), test)))
        return any_of(parts)

    def contains(self, ref: Ref, values: Sequence[str | int | float | bool]) -> Bound | None:
        """``COALESCE(field @> 'c', FALSE)`` for each value (see the module docstring)."""
        if not values or len(values) > _MAX_CONTAINED or ref.known is not None:
            return None
        texts = [_scalar_json(c) for c in values]
        if None in texts:
            return None
        tests = [
            join("COALESCE(", ref.value, " @> CAST(", self.param(text), " AS jsonb), FALSE)")
            for text in dict.fromkeys(texts)
        ]
        return exact(sql_or(tests))

    def text(self, ref: Ref, op: str, s: str) -> Bound:
        """A string with ``value op s`` by code point (``COLLATE "C"``)."""
        text = frozenset({"text"})
        if "\x00" in s:  # PostgreSQL text cannot hold it, nor can a JSONB string
            if op == "=":
                return self._only_without_jsonb()
            return Bound(self.type_in(ref, text).where, FALSE)
        return exact(self._typed(ref, text, self.compare_text(self._text(ref), op, s)))

    def prefix(self, ref: Ref, s: str) -> Bound:
        """A string starting with ``s``."""
        text = frozenset({"text"})
        if not s:
            return self.type_in(ref, text)
        if "\x00" in s:
            return self._only_without_jsonb()
        test = join("left(", self._text(ref), ", ", self.param(len(s)), ") = ", self.param(s))
        return exact(self._typed(ref, text, test))

    def folded(self, ref: Ref, kind: str, needle: str) -> Bound:
        """Case-insensitive string operators, decided in SQL on ASCII strings."""
        text = frozenset({"text"})
        if not needle:
            return self.type_in(ref, text)
        value = self._text(ref)
        ascii_ = join("octet_length(", value, ") = char_length(", value, ")")
        if not needle.isascii() or "\x00" in needle:
            return Bound(self._typed(ref, text, sql_not(ascii_)), FALSE)
        lowered = join("lower(", value, ' COLLATE "C")')
        n = self.param(needle)
        if kind == "startsWith":
            test = join("left(", lowered, ", ", self.param(len(needle)), ") = ", n)
        elif kind == "endsWith":
            test = join("right(", lowered, ", ", self.param(len(needle)), ") = ", n)
        else:
            test = join("strpos(", lowered, ", ", n, ") > 0")
        where = self._typed(ref, text, sql_or([sql_not(ascii_), test]))
        sure = self._typed(ref, text, sql_and([ascii_, test]))
        return Bound(where, sure)

    def length_is(self, ref: Ref, n: int) -> Bound:
        """An array of ``n`` elements."""
        test = join("jsonb_array_length(", ref.value, ") = ", self.param(n))
        return exact(self._typed(ref, frozenset({"array"}), test))

    def mod(self, ref: Ref, divisor: int, remainder: int) -> Bound:
        """``$mod`` on numbers below 2**53 (where a real's decimal truncates as the real does)."""
        number = join("(", ref.value, ")::numeric")
        small = join("abs(", number, ") < ", self.param(_EXACT_BELOW))
        test = join(
            "mod(trunc(", number, "), ", self.param(abs(divisor)), ") = ", self.param(remainder)
        )
        where = self._typed(ref, NUMBER, sql_or([sql_not(small), test]))
        sure = self._typed(ref, NUMBER, sql_and([small, test]))
        return Bound(where, sure)

    def is_date(self, ref: Ref) -> Bound:
        """An object whose only key is ``$date``, holding a string."""
        value = ref.value
        test = join(
            "COALESCE(jsonb_typeof(",
            value,
            " -> '$date') = 'string', FALSE) AND (",
            value,
            " - '$date') = '{}'::jsonb",
        )
        return exact(self._typed(ref, frozenset({"object"}), test))

    def date_text(self, ref: Ref) -> SQL:
        """``value ->> '$date'``."""
        return join("(", ref.value, " ->> '$date')")

    def text_slice(self, text: SQL, start: int, length: int) -> SQL:
        """``substr(text, start, length)``."""
        return join("substr(", text, f", {start}, {length})")

    def text_length(self, text: SQL) -> SQL:
        """``length(text)``."""
        return join("length(", text, ")")

    def text_replace(self, text: SQL, old: str, new: str) -> SQL:
        """``replace(text, old, new)``."""
        return join("replace(", text, f", {self.literal(old)}, {self.literal(new)})")

    def compare_text(self, text: SQL, op: str, s: str) -> SQL:
        """``text COLLATE "C" op s``: code point order whatever the database's collation."""
        return join(text, f' COLLATE "C" {op} ', self.param(s))

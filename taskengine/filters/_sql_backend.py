"""SQL backends: how one database reaches and tests a JSON value of a stored item.

A :class:`Backend` knows its database's JSON functions; the dialect translators know
the filter semantics and call it. Types are named in one neutral vocabulary, SQLite's
``json_type`` names: ``null true false integer real text array object`` (a missing
value has no type). Every method returns a :class:`~taskengine.filters._sql.Bound`
whose conditions are two-valued (see :mod:`taskengine.filters._sql`). The backends are
``_sql_sqlite`` (JSON1 over JSON text) and ``_sql_postgres`` (JSONB).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import attrs

from taskengine.filters._sql import (
    FALSE,
    SQL,
    TRUE,
    Bound,
    Exists,
    any_of,
    exact,
    join,
    typed,
)

__all__ = ["NUMBER", "OPS", "Backend", "Leaf", "Ref", "both", "case_when"]

NUMBER: Final = frozenset({"integer", "real"})
OPS: Final = frozenset({"=", "<", "<=", ">", ">="})
"""The comparison operators a backend writes."""


@attrs.frozen
class Ref:
    """A JSON value as a backend's SQL reaches it.

    Attributes:
        type: SQL for its type name (``NULL`` when the value is missing).
        value: SQL for the value (SQLite: its SQL value; PostgreSQL: ``jsonb``).
        source: what the backend's array functions take to reach the same value.
        known: a type fixed at translation time (``"array"`` for an array itself).
        missing: whether the value may be missing (a field may; an element may not).
    """

    type: SQL
    value: SQL
    source: SQL
    known: str | None = None
    missing: bool = True
    path: str | None = None
    """The backend's path to the value from the document, when it has one (SQLite)."""


Leaf = Callable[[Ref], Bound]
"""A test on one value, as a bound."""


def both(make: Callable[[Callable[[Bound], SQL]], SQL], parts: Sequence[Bound]) -> Bound:
    """Build a bound from parts with ``make``, once when every part is exact."""
    if all(p.exact for p in parts):
        return exact(make(lambda b: b.where))
    return Bound(make(lambda b: b.where), make(lambda b: b.sure))


def case_when(condition: SQL, then: SQL) -> SQL:
    """``CASE WHEN condition THEN then ELSE FALSE END``: ``then`` only where it is defined."""
    if condition == FALSE or then == FALSE:
        return FALSE
    if condition == TRUE:
        return then
    return join("CASE WHEN ", condition, " THEN ", then, " ELSE FALSE END")


class Backend:
    """One database's JSON functions, used by the dialect translators.

    Args:
        document: the SQL expression of the stored document (a column name).
    """

    name: str = ""
    placeholder: str = "?"
    max_params: int = 30000

    def __init__(self, document: str) -> None:
        self.document = document
        self._aliases = 0
        self._element_aliases: dict[SQL, str] = {}

    # -- building blocks -----------------------------------------------------------------

    def param(self, value: object) -> SQL:
        """A placeholder bound to ``value``."""
        return SQL(self.placeholder, (value,))

    def literal(self, text: str) -> str:
        """``text`` as a SQL string literal."""
        return "'" + text.replace("'", "''") + "'"

    def alias(self) -> str:
        """A fresh name for a row source."""
        self._aliases += 1
        return f"e{self._aliases}"

    def addressable(self, parts: Sequence[str]) -> bool:
        """Whether a path can be written for this backend (keys spelled as in JSON text)."""
        return all(
            part and part != "$date" and not any(ch in '"\\' or ch < " " for ch in part)
            for part in parts
        )

    def finish(self, bound: Bound) -> Bound:
        """The bound of a whole filter (a backend may add a row-wise guard)."""
        return bound

    def check(self, bound: Bound) -> None:
        """Raise :class:`TooComplex` if the database would refuse the SQL of ``bound``."""

    # -- values --------------------------------------------------------------------------

    def field(self, parts: Sequence[str]) -> Ref:
        """The value at a path of object keys from the document (missing or not)."""
        raise NotImplementedError

    def not_array_at(self, parts: Sequence[str]) -> SQL:
        """True where the value at ``parts`` is not an array (missing included)."""
        raise NotImplementedError

    def itself(self, ref: Ref) -> Ref:
        """An array value seen as a whole (its type is known: ``array``)."""
        return Ref(SQL("'array'"), ref.value, ref.source, known="array", missing=False)

    def element(self, alias: str) -> Ref:
        """An element of an array iterated under ``alias``."""
        raise NotImplementedError

    def each(self, ref: Ref, alias: str, condition: SQL) -> SQL:
        """``EXISTS`` an element of the array ``ref`` (under ``alias``) meeting ``condition``."""
        raise NotImplementedError

    def some_element(self, ref: Ref, leaf: Leaf) -> Bound:
        """Whether some element of the array ``ref`` passes ``leaf`` (``ref`` is an array)."""
        # One alias per array, so that tests of the same array can merge under OR.
        alias = self._element_aliases.get(ref.source)
        if alias is None:
            alias = self._element_aliases[ref.source] = self.alias()
        inner = leaf(self.element(alias))
        return both(lambda pick: self._exists(ref, alias, pick(inner)), [inner])

    def _exists(self, ref: Ref, alias: str, condition: SQL) -> SQL:
        if condition == FALSE:
            return FALSE
        return attrs.evolve(
            self.each(ref, alias, condition),
            exists=Exists(
                (ref.source, alias), condition, lambda merged: self._exists(ref, alias, merged)
            ),
        )

    def if_array(self, ref: Ref, yes: Bound, no: Bound) -> Bound:
        """``yes`` where ``ref`` is an array, ``no`` elsewhere."""
        if ref.known == "array":
            return yes
        if ref.known is not None:
            return no

        def make(pick: Callable[[Bound], SQL]) -> SQL:
            a, b = pick(yes), pick(no)
            if a == b:
                return a
            if b == FALSE:
                return typed(ref.type, [("array", a)])
            if b.cases is not None and b.cases[0] == ref.type:
                # one CASE on the type: the array branch, then the others' branches
                others = [(name, cond) for name, cond in b.cases[1] if name != "array"]
                return typed(ref.type, [("array", a), *others])
            return join("CASE WHEN ", ref.type, " = 'array' THEN ", a, " ELSE ", b, " END")

        return both(make, [yes, no])

    def is_missing(self, ref: Ref) -> SQL:
        """True where ``ref`` is missing."""
        if not ref.missing or ref.known is not None:
            return FALSE
        return join(ref.type, " IS NULL")

    def type_in(self, ref: Ref, types: frozenset[str]) -> Bound:
        """Whether the value has one of the neutral ``types`` (never when missing)."""
        raise NotImplementedError

    def number(self, ref: Ref, op: str, c: int | float, kinds: frozenset[str] = NUMBER) -> Bound:
        """A number of one of ``kinds`` with ``value op c`` (``c`` finite, ints in 64 bits)."""
        raise NotImplementedError

    def text(self, ref: Ref, op: str, s: str) -> Bound:
        """A string with ``value op s``, by code point."""
        raise NotImplementedError

    def number_in(self, ref: Ref, values: Sequence[int | float]) -> Bound:
        """A number equal to one of ``values`` (finite, ints in 64 bits)."""
        return any_of([self.number(ref, "=", c) for c in values])

    def text_in(self, ref: Ref, values: Sequence[str]) -> Bound:
        """A string equal to one of ``values``."""
        return any_of([self.text(ref, "=", s) for s in values])

    def contains(self, ref: Ref, values: Sequence[str | int | float | bool]) -> Bound | None:
        """A field equal to one of the scalar ``values`` or an array with an element equal
        to one (the value model's equality), as one cheap test; ``None`` when this
        backend has no such form for these values (the caller then tests value and
        elements one by one). ``ref`` is a field (:meth:`field`)."""
        return None

    def prefix(self, ref: Ref, s: str) -> Bound:
        """A string starting with ``s`` (case-sensitive)."""
        raise NotImplementedError

    def folded(self, ref: Ref, kind: str, needle: str) -> Bound:
        """A string whose ``casefold()`` starts with / ends with / contains ``needle``.

        ``kind`` is ``startsWith``, ``endsWith`` or ``contains``; ``needle`` is folded.
        """
        raise NotImplementedError

    def length_is(self, ref: Ref, n: int) -> Bound:
        """An array of ``n`` elements."""
        raise NotImplementedError

    def mod(self, ref: Ref, divisor: int, remainder: int) -> Bound:
        """A number whose truncation has ``remainder`` modulo ``divisor`` (C's sign)."""
        raise NotImplementedError

    def is_date(self, ref: Ref) -> Bound:
        """A date: an object whose only key is ``$date``, holding a string."""
        raise NotImplementedError

    def date_text(self, ref: Ref) -> SQL:
        """The ISO text of a date ``ref`` (only meaningful where :meth:`is_date` holds)."""
        raise NotImplementedError

    def text_slice(self, text: SQL, start: int, length: int) -> SQL:
        """``length`` characters of ``text`` from 1-based ``start``."""
        raise NotImplementedError

    def text_length(self, text: SQL) -> SQL:
        """The number of characters of ``text``."""
        raise NotImplementedError

    def text_replace(self, text: SQL, old: str, new: str) -> SQL:
        """``text`` with every ``old`` replaced by ``new``."""
        raise NotImplementedError

    def compare_text(self, text: SQL, op: str, s: str) -> SQL:
        """``text op s`` by code point, on a ``text`` that is never ``NULL``."""
        raise NotImplementedError

    def key_count_is(self, ref: Ref, n: int) -> SQL:
        """True where the object ``ref`` has ``n`` keys (``ref`` is known to be an object)."""
        raise NotImplementedError

    def member(self, ref: Ref, key: str) -> Ref:
        """The value under ``key`` of the object ``ref`` (missing when absent)."""
        raise NotImplementedError

    def item(self, ref: Ref, index: int) -> Ref:
        """The element at ``index`` of the array ``ref``."""
        raise NotImplementedError

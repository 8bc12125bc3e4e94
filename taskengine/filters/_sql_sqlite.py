"""The SQLite backend: JSON1 functions over the JSON text ``SQLiteStorage`` keeps.

The text is the storage codec's (``taskengine.storage.codec``): compact, dates as
``{"$date": ISO}``, ``1`` and ``1.0`` written apart, which ``json_type`` tells as
``integer`` and ``real``. Its limits, each turned into a row-wise "decide in Python":

* ``json_extract`` cuts a string at ``U+0000``, so every string test is only *sure* on a
  document whose text holds no ``\\u0000`` escape;
* a JSON real is parsed by SQLite's own routine; it is trusted to give Python's double
  (a probe of hard cases runs once per process: :func:`sqlite_parses_reals_exactly`),
  and where it does not, number tests on reals are re-checked in Python;
* only ASCII strings are case-folded in SQL (``lower`` is ASCII-only, and non-ASCII
  characters such as ``K`` (Kelvin) fold to ASCII ones), so the wix string operators are
  sure on ASCII strings only;
* SQLite's parser has a small fixed stack, so what fits is tried (:meth:`SQLiteJSON.check`).

A field compared with a number reads the field once where it can
(:meth:`SQLiteJSON.number`): ``json_extract(doc, path) BETWEEN lo AND hi`` holds of the
numbers in range and of nothing else but ``true``/``false`` (read as 1 and 0, so a range
holding 0 or 1 also checks the type); strings, arrays and objects come back as text,
which sorts above every number, and a missing value or ``null`` as ``NULL``. A strict
bound is the next double over (exact below 2**53, where no integer lies between two
doubles). The array branch, an element in range, is then tested only on the rows the
range leaves (:meth:`SQLiteJSON.if_array`), so the common scalar case costs one read.
"""

from __future__ import annotations

import functools
import math
import random
import sqlite3
import struct
from collections.abc import Callable, Sequence
from typing import Final

from taskengine.filters._sql import (
    FALSE,
    SQL,
    TRUE,
    Bound,
    TooComplex,
    exact,
    join,
    sql_and,
    sql_not,
    sql_or,
    typed,
)
from taskengine.filters._sql_backend import NUMBER, OPS, Backend, Ref, both

__all__ = ["SQLiteJSON", "sqlite_parses_reals_exactly"]

_DATE_KEY: Final = '."$date"'  # the path step to a stored date's ISO text
_LARGEST: Final = 1.7976931348623157e308  # above every stored number (all are finite)
_EXACT_STEP: Final = 2**53  # below it, the next double over has no integer in between


def _range(op: str, c: int | float) -> tuple[int | float, int | float] | None:
    """``[lo, hi]`` holding exactly the numbers ``x`` with ``x op c``, or ``None``."""
    if op == "=":
        return c, c
    if op == ">=":
        return c, _LARGEST
    if op == "<=":
        return -_LARGEST, c
    if not abs(c) < _EXACT_STEP:
        return None
    if op == ">":
        return math.nextafter(float(c), math.inf), _LARGEST
    return -_LARGEST, math.nextafter(float(c), -math.inf)


@functools.lru_cache(maxsize=1)
def sqlite_parses_reals_exactly() -> bool:
    """Whether this process's SQLite reads JSON reals as Python does (a probe, run once).

    SQLite converts decimal text to a double with its own routine, whose last-bit
    accuracy has depended on the version and the platform's ``long double``. The probe
    parses hard cases (round-trip shortest forms of random bit patterns, powers of ten,
    subnormals, halfway cases) and compares the doubles.
    """
    rng = random.Random(20240917)
    values = [
        0.1,
        0.2,
        0.3,
        1e23,
        8.98846567431158e307,
        5e-324,
        2.2250738585072014e-308,
        2.2250738585072009e-308,
        9007199254740993.0,
        1.7976931348623157e308,
        4.9406564584124654e-324,
        0.1 + 0.2,
        1 / 3,
        2 / 3,
        123456789012345680.0,
    ]
    values += [10.0**e for e in range(-320, 309)]
    while len(values) < 5000:
        (x,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if x == x and abs(x) != float("inf"):
            values.append(x)
    text = "[" + ",".join(map(repr, values)) + "]"
    try:
        conn = sqlite3.connect(":memory:")
        try:
            rows = conn.execute("SELECT value FROM json_each(?)", (text,)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:  # pragma: no cover - a SQLite without JSON functions
        return False
    return [row[0] for row in rows] == values


class SQLiteJSON(Backend):
    """SQLite's JSON1 functions over the JSON text of a stored item.

    Args:
        document: the column holding the item's JSON text.
        exact_reals: whether SQLite's parse of a JSON real is trusted (default: probe).
    """

    name = "sqlite"
    placeholder = "?"
    max_params = 30000  # SQLite 3.32+ allows 32766 host parameters

    def __init__(self, document: str, *, exact_reals: bool | None = None) -> None:
        super().__init__(document)
        if exact_reals is None:
            exact_reals = sqlite_parses_reals_exactly()
        self.exact_reals = exact_reals
        self._has_nul = SQL(f"instr({document}, '\\u0000') > 0")
        self._scalar_only: set[SQL] = set()  # conditions false on every array

    def check(self, bound: Bound) -> None:
        """Prepare and run the SQL once on a scratch database: SQLite's parser has a
        small fixed stack (``parser stack overflow`` at a few dozen nested ``CASE``),
        so what fits is asked of the SQLite in use rather than modelled.
        """
        if not self.document.isidentifier():
            return
        doc = self.document
        sql = (
            f"WITH x AS (SELECT '{{}}' AS {doc}) SELECT CASE WHEN (({bound.sure.text}))"
            f" THEN NULL ELSE {doc} END FROM x WHERE 1 = 1 AND 1 = 1 AND (({bound.where.text}))"
        )
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute(sql, (*bound.sure.params, *bound.where.params)).fetchall()
        except sqlite3.Error as exc:
            raise TooComplex(str(exc)) from exc
        finally:
            conn.close()

    @staticmethod
    def _path(parts: Sequence[str]) -> str:
        return "$" + "".join(f'."{part}"' for part in parts)

    def field(self, parts: Sequence[str]) -> Ref:
        """The value at a path of object keys from the document."""
        path = self.literal(self._path(parts))
        doc = self.document
        return Ref(
            SQL(f"IFNULL(json_type({doc}, {path}), 'missing')"),
            SQL(f"json_extract({doc}, {path})"),
            SQL(f"{doc}, {path}"),
            path=self._path(parts),
        )

    def if_array(self, ref: Ref, yes: Bound, no: Bound) -> Bound:
        """``yes`` where ``ref`` is an array, ``no`` elsewhere; when ``no`` is a field's
        number range (false on every array), tested first: the type is read only on the
        rows it leaves."""
        if ref.path is None or ref.known is not None or not no.exact:
            return super().if_array(ref, yes, no)
        if no.where not in self._scalar_only:
            return super().if_array(ref, yes, no)
        is_array = SQL(f"json_type({self.document}, {self.literal(ref.path)}) = 'array'")

        def make(pick: Callable[[Bound], SQL]) -> SQL:
            on_array = pick(yes)
            if on_array == FALSE:
                return no.where
            return join(
                "CASE WHEN ",
                no.where,
                " THEN TRUE WHEN ",
                is_array,
                " THEN ",
                on_array,
                " ELSE FALSE END",
            )

        return both(make, [yes])

    def not_array_at(self, parts: Sequence[str]) -> SQL:
        """True where the value at ``parts`` is not an array."""
        path = self.literal(self._path(parts))
        return SQL(f"COALESCE(json_type({self.document}, {path}), '') <> 'array'")

    def element(self, alias: str) -> Ref:
        """An element of ``json_each`` under ``alias``."""
        return Ref(
            SQL(f"{alias}.type"), SQL(f"{alias}.value"), SQL(f"{alias}.value"), missing=False
        )

    def each(self, ref: Ref, alias: str, condition: SQL) -> SQL:
        """``EXISTS (SELECT 1 FROM json_each(...) AS alias WHERE condition)``."""
        return join(
            "EXISTS (SELECT 1 FROM json_each(", ref.source, f") AS {alias} WHERE ", condition, ")"
        )

    def member(self, ref: Ref, key: str) -> Ref:
        """The value under ``key`` of the object ``ref``."""
        path = self.literal(self._path([key]))
        return Ref(
            join("IFNULL(json_type(", ref.value, f", {path}), 'missing')"),
            join("json_extract(", ref.value, f", {path})"),
            join(ref.value, f", {path}"),
        )

    def item(self, ref: Ref, index: int) -> Ref:
        """The element at ``index`` of the array ``ref``."""
        path = self.literal(f"$[{index}]")
        return Ref(
            join("IFNULL(json_type(", ref.value, f", {path}), 'missing')"),
            join("json_extract(", ref.value, f", {path})"),
            join(ref.value, f", {path}"),
        )

    def key_count_is(self, ref: Ref, n: int) -> SQL:
        """True where the object ``ref`` has ``n`` keys."""
        alias = self.alias()
        return join(
            "(SELECT count(*) FROM json_each(", ref.value, f") AS {alias}) = ", self.param(n)
        )

    def type_in(self, ref: Ref, types: frozenset[str]) -> Bound:
        """Whether ``json_type`` of the value is one of ``types``."""
        return exact(self._typed(ref, types, TRUE))

    def is_missing(self, ref: Ref) -> SQL:
        """True where the value is missing (a field's type then reads ``'missing'``)."""
        if not ref.missing or ref.known is not None:
            return FALSE
        return typed(ref.type, [("missing", TRUE)])

    def _typed(self, ref: Ref, types: frozenset[str], then: SQL) -> SQL:
        """``then`` where the value has one of ``types`` (a missing one has none)."""
        if ref.known is not None:
            return then if ref.known in types else FALSE
        return typed(ref.type, [(name, then) for name in sorted(types)])

    def number(self, ref: Ref, op: str, c: int | float, kinds: frozenset[str] = NUMBER) -> Bound:
        """A number with ``value op c``; reals are unsure unless SQLite parses them exactly.

        On a field, where reals are exact, one ``json_extract ... BETWEEN`` (see the
        module docstring)."""
        assert op in OPS
        bounds = _range(op, c)
        if (
            ref.path is not None
            and ref.known is None
            and kinds == NUMBER
            and self.exact_reals
            and bounds is not None
        ):
            lo, hi = bounds
            path = self.literal(ref.path)
            in_range = join(ref.value, " BETWEEN ", self.param(lo), " AND ", self.param(hi))
            then = TRUE
            if lo <= 1 and hi >= 0:  # true and false read as 1 and 0
                then = SQL(f"json_type({self.document}, {path}) IN ('integer', 'real')")
            test = join("CASE WHEN ", in_range, " THEN ", then, " ELSE FALSE END")
            self._scalar_only.add(test)
            return exact(test)
        test = join(ref.value, f" {op} ", self.param(c))
        if self.exact_reals or "real" not in kinds:
            return exact(self._typed(ref, kinds, test))
        sure = self._typed(ref, kinds - {"real"}, test)
        return Bound(sql_or([sure, self._typed(ref, frozenset({"real"}), TRUE)]), sure)

    def _string(self, ref: Ref, where: SQL, sure: SQL) -> Bound:
        """A test on a string value: ``json_extract`` stops a string at U+0000, so in a
        document holding one the test is never sure (the type is still read right)."""
        text = frozenset({"text"})
        has_nul = self._has_nul
        return Bound(
            self._typed(ref, text, sql_or([has_nul, where])),
            self._typed(ref, text, sql_and([sql_not(has_nul), sure])),
        )

    def text(self, ref: Ref, op: str, s: str) -> Bound:
        """A string with ``value op s`` (SQLite compares TEXT by UTF-8 bytes: code points)."""
        assert op in OPS
        test = join(ref.value, f" {op} ", self.param(s))
        return self._string(ref, test, test)

    def _in_list(self, value: SQL, values: Sequence[object]) -> SQL:
        marks = ", ".join(self.placeholder for _ in values)
        return join(value, " IN (", SQL(marks, tuple(values)), ")")

    def number_in(self, ref: Ref, values: Sequence[int | float]) -> Bound:
        """A number in an ``IN`` list (SQLite compares an integer and a real exactly)."""
        test = self._in_list(ref.value, values)
        if self.exact_reals:
            return exact(self._typed(ref, NUMBER, test))
        sure = self._typed(ref, frozenset({"integer"}), test)
        return Bound(sql_or([sure, self._typed(ref, frozenset({"real"}), TRUE)]), sure)

    def text_in(self, ref: Ref, values: Sequence[str]) -> Bound:
        """A string in an ``IN`` list."""
        test = self._in_list(ref.value, values)
        return self._string(ref, test, test)

    def prefix(self, ref: Ref, s: str) -> Bound:
        """A string starting with ``s``: its first UTF-8 bytes, compared as a BLOB.

        ``IS``, not ``=``: ``substr`` of the empty string's (zero-length) BLOB is NULL,
        and a condition must never be NULL.
        """
        if not s:
            return self.type_in(ref, frozenset({"text"}))
        raw = s.encode("utf-8")
        test = join(
            "substr(CAST(",
            ref.value,
            " AS BLOB), 1, ",
            self.param(len(raw)),
            ") IS ",
            self.param(raw),
        )
        return self._string(ref, test, test)

    def folded(self, ref: Ref, kind: str, needle: str) -> Bound:
        """A string whose casefold starts/ends with or contains ``needle``: ASCII in SQL."""
        if not needle:
            return self.type_in(ref, frozenset({"text"}))
        value = ref.value
        ascii_ = join("length(CAST(", value, " AS BLOB)) = length(", value, ")")
        if not needle.isascii():
            # An ASCII string folds to ASCII: only the others may hold the needle.
            return self._string(ref, sql_not(ascii_), FALSE)
        lowered = join("lower(", value, ")")
        n = self.param(needle)
        if kind == "startsWith":
            test = join("substr(", lowered, ", 1, ", self.param(len(needle)), ") = ", n)
        elif kind == "endsWith":
            test = join("substr(", lowered, ", ", self.param(-len(needle)), ") = ", n)
        else:
            test = join("instr(", lowered, ", ", n, ") > 0")
        return self._string(ref, sql_or([sql_not(ascii_), test]), sql_and([ascii_, test]))

    def length_is(self, ref: Ref, n: int) -> Bound:
        """An array of ``n`` elements (``json_array_length``)."""
        test = join("json_array_length(", ref.source, ") = ", self.param(n))
        return exact(self._typed(ref, frozenset({"array"}), test))

    def mod(self, ref: Ref, divisor: int, remainder: int) -> Bound:
        """``$mod``: SQLite's ``%`` truncates and keeps the dividend's sign, as C does."""
        d = abs(divisor)
        if d > 2**63 - 1:
            return Bound(self.type_in(ref, NUMBER).where, FALSE)
        ints = self._typed(
            ref,
            frozenset({"integer"}),
            join(ref.value, " % ", self.param(d), " = ", self.param(remainder)),
        )
        reals_test = join(
            "(",
            ref.value,
            " >= ",
            self.param(-9.2233720368547758e18),
            " AND ",
            ref.value,
            " < ",
            self.param(9.2233720368547758e18),
            " AND CAST(",
            ref.value,
            " AS INTEGER) % ",
            self.param(d),
            " = ",
            self.param(remainder),
            ")",
        )
        real = frozenset({"real"})
        if not self.exact_reals:
            return Bound(sql_or([ints, self._typed(ref, real, TRUE)]), ints)
        return exact(sql_or([ints, self._typed(ref, real, reals_test)]))

    def is_date(self, ref: Ref) -> Bound:
        """An object whose only key is ``$date`` with a string (what storage writes for dates).

        The storage admits such an object only when the string is an ISO-8601 date and
        turns it into a date, so it is a date exactly.
        """
        value = ref.value
        test = join(
            "COALESCE(json_type(",
            self._date_source(ref),
            ") = 'text', FALSE) AND json_remove(",
            value,
            ", '$.\"$date\"') = '{}'",
        )
        return exact(self._typed(ref, frozenset({"object"}), test))

    def _date_source(self, ref: Ref) -> SQL:
        # From the document when the path is known: its parse is cached for the row.
        if ref.path is not None:
            path = self.literal(ref.path + _DATE_KEY)
            return SQL(f"{self.document}, {path}")
        return join(ref.value, ", '$.\"$date\"'")

    def date_text(self, ref: Ref) -> SQL:
        """The ISO text of a date ``ref``."""
        return join("json_extract(", self._date_source(ref), ")")

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
        """``text op s`` by code point (SQLite's BINARY collation compares UTF-8 bytes)."""
        return join(text, f" {op} ", self.param(s))

"""Filters inside the database: SQL conditions, and bounds made of two of them.

A compiled filter is translated to a :class:`Bound` over the stored item JSON: two SQL
conditions that bracket it on every row,

* ``where`` (necessary): a row the filter accepts always satisfies it, so a query may
  drop every row that fails it;
* ``sure`` (sufficient): a row that satisfies it is always accepted, so it need not be
  checked in Python.

Where the translation is exact the two are one condition. Where it is not (an operator
with no SQL form, a value SQL cannot judge on some rows), the row-wise gap between them
is what Python re-checks: ``where AND NOT sure``. Negation swaps the two
(``NOT f`` is necessary where ``NOT sure(f)`` holds), so bounds compose through
``$and``/``$or``/``$nor``/``$not`` without losing soundness.

Every condition here is two-valued on every row (never SQL ``NULL``), which is what
makes ``NOT`` safe; the backends build their leaves with ``CASE`` and ``COALESCE`` to
keep it so. The dialect translators (``_sql_mongo``, ``_sql_wix``) walk an already
compiled, so already valid, spec; the backends (``_sql_backend`` for SQLite,
``_sql_postgres``) say how a JSON value is reached and tested in their SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

__all__ = [
    "FALSE",
    "TRUE",
    "UNKNOWN",
    "Bound",
    "SQLCondition",
    "TooComplex",
    "all_of",
    "any_of",
    "exact",
    "join",
    "negate",
    "sql_and",
    "sql_not",
    "sql_or",
    "typed",
]

MAX_DEPTH: Final = 200
"""Deepest SQL expression a translation may build (SQLite refuses 1000 by default)."""


class TooComplex(Exception):
    """The translation would be too deep or too large for the database: do not push it."""


@attrs.frozen
class SQL:
    """A piece of SQL text and the parameters of its placeholders, in text order."""

    text: str
    params: tuple[Any, ...] = ()
    depth: int = attrs.field(default=0, eq=False)
    negation_of: SQL | None = attrs.field(default=None, eq=False, repr=False)
    cases: Cases | None = attrs.field(default=None, eq=False, repr=False)
    """Set when this is ``CASE type WHEN 't' THEN s ... ELSE FALSE END`` (see :func:`typed`)."""
    exists: Exists | None = attrs.field(default=None, eq=False, repr=False)
    """Set when this is ``EXISTS`` an array element meeting a condition."""


@attrs.frozen
class Exists:
    """An ``EXISTS`` over the elements of one array (``key``: its source and alias).

    Under ``OR``, tests of the same array become one ``EXISTS`` of the ``OR`` of their
    conditions (``rebuild``), so the array is walked once.
    """

    key: tuple[SQL, str]
    condition: SQL
    rebuild: Callable[[SQL], SQL] = attrs.field(eq=False)


Cases = tuple[SQL, tuple[tuple[str, SQL], ...]]
"""A type expression and the condition for each type name it may give (others: false)."""


def typed(type_: SQL, branches: Sequence[tuple[str, SQL]]) -> SQL:
    """``CASE type WHEN 'name' THEN condition ... ELSE FALSE END``, the type read once.

    Such conditions on the same type expression merge under ``AND``/``OR`` into one
    ``CASE``, so a field's type is read once per row however many tests it has.
    """
    kept = tuple((name, cond) for name, cond in branches if cond != FALSE)
    if not kept:
        return FALSE
    pieces: list[str | SQL] = ["CASE ", type_]
    for name, cond in kept:
        pieces += [f" WHEN '{name}' THEN ", cond]
    pieces.append(" ELSE FALSE END")
    return attrs.evolve(join(*pieces), cases=(type_, kept))


def _merge(items: list[SQL], combine: Callable[[Sequence[SQL]], SQL], union: bool) -> list[SQL]:
    """Typed cases on one type expression merged into one (order otherwise kept)."""
    groups: dict[SQL, list[SQL]] = {}
    for item in items:
        if item.cases is not None:
            groups.setdefault(item.cases[0], []).append(item)
    if all(len(group) < 2 for group in groups.values()):
        return items
    out: list[SQL] = []
    done: set[SQL] = set()
    for item in items:
        if item.cases is None or len(groups[item.cases[0]]) < 2:
            out.append(item)
            continue
        type_ = item.cases[0]
        if type_ in done:
            continue
        done.add(type_)
        per_type: dict[str, list[SQL]] = {}
        for member in groups[type_]:
            for name, cond in member.cases[1]:  # type: ignore[index]
                per_type.setdefault(name, []).append(cond)
        size = len(groups[type_])
        branches = [
            (name, combine(conds))
            for name, conds in per_type.items()
            if union or len(conds) == size  # AND: a type absent from one case is false
        ]
        out.append(typed(type_, branches))
    return out


TRUE: Final = SQL("TRUE")
FALSE: Final = SQL("FALSE")


def join(*pieces: str | SQL) -> SQL:
    """Concatenate raw text and SQL pieces; parameters follow in text order."""
    texts: list[str] = []
    params: list[Any] = []
    depth = 0
    for piece in pieces:
        if isinstance(piece, str):
            texts.append(piece)
        else:
            texts.append(piece.text)
            params.extend(piece.params)
            depth = max(depth, piece.depth)
    if depth >= MAX_DEPTH:
        raise TooComplex("expression too deep")
    return SQL("".join(texts), tuple(params), depth + 1)


def _balanced(op: str, items: Sequence[SQL]) -> SQL:
    # A balanced tree keeps a long $or shallow: SQLite limits expression depth.
    if len(items) == 1:
        return items[0]
    mid = len(items) // 2
    return join("(", _balanced(op, items[:mid]), f" {op} ", _balanced(op, items[mid:]), ")")


def _unique(items: Sequence[SQL]) -> list[SQL]:
    seen: set[SQL] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def sql_and(items: Sequence[SQL]) -> SQL:
    """``a AND b AND ...`` with ``TRUE``/``FALSE`` folded (``TRUE`` when empty)."""
    kept = []
    for item in items:
        if item == FALSE:
            return FALSE
        if item != TRUE:
            kept.append(item)
    kept = _merge(_unique(kept), sql_and, union=False)
    if FALSE in kept:
        return FALSE
    return _balanced("AND", kept) if kept else TRUE


def sql_or(items: Sequence[SQL]) -> SQL:
    """``a OR b OR ...`` with ``TRUE``/``FALSE`` folded (``FALSE`` when empty)."""
    kept = []
    for item in items:
        if item == TRUE:
            return TRUE
        if item != FALSE:
            kept.append(item)
    kept = [item for item in _merge(_unique(kept), sql_or, union=True) if item != FALSE]
    kept = _merge_exists(kept)
    return _balanced("OR", kept) if kept else FALSE


def _merge_exists(items: list[SQL]) -> list[SQL]:
    """``EXISTS`` tests of the same array under ``OR`` made one (order otherwise kept)."""
    groups: dict[tuple[SQL, str], list[SQL]] = {}
    for item in items:
        if item.exists is not None:
            groups.setdefault(item.exists.key, []).append(item)
    if all(len(group) < 2 for group in groups.values()):
        return items
    out: list[SQL] = []
    for item in items:
        if item.exists is None or len(groups[item.exists.key]) < 2:
            out.append(item)
        elif item is groups[item.exists.key][0]:
            group = groups[item.exists.key]
            out.append(item.exists.rebuild(sql_or([g.exists.condition for g in group])))  # type: ignore[union-attr]
    return out


def sql_not(item: SQL) -> SQL:
    """``NOT item`` with constants folded and double negations removed."""
    if item == TRUE:
        return FALSE
    if item == FALSE:
        return TRUE
    if item.negation_of is not None:
        return item.negation_of
    negated = join("(NOT ", item, ")")
    return attrs.evolve(negated, negation_of=item)


@attrs.frozen
class Bound:
    """A necessary and a sufficient SQL condition for a filter (or part of one)."""

    where: SQL
    sure: SQL
    gap: SQL | None = attrs.field(default=None, eq=False, kw_only=True)
    """A cheap condition every row meeting ``where`` but not ``sure`` meets, when known
    (``None``: only ``where AND NOT sure`` itself is). Set on a whole filter's bound by a
    backend's :meth:`~taskengine.filters._sql_backend.Backend.finish`."""

    @property
    def exact(self) -> bool:
        """Whether the two are the same condition: SQL decides every row alone."""
        return self.where == self.sure


UNKNOWN: Final = Bound(TRUE, FALSE)
"""A part with no SQL form: every row may match, none surely does."""


def exact(condition: SQL) -> Bound:
    """The bound of a part SQL decides exactly."""
    return Bound(condition, condition)


def all_of(bounds: Sequence[Bound]) -> Bound:
    """Both conditions of an AND of parts."""
    return Bound(sql_and([b.where for b in bounds]), sql_and([b.sure for b in bounds]))


def any_of(bounds: Sequence[Bound]) -> Bound:
    """Both conditions of an OR of parts."""
    return Bound(sql_or([b.where for b in bounds]), sql_or([b.sure for b in bounds]))


def negate(bound: Bound) -> Bound:
    """Both conditions of ``NOT part``: the necessary one is the negated sufficient one."""
    where = sql_not(bound.sure)
    sure = where if bound.exact else sql_not(bound.where)
    return Bound(where, sure)


@attrs.frozen
class SQLCondition:
    """A filter translated for one database: what a storage adds to its queries.

    It is what ``taskengine.storage.base.SQLFilterCondition`` describes (the storage
    does not import filters).

    Attributes:
        where: a condition every accepted item satisfies (``AND`` it into the query).
        where_params: its parameters, in placeholder order.
        sure: a condition that only accepted items satisfy; rows matching ``where`` but
            not ``sure`` must be checked with the filter in Python.
        sure_params: its parameters.
        exact: ``where`` and ``sure`` are the same condition: SQL alone decides.
        undecided: when not ``None``, a cheap condition every row meeting ``where`` but
            not ``sure`` meets (``FALSE`` when exact): a storage may write the rows
            meeting ``sure`` in one pass, then look for the undecided ones among the rows
            meeting this alone instead of evaluating the filter again (PostgreSQL: the
            rows JSONB cannot hold, ``data IS NULL``, when the rest is exact).
        undecided_params: its parameters.
    """

    where: str
    where_params: tuple[Any, ...]
    sure: str
    sure_params: tuple[Any, ...]
    exact: bool
    undecided: str | None = None
    undecided_params: tuple[Any, ...] = ()

    @classmethod
    def of(cls, bound: Bound) -> SQLCondition:
        """The condition of a finished bound."""
        gap = FALSE if bound.exact else bound.gap
        return cls(
            bound.where.text,
            bound.where.params,
            bound.sure.text,
            bound.sure.params,
            bound.exact,
            None if gap is None else gap.text,
            () if gap is None else gap.params,
        )

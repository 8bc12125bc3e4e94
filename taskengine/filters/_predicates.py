"""Compiled document predicates, shared by the filter dialects: combinators and ``MISSING``.

Each combinator returns a plain function; the common small arities are unrolled so that
an ``$and`` of two or three conditions costs no loop.
Parts that carry expression forms (:mod:`taskengine.filters._inline`) are joined into
one expression, so that a whole filter becomes one generated function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from taskengine._values import date_instant, equal_to
from taskengine.errors import InvalidFilter
from taskengine.filters._inline import (
    ARG,
    FIRST,
    MISSING,
    Inline,
    date_compare,
    fresh,
    inline_of,
    inlines,
    inlining,
    joined,
    negated,
    with_inline,
)

__all__ = [
    "MISSING",
    "Predicate",
    "all_of",
    "always",
    "any_of",
    "compile_each",
    "equals",
    "fields",
    "is_null",
    "negate",
    "one_field_literals",
]

Predicate = Callable[[Mapping[str, Any]], bool]

_T = TypeVar("_T")


def always(doc: Any) -> bool:
    """The predicate of an empty filter: matches every document."""
    return True


with_inline(always, Inline(f"({FIRST} is {ARG} or True)", {}))


def all_of(preds: Sequence[Callable[[_T], bool]]) -> Callable[[_T], bool]:
    """A predicate true when every one of ``preds`` is (``always`` when there are none).

    Also combines tests on one value (or one array) the same way.
    """
    if not preds:
        return always
    if len(preds) == 1:
        return preds[0]
    parts = inlines(preds)
    both = joined(parts, "and") if parts is not None else None
    if len(preds) == 2:
        p1, p2 = preds
        return with_inline(lambda doc: p1(doc) and p2(doc), both)
    if len(preds) == 3:
        p1, p2, p3 = preds
        return with_inline(lambda doc: p1(doc) and p2(doc) and p3(doc), both)
    pp = tuple(preds)

    def pred(doc: _T) -> bool:
        for p in pp:  # noqa: SIM110 - a plain loop beats all() with a generator here
            if not p(doc):
                return False
        return True

    return with_inline(pred, both)


def any_of(preds: Sequence[Predicate]) -> Predicate:
    """A predicate true when at least one of ``preds`` (a non-empty sequence) is."""
    if len(preds) == 1:
        return preds[0]
    parts = inlines(preds)
    both = joined(parts, "or") if parts is not None else None
    if len(preds) == 2:
        p1, p2 = preds
        return with_inline(lambda doc: p1(doc) or p2(doc), both)
    if len(preds) == 3:
        p1, p2, p3 = preds
        return with_inline(lambda doc: p1(doc) or p2(doc) or p3(doc), both)
    pp = tuple(preds)

    def pred(doc: Mapping[str, Any]) -> bool:
        for p in pp:  # noqa: SIM110 - a plain loop beats any() with a generator here
            if p(doc):
                return True
        return False

    return with_inline(pred, both)


def negate(pred: Callable[[_T], bool]) -> Callable[[_T], bool]:
    """The complement of ``pred`` (a document predicate or a test on one value)."""
    return with_inline(lambda doc: not pred(doc), negated(inline_of(pred)))


def equals(c: object, *, ordered: bool) -> Callable[[Any], bool]:
    """The equality test of a filter literal: ``null`` also matches a missing field.

    Otherwise :func:`taskengine._values.equal_to` (``ordered``: embedded documents must
    list their keys in the same order, as in the mongo dialect).
    """
    if c is None:
        return is_null
    test = equal_to(c, ordered=ordered)
    if not inlining():
        return test
    cls = c.__class__
    name = fresh("c")
    if cls is str:
        return with_inline(
            test, Inline(f"({FIRST} == {name} and {ARG}.__class__ is str)", {name: c})
        )
    if (cls is int or cls is float) and c == c:
        k = fresh("k")
        inline = Inline(
            f"((({k} := {FIRST}.__class__) is int or {k} is float) and {ARG} == {name})", {name: c}
        )
        return with_inline(test, inline)
    if cls is bool:
        return with_inline(test, Inline(f"({FIRST} is {name})", {name: c}))
    instant = date_instant(c)
    if instant is not None:
        return with_inline(test, date_compare([("==", instant)], test))
    return test


def is_null(v: Any) -> bool:
    """Whether a yielded value is ``null`` or :data:`MISSING`."""
    return v is None or v is MISSING


with_inline(is_null, Inline(f"({FIRST} is None or {ARG} is _MISSING)", {}))


def fields(spec: Mapping[Any, Any], path: str) -> Iterator[tuple[str, Any, str]]:
    """Each ``(key, value, dotted path)`` of a query document, in order.

    Raises:
        InvalidFilter: a key is not a string.
    """
    for key, value in spec.items():
        where = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str):
            raise InvalidFilter(where, "field names must be strings")
        yield key, value, where


def one_field_literals(arg: object) -> tuple[str, list[Any]] | None:
    """``(field, values)`` when ``arg`` is a list of two or more ``{field: literal}`` with
    the same field and string or (non-NaN) number literals: an ``$or`` of them is a
    ``$in`` of the literals (a set lookup), in both dialects."""
    if not isinstance(arg, list) or len(arg) < 2:
        return None
    field = None
    values = []
    for sub in arg:
        if sub.__class__ is not dict or len(sub) != 1:
            return None
        ((key, value),) = sub.items()
        if key.__class__ is not str or key.startswith("$") or (field is not None and key != field):
            return None
        cls = value.__class__
        if not (cls is str or ((cls is int or cls is float) and value == value)):
            return None
        field = key
        values.append(value)
    assert field is not None
    return field, values


def compile_each(
    arg: object,
    path: str,
    compile_doc: Callable[[Mapping[str, Any], str], Predicate],
    *,
    not_list: str,
    empty: str,
    not_object: str,
) -> list[Predicate]:
    """The predicates of a logical operator's array of query documents.

    Raises:
        InvalidFilter: with the dialect's message ``not_list``, ``empty`` or ``not_object``.
    """
    if arg.__class__ is not list:
        raise InvalidFilter(path, not_list)
    items: list[Any] = arg
    if not items:
        raise InvalidFilter(path, empty)
    preds = []
    for i, sub in enumerate(items):
        where = f"{path}.{i}"
        if not isinstance(sub, Mapping):
            raise InvalidFilter(where, not_object)
        preds.append(compile_doc(sub, where))
    return preds

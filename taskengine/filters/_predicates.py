"""Compiled document predicates, shared by the filter dialects: combinators and ``MISSING``.

Each combinator returns a plain function; the common small arities are unrolled so that
an ``$and`` of two or three conditions costs no loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeVar

from taskengine._values import equal_to
from taskengine.errors import InvalidFilter

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
]

Predicate = Callable[[Mapping[str, Any]], bool]

_T = TypeVar("_T")


class _Missing:
    """The value a path yields where a field does not exist (BSON EOO)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""What a compiled path yields for a field a document does not have."""


def always(doc: Any) -> bool:
    """The predicate of an empty filter: matches every document."""
    return True


def all_of(preds: Sequence[Callable[[_T], bool]]) -> Callable[[_T], bool]:
    """A predicate true when every one of ``preds`` is (``always`` when there are none).

    Also combines tests on one value (or one array) the same way.
    """
    if not preds:
        return always
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        p1, p2 = preds
        return lambda doc: p1(doc) and p2(doc)
    if len(preds) == 3:
        p1, p2, p3 = preds
        return lambda doc: p1(doc) and p2(doc) and p3(doc)
    pp = tuple(preds)

    def pred(doc: _T) -> bool:
        for p in pp:  # noqa: SIM110 - a plain loop beats all() with a generator here
            if not p(doc):
                return False
        return True

    return pred


def any_of(preds: Sequence[Predicate]) -> Predicate:
    """A predicate true when at least one of ``preds`` (a non-empty sequence) is."""
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        p1, p2 = preds
        return lambda doc: p1(doc) or p2(doc)
    if len(preds) == 3:
        p1, p2, p3 = preds
        return lambda doc: p1(doc) or p2(doc) or p3(doc)
    pp = tuple(preds)

    def pred(doc: Mapping[str, Any]) -> bool:
        for p in pp:  # noqa: SIM110 - a plain loop beats any() with a generator here
            if p(doc):
                return True
        return False

    return pred


def equals(c: object, *, ordered: bool) -> Callable[[Any], bool]:
    """The equality test of a filter literal: ``null`` also matches a missing field.

    Otherwise :func:`taskengine._values.equal_to` (``ordered``: embedded documents must
    list their keys in the same order, as in the mongo dialect).
    """
    if c is None:
        return is_null
    return equal_to(c, ordered=ordered)


def is_null(v: Any) -> bool:
    """Whether a yielded value is ``null`` or :data:`MISSING`."""
    return v is None or v is MISSING


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

"""Compiled document predicates, shared by the filter dialects: combinators and ``MISSING``.

Each combinator returns a plain function; the common small arities are unrolled so that
an ``$and`` of two or three conditions costs no loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

__all__ = ["MISSING", "Predicate", "all_of", "always", "any_of"]

Predicate = Callable[[Mapping[str, Any]], bool]


class _Missing:
    """The value a path yields where a field does not exist (BSON EOO)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""What a compiled path yields for a field a document does not have."""


def always(doc: Mapping[str, Any]) -> bool:
    """The predicate of an empty filter: matches every document."""
    return True


def all_of(preds: Sequence[Predicate]) -> Predicate:
    """A predicate true when every one of ``preds`` is (``always`` when there are none)."""
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

    def pred(doc: Mapping[str, Any]) -> bool:
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

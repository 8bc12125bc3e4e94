"""Combinators for compiled document predicates, shared by the filter dialects.

Each returns a plain function; the common small arities are unrolled so that an ``$and``
of two or three conditions costs no loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["Predicate", "all_of", "always", "any_of"]

Predicate = Callable[[Mapping[str, Any]], bool]


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

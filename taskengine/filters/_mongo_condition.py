"""Compiled conditions of the ``mongo`` dialect: what one operator asks of one path.

A :class:`Cond` is a single-value test (or the negation of other conditions) that can
be turned into a test on one value, on a top-level array, or into the predicate of a
whole path. Conditions that the common filter shapes reduce to also carry a *fast*
descriptor (``("eq", c)``, ``("in", strs, nums)``, ``("prefix", s)``,
``("regex", search)``, ``("cmp", op, bound)``, ``("elem", sub)``), from which
:mod:`taskengine.filters._mongo_fields` builds inlined top-level closures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from taskengine.filters._inline import some_element
from taskengine.filters._mongo_element import Test, regex_test
from taskengine.filters._mongo_paths import make_walker
from taskengine.filters._predicates import Predicate, all_of, negate

__all__ = ["Cond", "eq_fast", "in_fast", "regex_cond"]


class Cond:
    """One compiled condition on a path: a single-value test, or a negation.

    ``scalar(v)`` is the whole condition on one value (``matchesSingleElement``);
    ``for_path(parts)`` is the document predicate for the path.
    """

    __slots__ = ("children", "expand", "fast", "kind", "test")

    def __init__(
        self,
        kind: str,
        test: Test | None = None,
        expand: bool = True,
        children: Sequence[Cond] = (),
        fast: tuple[Any, ...] | None = None,
    ) -> None:
        self.kind = kind  # "test" | "not"
        self.test = test
        self.expand = expand
        self.children = tuple(children)
        self.fast = fast  # what the test is, for the specialised top-level closures

    def scalar(self) -> Test:
        if self.kind == "test":
            assert self.test is not None
            return self.test
        return negate(all_of([c.scalar() for c in self.children]))

    def for_array(self) -> Callable[[list[Any]], bool]:
        """The condition when a one-component path holds an array ``arr``."""
        if self.kind == "test":
            t = self.test
            assert t is not None
            if self.expand:
                return some_element(t, whole=True)
            return t
        return negate(all_of([c.for_array() for c in self.children]))

    def for_path(self, parts: tuple[str, ...]) -> Predicate:
        if self.kind == "test":
            assert self.test is not None
            return make_walker(parts, self.test, self.expand)
        return negate(all_of([c.for_path(parts) for c in self.children]))


def eq_fast(c: object) -> tuple[Any, ...] | None:
    """``("eq", c)`` when ``c`` is a string, null or a non-NaN number."""
    cls = c.__class__
    if cls is str or c is None or ((cls is int or cls is float) and c == c):
        return ("eq", c)
    return None


_REGEX_SPECIAL: Final = frozenset("\\.^$*+?{}[]|()")


def regex_cond(rx: re.Pattern[str]) -> Cond:
    """A regex condition; a plain ``^literal`` pattern becomes a ``startswith``."""
    source = rx.pattern
    fast: tuple[Any, ...] = ("regex", rx.search)
    if (
        rx.flags & ~re.UNICODE == 0
        and source.startswith("^")
        and not any(ch in _REGEX_SPECIAL for ch in source[1:])
    ):
        fast = ("prefix", source[1:])
    return Cond("test", regex_test(rx), fast=fast)


def in_fast(values: Sequence[object]) -> tuple[Any, ...] | None:
    """``("in", strs, nums)`` when every value is a string or a non-NaN number."""
    strs = frozenset(v for v in values if v.__class__ is str)
    nums = frozenset(v for v in values if v.__class__ in (int, float) and v == v)
    if len(strs) + len(nums) != len(set(map(_in_key, values))):
        return None
    return ("in", strs, nums)


def _in_key(v: object) -> object:
    cls = v.__class__
    if cls is str or ((cls is int or cls is float) and v == v):
        return (cls is str, v)
    return ("other", id(v))

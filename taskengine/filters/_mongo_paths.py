"""Path traversal for the ``mongo`` dialect: a dotted path over embedded documents and arrays.

A path yields a sequence of values (MongoDB's ``ElementIterator``): a missing field
yields one *missing* marker; an array met before the path ends is traversed (each
subdocument element continues the path; a numeric component also selects the element
at that index, and a nested array is entered only that way); an array at the end of
the path yields its elements and then the array itself, unless the test asks for the
whole array only (``expand=False``). :func:`make_walker` never materialises the
sequence: it stops at the first value that passes the test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskengine._values import is_date_wrapper
from taskengine.filters._mongo_element import Test
from taskengine.filters._predicates import MISSING, Predicate

__all__ = ["make_walker"]


def _is_index(part: str) -> int:
    """The array index a path component selects, or -1 (MongoDB: all ASCII digits)."""
    if part and part.isascii() and part.isdigit():
        return int(part)
    return -1


def make_walker(parts: tuple[str, ...], test: Test, expand: bool) -> Predicate:
    """``doc -> any(test(v) for v in values yielded by the path)``, short-circuiting."""
    n = len(parts)
    index = tuple(_is_index(p) for p in parts)
    # an index component only matches the element whose decimal name equals it
    index = tuple(
        i if i >= 0 and str(i) == p else (-2 if i >= 0 else -1)
        for i, p in zip(index, parts, strict=True)
    )

    def walk_obj(obj: Any, i: int) -> bool:
        # getFieldDottedOrArray, from component i of a document
        while True:
            v = obj.get(parts[i], MISSING)
            k = v.__class__
            if k is dict and not (len(v) == 1 and is_date_wrapper(v)):
                i += 1
                if i == n:
                    return test(v)
                obj = v
                continue
            if k is list:
                return walk_arr(v, i + 1)
            if v is MISSING or i + 1 == n:
                return test(v)
            return test(MISSING)

    def walk_arr(arr: list[Any], j: int) -> bool:
        if j == n:
            if expand:
                for e in arr:
                    if test(e):
                        return True
            return test(arr)
        idx = index[j]
        last = j + 1 == n
        for pos, e in enumerate(arr):
            k = e.__class__
            if k is dict and not (len(e) == 1 and is_date_wrapper(e)):
                if walk_obj(e, j):
                    return True
                if pos == idx:
                    if last:
                        if test(e):
                            return True
                    elif walk_obj(e, j + 1):
                        return True
            elif pos == idx:
                if last:
                    if test(e):
                        return True
                elif k is list and walk_arr(e, j + 1):
                    return True
        return False

    def walker(doc: Mapping[str, Any]) -> bool:
        try:
            return walk_obj(doc, 0)
        except RecursionError:  # absurdly deep documents: treat as no match
            return False

    return walker

"""The conformance suite's parts: a check, its failure, its registry and shared helpers.

A check is a plain function ``check(storage) -> None`` that raises
:class:`ConformanceError` (an ``AssertionError``) saying which rule of the ``Storage``
contract (taskengine/storage/base.py) the adapter broke. The checks themselves live in
``_collection_checks``, ``_item_checks`` and ``_atomic_checks``; each registers with
:func:`register`, and ``taskengine.testing`` lists them in that order as ``CHECKS``.
Nothing here imports pytest or hypothesis.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from taskengine.storage.base import CollectionInfo, Count, Environment, Page, Storage, WriteResult

__all__ = [
    "PLUS_0530",
    "REGISTRY",
    "Check",
    "CheckFailure",
    "ConformanceError",
    "StorageFactory",
    "all_items",
    "close_storage",
    "expect",
    "expect_raises",
    "get_item",
    "ids_of",
    "materialise",
    "register",
    "same_value",
]

StorageFactory = Callable[[], Storage]
"""Makes a fresh, empty storage."""

PLUS_0530 = timezone(timedelta(hours=5, minutes=30))
"""A non-UTC offset, to check that aware dates keep theirs."""


class ConformanceError(AssertionError):
    """A storage adapter broke a rule of the ``Storage`` contract."""


@attrs.frozen
class Check:
    """One named rule of the contract and the function that checks it on a fresh storage."""

    name: str
    run: Callable[[Storage], None] = attrs.field(repr=False)

    @property
    def description(self) -> str:
        """The rule, in words (the check function's docstring)."""
        return (self.run.__doc__ or self.name).strip()


@attrs.frozen
class CheckFailure:
    """A check that failed on an adapter: its name and the error it raised."""

    name: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.name}: {type(self.error).__name__}: {self.error}"


REGISTRY: list[Check] = []
"""Every registered check, in registration order (see ``taskengine.testing.CHECKS``)."""


def register(fn: Callable[[Storage], None]) -> Callable[[Storage], None]:
    """Add ``fn`` to :data:`REGISTRY` as a check named after it (``check_`` removed)."""
    REGISTRY.append(Check(fn.__name__.removeprefix("check_"), fn))
    return fn


# -- helpers -----------------------------------------------------------------------------


def expect(condition: bool, message: str) -> None:
    """Raise :class:`ConformanceError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConformanceError(message)


def expect_raises(expected: type[BaseException], what: str, call: Callable[[], object]) -> None:
    """Require ``call()`` to raise ``expected``; ``what`` names the call in the failure."""
    try:
        call()
    except expected:
        return
    except Exception as exc:
        raise ConformanceError(
            f"{what}: expected {expected.__name__}, got {type(exc).__name__}: {exc}"
        ) from exc
    raise ConformanceError(f"{what}: expected {expected.__name__}, nothing was raised")


def same_value(a: object, b: object) -> bool:
    """Strict equality for stored values: same types, key order, ``-0.0``, date forms.

    ``True`` is not ``1``, ``1`` is not ``1.0``, ``-0.0`` is not ``0.0``, a naive
    ``datetime`` is not an aware one and aware ones must share their UTC offset.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, datetime):
        assert isinstance(b, datetime)
        return (
            a == b and a.utcoffset() == b.utcoffset() and (a.tzinfo is None) == (b.tzinfo is None)
        )
    return a == b


def all_items(storage: Storage, collection: str, env: Environment | str = "LIVE") -> list[Any]:
    """Every item by paging through scan with a small page, checking the paging rules."""
    items: list[Any] = []
    after: str | None = None
    for _ in range(100_000):
        page = storage.scan(collection, env, after=after, limit=7)
        expect(isinstance(page, Page), f"scan must return a Page, got {type(page).__name__}")
        expect(len(page.items) <= 7, f"scan(limit=7) returned {len(page.items)} items")
        items.extend(page.items)
        if page.cursor is None:
            return items
        expect(
            after is None or page.cursor > after,
            f"scan cursor did not advance: after={after!r}, cursor={page.cursor!r}",
        )
        after = page.cursor
    raise ConformanceError("scan never returned cursor=None")


def ids_of(items: list[Any]) -> list[str]:
    """The ``_id`` of each item, in order."""
    return [item["_id"] for item in items]


def get_item(storage: Storage, collection: str, item_id: str, env: str = "LIVE") -> Any:
    """``storage.get_item`` with the environment defaulting to ``LIVE``."""
    return storage.get_item(collection, env, item_id)


def close_storage(storage: object) -> None:
    """Call ``storage.close()`` when it has one."""
    close = getattr(storage, "close", None)
    if callable(close):
        close()


def materialise(value: Any) -> Any:
    """Plain values for comparison: attrs records become lists of their fields."""
    if isinstance(value, (Page, Count, WriteResult, CollectionInfo)):
        return [materialise(field) for field in attrs.astuple(value, recurse=False)]
    if isinstance(value, tuple):
        return [materialise(v) for v in value]
    if isinstance(value, list):
        return [materialise(v) for v in value]
    return value

"""The memory storage's state: its item sets, their published views, and atomic blocks.

:class:`ItemSets` is the base of :class:`~taskengine.storage.memory.MemoryStorage` that
owns where items live and who sees which writes: the collections and their item sets
(:class:`~taskengine.storage._chunks.ChunkedItems`, or
:class:`~taskengine.storage._memschedule.ScheduledItems` for publish-plugin collections),
one ``RLock`` that every write holds, and :meth:`ItemSets.atomic`.

Isolation and rollback: a write outside a block publishes the item set's new state at
once; inside a block, it records what it overwrote in the undo log (references, no
copies) and the block publishes every item set it touched when the outermost level ends.
Readers take no lock: they read the published view (:meth:`ItemSets._view`), except the
thread inside a block, which reads its own writes. An exception undoes the writes of
the level it leaves, newest first (an inner level as a savepoint).
"""

from __future__ import annotations

import contextlib
import threading
from itertools import chain
from typing import Any

from taskengine.errors import CollectionNotFound, SandboxNotEnabled
from taskengine.storage._chunks import ChunkedItems, ChunkView
from taskengine.storage._frozen import freeze_item, thaw_item
from taskengine.storage._memschedule import ScheduledItems
from taskengine.storage.base import CollectionInfo, Environment
from taskengine.storage.codec import plan_of

__all__ = ["Collection", "ItemSets"]


class Collection:
    """One collection: its description and its item sets (``sandbox`` is ``None`` when
    the collection has no sandbox)."""

    __slots__ = ("info", "live", "sandbox")

    def __init__(self, info: CollectionInfo) -> None:
        self.info = info
        # Only publish-plugin collections index their scheduled dates (ScheduleIndex).
        kind = ScheduledItems if info.publish_plugin else ChunkedItems
        self.live = kind()
        self.sandbox = kind() if info.sandbox_enabled else None


class ItemSets:
    """The collections of a memory storage, their item sets, lock and atomic blocks."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._collections: dict[str, Collection] = {}
        # The undo log of the outermost atomic() block, None outside one. Each record is
        # (item set, {_id: prior entry or None}) or (None, {name: prior collection or
        # None}); entries and collections are replaced, never changed in place, so a
        # record holds references, not copies.
        self._undo: list[tuple[ChunkedItems | None, dict[str, Any]]] | None = None
        # The thread inside an atomic() block (it reads its own writes), None outside.
        self._owner: int | None = None

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """A block of writes that commits together or not at all (see :meth:`Storage.atomic`).

        Holds the storage lock throughout, so other threads see the block whole or not at
        all. Every write inside records what it overwrites (a reference per item, no
        copy); an exception undoes the writes of the block it leaves, in reverse order.
        Nested blocks behave as ``SQLiteStorage``'s savepoints: a failing inner block
        whose exception is caught undoes only its own writes; the outermost block undoes
        everything. Outside a block, writes keep no log.
        """
        return _Atomic(self)

    def _undo_to(self, mark: int) -> None:
        """Undo the records after the first ``mark`` of the log (lock held), newest first."""
        log = self._undo
        assert log is not None
        while len(log) > mark:
            target, prior = log.pop()
            if target is None:
                for name, coll in prior.items():
                    if coll is None:
                        self._collections.pop(name, None)
                    else:
                        self._collections[name] = coll
                continue
            target.write(prior)

    def _check(self) -> None:
        """Assert the invariants of every item set.

        The chunks are sorted, non-empty and within size (``ChunkedItems.check``);
        every frozen item thaws to its ``_id``,
        to fresh containers each time, and freezes back to itself.
        """
        with self._lock:
            for name, coll in self._collections.items():
                assert coll.info.name == name
                assert (coll.sandbox is not None) == coll.info.sandbox_enabled
                for items in (coll.live, coll.sandbox):
                    if items is None:
                        continue
                    items.check()
                    if isinstance(items, ScheduledItems):
                        items.check_schedule()
                    if self._undo is None:  # outside a block, readers see every write
                        view = items.published
                        assert list(chain.from_iterable(view.keys)) == list(items.ids())
                        assert list(chain.from_iterable(view.vals)) == list(
                            chain.from_iterable(items.snapshot())
                        )
                        assert view.size == len(items)
                    for item_id, frozen in zip(
                        items.ids(), chain.from_iterable(items.snapshot()), strict=True
                    ):
                        doc = thaw_item(frozen)
                        assert doc["_id"] == item_id
                        assert _private(thaw_item(frozen), doc)
                        assert freeze_item(doc, plan_of(doc)) == frozen

    def _written(self, target: ChunkedItems, prior: dict[str, Any]) -> None:
        """After a write (lock held): log it inside a block, else publish it now."""
        if self._undo is None:
            target.publish()
        else:
            self._undo.append((target, prior))

    def _view(self, collection: str, environment: Environment | str) -> ChunkView:
        """What a read sees, without the lock: the published view of the item set, or
        for the thread inside an atomic() block, the current state (its own writes)."""
        items = self._items(collection, environment)
        if self._owner == threading.get_ident():
            return items.live()
        return items.published

    def _touched(self) -> list[ChunkedItems]:
        """The item sets the writes in the undo log changed (lock held, inside a block).

        A write undone by an inner block is no longer in the log: its item set holds
        what was published before (the same items, perhaps chunked differently).
        """
        assert self._undo is not None
        touched = {id(target): target for target, _ in self._undo if target is not None}
        return list(touched.values())

    def _collection(self, name: str) -> Collection:
        try:
            return self._collections[name]
        except (KeyError, TypeError):
            raise CollectionNotFound(name) from None

    def _items(self, collection: str, environment: Environment | str) -> ChunkedItems:
        env = Environment.coerce(environment)
        coll = self._collection(collection)
        if env is Environment.LIVE:
            return coll.live
        if coll.sandbox is None:
            raise SandboxNotEnabled(collection)
        return coll.sandbox


class _Atomic:
    """One level of :meth:`ItemSets.atomic`: the lock, and a mark in the undo log."""

    __slots__ = ("_mark", "_storage")

    def __init__(self, storage: ItemSets) -> None:
        self._storage = storage
        self._mark = -1  # -1: the outermost level, which owns the log

    def __enter__(self) -> None:
        storage = self._storage
        storage._lock.acquire()
        if storage._undo is None:
            storage._undo = []
            storage._owner = threading.get_ident()
        else:
            self._mark = len(storage._undo)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        storage = self._storage
        touched = storage._touched() if self._mark < 0 else []
        try:
            if exc_type is not None:
                storage._undo_to(max(self._mark, 0))
        finally:
            try:
                for target in touched:  # the outermost block ends: readers see it now
                    target.publish()
            finally:
                if self._mark < 0:
                    storage._undo = None
                    storage._owner = None
                storage._lock.release()


def _private(copy: Any, original: Any) -> bool:
    """Whether ``copy`` equals ``original`` and shares no dict or list with it."""
    if type(original) is dict:
        return (
            type(copy) is dict
            and copy is not original
            and copy.keys() == original.keys()
            and all(_private(copy[key], value) for key, value in original.items())
        )
    if type(original) is list:
        return (
            type(copy) is list
            and copy is not original
            and len(copy) == len(original)
            and all(map(_private, copy, original))
        )
    return copy is original

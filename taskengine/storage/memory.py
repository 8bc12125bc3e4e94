"""``MemoryStorage``: the default adapter, items in dicts ordered by a ``SortedList``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from taskengine.errors import (
    CollectionExists,
    CollectionNotFound,
    DuplicateItem,
    SandboxNotEnabled,
)
from taskengine.storage._codec import admit, copy_item, lookup_id
from taskengine.storage.base import (
    CollectionInfo,
    Count,
    Environment,
    Item,
    ItemFilter,
    Page,
    Storage,
    WriteResult,
    check_after,
    check_limit,
    check_name,
)

__all__ = ["MemoryStorage"]


class _ItemSet:
    """The items of one collection in one environment."""

    __slots__ = ("docs", "ids")

    def __init__(self) -> None:
        self.docs: dict[str, Item] = {}
        self.ids = SortedList()


class _Collection:
    __slots__ = ("info", "live", "sandbox")

    def __init__(self, info: CollectionInfo) -> None:
        self.info = info
        self.live = _ItemSet()
        self.sandbox = _ItemSet() if info.sandbox_enabled else None


class MemoryStorage(Storage):
    """Items in process memory: thread-safe, private copies in and out.

    Each item set is a ``dict`` (``_id`` -> item) plus a ``SortedList`` of the ids.
    Costs, for n items in the set and a page of k: ``scan`` O(log n + k), ``get_item``
    O(1), inserting, replacing or deleting k items O(k log n). Every call holds one
    ``RLock``, so :meth:`atomic` is that lock: it isolates a block of writes from other
    threads but cannot roll them back.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._collections: dict[str, _Collection] = {}

    def create_collection(
        self, name: str, *, sandbox: bool = False, publish_plugin: bool = False
    ) -> CollectionInfo:
        """Create an empty collection (see :meth:`Storage.create_collection`)."""
        info = CollectionInfo(check_name(name), bool(sandbox), bool(publish_plugin))
        with self._lock:
            if info.name in self._collections:
                raise CollectionExists(info.name)
            self._collections[info.name] = _Collection(info)
        return info

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe a collection (see :meth:`Storage.collection_info`)."""
        with self._lock:
            return self._collection(name).info

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection, sorted by name."""
        with self._lock:
            return [self._collections[name].info for name in sorted(self._collections)]

    def drop_collection(self, name: str) -> None:
        """Delete a collection and its items (see :meth:`Storage.drop_collection`)."""
        with self._lock:
            self._collection(name)
            del self._collections[name]

    def scan(
        self,
        collection: str,
        environment: Environment | str,
        *,
        after: str | None = None,
        limit: int = 1000,
        filter: ItemFilter | None = None,
    ) -> Page:
        """A page in ``_id`` order (see :meth:`Storage.scan`).

        Looks at ``limit`` stored items at most; with a filter, only the accepted ones
        are copied and returned.
        """
        check_limit(limit)
        check_after(after)
        with self._lock:
            items = self._items(collection, environment)
            ids = items.ids
            start = 0 if after is None else ids.bisect_right(after)
            stop = min(start + limit, len(ids))
            docs = items.docs
            keys = ids.islice(start, stop)
            if filter is None:
                page = [copy_item(docs[key]) for key in keys]
            else:
                page = [copy_item(doc) for doc in map(docs.__getitem__, keys) if filter(doc)]
            cursor = ids[stop - 1] if stop < len(ids) else None
        return Page(page, cursor)

    def count(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Count:
        """The exact number of items (that ``filter`` accepts)."""
        with self._lock:
            docs = self._items(collection, environment).docs
            if filter is None:
                return Count(len(docs), exact=True)
            return Count(sum(1 for doc in docs.values() if filter(doc)), exact=True)

    def insert_items(
        self, collection: str, environment: Environment | str, items: Iterable[Mapping[str, Any]]
    ) -> int:
        """Insert new items, all or nothing (see :meth:`Storage.insert_items`)."""
        admitted = [admit(item) for item in items]
        with self._lock:
            target = self._items(collection, environment)
            seen: set[str] = set()
            for item_id, _ in admitted:
                if item_id in target.docs or item_id in seen:
                    raise DuplicateItem(collection, item_id)
                seen.add(item_id)
            for item_id, doc in admitted:
                target.docs[item_id] = doc
            target.ids.update(seen)
        return len(admitted)

    def get_item(
        self, collection: str, environment: Environment | str, item_id: str
    ) -> Item | None:
        """A fresh copy of the item with this ``_id``, or ``None``."""
        with self._lock:
            docs = self._items(collection, environment).docs
            key = lookup_id(item_id)
            doc = None if key is None else docs.get(key)
            return None if doc is None else copy_item(doc)

    def find(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Iterator[Item]:
        """Every accepted item in ``_id`` order (see :meth:`Storage.find`)."""
        with self._lock:
            self._items(collection, environment)
        return self._find(collection, environment, filter)

    def _find(
        self, collection: str, environment: Environment | str, filter: ItemFilter | None
    ) -> Iterator[Item]:
        after: str | None = None
        while True:
            page = self.scan(collection, environment, after=after, filter=filter)
            yield from page.items
            if page.cursor is None:
                return
            after = page.cursor

    def replace_items(
        self,
        collection: str,
        environment: Environment | str,
        items: Sequence[Mapping[str, Any]],
    ) -> WriteResult:
        """Overwrite stored items by ``_id`` (see :meth:`Storage.replace_items`)."""
        admitted = [admit(item) for item in items]
        done: dict[str, None] = {}
        missing: dict[str, None] = {}
        with self._lock:
            docs = self._items(collection, environment).docs
            for item_id, doc in admitted:
                if item_id in docs:
                    docs[item_id] = doc
                    done[item_id] = None
                else:
                    missing[item_id] = None
        return WriteResult(tuple(done), tuple(missing))

    def delete_items(
        self, collection: str, environment: Environment | str, ids: Sequence[str]
    ) -> WriteResult:
        """Delete items by ``_id`` (see :meth:`Storage.delete_items`)."""
        wanted = {item_id: lookup_id(item_id) for item_id in ids}
        done: list[str] = []
        missing: list[str] = []
        with self._lock:
            target = self._items(collection, environment)
            for item_id, key in wanted.items():
                if key is None or target.docs.pop(key, None) is None:
                    missing.append(item_id)
                else:
                    done.append(item_id)
            if len(done) > len(target.ids) // 8:
                # Rebuilding is O(n) but beats len(done) separate O(log n) removals
                # once a batch is a sizeable part of the set.
                target.ids = SortedList(target.docs)
            else:
                for item_id in done:
                    target.ids.remove(item_id)
        return WriteResult(tuple(done), tuple(missing))

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Hold the storage lock for a block of writes (isolation only, no rollback)."""
        return _held(self._lock)

    def _check(self) -> None:
        """Assert the invariants: per item set, the sorted ids are exactly the dict keys."""
        with self._lock:
            for name, coll in self._collections.items():
                assert coll.info.name == name
                assert (coll.sandbox is not None) == coll.info.sandbox_enabled
                for items in (coll.live, coll.sandbox):
                    if items is None:
                        continue
                    assert list(items.ids) == sorted(items.docs)
                    assert len(items.ids) == len(items.docs)
                    items.ids._check()
                    for item_id, doc in items.docs.items():
                        assert doc["_id"] == item_id

    def _collection(self, name: str) -> _Collection:
        try:
            return self._collections[name]
        except (KeyError, TypeError):
            raise CollectionNotFound(name) from None

    def _items(self, collection: str, environment: Environment | str) -> _ItemSet:
        env = Environment.coerce(environment)
        coll = self._collection(collection)
        if env is Environment.LIVE:
            return coll.live
        if coll.sandbox is None:
            raise SandboxNotEnabled(collection)
        return coll.sandbox


@contextlib.contextmanager
def _held(lock: threading.RLock) -> Iterator[None]:
    with lock:
        yield

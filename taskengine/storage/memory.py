"""``MemoryStorage``: the default adapter, items frozen into untracked tuples, in sorted chunks.

The storage protocol's reads, writes and set-based batches over the state that
:class:`~taskengine.storage._itemsets.ItemSets` (its base) owns: the collections, the
lock, atomic blocks and the published views readers see.
"""

from __future__ import annotations

import gc
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from taskengine.errors import (
    CollectionExists,
    DuplicateItem,
)
from taskengine.storage._chunks import ChunkView
from taskengine.storage._estimate import EXACT_UP_TO, SAMPLE
from taskengine.storage._frozen import Frozen, freeze_item, thawers
from taskengine.storage._itemsets import Collection, ItemSets
from taskengine.storage._memchange import change_frozen, entry, matching
from taskengine.storage._memfilter import accepted, frozen_tests
from taskengine.storage._memschedule import ScheduledItems
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
from taskengine.storage.changes import (
    ChangeResult,
    ChangingStorage,
    ItemChange,
    keep_only_if_unchanged,
)
from taskengine.storage.codec import Plan, check_planned, lookup_id
from taskengine.storage.schedule import MIN_KEY, key_date, now_key

__all__ = ["MemoryStorage"]

_STR_ONLY = {str}


class MemoryStorage(ItemSets, Storage, ChangingStorage):
    """Items in process memory: thread-safe, private copies in and out.

    Each item set is a :class:`~taskengine.storage._chunks.ChunkedItems`: the ids and the
    items in frozen form, in sorted chunks of immutable tuples. Frozen items are tuples of
    immutable values that CPython's cyclic garbage collector stops tracking soon after
    they are made (:mod:`taskengine.storage._frozen`), so a store of millions of items
    adds almost nothing to the collector's work and large tasks cost the same per item
    as small ones; the process's GC settings are left alone. An item is thawed into
    fresh dicts and lists when read.

    Costs, for n items in the set and a page of k: ``scan`` and ``get_item``
    O(log n + k), inserting, replacing or deleting k items O(k log n) plus O(512) per
    chunk touched (ids in order mostly share a chunk). Every write holds one
    ``RLock`` while it swaps frozen items in (copies are made outside it) and then
    publishes the new state; reads take no lock at all, so readers never wait behind a
    long batch: they see the published state (see :meth:`scan`). :meth:`atomic` holds
    the lock for the whole block, publishes its writes when it ends (isolation) and
    keeps an undo log (rollback), so ``atomic_rolls_back`` is true.

    It runs a task's batch itself (:meth:`change_matching`), on the frozen items, with no
    page of copies in between.
    """

    atomic_rolls_back = True
    scan_filters_exactly = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that overrides :meth:`scan`, :meth:`replace_items` or
        :meth:`delete_items` and not :meth:`change_matching` loses the capability
        (``change_matching = None``, as :class:`ChangingStorage` asks), so the engine
        runs its batches through the methods it overrides."""
        super().__init_subclass__(**kwargs)
        keep_only_if_unchanged(cls, MemoryStorage)

    def create_collection(
        self, name: str, *, sandbox: bool = False, publish_plugin: bool = False
    ) -> CollectionInfo:
        """Create an empty collection (see :meth:`Storage.create_collection`)."""
        info = CollectionInfo(check_name(name), bool(sandbox), bool(publish_plugin))
        with self._lock:
            if info.name in self._collections:
                raise CollectionExists(info.name)
            if self._undo is not None:
                self._undo.append((None, {info.name: None}))
            self._collections[info.name] = Collection(info)
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
            dropped = self._collection(name)
            if self._undo is not None:
                self._undo.append((None, {name: dropped}))
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

        Looks at ``limit`` stored items at most (and one more id, to know whether more
        are left); with a filter, only the accepted ones are returned.
        The cursor is the last item looked at, as in ``SQLiteStorage``. Reads take no lock:
        they use the item set's published view (the state after the last write outside
        a block, or the last committed block), whose chunks are immutable; the thread
        inside an atomic() block reads its own writes. Items are thawed and filtered
        after the page is picked.
        """
        check_limit(limit)
        check_after(after)
        frozen, cursor = self._view(collection, environment).page(after, limit)
        return Page(_thaw_all(frozen, filter), cursor)

    def count(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Count:
        """The exact number of items (that ``filter`` accepts).

        Counts the items of one moment (a published view, see :meth:`scan`) without the
        lock, so a long count never blocks other threads' reads and writes.
        """
        view = self._view(collection, environment)
        if filter is None:
            return Count(view.size, exact=True)
        return Count(sum(len(accepted(chunk, filter)) for chunk in view.snapshot()), exact=True)

    def estimate_count(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Count:
        """How many items ``filter`` accepts, for a task's estimate: exact up to 50,000
        items, else estimated from 4,096 items taken at even steps through the ``_id``
        order (``exact=False``), as the SQL adapters do (:mod:`taskengine.storage._estimate`)."""
        view = self._view(collection, environment)
        if filter is None or view.size <= EXACT_UP_TO:
            return self.count(collection, environment, filter)
        total = view.size
        step = total / SAMPLE
        wanted, start = step / 2, 0  # the next sampled position; the chunk's first one
        sample: list[Frozen] = []
        for chunk in view.snapshot():
            end = start + len(chunk)
            while wanted < end:
                sample.append(chunk[int(wanted) - start])
                wanted += step
            start = end
        hits = len(accepted(sample, filter))
        return Count(round(total * hits / max(len(sample), 1)), exact=False)

    def insert_items(
        self, collection: str, environment: Environment | str, items: Iterable[Mapping[str, Any]]
    ) -> int:
        """Insert new items, all or nothing (see :meth:`Storage.insert_items`)."""
        admitted = [entry(item) for item in items]
        with self._lock:
            target = self._items(collection, environment)
            batch = dict(admitted)
            get = target.get
            if len(batch) < len(admitted) or any(get(item_id) is not None for item_id in batch):
                seen: set[str] = set()
                for item_id, _ in admitted:
                    if get(item_id) is not None or item_id in seen:
                        raise DuplicateItem(collection, item_id)
                    seen.add(item_id)
            target.write(batch)
            self._written(target, dict.fromkeys(batch))
        return len(admitted)

    def get_item(
        self, collection: str, environment: Environment | str, item_id: str
    ) -> Item | None:
        """A fresh copy of the item with this ``_id``, or ``None``."""
        view = self._view(collection, environment)
        key = lookup_id(item_id)
        frozen = None if key is None else view.get(key)
        return None if frozen is None else thawers[frozen[0]](frozen)

    def find(
        self,
        collection: str,
        environment: Environment | str,
        filter: ItemFilter | None = None,
    ) -> Iterator[Item]:
        """Every accepted item in ``_id`` order (see :meth:`Storage.find`)."""
        self._items(collection, environment)  # errors now, not at the first next()
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
        """Overwrite stored items by ``_id`` (see :meth:`Storage.replace_items`).

        Every item is checked and frozen first, without the lock (nothing is written if
        one is refused); the lock is held only to swap the frozen items in.
        """
        if type(items) is not list:
            items = list(items)  # read twice below, so any iterable works
        checked = list(map(check_planned, items))
        if None in checked:  # something to normalise or refuse: the general way
            admitted = list(map(entry, items))
        else:
            pairs = cast("list[tuple[str, Plan]]", checked)
            admitted = [
                (pair[0], freeze_item(doc, pair[1])) for doc, pair in zip(items, pairs, strict=True)
            ]
        batch = dict(admitted)  # a repeated id: the last one wins
        with self._lock:
            target = self._items(collection, environment)
            prior = target.replace(batch)
            self._written(target, prior)
            _young(len(prior))
        done = [item_id for item_id in batch if item_id in prior]
        if len(done) == len(batch):
            return WriteResult(tuple(done), ())
        return WriteResult(tuple(done), tuple(item_id for item_id in batch if item_id not in prior))

    def delete_items(
        self, collection: str, environment: Environment | str, ids: Sequence[str]
    ) -> WriteResult:
        """Delete items by ``_id`` (see :meth:`Storage.delete_items`)."""
        if type(ids) is not list and type(ids) is not tuple:
            ids = list(ids)  # read twice below, so any iterable works
        if not set(map(type, ids)) <= _STR_ONLY:  # every id exactly a str (checked in C)
            for item_id in ids:
                lookup_id(item_id)  # raises on the first one that is not
        wanted = dict.fromkeys(ids)  # each id once, in order
        done: list[str] = []
        missing: list[str] = []
        with self._lock:
            target = self._items(collection, environment)
            get = target.get
            prior: dict[str, Any] = {}
            for item_id in wanted:
                # An empty or unencodable id is never stored, so it is simply missing.
                entry = get(item_id)
                if entry is None:
                    missing.append(item_id)
                else:
                    done.append(item_id)
                    prior[item_id] = entry
            target.write(dict.fromkeys(done))
            self._written(target, prior)
        return WriteResult(tuple(done), tuple(missing))

    def change_matching(
        self,
        collection: str,
        environment: Environment | str,
        *,
        after: str | None,
        limit: int,
        filter: ItemFilter | None,
        change: ItemChange,
        until: str | None = None,
    ) -> ChangeResult:
        """Apply ``change`` to the next batch (see :meth:`ChangingStorage.change_matching`).

        The batch is the page :meth:`scan` would give (``limit`` stored items after
        ``after``, those ``filter`` accepts), changed under the lock on the frozen items
        (:mod:`taskengine.storage._memchange`): a compiled filter sees only the keys
        it names; a change said as data (its ``assignment``: publish status, a copy, an
        append) rewrites the frozen tuple without thawing the item; any other update
        thaws each item once and checks and freezes only the values its result does not
        share with the stored item. Every id written is reported
        (``done``), whatever ``change.needs_ids`` says; no item can vanish under the
        lock, so ``missing`` is empty unless a result names another ``_id``.

        Raises:
            InvalidItem: a result cannot be stored; nothing of the batch is written.
        """
        check_limit(limit)
        check_after(after)
        with self._lock:
            target = self._items(collection, environment)
            ids, frozen, cursor = target.live().page_ids(after, limit)
            if until is not None and (cursor is None or cursor >= until):
                cut = bisect_right(ids, until)  # a slice ends at ``until``
                ids, frozen, cursor = ids[:cut], frozen[:cut], None
            if change.deletes:
                prior = matching(ids, frozen, filter)
                if not prior:
                    return ChangeResult(cursor, 0)
                target.write(dict.fromkeys(prior))
                self._written(target, prior)
                return ChangeResult(cursor, len(prior), tuple(prior))
            outcomes = change_frozen(ids, frozen, filter, change)
            refused = tuple(outcomes.refused)
            batch = outcomes.writes
            if not batch:
                return ChangeResult(cursor, 0, (), outcomes.unchanged, refused)
            replaced = target.replace(batch)
            self._written(target, replaced)
            _young(len(batch))
        if len(replaced) == len(batch):
            written = tuple(batch)
            return ChangeResult(cursor, len(written), written, outcomes.unchanged, refused)
        written = tuple(item_id for item_id in batch if item_id in replaced)
        missing = tuple(item_id for item_id in batch if item_id not in replaced)
        return ChangeResult(cursor, len(written), written, outcomes.unchanged, refused, missing)

    def split_points(
        self, collection: str, environment: Environment | str, parts: int
    ) -> list[str]:
        """Up to ``parts - 1`` ids that split the item set into ``parts`` ranges of about
        equal size, ascending (see :class:`~taskengine.storage.base.SplittingStorage`).

        Walks the chunk list (one length per 512 items), not the items.
        """
        view = self._view(collection, environment)
        return _split_view(view, parts)

    def due_items(
        self,
        collection: str,
        environment: Environment | str,
        now: datetime,
        *,
        limit: int,
    ) -> list[tuple[str, datetime]]:
        """Items whose scheduled date is at most ``now``, oldest first (see
        :meth:`taskengine.storage.schedule.ScheduleIndex.due_items`).

        Answered from the heap each item set keeps on its writes
        (:mod:`taskengine.storage._memschedule`): O((k + stale entries met) log n) for
        ``k`` answers, under the lock.
        """
        check_limit(limit)
        bound = now_key(now)
        with self._lock:
            target = self._items(collection, environment)
            if bound < MIN_KEY or not isinstance(target, ScheduledItems):
                return []
            return target.due(bound, limit)

    def next_due_date(self, collection: str, environment: Environment | str) -> datetime | None:
        """The earliest scheduled date of the item set, or ``None`` (see
        :meth:`taskengine.storage.schedule.ScheduleIndex.next_due_date`)."""
        with self._lock:
            target = self._items(collection, environment)
            key = target.next_key() if isinstance(target, ScheduledItems) else None
        return None if key is None else key_date(key)


_YOUNG_LIMIT = 5000
"""New frozen items stored between two young collections (see :func:`_young`)."""

_young_count = [0]


def _young(stored: int) -> None:
    """Run a young collection once ``_YOUNG_LIMIT`` new frozen items were stored.

    A write that replaces items frees about as many tracked objects (the old frozen
    tuples) as it makes, so the collector's allocation count stays below its threshold
    while the new tuples pile up in the youngest generation; the collection that finally
    comes walks all of them at once (measured: 50-100 ms with the GIL held, every few
    hundred thousand items). Collecting the youngest generation this often costs the
    same in total (each new tuple is looked at once, and untracked) in short steps.
    Nothing is done when the host disabled the collector; its settings are not touched.
    """
    _young_count[0] += stored
    if _young_count[0] >= _YOUNG_LIMIT:
        _young_count[0] = 0
        if gc.isenabled():
            gc.collect(0)


def _split_view(view: ChunkView, parts: int) -> list[str]:
    """The ids at positions ``size * k // parts - 1`` (k = 1 .. parts - 1) of a view."""
    size = view.size
    if parts < 2 or size < parts:
        return []
    wanted = [size * k // parts - 1 for k in range(1, parts)]
    points: list[str] = []
    start = 0
    for keys in view.keys:
        end = start + len(keys)
        while wanted and wanted[0] < end:
            points.append(keys[wanted.pop(0) - start])
        if not wanted:
            break
        start = end
    return points


def _thaw_all(frozen: list[Frozen], filter: ItemFilter | None) -> list[Item]:
    """Fresh items from frozen ones, only those ``filter`` accepts when there is one."""
    thaw = thawers
    if filter is None:
        return [thaw[item[0]](item) for item in frozen]
    tests = frozen_tests(filter)
    if tests is not None:  # only the accepted items are thawed
        return [thaw[item[0]](item) for item in frozen if tests[item[0]](item)]
    return [doc for doc in [thaw[item[0]](item) for item in frozen] if filter(doc)]

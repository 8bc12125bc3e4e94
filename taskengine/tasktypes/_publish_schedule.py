"""The publish-status schedule: items flip status when their date passes.

``UPDATE_PUBLISH_STATUS`` with ``SCHEDULE_PUBLISHED_STATUS`` / ``SCHEDULE_DRAFT_STATUS``
stores a date on each matching item (``_publishDate`` / ``_draftDate``; see docs/task-types.md).
:class:`PublishScheduler` is the engine :class:`~taskengine.tasktype.Service` that makes
those dates happen. Where the dates are comes in two ways:

* **from the store**, when the storage implements
  :class:`~taskengine.storage.schedule.ScheduleIndex` (every bundled adapter): the store
  keeps the schedule as an index on its own writes, so :meth:`PublishScheduler.start`
  reads nothing and each :meth:`PublishScheduler.tick` asks it, per publish-plugin
  collection and environment, for the due items (oldest first, in chunks) and the next
  date. Nothing is held in memory, and dates written by other engines or tools are seen
  at the next tick;
* **from a timeline** otherwise: a ``sortedcontainers`` timeline of ``(due, collection,
  environment, item id, field)`` entries, rebuilt on :meth:`PublishScheduler.start`
  from every publish-plugin collection (both environments) and told about new and
  cancelled dates by the executor after each committed batch.

Either way, on :meth:`PublishScheduler.tick` each due item is re-read from storage
(storage is the truth: a date that was changed, cancelled or deleted since is honoured),
``_publishStatus`` is flipped for every date of the item that has passed (oldest first,
so the latest date wins) and those dates are removed, in one batched write per chunk.
Overdue dates are applied on the first tick. A storage error postpones the work by
:data:`RETRY_DELAY`. Only ``datetime`` values are dates
(:func:`taskengine.storage.schedule.date_key`).

The scheduler never reads a clock: the engine passes ``now`` to ``tick``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from taskengine._values import as_utc
from taskengine.errors import CollectionNotFound, SandboxNotEnabled, StorageError
from taskengine.filters import compile_filter
from taskengine.storage.base import Environment
from taskengine.storage.schedule import date_key, has_schedule_index, key_date, now_key
from taskengine.tasktypes._publish_store import (
    CHUNK,
    RETRY_DELAY,
    next_in_store,
    publish_targets,
    tick_store,
)

if TYPE_CHECKING:
    from taskengine.storage.base import Storage

__all__ = [
    "DRAFT",
    "DRAFT_DATE",
    "PUBLISHED",
    "PUBLISH_DATE",
    "PUBLISH_STATUS",
    "RETRY_DELAY",
    "PublishScheduler",
    "ScheduleEntry",
]

PUBLISH_STATUS: Final = "_publishStatus"
"""The item field holding ``PUBLISHED`` or ``DRAFT`` (ref)."""
PUBLISH_DATE: Final = "_publishDate"
"""The item field holding when the item becomes ``PUBLISHED`` (ref)."""
DRAFT_DATE: Final = "_draftDate"
"""The item field holding when the item becomes ``DRAFT`` (ref)."""
PUBLISHED: Final = "PUBLISHED"
"""The published status value."""
DRAFT: Final = "DRAFT"
"""The draft status value."""

_STATUS_OF: Final = {PUBLISH_DATE: PUBLISHED, DRAFT_DATE: DRAFT}


class ScheduleEntry(NamedTuple):
    """One pending status flip on the timeline (ordered by due time first).

    Attributes:
        due: when it is due (aware UTC).
        collection: the collection of the item.
        environment: ``"LIVE"`` or ``"SANDBOX"``.
        item_id: the item's ``_id``.
        field: ``"_publishDate"`` or ``"_draftDate"``.
    """

    due: datetime
    collection: str
    environment: str
    item_id: str
    field: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity of the entry regardless of its due time."""
        return (self.collection, self.environment, self.item_id, self.field)


def _env_name(environment: Environment | str) -> str:
    return Environment.coerce(environment).value


class PublishScheduler:
    """The engine service that applies scheduled publish-status changes.

    Args:
        storage: the item storage; when ``None`` it is the one given to :meth:`start`
            (the engine's).

    Thread-safe: executors call :meth:`schedule` / :meth:`unschedule` from worker threads
    while the engine calls :meth:`tick`.
    """

    def __init__(self, storage: Storage | None = None) -> None:
        self._storage = storage
        self._lock = threading.RLock()
        self._timeline: SortedList = SortedList()
        self._index: dict[tuple[str, str, str, str], ScheduleEntry] = {}

    @property
    def uses_store_index(self) -> bool:
        """Whether the dates come from the storage's
        :class:`~taskengine.storage.schedule.ScheduleIndex` (no timeline is kept)."""
        return self._storage is not None and has_schedule_index(self._storage)

    # ------------------------------------------------------------------ service protocol

    def start(self, storage: Storage) -> None:
        """Attach to the engine's ``storage`` (unless given one); rebuild the timeline
        unless the storage keeps the schedule itself (then nothing is read)."""
        if self._storage is None:
            self._storage = storage
        if not self.uses_store_index:
            self.rebuild()

    def tick(self, now: datetime) -> datetime | None:
        """Apply every date due at ``now``; return when the next one is due, or ``None``.

        Each due item is re-read from storage; only dates still stored and passed are
        applied. Storage errors never escape: the work is retried after
        :data:`RETRY_DELAY` (dropped when its collection or sandbox is gone).
        """
        now = as_utc(now)
        if self.uses_store_index:
            return tick_store(self._require_storage(), self._flip, now)
        due: list[ScheduleEntry] = []
        with self._lock:
            timeline = self._timeline
            while timeline and timeline[0].due <= now:
                entry: ScheduleEntry = timeline.pop(0)
                del self._index[entry.key]
                due.append(entry)
        if due:
            groups: dict[tuple[str, str], dict[str, None]] = {}
            for entry in due:
                groups.setdefault((entry.collection, entry.environment), {})[entry.item_id] = None
            for (collection, environment), ids in groups.items():
                id_list = list(ids)
                for start in range(0, len(id_list), CHUNK):
                    chunk = id_list[start : start + CHUNK]
                    self._apply_chunk(collection, environment, chunk, now, due)
        return self.next_due()

    # ------------------------------------------------------------------ timeline upkeep

    def schedule(
        self,
        collection: str,
        environment: Environment | str,
        field: str,
        entries: Iterable[tuple[str, datetime]],
    ) -> None:
        """Put ``(item id, due)`` pairs for ``field`` on the timeline (replacing old ones).

        Raises:
            ValueError: ``field`` is not ``_publishDate`` or ``_draftDate``.
            InvalidEnvironment: ``environment`` is not ``LIVE`` or ``SANDBOX``.
        """
        if field not in _STATUS_OF:
            raise ValueError(f"field must be {PUBLISH_DATE!r} or {DRAFT_DATE!r}, got {field!r}")
        env = _env_name(environment)
        if self.uses_store_index:
            return  # the store indexed them when they were written
        new, kind = tuple.__new__, ScheduleEntry  # skips NamedTuple's Python-level __new__
        fresh: list[ScheduleEntry] = []
        append = fresh.append
        last: datetime | None = None
        when: datetime | None = None
        for item_id, due in entries:
            if due is not last:  # a task schedules every item at the same date
                last, when = due, as_utc(due)
            append(new(kind, (when, collection, env, item_id, field)))
        with self._lock:
            self._put_many(fresh)

    def unschedule(
        self,
        collection: str,
        environment: Environment | str,
        item_ids: Iterable[str],
        fields: Sequence[str] = (PUBLISH_DATE, DRAFT_DATE),
    ) -> None:
        """Take the items' pending entries for ``fields`` off the timeline."""
        env = _env_name(environment)
        if self.uses_store_index:
            return
        with self._lock:
            for item_id in item_ids:
                for field in fields:
                    old = self._index.pop((collection, env, item_id, field), None)
                    if old is not None:
                        self._timeline.remove(old)

    def rebuild(self) -> int:
        """Add every date stored in publish-plugin collections; return how many.

        Existing entries are kept (an entry whose date no longer exists is harmless: the
        item is re-read before anything is written). Nothing is read, and 0 returned,
        when the storage keeps the schedule itself (:attr:`uses_store_index`).

        Raises:
            StorageError: the storage failed while reading.
        """
        storage = self._require_storage()
        if self.uses_store_index:
            return 0
        found: list[ScheduleEntry] = []
        for info, env in publish_targets(storage.list_collections()):
            try:
                for item in storage.find(info.name, env, _has_date):
                    for field in _STATUS_OF:
                        key = date_key(item.get(field))
                        if key is not None:
                            entry = (key_date(key), info.name, env.value, item["_id"], field)
                            found.append(ScheduleEntry(*entry))
            except (CollectionNotFound, SandboxNotEnabled):
                continue  # dropped or changed while we listed: nothing to schedule
        with self._lock:
            self._put_many(found)
        return len(found)

    def next_due(self) -> datetime | None:
        """When the earliest pending date is due, or ``None`` when there is none (asked of
        the store when it keeps the schedule; ``None`` if it fails)."""
        if self.uses_store_index:
            try:
                return next_in_store(self._require_storage())
            except StorageError:
                return None
        with self._lock:
            return self._timeline[0].due if self._timeline else None

    def pending(self) -> list[ScheduleEntry]:
        """Every pending entry of the timeline, earliest first (a snapshot; always empty
        when the store keeps the schedule)."""
        with self._lock:
            return list(self._timeline)

    def __len__(self) -> int:
        """How many entries are pending on the timeline (0 when the store keeps them)."""
        with self._lock:
            return len(self._timeline)

    def __repr__(self) -> str:
        """``PublishScheduler(pending=..., next_due=...)``."""
        return f"PublishScheduler(pending={len(self)}, next_due={self.next_due()})"

    # ------------------------------------------------------------------ internals

    def _require_storage(self) -> Storage:
        if self._storage is None:
            raise RuntimeError("PublishScheduler has no storage: pass one or call start()")
        return self._storage

    def _put(self, entry: ScheduleEntry) -> None:
        old = self._index.get(entry.key)
        if old is not None:
            if old == entry:
                return
            self._timeline.remove(old)
        self._index[entry.key] = entry
        self._timeline.add(entry)

    def _put_many(self, entries: list[ScheduleEntry]) -> None:
        index, timeline = self._index, self._timeline
        added: dict[tuple[str, str, str, str], ScheduleEntry] = {}
        for entry in entries:
            key = entry[1:]  # == entry.key, without the property call
            old = index.get(key)
            if old is not None:
                if old == entry:
                    continue
                if key not in added:
                    timeline.remove(old)
            index[key] = entry
            added[key] = entry
        timeline.update(added.values())

    def _apply_chunk(
        self,
        collection: str,
        environment: str,
        ids: list[str],
        now: datetime,
        due: list[ScheduleEntry],
    ) -> None:
        later: list[ScheduleEntry] = []
        try:
            self._flip(collection, environment, ids, now, later)
        except (CollectionNotFound, SandboxNotEnabled):
            return  # the collection (or its sandbox) is gone: so are its schedules
        except StorageError:
            retry = now + RETRY_DELAY
            wanted = set(ids)
            with self._lock:
                for entry in due:
                    if (
                        entry.collection == collection
                        and entry.environment == environment
                        and entry.item_id in wanted
                        and entry.key not in self._index
                    ):
                        self._put(entry._replace(due=retry))
            return
        if later:
            with self._lock:
                for entry in later:
                    self._put(entry)

    def _flip(
        self,
        collection: str,
        environment: str,
        ids: list[str],
        now: datetime,
        later: list[ScheduleEntry] | None = None,
    ) -> int:
        """Re-read the items and apply their passed dates, in one atomic block; return
        how many were written (their future dates go to ``later`` when given)."""
        storage = self._require_storage()
        bound = now_key(now)
        with storage.atomic():
            changed: list[dict[str, Any]] = []
            for item_id in ids:
                item = storage.get_item(collection, environment, item_id)
                if item is None:
                    continue  # deleted since: storage is the truth
                if _flip_due(item, bound, later, collection, environment):
                    changed.append(item)
            if changed:
                storage.replace_items(collection, environment, changed)
        return len(changed)


_has_date: Final = compile_filter(
    {"$or": [{PUBLISH_DATE: {"$exists": True}}, {DRAFT_DATE: {"$exists": True}}]}
)
"""Whether the item holds a publish or draft date field: a compiled filter, so SQL
adapters run it inside the database and read only the items that hold a date."""


def _flip_due(
    item: dict[str, Any],
    now: int,
    later: list[ScheduleEntry] | None,
    collection: str,
    environment: str,
) -> bool:
    """Apply the item's passed dates in date order (the latest wins); note future ones
    in ``later`` (when given). ``now`` is a key (:func:`~taskengine.storage.schedule.now_key`)."""
    passed: list[tuple[int, str]] = []
    for field in _STATUS_OF:
        key = date_key(item.get(field))
        if key is None:
            continue  # not a date: not ours to interpret
        if key <= now:
            passed.append((key, field))
        elif later is not None:
            entry = (key_date(key), collection, environment, item["_id"], field)
            later.append(ScheduleEntry(*entry))
    if not passed:
        return False
    passed.sort()
    for _, field in passed:
        item[PUBLISH_STATUS] = _STATUS_OF[field]
        del item[field]
    return True

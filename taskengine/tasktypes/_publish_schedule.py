"""The publish-status schedule timeline: items flip status when their date passes.

``UPDATE_PUBLISH_STATUS`` with ``SCHEDULE_PUBLISHED_STATUS`` / ``SCHEDULE_DRAFT_STATUS``
stores a date on each matching item (``_publishDate`` / ``_draftDate``; see docs/task-types.md).
:class:`PublishScheduler` is the engine :class:`~taskengine.tasktype.Service` that makes
those dates happen:

* it keeps a ``sortedcontainers`` timeline of ``(due, collection, environment, item id,
  field)`` entries, so finding what is due is ``O(log n)``;
* on :meth:`PublishScheduler.start` it rebuilds the timeline from storage (every
  collection with the publish plugin, both environments), so schedules survive a
  restart and overdue ones are applied on the first :meth:`PublishScheduler.tick`;
* on :meth:`PublishScheduler.tick` it re-reads each due item from storage (storage is the
  truth: a date that was changed, cancelled or deleted since is honoured), flips
  ``_publishStatus`` for every date of the item that has passed (oldest first, so the
  latest date wins) and removes those dates, in one batched write per collection;
* the executor tells it about new and cancelled dates after each committed batch.

The scheduler never reads a clock: the engine passes ``now`` to ``tick``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from taskengine._values import as_utc
from taskengine.errors import CollectionNotFound, SandboxNotEnabled, StorageError
from taskengine.filters import compile_filter
from taskengine.storage.base import Environment
from taskengine.tasktypes._common import parse_date

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

RETRY_DELAY: Final = timedelta(seconds=5)
"""How long a due entry waits before it is retried after a storage error."""

_STATUS_OF: Final = {PUBLISH_DATE: PUBLISHED, DRAFT_DATE: DRAFT}
_CHUNK: Final = 500


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

    # ------------------------------------------------------------------ service protocol

    def start(self, storage: Storage) -> None:
        """Attach to the engine's ``storage`` (unless given one) and rebuild the timeline."""
        if self._storage is None:
            self._storage = storage
        self.rebuild()

    def tick(self, now: datetime) -> datetime | None:
        """Apply every entry due at ``now``; return when the next one is due, or ``None``.

        Each due item is re-read from storage; only dates still stored and passed are
        applied. Storage errors never escape: the entries are retried after
        :data:`RETRY_DELAY` (or dropped when their collection or sandbox is gone).
        """
        now = as_utc(now)
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
                for start in range(0, len(id_list), _CHUNK):
                    chunk = id_list[start : start + _CHUNK]
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
        with self._lock:
            for item_id in item_ids:
                for field in fields:
                    old = self._index.pop((collection, env, item_id, field), None)
                    if old is not None:
                        self._timeline.remove(old)

    def rebuild(self) -> int:
        """Add every date stored in publish-plugin collections; return how many.

        Existing entries are kept (an entry whose date no longer exists is harmless: the
        item is re-read before anything is written).

        Raises:
            StorageError: the storage failed while reading.
        """
        storage = self._require_storage()
        found: list[ScheduleEntry] = []
        for info in storage.list_collections():
            if not info.publish_plugin:
                continue
            environments = [Environment.LIVE]
            if info.sandbox_enabled:
                environments.append(Environment.SANDBOX)
            for env in environments:
                try:
                    items = storage.find(info.name, env, _has_date)
                    for item in items:
                        for field in _STATUS_OF:
                            if field in item:
                                when = parse_date(item[field])
                                if when is not None:
                                    found.append(
                                        ScheduleEntry(
                                            as_utc(when), info.name, env.value, item["_id"], field
                                        )
                                    )
                except (CollectionNotFound, SandboxNotEnabled):
                    continue  # dropped or changed while we listed: nothing to schedule
        with self._lock:
            self._put_many(found)
        return len(found)

    def next_due(self) -> datetime | None:
        """When the earliest pending entry is due, or ``None`` when there is none."""
        with self._lock:
            return self._timeline[0].due if self._timeline else None

    def pending(self) -> list[ScheduleEntry]:
        """Every pending entry, earliest first (a snapshot)."""
        with self._lock:
            return list(self._timeline)

    def __len__(self) -> int:
        """How many entries are pending."""
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
        storage = self._require_storage()
        later: list[ScheduleEntry] = []
        try:
            with storage.atomic():
                changed: list[dict[str, Any]] = []
                for item_id in ids:
                    item = storage.get_item(collection, environment, item_id)
                    if item is None:
                        continue  # deleted since: storage is the truth
                    if _flip_due(item, now, later, collection, environment):
                        changed.append(item)
                if changed:
                    storage.replace_items(collection, environment, changed)
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


_has_date: Final = compile_filter(
    {"$or": [{PUBLISH_DATE: {"$exists": True}}, {DRAFT_DATE: {"$exists": True}}]}
)
"""Whether the item holds a publish or draft date field: a compiled filter, so SQL
adapters run it inside the database and read only the items that hold a date."""


def _flip_due(
    item: dict[str, Any],
    now: datetime,
    later: list[ScheduleEntry],
    collection: str,
    environment: str,
) -> bool:
    """Apply the item's passed dates in date order (the latest wins); note future ones."""
    passed: list[tuple[datetime, str]] = []
    for field in _STATUS_OF:
        if field not in item:
            continue
        when = parse_date(item[field])
        if when is None:
            continue  # not a date: not ours to interpret
        when = as_utc(when)
        if when <= now:
            passed.append((when, field))
        else:
            later.append(ScheduleEntry(when, collection, environment, item["_id"], field))
    if not passed:
        return False
    passed.sort()
    for _, field in passed:
        item[PUBLISH_STATUS] = _STATUS_OF[field]
        del item[field]
    return True

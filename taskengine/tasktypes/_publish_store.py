"""The publish scheduler's ticks when the store keeps the schedule (``ScheduleIndex``).

:class:`~taskengine.tasktypes._publish_schedule.PublishScheduler` calls :func:`tick_store`
on a storage that implements :class:`~taskengine.storage.schedule.ScheduleIndex`: for each
item set of each publish-plugin collection, it asks for the due items (oldest first, a
chunk at a time), has the scheduler re-read and flip them, and asks for the next date.
Nothing is kept between ticks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, cast

from taskengine.errors import CollectionNotFound, SandboxNotEnabled, StorageError
from taskengine.storage.base import CollectionInfo, Environment

if TYPE_CHECKING:
    from taskengine.storage.base import Storage
    from taskengine.storage.schedule import ScheduleIndex

__all__ = ["CHUNK", "RETRY_DELAY", "Flip", "next_in_store", "publish_targets", "tick_store"]

RETRY_DELAY: Final = timedelta(seconds=5)
"""How long due work waits before it is retried after a storage error."""

CHUNK: Final = 500
"""Items re-read and written per atomic block."""

Flip = Callable[[str, str, list[str], datetime], int]
"""``flip(collection, environment, ids, now)``: re-read the items, apply their passed
dates in one atomic block, return how many were written."""


def publish_targets(infos: list[CollectionInfo]) -> list[tuple[CollectionInfo, Environment]]:
    """Every item set of the publish-plugin collections: ``(collection, environment)``."""
    found = []
    for info in infos:
        if info.publish_plugin:
            found.append((info, Environment.LIVE))
            if info.sandbox_enabled:
                found.append((info, Environment.SANDBOX))
    return found


def tick_store(storage: Storage, flip: Flip, now: datetime) -> datetime | None:
    """Apply everything due at ``now`` in ``storage`` (a :class:`ScheduleIndex`); return
    when to tick next (``None``: nothing scheduled). A storage error postpones its item
    set by :data:`RETRY_DELAY`."""
    index = cast("ScheduleIndex", storage)
    try:
        targets = publish_targets(storage.list_collections())
    except StorageError:
        return now + RETRY_DELAY
    following: datetime | None = None
    for info, env in targets:
        try:
            when = _drain(index, flip, info.name, env.value, now)
        except (CollectionNotFound, SandboxNotEnabled):
            continue  # dropped or changed while we listed: nothing to apply
        except StorageError:
            when = now + RETRY_DELAY
        if when is not None and (following is None or when < following):
            following = when
    return following


def _drain(
    index: ScheduleIndex, flip: Flip, collection: str, environment: str, now: datetime
) -> datetime | None:
    """Apply the item set's due dates, oldest first in chunks; its next date."""
    written = 0
    while True:
        due = index.due_items(collection, environment, now, limit=CHUNK)
        if not due:
            break
        written = flip(collection, environment, [item_id for item_id, _ in due], now)
        if len(due) < CHUNK or not written:
            break
    following = index.next_due_date(collection, environment)
    if following is not None and following <= now:
        # Due again: written by someone else meanwhile (tick at once), or dates the
        # re-read did not confirm (wait, rather than spin).
        return now if written else now + RETRY_DELAY
    return following


def next_in_store(storage: Storage) -> datetime | None:
    """The earliest scheduled date over every publish-plugin item set, or ``None``.

    Raises:
        StorageError: the storage failed.
    """
    index = cast("ScheduleIndex", storage)
    found: list[datetime] = []
    for info, env in publish_targets(storage.list_collections()):
        try:
            when = index.next_due_date(info.name, env)
        except (CollectionNotFound, SandboxNotEnabled):
            continue
        if when is not None:
            found.append(when)
    return min(found) if found else None

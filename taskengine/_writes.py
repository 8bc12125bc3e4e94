"""Writing a batch's changes, and settling a write that failed part-way.

On an adapter whose ``atomic()`` does not roll back, a failed write may have written
part of its batch. Settling proves, item by item, what is already written (a deleted
item is gone, a replaced one equals its new value) and writes only the rest, with the
changes computed once: never rescanned, never re-applied, so no change lands twice
(docs/durability.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

# Item equality belongs with the value model; see pyproject's import contracts.
from taskengine._values import identical
from taskengine.errors import (
    CollectionNotFound,
    DuplicateItem,
    InvalidItem,
    SandboxNotEnabled,
    StorageError,
)
from taskengine.storage.base import WriteResult

if TYPE_CHECKING:
    from taskengine.storage.base import Item, Storage
    from taskengine.tasktype import BatchChanges, Plan

__all__ = ["WHOLE_TASK", "settle_writes", "write_changes"]

_log = logging.getLogger("taskengine.engine")

WHOLE_TASK = (CollectionNotFound, SandboxNotEnabled, DuplicateItem, InvalidItem)
"""Errors that end the task at once: never retried, never settled."""


def write_changes(storage: Storage, plan: Plan, changes: BatchChanges) -> WriteResult:
    """Delete, then replace, the items of one batch; what was written and what was gone."""
    collection, environment = plan.collection, plan.environment
    done: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    if changes.deletes:
        result = storage.delete_items(collection, environment, changes.deletes)
        done, missing = done + result.done, missing + result.missing
    if changes.replaces:
        result = storage.replace_items(collection, environment, changes.replaces)
        done, missing = done + result.done, missing + result.missing
    return WriteResult(done, missing)


def settle_writes(
    storage: Storage,
    plan: Plan,
    changes: BatchChanges,
    error: StorageError,
    target_lock: threading.Lock,
    *,
    max_retries: int,
    retry_delay: float,
) -> tuple[WriteResult, int, StorageError]:
    """Finish the writes of a batch whose write failed with ``error``.

    Each attempt (after ``retry_delay``, doubled each time) reads the items back and
    writes only those proven unwritten; the last attempt only looks. Returns what is
    proven written or gone, how many items are still unwritten or unverified, and the
    last storage error seen.

    Raises:
        CollectionNotFound, SandboxNotEnabled, DuplicateItem, InvalidItem: the task
            cannot go on (:data:`WHOLE_TASK`).
    """
    collection, env = plan.collection, plan.environment
    deletes = list(dict.fromkeys(changes.deletes))
    replaces = {item["_id"]: item for item in changes.replaces}  # the last one wins
    done: list[str] = []
    missing: list[str] = []
    for attempt in range(max_retries + 1):
        last = attempt == max_retries  # a last look: count what is proven, no write
        time.sleep(retry_delay * (2**attempt))
        _log.info("settling a failed batch (attempt %d): %s", attempt + 1, error)
        try:
            with target_lock:
                gone, kept = _read_back(storage, collection, env, deletes, replaces)
                done.extend(gone)
                gone_ids = set(gone)
                deletes = [item_id for item_id in deletes if item_id not in gone_ids]
                done.extend(item_id for item_id, item in kept.items() if item is not None)
                missing.extend(item_id for item_id, item in kept.items() if item is None)
                replaces = {k: v for k, v in replaces.items() if k not in kept}
                if last or not (deletes or replaces):
                    break
                if deletes:
                    result = storage.delete_items(collection, env, deletes)
                    deletes = []
                    done.extend(result.done)
                    missing.extend(result.missing)
                if replaces:
                    result = storage.replace_items(collection, env, list(replaces.values()))
                    replaces = {}
                    done.extend(result.done)
                    missing.extend(result.missing)
                break
        except WHOLE_TASK:
            raise
        except StorageError as exc:
            error = exc
    return WriteResult(tuple(done), tuple(missing)), len(deletes) + len(replaces), error


def _read_back(
    storage: Storage,
    collection: str,
    environment: Any,
    deletes: list[str],
    replaces: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], dict[str, Item | None]]:
    """What a failed write left: the deletes proven done, and the replaces proven settled.

    Returns the ids of ``deletes`` no longer stored, and for each id of ``replaces`` that
    is no longer stored (``None``: the item vanished) or already holds its new value,
    that stored item. Everything else is proven unwritten (it still differs).
    """
    gone = [i for i in deletes if storage.get_item(collection, environment, i) is None]
    kept: dict[str, Item | None] = {}
    for item_id, item in replaces.items():
        stored = storage.get_item(collection, environment, item_id)
        if stored is None or identical(stored, dict(item)):
            kept[item_id] = stored
    return gone, kept

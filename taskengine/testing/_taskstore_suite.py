"""The whole task-store conformance suite: every check, in a stable order."""

from __future__ import annotations

from taskengine.testing import (
    _leader_checks,
    _slice_checks,
    _taskstore_checks,
    _update_checks,
)
from taskengine.testing._taskstore_checks import REGISTRY, TaskStoreCheck

__all__ = ["TASKSTORE_CHECKS"]

TASKSTORE_CHECKS: tuple[TaskStoreCheck, ...] = tuple(
    check
    for module in (_taskstore_checks, _update_checks, _leader_checks, _slice_checks)
    for check in REGISTRY
    if check.run.__module__ == module.__name__
)
"""Every task-store check, in a stable order (task leases, updates, leadership, slices)."""

"""The whole conformance suite: every check, in a stable order."""

from __future__ import annotations

from taskengine.testing import (
    _atomic_checks,
    _change_checks,
    _collection_checks,
    _item_checks,
    _schedule_checks,
)
from taskengine.testing._checks import REGISTRY, Check

__all__ = ["CHECKS"]

CHECKS: tuple[Check, ...] = tuple(
    check
    for module in (
        _collection_checks,
        _item_checks,
        _atomic_checks,
        _change_checks,
        _schedule_checks,
    )
    for check in REGISTRY
    if check.run.__module__ == module.__name__
)
"""Every check of the suite, in a stable order (collections, items, atomic blocks,
set-based batches, the schedule index)."""

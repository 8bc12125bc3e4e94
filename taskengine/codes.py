"""Every failure code a task can carry, defined once (see docs/lifecycle.md).

A task's ``failures`` hold these codes: whole-task codes end the task ``FAILED``; item
codes name one item and the task goes on.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CANCELLED",
    "COLLECTION_NOT_FOUND",
    "ITEM_VALIDATION",
    "ITEM_VANISHED",
    "NOT_SUPPORTED",
    "SANDBOX_NOT_ENABLED",
    "STORAGE",
]

CANCELLED: Final = "CANCELLED"
"""The task was cancelled (its only failure, with no ``data``)."""

COLLECTION_NOT_FOUND: Final = "WDE0025"
"""Whole task: the collection does not exist."""

STORAGE: Final = "WDE0054"
"""Whole task: an unexpected storage error, after the retries ran out."""

ITEM_VANISHED: Final = "WDE0073"
"""Item: the item was deleted by someone else while the task ran."""

ITEM_VALIDATION: Final = "WDE0075"
"""Item: the item cannot take the change (or, for the whole task, stored options that
can no longer be used)."""

NOT_SUPPORTED: Final = "WDE0119"
"""Whole task: the collection does not support the operation (no publish plugin)."""

SANDBOX_NOT_ENABLED: Final = "WDE0179"
"""Whole task: the SANDBOX environment was asked for and the collection has none."""

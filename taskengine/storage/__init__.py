"""Item storage: the ``Storage`` protocol, its value types, and the bundled adapters."""

from taskengine.storage.base import (
    CollectionInfo,
    Count,
    Environment,
    Page,
    Storage,
    WriteResult,
)
from taskengine.storage.changes import (
    ChangeResult,
    ChangingStorage,
    FieldAssignment,
    ItemChange,
    SQLChange,
    change_by_scan,
)
from taskengine.storage.memory import MemoryStorage
from taskengine.storage.schedule import ScheduleIndex
from taskengine.storage.sqlite import SQLiteStorage

__all__ = [
    "ChangeResult",
    "ChangingStorage",
    "CollectionInfo",
    "Count",
    "Environment",
    "FieldAssignment",
    "ItemChange",
    "MemoryStorage",
    "Page",
    "SQLChange",
    "SQLiteStorage",
    "ScheduleIndex",
    "Storage",
    "WriteResult",
    "change_by_scan",
]

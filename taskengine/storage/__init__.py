"""Item storage: the ``Storage`` protocol, its value types, and the bundled adapters."""

from taskengine.storage.base import (
    CollectionInfo,
    Count,
    Environment,
    Page,
    Storage,
    WriteResult,
)
from taskengine.storage.memory import MemoryStorage
from taskengine.storage.sqlite import SQLiteStorage

__all__ = [
    "CollectionInfo",
    "Count",
    "Environment",
    "MemoryStorage",
    "Page",
    "SQLiteStorage",
    "Storage",
    "WriteResult",
]

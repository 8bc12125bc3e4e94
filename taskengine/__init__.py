"""taskengine: bulk data operations as background tasks over pluggable storage.

The public API is re-exported here; everything else is private.
"""

from taskengine.errors import (
    CollectionExists,
    CollectionNotFound,
    DuplicateItem,
    InvalidEnvironment,
    InvalidFilter,
    InvalidItem,
    InvalidRequest,
    InvalidTask,
    InvalidTransition,
    SandboxNotEnabled,
    StorageError,
    TaskEngineError,
    TaskFailure,
    TaskNotFound,
    Violation,
)

__version__ = "0.1.0"

__all__ = [
    "CollectionExists",
    "CollectionNotFound",
    "DuplicateItem",
    "InvalidEnvironment",
    "InvalidFilter",
    "InvalidItem",
    "InvalidRequest",
    "InvalidTask",
    "InvalidTransition",
    "SandboxNotEnabled",
    "StorageError",
    "TaskEngineError",
    "TaskFailure",
    "TaskNotFound",
    "Violation",
    "__version__",
]

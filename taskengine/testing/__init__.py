"""The storage conformance suite: run it on your own ``Storage`` adapter.

A custom adapter is done when it passes this suite (see docs/architecture.md). From your own pytest
module, subclass :class:`StorageConformance` and say how to make a fresh, empty
storage; every check becomes a test (``test_conformance[scan_order]``, ...)::

    # tests/test_my_storage.py
    from taskengine.testing import StorageConformance
    from my_package import MyStorage


    class TestMyStorage(StorageConformance):
        def make_storage(self):
            return MyStorage("postgresql://localhost/scratch")  # fresh and empty

If the storage needs cleaning up, override the ``storage`` fixture instead (the default
one calls ``close()`` when the storage has it)::

    import pytest

    class TestMyStorage(StorageConformance):
        @pytest.fixture
        def storage(self, tmp_path):
            with MyStorage(tmp_path / "db") as store:
                yield store

Without pytest, :func:`run_conformance` runs every check and returns the failures::

    failures = run_conformance(MyStorage)
    assert not failures, failures

To go further, :func:`agreement_machine` (:mod:`taskengine.testing.agreement`) builds a
hypothesis state machine that sends the same random operations to your adapter and to
:class:`MemoryStorage` and requires identical answers after every step (``pip install
hypothesis``)::

    TestAgreement = agreement_machine(MyStorage).TestCase

Only :class:`StorageConformance` and :class:`TaskStoreConformance` need pytest, and
pytest is imported only when one of them is first used; :func:`run_conformance`,
:func:`run_taskstore_conformance` and the checks run without it. Each storage check is a
plain function ``check(storage) -> None`` that raises :class:`ConformanceError` (an
``AssertionError``) with a message saying which rule was broken. They cover: collection
management, environments and their errors, ``_id`` ordering (code point order, not
UTF-16 or locale order), paging and cursors, filters given to ``scan``, counts, exact
round-trip of every value type (dates included), fresh copies in and out, all-or-nothing
inserts, per-item outcomes of batched replace/delete, bad input leaving the store
unchanged, ``atomic()`` (and its rollback, when the adapter declares
``atomic_rolls_back``), and concurrent writers.

**Task stores.** The ownership rules of the ``TaskStore`` contract (claim, renew,
release, fencing, update, leader leases; taskengine/taskstore.py) have a suite of their
own, run the same two ways::

    from taskengine.testing import TaskStoreConformance, run_taskstore_conformance


    class TestMyTaskStore(TaskStoreConformance):
        def make_task_store(self):
            return MyTaskStore("postgresql://localhost/scratch")  # fresh and empty


    failures = run_taskstore_conformance(MyTaskStore)
    assert not failures, failures

Its checks (:data:`TASKSTORE_CHECKS`) take the store and a
:class:`~taskengine.clock.ManualClock` whose time they pass as every ``now``: at most one
live owner, tokens that strictly increase, an expired or superseded owner's renew, fence
check and fenced save refused (and nothing written), release freeing the task at once,
finished tasks never claimed, ``claimable`` order, saves keeping leases, unknown ids,
deletes, and concurrent claims from threads; ``update`` (the change stored or kept, unknown
ids, fencing, the id kept, errors from the change propagating with nothing written, leases
kept, concurrent updates losing nothing); and leader leases (one live leader, hand-over at
expiry with the next token, renewal keeping the token, resign, roles apart from tasks, and
concurrent leads with one winner).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskengine.clock import ManualClock
from taskengine.testing._checks import (
    Check,
    CheckFailure,
    ConformanceError,
    StorageFactory,
    close_storage,
    same_value,
)
from taskengine.testing._suite import CHECKS
from taskengine.testing._taskstore_checks import TaskStoreCheck, TaskStoreFactory
from taskengine.testing._taskstore_suite import TASKSTORE_CHECKS
from taskengine.testing.agreement import agreement_machine

if TYPE_CHECKING:
    from taskengine.testing._pytest_suite import StorageConformance, TaskStoreConformance

__all__ = [
    "CHECKS",
    "TASKSTORE_CHECKS",
    "Check",
    "CheckFailure",
    "ConformanceError",
    "StorageConformance",
    "TaskStoreCheck",
    "TaskStoreConformance",
    "agreement_machine",
    "run_conformance",
    "run_taskstore_conformance",
    "same_value",
]


def run_conformance(
    make_storage: StorageFactory, checks: tuple[Check, ...] | None = None
) -> list[CheckFailure]:
    """Run checks (default: all of :data:`CHECKS`), each on a fresh storage; the failures.

    ``make_storage`` is called once per check and must return an empty storage; the
    storage's ``close()`` is called afterwards when it has one. An exception other than
    :class:`ConformanceError` counts as a failure too. Needs no pytest.
    """
    failures: list[CheckFailure] = []
    for check in CHECKS if checks is None else checks:
        storage = make_storage()
        try:
            check.run(storage)
        except Exception as exc:
            failures.append(CheckFailure(check.name, exc))
        finally:
            close_storage(storage)
    return failures


def run_taskstore_conformance(
    make_store: TaskStoreFactory,
    clock: Callable[[], ManualClock] = ManualClock,
    checks: tuple[TaskStoreCheck, ...] | None = None,
) -> list[CheckFailure]:
    """Run task-store checks (default: all of :data:`TASKSTORE_CHECKS`); the failures.

    Each check gets a fresh, empty store from ``make_store`` (closed afterwards when it
    has ``close()``) and a fresh clock from ``clock``, whose time it passes as ``now``.
    An exception other than :class:`ConformanceError` counts as a failure too. Needs no
    pytest.
    """
    failures: list[CheckFailure] = []
    for check in TASKSTORE_CHECKS if checks is None else checks:
        store = make_store()
        try:
            check.run(store, clock())
        except Exception as exc:
            failures.append(CheckFailure(check.name, exc))
        finally:
            close_storage(store)
    return failures


def __getattr__(name: str) -> Any:
    """The pytest classes on first use: only then is pytest imported (PEP 562)."""
    if name in ("StorageConformance", "TaskStoreConformance"):
        from taskengine.testing import _pytest_suite

        value = getattr(_pytest_suite, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

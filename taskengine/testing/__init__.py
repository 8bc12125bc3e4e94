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

Only :class:`StorageConformance` needs pytest, and pytest is imported only when that name
is first used; :func:`run_conformance` and the checks run without it. Each check is a plain
function ``check(storage) -> None`` that raises :class:`ConformanceError` (an
``AssertionError``) with a message saying which rule was broken. They cover: collection
management, environments and their errors, ``_id`` ordering (code point order, not
UTF-16 or locale order), paging and cursors, filters given to ``scan``, counts, exact
round-trip of every value type (dates included), fresh copies in and out, all-or-nothing
inserts, per-item outcomes of batched replace/delete, bad input leaving the store
unchanged, ``atomic()`` (and its rollback, when the adapter declares
``atomic_rolls_back``), and concurrent writers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskengine.testing._checks import (
    Check,
    CheckFailure,
    ConformanceError,
    StorageFactory,
    close_storage,
    same_value,
)
from taskengine.testing._suite import CHECKS
from taskengine.testing.agreement import agreement_machine

if TYPE_CHECKING:
    from taskengine.testing._pytest_suite import StorageConformance

__all__ = [
    "CHECKS",
    "Check",
    "CheckFailure",
    "ConformanceError",
    "StorageConformance",
    "agreement_machine",
    "run_conformance",
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


def __getattr__(name: str) -> Any:
    """``StorageConformance`` on first use: only then is pytest imported (PEP 562)."""
    if name == "StorageConformance":
        from taskengine.testing._pytest_suite import StorageConformance

        globals()[name] = StorageConformance
        return StorageConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""``StorageConformance``: the conformance suite as a pytest test class.

Kept apart from the checks because it imports pytest: ``taskengine.testing`` loads this
module only when ``StorageConformance`` is first asked for, so :func:`run_conformance`
works where pytest is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskengine.storage.base import Storage
from taskengine.testing._checks import Check, close_storage
from taskengine.testing._suite import CHECKS

__all__ = ["StorageConformance"]


class StorageConformance:
    """Subclass as ``Test...`` in your pytest module; each check becomes a test.

    Provide a fresh, empty storage per test by overriding :meth:`make_storage`, or by
    overriding the ``storage`` fixture (to manage cleanup yourself).
    """

    def make_storage(self) -> Storage:
        """Return a fresh, empty storage (override this, or the ``storage`` fixture)."""
        raise NotImplementedError(
            f"{type(self).__name__} must override make_storage() or the storage fixture"
        )

    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        """A fresh storage from :meth:`make_storage`, closed after the test if it can be."""
        store = self.make_storage()
        try:
            yield store
        finally:
            close_storage(store)

    @pytest.mark.parametrize("check", CHECKS, ids=[check.name for check in CHECKS])
    def test_conformance(self, storage: Storage, check: Check) -> None:
        """The storage keeps the rule the check names (see the check's docstring)."""
        check.run(storage)

"""The conformance suite on the bundled adapters, and on adapters it must reject."""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from taskengine.errors import CollectionExists, CollectionNotFound, DuplicateItem, SandboxNotEnabled
from taskengine.storage import MemoryStorage, SQLiteStorage
from taskengine.storage.base import (
    CollectionInfo,
    Environment,
    ItemFilter,
    Page,
    Storage,
    WriteResult,
    check_after,
    check_limit,
    check_name,
)
from taskengine.storage.codec import admit, copy_item, lookup_id
from taskengine.testing import CHECKS, Check, StorageConformance, run_conformance

pytest_plugins = ["pytester"]


class TestMemoryStorage(StorageConformance):
    """MemoryStorage passes every check."""

    def make_storage(self) -> Storage:
        """A fresh MemoryStorage."""
        return MemoryStorage()


class TestSQLiteInMemory(StorageConformance):
    """SQLiteStorage(":memory:") passes every check."""

    def make_storage(self) -> Storage:
        """A fresh in-memory SQLiteStorage."""
        return SQLiteStorage(":memory:")


class TestSQLiteFile(StorageConformance):
    """SQLiteStorage on a real file passes every check."""

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Storage]:
        """A fresh SQLiteStorage in tmp_path, closed afterwards."""
        with SQLiteStorage(tmp_path / "items.db") as store:
            yield store


# -- a minimal user adapter: eight methods, the derived ones from the protocol -----------


class DictStorage(Storage):
    """What a user might write: plain dicts, sorting on every scan, one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.infos: dict[str, CollectionInfo] = {}
        self.data: dict[tuple[str, Environment], dict[str, dict[str, Any]]] = {}

    def create_collection(
        self, name: str, *, sandbox: bool = False, publish_plugin: bool = False
    ) -> CollectionInfo:
        """Create a collection."""
        with self.lock:
            if name in self.infos:
                raise CollectionExists(name)
            info = CollectionInfo(check_name(name), sandbox, publish_plugin)
            self.infos[name] = info
            self.data[name, Environment.LIVE] = {}
            if sandbox:
                self.data[name, Environment.SANDBOX] = {}
            return info

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe a collection."""
        with self.lock:
            if name not in self.infos:
                raise CollectionNotFound(name)
            return self.infos[name]

    def list_collections(self) -> list[CollectionInfo]:
        """Collections by name."""
        with self.lock:
            return [self.infos[name] for name in sorted(self.infos)]

    def drop_collection(self, name: str) -> None:
        """Drop a collection."""
        with self.lock:
            self.collection_info(name)
            del self.infos[name]
            for env in Environment:
                self.data.pop((name, env), None)

    def items(self, name: str, environment: Environment | str) -> dict[str, dict[str, Any]]:
        """The item dict of a collection's environment."""
        env = Environment.coerce(environment)
        self.collection_info(name)
        if (name, env) not in self.data:
            raise SandboxNotEnabled(name)
        return self.data[name, env]

    def ordered_ids(self, docs: dict[str, dict[str, Any]]) -> list[str]:
        """Ids in scan order."""
        return sorted(docs)

    def scan(
        self,
        collection: str,
        environment: Environment | str,
        *,
        after: str | None = None,
        limit: int = 1000,
        filter: ItemFilter | None = None,
    ) -> Page:
        """A page of items after the cursor."""
        check_limit(limit)
        check_after(after)
        with self.lock:
            docs = self.items(collection, environment)
            ids = [i for i in self.ordered_ids(docs) if after is None or i > after]
            page = [self.out(docs[i]) for i in ids[:limit]]
            return Page(page, ids[limit - 1] if len(ids) > limit else None)

    def out(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The copy handed out."""
        return copy_item(doc)

    def insert_items(
        self, collection: str, environment: Environment | str, items: Iterable[Mapping[str, Any]]
    ) -> int:
        """Insert, all or nothing."""
        admitted = [admit(item) for item in items]
        with self.lock:
            docs = self.items(collection, environment)
            seen: set[str] = set()
            for item_id, _ in admitted:
                if item_id in docs or item_id in seen:
                    raise DuplicateItem(collection, item_id)
                seen.add(item_id)
            docs.update(admitted)
            return len(admitted)

    def replace_items(
        self, collection: str, environment: Environment | str, items: Sequence[Mapping[str, Any]]
    ) -> WriteResult:
        """Replace stored items."""
        admitted = [admit(item) for item in items]
        with self.lock:
            docs = self.items(collection, environment)
            done = {i: None for i, _ in admitted if i in docs}
            missing = {i: None for i, _ in admitted if i not in docs}
            self.write(docs, [(i, doc) for i, doc in admitted if i in docs])
            return WriteResult(tuple(done), tuple(missing))

    def write(self, docs: dict[str, dict[str, Any]], pairs: list[tuple[str, Any]]) -> None:
        """Store replaced items."""
        docs.update(pairs)

    def delete_items(
        self, collection: str, environment: Environment | str, ids: Sequence[str]
    ) -> WriteResult:
        """Delete by id."""
        keys = {i: lookup_id(i) for i in ids}
        with self.lock:
            docs = self.items(collection, environment)
            done = tuple(i for i, k in keys.items() if k is not None and k in docs)
            for i in done:
                del docs[i]
            return WriteResult(done, tuple(i for i in keys if i not in done))


class TestUserAdapter(StorageConformance):
    """A user adapter written on the protocol's derived methods passes every check."""

    def make_storage(self) -> Storage:
        """A fresh DictStorage."""
        return DictStorage()


# -- broken adapters ---------------------------------------------------------------------


class Utf16Order(DictStorage):
    """Sorts ids by UTF-16 code units, as JavaScript or Java would."""

    def ordered_ids(self, docs: dict[str, dict[str, Any]]) -> list[str]:
        """Ids in UTF-16 order (wrong above U+FFFF)."""
        return sorted(docs, key=lambda i: i.encode("utf-16-be"))


class LostUpdates(DictStorage):
    """Reports every stored id as done but writes only the first of a batch."""

    def write(self, docs: dict[str, dict[str, Any]], pairs: list[tuple[str, Any]]) -> None:
        """Store only the first replacement."""
        docs.update(pairs[:1])


class SharedReferences(DictStorage):
    """Hands out its own dicts instead of copies."""

    def out(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The stored dict itself."""
        return doc


class PartialInsert(DictStorage):
    """Inserts items one by one, so a duplicate leaves the earlier ones behind."""

    def insert_items(
        self, collection: str, environment: Environment | str, items: Iterable[Mapping[str, Any]]
    ) -> int:
        """Insert until the first duplicate."""
        count = 0
        for item in items:
            count += super().insert_items(collection, environment, [item])
        return count


class WrongDuplicate(DictStorage):
    """Inserts one by one and, on a duplicate, undoes them but names the batch's first id."""

    def insert_items(
        self, collection: str, environment: Environment | str, items: Iterable[Mapping[str, Any]]
    ) -> int:
        """Insert one by one; roll back and blame the first id on a duplicate."""
        batch = list(items)
        written: list[str] = []
        try:
            for item in batch:
                super().insert_items(collection, environment, [item])
                written.append(item["_id"])
        except DuplicateItem:
            docs = self.items(collection, environment)
            for item_id in written:
                del docs[item_id]
            raise DuplicateItem(collection, batch[0]["_id"]) from None
        return len(batch)


class ClaimsRollback(DictStorage):
    """Says atomic() rolls back, but its atomic() only holds the lock."""

    atomic_rolls_back = True

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Hold the lock; keep every write, whatever happens."""
        with self.lock:
            yield


class FlatRollback(DictStorage):
    """Rolls back, but a failing inner block undoes the outer block's writes too."""

    atomic_rolls_back = True

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.saved: Any = None

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Snapshot at the outermost level; any failure restores that snapshot."""
        with self.lock:
            if self.depth == 0:
                self.saved = copy.deepcopy((self.infos, self.data))
            self.depth += 1
            try:
                yield
            except BaseException:
                self.infos, self.data = copy.deepcopy(self.saved)
                raise
            finally:
                self.depth -= 1


def _failed(adapter: type[Storage]) -> set[str]:
    return {failure.name for failure in run_conformance(adapter)}


def test_suite_has_the_documented_checks() -> None:
    """The suite exposes named checks with descriptions, in a stable order."""
    names = [check.name for check in CHECKS]
    assert len(names) == len(set(names))
    for expected in ("scan_order", "scan_paging", "round_trip", "copies", "insert", "replace"):
        assert expected in names
    assert all(isinstance(check, Check) and check.description for check in CHECKS)


def test_correct_adapters_pass_programmatically() -> None:
    """run_conformance reports no failure for correct adapters."""
    assert run_conformance(MemoryStorage) == []
    assert run_conformance(DictStorage) == []
    assert run_conformance(lambda: SQLiteStorage(":memory:")) == []


@pytest.mark.parametrize(
    ("adapter", "caught_by"),
    [
        (Utf16Order, "scan_order"),
        (LostUpdates, "replace"),
        (SharedReferences, "copies"),
        (PartialInsert, "insert"),
        (PartialInsert, "insert_duplicate"),
        (WrongDuplicate, "insert_duplicate"),
        (ClaimsRollback, "atomic_rollback"),
        (FlatRollback, "atomic_rollback"),
    ],
)
def test_suite_catches_broken_adapters(adapter: type[Storage], caught_by: str) -> None:
    """Each deliberately broken adapter fails the check for the rule it breaks."""
    failed = _failed(adapter)
    assert caught_by in failed
    failure = next(f for f in run_conformance(adapter) if f.name == caught_by)
    assert isinstance(failure.error, AssertionError)
    assert caught_by in str(failure)


def test_suite_catches_a_broken_adapter_from_pytest(pytester: pytest.Pytester) -> None:
    """A user subclassing StorageConformance on a broken adapter gets failing tests."""
    pytester.makepyfile(
        test_user="""
        from taskengine.storage import MemoryStorage
        from taskengine.testing import StorageConformance

        class Reversed(MemoryStorage):
            def scan(self, *args, **kwargs):
                page = super().scan(*args, **kwargs)
                page.items.reverse()
                return page

        class TestReversed(StorageConformance):
            def make_storage(self):
                return Reversed()
        """
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1
    assert outcomes.get("passed", 0) >= 1
    result.stdout.fnmatch_lines(["*test_conformance?scan_order?*"])


WITHOUT_PYTEST = textwrap.dedent(
    """
    import sys
    sys.modules["pytest"] = None  # any import of pytest now raises ImportError
    from taskengine.storage import MemoryStorage
    from taskengine.testing import CHECKS, run_conformance
    failures = run_conformance(MemoryStorage)
    assert failures == [], failures
    assert "pytest" not in [m for m, v in sys.modules.items() if v is not None]
    try:
        from taskengine.testing import StorageConformance
    except ImportError:
        print(len(CHECKS), "checks; StorageConformance needs pytest")
    """
)


def test_run_conformance_works_without_pytest() -> None:
    """With pytest unimportable, run_conformance still runs every check on MemoryStorage."""
    child = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYTEST],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == f"{len(CHECKS)} checks; StorageConformance needs pytest"


def test_storage_conformance_is_the_same_class_on_every_access() -> None:
    """The lazily loaded StorageConformance is one class, also importable from its module."""
    import taskengine.testing as testing
    from taskengine.testing._pytest_suite import StorageConformance as direct

    assert testing.StorageConformance is direct is StorageConformance
    assert "StorageConformance" in testing.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        testing.Nope  # noqa: B018

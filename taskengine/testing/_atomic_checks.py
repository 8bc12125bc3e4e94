"""Conformance checks: ``atomic()``, its rollback when declared, and concurrent writers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from taskengine.storage.base import Storage
from taskengine.testing._checks import (
    ConformanceError,
    all_items,
    expect,
    get_item,
    materialise,
    register,
    same_value,
)


@register
def check_atomic(storage: Storage) -> None:
    """atomic() is a context manager around writes; errors inside propagate unchanged."""
    storage.create_collection("c")
    with storage.atomic():
        storage.insert_items("c", "LIVE", [{"_id": "a"}, {"_id": "b"}])
        storage.replace_items("c", "LIVE", [{"_id": "a", "v": 1}])
        storage.delete_items("c", "LIVE", ["b"])
    expect(all_items(storage, "c") == [{"_id": "a", "v": 1}], "writes inside atomic() were lost")

    class Boom(Exception):
        pass

    try:
        with storage.atomic():
            storage.replace_items("c", "LIVE", [{"_id": "a", "v": 2}])
            raise Boom
    except Boom:
        pass
    else:
        raise ConformanceError("atomic() swallowed an exception raised inside it")
    got = get_item(storage, "c", "a")
    expect(got in ({"_id": "a", "v": 1}, {"_id": "a", "v": 2}), f"atomic() left {got!r} behind")
    storage.replace_items("c", "LIVE", [{"_id": "a", "v": 3}])
    expect(get_item(storage, "c", "a") == {"_id": "a", "v": 3}, "storage unusable after atomic()")


class _Boom(Exception):
    """Raised inside atomic() blocks by the rollback check."""


def _snapshot(storage: Storage) -> list[Any]:
    """Every collection and every item of each of its environments, for comparison."""
    state: list[Any] = []
    for info in storage.list_collections():
        envs = ("LIVE", "SANDBOX") if info.sandbox_enabled else ("LIVE",)
        state.append([materialise(info), [all_items(storage, info.name, env) for env in envs]])
    return state


def _rolled_back(storage: Storage, before: list[Any], block: Callable[[], None], what: str) -> None:
    """Run ``block`` in atomic(), raise inside it; the storage must be as ``before``."""
    try:
        with storage.atomic():
            block()
            raise _Boom
    except _Boom:
        pass
    else:  # pragma: no cover - the block raised something else, which propagates
        raise ConformanceError("atomic() swallowed an exception raised inside it")
    after = _snapshot(storage)
    expect(same_value(after, before), f"atomic() did not roll back {what}: {after!r}")


@register
def check_atomic_rollback(storage: Storage) -> None:
    """With atomic_rolls_back, an exception undoes the block's writes (nested: its own)."""
    claim = getattr(storage, "atomic_rolls_back", False)
    expect(type(claim) is bool, f"atomic_rolls_back must be a bool, got {claim!r}")
    if not claim:
        return
    storage.create_collection("c", sandbox=True)
    storage.create_collection("gone")
    storage.insert_items("c", "LIVE", [{"_id": k, "v": k} for k in "abcdefgh"])
    storage.insert_items("c", "SANDBOX", [{"_id": "s", "v": [1, {"x": 2}]}])
    storage.insert_items("gone", "LIVE", [{"_id": "g"}])
    storage.delete_items("c", "LIVE", ["h"])
    before = _snapshot(storage)

    def writes() -> None:
        storage.insert_items("c", "LIVE", [{"_id": "n1"}, {"_id": "h", "v": "back"}])
        storage.replace_items("c", "LIVE", [{"_id": "a", "v": 1}, {"_id": "a", "v": 2}])
        storage.delete_items("c", "LIVE", ["b", "c", "d", "e", "f", "n1"])
        storage.insert_items("c", "LIVE", [{"_id": "b", "v": "again"}])
        storage.replace_items("c", "SANDBOX", [{"_id": "s", "v": None}])
        storage.delete_items("c", "SANDBOX", ["s"])

    _rolled_back(storage, before, writes, "inserts, replaces and deletes")

    def collections() -> None:
        storage.create_collection("new", sandbox=True)
        storage.insert_items("new", "LIVE", [{"_id": "x"}])
        storage.replace_items("gone", "LIVE", [{"_id": "g", "v": 1}])
        storage.drop_collection("gone")
        storage.create_collection("gone", publish_plugin=True)

    _rolled_back(storage, before, collections, "collection changes")

    def nested() -> None:
        storage.replace_items("c", "LIVE", [{"_id": "a", "v": "outer"}])
        try:
            with storage.atomic():
                storage.replace_items("c", "LIVE", [{"_id": "g", "v": "inner"}])
                storage.delete_items("c", "LIVE", ["a", "c"])
                storage.create_collection("inner")
                raise _Boom
        except _Boom:
            pass
        expect(get_item(storage, "c", "a") == {"_id": "a", "v": "outer"},
                "a failing inner atomic() block undid the outer block's write")  # fmt: skip
        expect(get_item(storage, "c", "g") == {"_id": "g", "v": "g"}
                and get_item(storage, "c", "c") == {"_id": "c", "v": "c"}
                and "inner" not in [info.name for info in storage.list_collections()],
                "a failing inner atomic() block kept its writes")  # fmt: skip
        with storage.atomic():
            storage.replace_items("c", "LIVE", [{"_id": "g", "v": "inner ok"}])

    _rolled_back(storage, before, nested, "nested blocks")

    with storage.atomic():
        with storage.atomic():
            storage.replace_items("c", "LIVE", [{"_id": "a", "v": "kept"}])
        storage.delete_items("c", "LIVE", ["b"])
    expect(get_item(storage, "c", "a") == {"_id": "a", "v": "kept"}
            and get_item(storage, "c", "b") is None,
            "writes of a block that ended normally were lost")  # fmt: skip


@register
def check_concurrent_writers(storage: Storage) -> None:
    """Writes from several threads at once are all kept (no lost updates)."""
    storage.create_collection("c")
    threads_n, rounds = 4, 25
    storage.insert_items("c", "LIVE", [{"_id": "shared", "v": -1}])
    start = threading.Barrier(threads_n, timeout=30)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                storage.insert_items("c", "LIVE", [{"_id": f"t{t}-{r:02d}", "v": 0}])
                storage.replace_items("c", "LIVE", [{"_id": f"t{t}-{r:02d}", "v": r}])
                storage.scan("c", "LIVE", limit=10)
                storage.replace_items("c", "LIVE", [{"_id": "shared", "v": t}])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    expect(not any(worker.is_alive() for worker in workers), "writer threads did not finish")
    if errors:
        raise ConformanceError(f"a writer thread failed: {errors[0]!r}") from errors[0]
    items = {item["_id"]: item for item in all_items(storage, "c")}
    expect(len(items) == threads_n * rounds + 1, f"expected {threads_n * rounds + 1} items, "
            f"found {len(items)}")  # fmt: skip
    for t in range(threads_n):
        for r in range(rounds):
            got = items.get(f"t{t}-{r:02d}")
            expect(got == {"_id": f"t{t}-{r:02d}", "v": r}, f"lost update: {got!r}")
    expect(items["shared"]["v"] in range(threads_n), f"shared item is {items['shared']!r}")

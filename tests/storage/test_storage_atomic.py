"""atomic() rollback: random writes in (nested) blocks, undone exactly when a block fails."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.errors import StorageError
from taskengine.storage import MemoryStorage, SQLiteStorage, Storage
from taskengine.testing import same_value

IDS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
NAMES = st.sampled_from(["c1", "c2"])
ENVS = st.sampled_from(["LIVE", "SANDBOX"])
ITEMS = st.builds(lambda i, v: {"_id": i, "v": v}, IDS, st.integers(0, 3) | st.lists(st.none()))

WRITES = st.one_of(
    st.tuples(st.just("insert"), NAMES, ENVS, st.lists(ITEMS, max_size=4)),
    st.tuples(st.just("replace"), NAMES, ENVS, st.lists(ITEMS, max_size=4)),
    st.tuples(st.just("delete"), NAMES, ENVS, st.lists(IDS, max_size=5)),
    st.tuples(st.just("create"), NAMES, st.booleans()),
    st.tuples(st.just("drop"), NAMES),
)
OPS = st.recursive(
    st.lists(WRITES, max_size=8),
    lambda inner: st.lists(WRITES | st.tuples(st.just("block"), inner, st.booleans()), max_size=8),
    max_leaves=30,
)


class Boom(Exception):
    """Raised to make an atomic() block fail."""


def apply(storage: Storage, ops: list[Any], *, skip_failing: bool = False) -> None:
    """Run ``ops``; a ``("block", ops, fails)`` runs in atomic() and raises when it fails.

    With ``skip_failing`` the failing blocks are left out instead (what they should
    amount to), and the others run without atomic().
    """
    for op in ops:
        kind = op[0]
        if kind == "block":
            _, inner, fails = op
            if skip_failing:
                if not fails:
                    apply(storage, inner, skip_failing=True)
                continue
            try:
                with storage.atomic():
                    apply(storage, inner)
                    if fails:
                        raise Boom
            except Boom:
                pass
            continue
        try:
            if kind == "insert":
                storage.insert_items(op[1], op[2], op[3])
            elif kind == "replace":
                storage.replace_items(op[1], op[2], op[3])
            elif kind == "delete":
                storage.delete_items(op[1], op[2], op[3])
            elif kind == "create":
                storage.create_collection(op[1], sandbox=op[2])
            else:
                storage.drop_collection(op[1])
        except StorageError:
            pass  # a refused write changes nothing (DuplicateItem, CollectionNotFound...)


def contents(storage: Storage) -> list[Any]:
    """Every collection and all its items, per environment."""
    out: list[Any] = []
    for info in storage.list_collections():
        envs = ["LIVE", "SANDBOX"] if info.sandbox_enabled else ["LIVE"]
        items = [list(storage.find(info.name, env)) for env in envs]
        out.append([info.name, info.sandbox_enabled, items])
    return out


@pytest.mark.parametrize("make", [MemoryStorage, lambda: SQLiteStorage(":memory:")],
                         ids=["memory", "sqlite"])  # fmt: skip
@given(setup=OPS, ops=OPS, outer_fails=st.booleans())
def test_atomic_rollback_leaves_storage_as_before(
    make: Any, setup: list[Any], ops: list[Any], outer_fails: bool
) -> None:
    """A failed block leaves the storage as before it; nested failures undo only their own."""
    storage = make()
    expected = make()
    apply(storage, setup, skip_failing=True)
    apply(expected, setup, skip_failing=True)
    if not outer_fails:
        apply(expected, ops, skip_failing=True)
    apply(storage, [("block", ops, outer_fails)])
    assert same_value(contents(storage), contents(expected))
    for store in (storage, expected):
        check = getattr(store, "_check", None)
        if check is not None:
            check()

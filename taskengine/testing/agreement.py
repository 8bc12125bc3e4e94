"""Agreement with the reference adapter: a hypothesis state machine over two storages.

:func:`agreement_machine` sends the same random operations to your adapter and to
:class:`~taskengine.storage.memory.MemoryStorage` and requires identical answers after
every step (``pip install hypothesis``; it is imported only when the machine is built)::

    from taskengine.testing import agreement_machine

    TestAgreement = agreement_machine(MyStorage).TestCase
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from taskengine.storage.base import Environment, Page, Storage
from taskengine.storage.memory import MemoryStorage
from taskengine.testing._checks import (
    PLUS_0530,
    StorageFactory,
    close_storage,
    materialise,
    same_value,
)

if TYPE_CHECKING:
    from hypothesis.stateful import RuleBasedStateMachine

__all__ = ["agreement_machine"]


def agreement_machine(
    make_storage: StorageFactory, make_reference: StorageFactory = MemoryStorage
) -> type[RuleBasedStateMachine]:
    """A hypothesis state machine: random operations on two storages must agree.

    Every step runs the same call on ``make_storage()`` and on ``make_reference()``
    and requires the same result (compared with :func:`same_value`) or the same
    exception type; after every step both hold the same collections and items. Run it
    from pytest with ``TestAgreement = agreement_machine(MyStorage).TestCase``.
    """
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

    ids = st.sampled_from(["a", "b", "ab", "B", "é", "\uffff", "\U00010000", "a\x00", "z", ""])
    names = st.sampled_from(["c1", "c2"])
    envs = st.sampled_from(["LIVE", "SANDBOX", Environment.LIVE, "bogus"])
    dates = st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)
    ) | st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([timezone.utc, PLUS_0530, timezone(timedelta(hours=-8))]),
    )
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=5)
        | dates
    )
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=6,
    )
    bad_values = st.sampled_from([float("nan"), 2**63, (1,), {"$date": "nope"}])
    fields = st.dictionaries(st.sampled_from(["v", "w", "_x"]), values | bad_values, max_size=2)
    items = st.builds(lambda i, f: {**f, "_id": i}, ids, fields)
    filters: dict[str, Callable[[Mapping[str, Any]], bool] | None] = {
        "none": None,
        "has_v": lambda doc: "v" in doc,
        "v_is_int": lambda doc: type(doc.get("v")) is int,
    }
    filter_names = st.sampled_from(sorted(filters))

    class StorageAgreement(RuleBasedStateMachine):
        """The same random calls on two storages give the same answers."""

        def __init__(self) -> None:
            super().__init__()
            self.subject = make_storage()
            self.reference = make_reference()

        def teardown(self) -> None:
            """Close both storages."""
            close_storage(self.subject)
            close_storage(self.reference)

        def both(self, call: Callable[[Storage], Any]) -> Any:
            """Run ``call`` on both storages; require equal results or equal error types."""
            outcomes = []
            for storage in (self.subject, self.reference):
                try:
                    outcomes.append(("ok", materialise(call(storage))))
                except Exception as exc:
                    outcomes.append(("error", type(exc)))
            subject, reference = outcomes
            if subject[0] == "ok" and reference[0] == "ok":
                assert same_value(subject[1], reference[1]), (
                    f"storage returned {subject[1]!r}, reference {reference[1]!r}"
                )
            else:
                assert subject == reference, f"storage: {subject}, reference: {reference}"
            return reference[1]

        @rule(name=names, sandbox=st.booleans(), plugin=st.booleans())
        def create(self, name: str, sandbox: bool, plugin: bool) -> None:
            """Create a collection."""
            self.both(lambda s: s.create_collection(name, sandbox=sandbox, publish_plugin=plugin))

        @rule(name=names)
        def drop(self, name: str) -> None:
            """Drop a collection."""
            self.both(lambda s: s.drop_collection(name))

        @rule(name=names, env=envs, batch=st.lists(items, max_size=4))
        def insert(self, name: str, env: str, batch: list[dict[str, Any]]) -> None:
            """Insert a batch."""
            self.both(lambda s: s.insert_items(name, env, batch))

        @rule(name=names, env=envs, batch=st.lists(items, max_size=4))
        def replace(self, name: str, env: str, batch: list[dict[str, Any]]) -> None:
            """Replace a batch."""
            self.both(lambda s: s.replace_items(name, env, batch))

        @rule(name=names, env=envs, batch=st.lists(ids, max_size=4))
        def delete(self, name: str, env: str, batch: list[str]) -> None:
            """Delete a batch of ids."""
            self.both(lambda s: s.delete_items(name, env, batch))

        @rule(
            name=names,
            env=envs,
            after=st.none() | ids,
            limit=st.integers(min_value=1, max_value=4),
            flt=filter_names,
        )
        def scan(self, name: str, env: str, after: str | None, limit: int, flt: str) -> None:
            """Scan one page, maybe with a filter."""
            f = filters[flt]
            self.both(lambda s: _accepted(s.scan(name, env, after=after, limit=limit, filter=f), f))

        @rule(name=names, env=envs, flt=filter_names)
        def count_and_find(self, name: str, env: str, flt: str) -> None:
            """Count and find, maybe with a filter."""
            f = filters[flt]
            self.both(lambda s: s.count(name, env, f))
            self.both(lambda s: list(s.find(name, env, f)))

        @rule(name=names, env=envs, item_id=ids)
        def get(self, name: str, env: str, item_id: str) -> None:
            """Get one item."""
            self.both(lambda s: s.get_item(name, env, item_id))

        @invariant()
        def same_contents(self) -> None:
            """Both hold the same collections and items (and the reference's invariants)."""
            self.both(lambda s: s.list_collections())
            for info in self.reference.list_collections():
                for env in ("LIVE", "SANDBOX") if info.sandbox_enabled else ("LIVE",):
                    self.both(partial(_everything, name=info.name, env=env))
            check = getattr(self.reference, "register", None)
            if callable(check):
                check()
            check = getattr(self.subject, "register", None)
            if callable(check):
                check()

    return StorageAgreement


def _accepted(page: Page, flt: Callable[[Mapping[str, Any]], bool] | None) -> Any:
    """What a caller sees of a page: the accepted items (re-checked) and the cursor."""
    items = page.items if flt is None else [item for item in page.items if flt(item)]
    return [items, page.cursor]


def _everything(storage: Storage, *, name: str, env: str) -> list[Any]:
    out: list[Any] = []
    after: str | None = None
    while True:
        page = storage.scan(name, env, after=after, limit=3)
        out.extend(page.items)
        if page.cursor is None:
            return out
        after = page.cursor

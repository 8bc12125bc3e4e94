"""A dashboard served over a real engine for tests and the benchmark, with batches the test
lets through one by one.

:class:`GatedStorage` is a ``MemoryStorage`` whose batches, once the test arms it
(:meth:`Site.arm`), each wait for a permit the test releases (:meth:`Site.release`): a task
advances one batch per permit, so a test decides what the page must show next by what it allowed,
never by time. Waits are bounded (:data:`GATE_TIMEOUT`), so a broken test cannot hang.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from taskengine.dashboard import make_dashboard_app
from taskengine.engine import TaskEngine
from taskengine.http import make_server
from taskengine.storage import MemoryStorage

GATE_TIMEOUT = 30.0
"""The longest a gated write waits for its permit (then it goes on, and the test fails)."""
GATED = "Gated"
GATED_ITEMS = 30
BATCH = 10
MARKUP_ID = '<img src=x onerror="window.__pwned=1">'
SCRIPT_VALUE = "<script>window.__pwned=2</script>"


class GatedStorage(MemoryStorage):
    """``MemoryStorage`` where, while :attr:`armed`, every ``atomic()`` block (one per batch
    of a task) takes a permit first, before it takes the storage's lock: readers (the
    collections view, counts) never wait for a held-back batch."""

    def __init__(self) -> None:
        super().__init__()
        self.permits = threading.Semaphore(0)
        self.armed = False

    @contextmanager
    def atomic(self) -> Iterator[None]:  # type: ignore[override]
        """Wait for a permit (when armed), then a block as ``MemoryStorage.atomic``."""
        if self.armed:
            self.permits.acquire(timeout=GATE_TIMEOUT)
        with super().atomic():
            yield


@attrs.define
class Site:
    """A started engine and the dashboard app on a local port."""

    engine: TaskEngine
    storage: GatedStorage
    url: str
    token: str | None

    def arm(self) -> None:
        """From now on every batch (of any task) waits for :meth:`release`."""
        self.storage.armed = True

    def release(self, batches: int = 1) -> None:
        """Let ``batches`` more batches through."""
        self.storage.permits.release(batches)


def fill(storage: MemoryStorage) -> None:
    """``Gated`` (30 items), ``Items`` (publish plugin and sandbox; markup in ids and values,
    some ``tags`` not arrays) and ``Plain`` (5 items)."""
    storage.create_collection(GATED)
    storage.insert_items(GATED, "LIVE", [{"_id": f"g{n:03}", "n": n} for n in range(GATED_ITEMS)])
    storage.create_collection("Items", sandbox=True, publish_plugin=True)
    items: list[dict[str, Any]] = [{"_id": f"i{n:02}", "tags": ["a"], "n": n} for n in range(8)]
    items.append({"_id": MARKUP_ID, "tags": SCRIPT_VALUE, "title": SCRIPT_VALUE})
    items.append({"_id": "<b>bold</b>", "tags": "not an array"})
    storage.insert_items("Items", "LIVE", items)
    storage.insert_items("Items", "SANDBOX", [{"_id": "s1"}, {"_id": "s2"}])
    storage.create_collection("Plain")
    storage.insert_items("Plain", "LIVE", [{"_id": f"p{n}", "n": n} for n in range(5)])


@contextmanager
def serve_dashboard(
    *,
    token: str | None = None,
    workers: int = 2,
    batch_size: int = BATCH,
    wrap: Callable[[Any], Any] | None = None,
) -> Iterator[Site]:
    """An engine over a filled :class:`GatedStorage`, started, with the dashboard served by
    the threaded ``wsgiref`` server on a free loopback port; all stopped on exit.

    Args:
        wrap: applied to the WSGI app before it is served (the benchmark counts requests).
    """
    storage = GatedStorage()
    fill(storage)
    engine = TaskEngine(
        storage,
        workers=workers,
        batch_size=batch_size,
        set_batch_size=batch_size,  # one batch per permit on either path
        poll_interval=0.2,
    )
    app = make_dashboard_app(engine, token=token)
    server = make_server(app if wrap is None else wrap(app), "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-test", daemon=True)
    engine.start()
    thread.start()
    try:
        yield Site(engine, storage, f"http://127.0.0.1:{server.server_port}/", token)
    finally:
        storage.armed = False
        storage.permits.release(1000)  # nothing stays blocked on the gate
        server.shutdown()
        server.server_close()
        thread.join(10)
        engine.stop()

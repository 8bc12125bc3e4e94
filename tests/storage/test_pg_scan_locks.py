"""A scan inside ``PostgresStorage.atomic()`` locks the rows it returns until the block ends.

Two storages on one database stand for two engine processes running tasks on the same
items: each batch scans, changes and writes its items in one block. Under ``READ
COMMITTED`` an unlocked read let the second block read an item before the first one's
write committed and then write its own change over it (a lost update, found by the
scale-out test, tests/core/test_pg_scaleout.py). Each test decides by what the server
says (a session waiting on a lock), never by a sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from taskengine import PostgresStorage
from taskengine.filters import compile_filter
from taskengine.storage.base import Page

WAIT = 30.0


@pytest.fixture
def storages(pg_database: str) -> Iterator[tuple[PostgresStorage, PostgresStorage]]:
    """Two storages (two pools of connections) on a fresh database with a collection."""
    first, second = PostgresStorage(pg_database), PostgresStorage(pg_database)
    first.create_collection("C")
    first.insert_items("C", "LIVE", [{"_id": k, "tags": []} for k in "abcd"])
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def lock_waits(dsn: str) -> int:
    """How many sessions of the database wait for a lock now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return 0 if row is None else int(row[0])


def in_thread(action: Any) -> tuple[threading.Thread, list[Any]]:
    """``action()`` started in a thread; its result (or exception) lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(action())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def wait_until_blocked(dsn: str, thread: threading.Thread) -> None:
    """Return once a session waits for a lock; fail if ``thread`` ended first (it read
    without waiting) or after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while lock_waits(dsn) == 0:
        assert thread.is_alive(), "the second block read without waiting for the first"
        assert time.monotonic() < deadline, "nothing waited for a lock"
        time.sleep(0.005)


def add_tag(storage: PostgresStorage, tag: str, limit: int = 4) -> Page:
    """One batch: scan, append ``tag`` to every item, write, in one block."""
    with storage.atomic():
        page = storage.scan("C", "LIVE", limit=limit)
        storage.replace_items(
            "C", "LIVE", [{**item, "tags": [*item["tags"], tag]} for item in page.items]
        )
    return page


def test_two_blocks_changing_the_same_items_never_lose_a_write(
    storages: tuple[PostgresStorage, PostgresStorage], pg_database: str
) -> None:
    """The second block's scan waits for the first block and reads its write."""
    first, second = storages
    with first.atomic():
        page = first.scan("C", "LIVE", limit=4)
        thread, out = in_thread(lambda: add_tag(second, "two"))
        wait_until_blocked(pg_database, thread)
        first.replace_items("C", "LIVE", [{**item, "tags": ["one"]} for item in page.items])
    thread.join(WAIT)
    assert not isinstance(out[0], BaseException), out
    assert [item["tags"] for item in first.find("C", "LIVE")] == [["one", "two"]] * 4


def test_a_row_deleted_while_waiting_is_left_out_and_the_cursor_kept(
    storages: tuple[PostgresStorage, PostgresStorage], pg_database: str
) -> None:
    """A row another block deletes while the scan waits for it is not returned; the page
    still ends where it would have (its cursor), so the next page starts after it."""
    first, second = storages
    with first.atomic():
        first.scan("C", "LIVE", limit=3)
        thread, out = in_thread(lambda: add_tag(second, "two", limit=3))
        wait_until_blocked(pg_database, thread)
        first.delete_items("C", "LIVE", ["b"])
    thread.join(WAIT)
    (page,) = out
    assert [item["_id"] for item in page.items] == ["a", "c"]
    assert page.cursor == "c"
    tags = {item["_id"]: item["tags"] for item in first.find("C", "LIVE")}
    assert tags == {"a": ["two"], "c": ["two"], "d": []}


def test_a_scan_outside_a_block_takes_no_lock(
    storages: tuple[PostgresStorage, PostgresStorage],
) -> None:
    """Outside atomic() a scan reads what is committed without waiting for a block."""
    first, second = storages
    with first.atomic():
        page = first.scan("C", "LIVE", limit=4)
        first.replace_items("C", "LIVE", [{**item, "tags": ["one"]} for item in page.items])
        thread, out = in_thread(lambda: second.scan("C", "LIVE", limit=10))
        thread.join(WAIT)
        assert not thread.is_alive()
    (seen,) = out
    assert [item["tags"] for item in seen.items] == [[]] * 4
    assert seen.cursor is None


def test_a_locked_scan_pages_like_an_unlocked_one(
    storages: tuple[PostgresStorage, PostgresStorage],
) -> None:
    """Inside a block, pages (with a cursor, a filter, the last page) are the same as
    outside."""
    first, _ = storages
    for after in (None, "a", "b", "d", "z"):
        for limit in (1, 2, 4, 10):
            accept = None if limit % 2 else (lambda item: item["_id"] != "c")
            outside = first.scan("C", "LIVE", after=after, limit=limit, filter=accept)
            with first.atomic():
                inside = first.scan("C", "LIVE", after=after, limit=limit, filter=accept)
            assert (inside.items, inside.cursor) == (outside.items, outside.cursor), (after, limit)


def add_tag_where(storage: PostgresStorage, tag: str, spec: dict[str, Any]) -> Page:
    """One batch over the items a compiled filter (pushed into SQL) accepts."""
    with storage.atomic():
        page = storage.scan("C", "LIVE", limit=4, filter=compile_filter(spec))
        storage.replace_items(
            "C", "LIVE", [{**item, "tags": [*item["tags"], tag]} for item in page.items]
        )
    return page


def test_a_pushed_down_scan_locks_its_candidates_and_rechecks_them(
    storages: tuple[PostgresStorage, PostgresStorage], pg_database: str
) -> None:
    """A scan whose filter runs inside the query waits for a block writing its rows, then
    sees the write: an item the first block changed so that it no longer matches is left
    out, the others carry both changes."""
    first, second = storages
    spec = {"tags": {"$ne": "stop"}}
    with first.atomic():
        page = first.scan("C", "LIVE", limit=4, filter=compile_filter(spec))
        assert [item["_id"] for item in page.items] == ["a", "b", "c", "d"]
        thread, out = in_thread(lambda: add_tag_where(second, "two", spec))
        wait_until_blocked(pg_database, thread)
        changed = [
            {**item, "tags": ["stop" if item["_id"] == "b" else "one"]} for item in page.items
        ]
        first.replace_items("C", "LIVE", changed)
    thread.join(WAIT)
    (seen,) = out
    assert not isinstance(seen, BaseException), seen
    assert [item["_id"] for item in seen.items] == ["a", "c", "d"]
    tags = {item["_id"]: item["tags"] for item in first.find("C", "LIVE")}
    assert tags == {"a": ["one", "two"], "b": ["stop"], "c": ["one", "two"], "d": ["one", "two"]}

"""smoke"""
from __future__ import annotations
from typing import Any
import pytest
from pg_conftest_plugin import emptied
from taskengine.storage import postgres as postgres_module
from taskengine.storage.postgres import PgDatabase
from taskengine.tasktypes._changes import EditField
from taskengine.tasktypes._fieldops import Operations, ReplaceItem
from test_pg_update import run, stored, _python_rows

@pytest.fixture(autouse=True)
def set_based(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_module, "_has_statistics", lambda conn: True)

def test_smoke(pg_database: str, monkeypatch) -> None:
    with PgDatabase(pg_database) as db:
        storage = emptied(db, "a", "b")
        docs = [{"tags": ["Goob", "outdated", "x", "x"]}, {}, {"tags": None}, {"tags": []}, {"tags": [1, "x"]}, {"tags": "Goob"}, {"a": 1, "tags": ["sale"]}]
        items = [{**d, "_id": f"i{n}"} for n, d in enumerate(docs)]
        for name in ("a", "b"):
            storage.create_collection(name)
            storage.insert_items(name, "LIVE", items)
        change = EditField.of("tags", Operations(add_items=("sale",), remove_items=("outdated",), replace_items=(ReplaceItem("Goob", "Good"),), remove_duplicates=True))
        seen = _python_rows(monkeypatch)
        got = run(storage, "a", 3, None, change, reference=False)
        exp = run(storage, "b", 3, None, change, reference=True)
        print(seen, got, exp)
        print(stored(storage, "a"))
        assert got[:3] == exp[:3]
        assert stored(storage, "a") == stored(storage, "b")

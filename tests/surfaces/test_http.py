"""The REST API over a real loopback socket: routes, envelopes, statuses, auth, concurrency."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.http import MAX_BODY, TaskAPI, is_loopback, make_app, make_server
from taskengine.storage.memory import MemoryStorage
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.taskstore import SQLiteTaskStore

SEED_DELETE_BODY = (
    '{ "task": { "type": "DELETE_BY_QUERY", "deleteByQueryOptions": { "dataCollectionId": '
    '"Items", "environment": "LIVE", "filter": { "holidays": { "$in": ["Halloween"] } }, } } }'
)
TASK_KEYS = {"id", "type", "status", "estimatedItemCount", "itemsSucceeded", "itemsFailed"}
PROGRESS_KEYS = {
    "Id", "Complete", "TotalElements", "ProcessedElements", "ProgressInPercent", "Message", "Self"
}


def copy_task(collection: str = "Items") -> dict[str, Any]:
    """A COPY_FIELD_DATA request body (no filter, so every item counts)."""
    return {
        "task": {
            "type": "COPY_FIELD_DATA",
            "copyFieldDataOptions": {
                "dataCollectionId": collection,
                "sourceFieldKey": "name",
                "targetFieldKey": "nameCopy",
            },
        }
    }


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread; yield ``host:port``."""
    server = make_server(app, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def call(
    address: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One HTTP request; returns (status, parsed JSON body, headers)."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    sent = {"Content-Type": "application/json", **(headers or {})}
    conn = http.client.HTTPConnection(address, timeout=30)
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data), dict(response.getheaders())
    finally:
        conn.close()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[TaskEngine]:
    """A started engine over a SQLite file holding 'Items' (300 items) and 'Empty'."""
    storage = SQLiteStorage(tmp_path / "api.db")
    store = SQLiteTaskStore(storage)
    storage.create_collection("Items", sandbox=True, publish_plugin=True)
    storage.create_collection("Empty")
    storage.insert_items(
        "Items", "LIVE", [{"_id": f"i{n:04d}", "name": f"n{n}"} for n in range(300)]
    )
    engine = TaskEngine(storage, task_store=store, workers=2, batch_size=50)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
        store.close()
        storage.close()


@pytest.fixture
def address(engine: TaskEngine) -> Iterator[str]:
    """The engine served over HTTP without a token."""
    with serving(make_app(engine)) as where:
        yield where


def test_create_get_and_finish_over_http(engine: TaskEngine, address: str) -> None:
    """POST creates a task in the reference envelope; GET returns it, finished, by id."""
    status, body, headers = call(address, "POST", "/cms/v1/tasks", copy_task())
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    task = body["task"]
    assert set(task) >= TASK_KEYS
    assert task["type"] == "COPY_FIELD_DATA"
    assert task["copyFieldDataOptions"]["dataCollectionId"] == "Items"
    assert engine.wait(task["id"], timeout=30).is_finished
    status, body, _ = call(address, "GET", f"/cms/v1/tasks/{task['id']}")
    assert status == 200
    assert body["task"]["status"] == "COMPLETED"
    assert body["task"]["itemsSucceeded"] == 300
    assert body["task"] == engine.get_task(task["id"]).to_json()


def test_seed_body_with_trailing_comma_is_accepted(engine: TaskEngine, address: str) -> None:
    """The reference's DELETE_BY_QUERY curl body works verbatim (on the autocms alias)."""
    status, body, _ = call(address, "POST", "/autocms/v1/tasks", SEED_DELETE_BODY)
    assert status == 200, body
    assert body["task"]["deleteByQueryOptions"]["filter"] == {
        "holidays": {"$in": ["Halloween"]}
    }
    assert engine.wait(body["task"]["id"], timeout=30).is_finished


def test_list_pages_newest_first(engine: TaskEngine, address: str) -> None:
    """GET /tasks pages newest first, with count, offset and total metadata."""
    ids = [call(address, "POST", "/cms/v1/tasks", copy_task("Empty"))[1]["task"]["id"]
           for _ in range(3)]
    status, body, _ = call(address, "GET", "/cms/v1/tasks?paging.limit=2&paging.offset=1")
    assert status == 200
    assert body["metadata"] == {"count": 2, "offset": 1, "total": 3}
    assert [t["id"] for t in body["tasks"]] == [ids[1], ids[0]]
    status, body, _ = call(address, "GET", "/autocms/v1/tasks")
    assert body["metadata"] == {"count": 3, "offset": 0, "total": 3}


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("paging.limit=abc", {"paging.limit"}),
        ("paging.limit=0&paging.offset=-1", {"paging.limit", "paging.offset"}),
        ("paging.limit=1000", {"paging.limit"}),
    ],
)
def test_bad_paging_is_400(address: str, query: str, fields: set[str]) -> None:
    """Bad paging parameters get 400 naming each offending parameter."""
    status, body, _ = call(address, "GET", f"/cms/v1/tasks?{query}")
    assert status == 400
    violations = body["details"]["validationError"]["fieldViolations"]
    assert {v["field"] for v in violations} == fields


def test_cancel_and_cancel_again(engine: TaskEngine, address: str) -> None:
    """DELETE cancels; on a finished task it returns the task unchanged."""
    task_id = call(address, "POST", "/cms/v1/tasks", copy_task())[1]["task"]["id"]
    status, body, _ = call(address, "DELETE", f"/cms/v1/tasks/{task_id}")
    assert status == 200
    assert body["task"]["id"] == task_id
    final = engine.wait(task_id, timeout=30)
    assert final.is_finished
    status, again, _ = call(address, "DELETE", f"/cms/v1/tasks/{task_id}")
    assert status == 200
    assert again["task"] == final.to_json()
    if final.status.value == "FAILED":
        assert again["task"]["failures"][0] == {
            "code": "CANCELLED",
            "description": again["task"]["failures"][0]["description"],
        }


def test_every_violation_is_reported(address: str) -> None:
    """An invalid task gets 400 with every field violation, and nothing is created."""
    body = {"task": {"type": "EDIT_FIELD_DATA", "editFieldDataOptions": {"operations": 3}}}
    status, reply, _ = call(address, "POST", "/cms/v1/tasks", body)
    assert status == 400
    fields = {v["field"] for v in reply["details"]["validationError"]["fieldViolations"]}
    assert "task.editFieldDataOptions.dataCollectionId" in fields
    assert "task.editFieldDataOptions.fieldKey" in fields
    assert len(fields) >= 3
    assert isinstance(reply["message"], str)
    assert call(address, "GET", "/cms/v1/tasks")[1]["metadata"]["total"] == 0


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        (b'{"task": {"type": }', "body", "line 1 column 19"),
        (b"[1, 2]", "body", "must be a JSON object, got an array"),
        (b"", "body", "empty"),
        (b"\xff", "body", "not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "body", "nested deeper"),
        (b'{"nope": 1}', "task", "required"),
        (b'{"task": []}', "task", "must be an object"),
    ],
)
def test_bad_bodies_are_400(address: str, payload: bytes, field: str, fragment: str) -> None:
    """Bodies that are not JSON, not an object, too deep or without a task get 400."""
    status, body, _ = call(address, "POST", "/cms/v1/tasks", payload)
    assert status == 400
    violations = body["details"]["validationError"]["fieldViolations"]
    assert violations[0]["field"] == field
    assert fragment in violations[0]["description"]


def test_oversized_body_is_413(engine: TaskEngine) -> None:
    """A body over the limit gets 413 in the application-error envelope."""
    with serving(make_app(engine, max_body=1000)) as where:
        status, body, _ = call(where, "POST", "/cms/v1/tasks", b" " * 5000)
        assert status == 413
        error = body["details"]["applicationError"]
        assert error["code"] == "PAYLOAD_TOO_LARGE"
        assert error["data"] == {"limit": 1000, "length": 5000}
        # The connection state is clean: the next request works.
        assert call(where, "GET", "/cms/v1/tasks")[0] == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/cms/v1/tasks/no-such-id"),
        ("DELETE", "/cms/v1/tasks/no-such-id"),
        ("GET", "/api/backgroundtask/no-such-id"),
    ],
)
def test_unknown_task_is_404(address: str, method: str, path: str) -> None:
    """Unknown ids get 404 with the task id in the error data, never a made-up task."""
    status, body, _ = call(address, method, path)
    assert status == 404
    error = body["details"]["applicationError"]
    assert error["code"] == "TASK_NOT_FOUND"
    assert error["data"] == {"taskId": "no-such-id"}


def test_unknown_route_is_404(address: str) -> None:
    """A path outside the API gets 404."""
    status, body, _ = call(address, "GET", "/nowhere")
    assert status == 404
    assert body["details"]["applicationError"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/cms/v1/tasks", "GET, HEAD, POST"),
        ("POST", "/cms/v1/tasks/abc", "DELETE, GET, HEAD"),
        ("DELETE", "/api/backgroundtask/abc", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405(address: str, method: str, path: str, allow: str) -> None:
    """A known path with the wrong method gets 405 and an Allow header."""
    status, body, headers = call(address, method, path, b"{}")
    assert status == 405
    assert headers["Allow"] == allow
    assert body["details"]["applicationError"]["code"] == "METHOD_NOT_ALLOWED"


def test_expired_task_is_404(tmp_path: Path) -> None:
    """After its retention a finished task answers 404 on every route."""
    clock = ManualClock()
    storage = MemoryStorage()
    storage.create_collection("Empty")
    engine = TaskEngine(storage, clock=clock, retention=timedelta(minutes=5))
    task = engine.create_task(copy_task("Empty"))
    engine.run_until_idle()
    with serving(make_app(engine)) as where:
        assert call(where, "GET", f"/cms/v1/tasks/{task.id}")[0] == 200
        clock.advance(timedelta(minutes=6))
        for method, path in (
            ("GET", f"/cms/v1/tasks/{task.id}"),
            ("GET", f"/api/backgroundtask/{task.id}"),
            ("DELETE", f"/cms/v1/tasks/{task.id}"),
        ):
            assert call(where, method, path)[0] == 404


def test_progress_view_has_the_seed_shape(engine: TaskEngine, address: str) -> None:
    """The progress resource has the keys of docs/progress.md and a Self URL built from the Host."""
    task_id = call(address, "POST", "/cms/v1/tasks", copy_task())[1]["task"]["id"]
    engine.wait(task_id, timeout=30)
    status, body, _ = call(
        address, "GET", f"/api/backgroundtask/{task_id}", headers={"Host": "example.test:81"}
    )
    assert status == 200
    assert set(body) == PROGRESS_KEYS | {"StartedAt", "FinishedAt"}
    assert body["Id"] == task_id
    assert body["Complete"] is True
    assert body["ProgressInPercent"] == 1.0
    assert body["ProcessedElements"] == body["TotalElements"] == 300
    assert body["Message"] == "Task Completed"
    assert body["Self"] == f"http://example.test:81/api/backgroundtask/{task_id}"


def test_token_is_required_when_set(engine: TaskEngine) -> None:
    """With a token, requests without it (or with a wrong one) get 401; right ones pass."""
    with serving(make_app(engine, token="s3cret")) as where:
        status, body, headers = call(where, "GET", "/cms/v1/tasks")
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert body["details"]["applicationError"]["code"] == "UNAUTHENTICATED"
        wrong = {"Authorization": "Bearer nope"}
        assert call(where, "GET", "/cms/v1/tasks", headers=wrong)[0] == 401
        right = {"Authorization": "Bearer s3cret"}
        assert call(where, "GET", "/cms/v1/tasks", headers=right)[0] == 200
        # The reference's curl examples send the bare token.
        assert call(where, "GET", "/cms/v1/tasks", headers={"Authorization": "s3cret"})[0] == 200


class _BrokenEngine:
    """An engine whose reads fail with an unexpected error carrying a secret."""

    def __init__(self, engine: TaskEngine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def get_task(self, task_id: str) -> Any:
        raise RuntimeError("secret-internal-detail /srv/app.py")


def test_unexpected_error_is_500_without_internals(
    engine: TaskEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug gives 500 in the envelope, without the exception text; the log has it."""
    with caplog.at_level(logging.ERROR, logger="taskengine.http"), serving(
        make_app(_BrokenEngine(engine))
    ) as where:
        status, body, _ = call(where, "GET", "/cms/v1/tasks/x")
    assert status == 500
    assert "secret" not in json.dumps(body)
    assert body["details"]["applicationError"]["code"] == "INTERNAL"
    assert "secret-internal-detail" in caplog.text


def test_concurrent_clients_create_poll_and_cancel(engine: TaskEngine, address: str) -> None:
    """Many clients at once create, poll and cancel tasks; every answer is consistent."""
    errors: list[str] = []
    finals: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def client(number: int) -> None:
        try:
            status, body, _ = call(address, "POST", "/cms/v1/tasks", copy_task())
            assert status == 200, body
            task_id = body["task"]["id"]
            if number % 2:
                status, body, _ = call(address, "DELETE", f"/cms/v1/tasks/{task_id}")
                assert status == 200, body
            for _ in range(2000):
                status, body, _ = call(address, "GET", f"/cms/v1/tasks/{task_id}")
                assert status == 200, body
                progress = call(address, "GET", f"/api/backgroundtask/{task_id}")[1]
                assert 0.0 <= progress["ProgressInPercent"] <= 1.0
                if body["task"]["status"] in ("COMPLETED", "FAILED"):
                    break
                engine.wait(task_id, timeout=0.05)
            with lock:
                finals[task_id] = body["task"]
        except Exception as exc:  # reported below, with the client's number
            with lock:
                errors.append(f"client {number}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(finals) == 8
    for task in finals.values():
        processed = task["itemsSucceeded"] + task["itemsFailed"]
        if task["status"] == "COMPLETED":
            assert processed == 300
        else:
            assert task["status"] == "FAILED"
            assert task["failures"][0]["code"] == "CANCELLED"
            assert "data" not in task["failures"][0]
            assert processed <= 300
    total = call(address, "GET", "/cms/v1/tasks?paging.limit=100")[1]["metadata"]["total"]
    assert total == 8


def _wsgi_call(app: TaskAPI, method: str, path: str, body: bytes) -> tuple[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.append(status)

    payload = b"".join(app(environ, start_response))
    return seen[0], json.loads(payload)


@given(st.binary(max_size=200))
def test_arbitrary_bodies_never_cause_500(body: bytes) -> None:
    """Whatever bytes are posted, the answer is a 4xx envelope (or a created task)."""
    storage = MemoryStorage()
    engine = TaskEngine(storage)
    status, reply = _wsgi_call(TaskAPI(engine), "POST", "/cms/v1/tasks", body)
    assert status[:3] in ("200", "400")
    assert set(reply) <= {"task", "message", "details"}


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["type", "copyFieldDataOptions", "dataCollectionId", "x"]),
            inner,
            max_size=3,
        ),
        max_leaves=10,
    )
)
def test_arbitrary_task_objects_get_400_or_200(task: Any) -> None:
    """Any JSON under "task" gets 200 or a 400 listing violations, never a 500."""
    engine = TaskEngine(MemoryStorage())
    status, reply = _wsgi_call(
        TaskAPI(engine), "POST", "/cms/v1/tasks", json.dumps({"task": task}).encode()
    )
    assert status[:3] in ("200", "400")
    if status.startswith("400"):
        assert reply["details"]["validationError"]["fieldViolations"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.10", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    """Only loopback addresses count as loopback."""
    assert is_loopback(host) is loopback


def test_app_rejects_bad_settings() -> None:
    """An empty token or a non-positive body limit is refused at construction."""
    engine = TaskEngine(MemoryStorage())
    with pytest.raises(ValueError, match="token"):
        make_app(engine, token="")
    with pytest.raises(ValueError, match="max_body"):
        make_app(engine, max_body=0)
    assert make_app(engine).max_body == MAX_BODY

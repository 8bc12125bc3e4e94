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
from taskengine.errors import Violation
from taskengine.http import (
    MAX_BODY,
    TaskAPI,
    application_error,
    is_loopback,
    make_app,
    make_server,
    validation_error,
)
from taskengine.storage.memory import MemoryStorage
from taskengine.storage.sqlite import SQLiteStorage
from taskengine.taskstore import SQLiteTaskStore

REFERENCE_DELETE_BODY = (
    '{ "task": { "type": "DELETE_BY_QUERY", "deleteByQueryOptions": { "dataCollectionId": '
    '"Items", "environment": "LIVE", "filter": { "holidays": { "$in": ["Halloween"] } }, } } }'
)
TASK_KEYS = {"id", "type", "status", "estimatedItemCount", "itemsSucceeded", "itemsFailed"}
PROGRESS_KEYS = {
    "Id",
    "Complete",
    "TotalElements",
    "ProcessedElements",
    "ProgressInPercent",
    "Message",
    "Self",
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


def test_reference_body_with_trailing_comma_is_accepted(engine: TaskEngine, address: str) -> None:
    """The reference's DELETE_BY_QUERY curl body works verbatim (on the autocms alias)."""
    status, body, _ = call(address, "POST", "/autocms/v1/tasks", REFERENCE_DELETE_BODY)
    assert status == 200, body
    assert body["task"]["deleteByQueryOptions"]["filter"] == {"holidays": {"$in": ["Halloween"]}}
    assert engine.wait(body["task"]["id"], timeout=30).is_finished


def test_list_pages_newest_first(engine: TaskEngine, address: str) -> None:
    """GET /tasks pages newest first, with count, offset and total metadata."""
    ids = [
        call(address, "POST", "/cms/v1/tasks", copy_task("Empty"))[1]["task"]["id"]
        for _ in range(3)
    ]
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
        (b"{}", "task", "required"),
        (b'{"nope": 1}', "nope", "unknown field"),
        (b'{"task": []}', "task", "must be an object"),
        (
            b'{"task": {"type": "COPY_FIELD_DATA", "copyFieldDataOptions": {"dataCollectionId":'
            b' "Items", "sourceFieldKey": "name", "targetFieldKey": "c"}}, "": null}',
            "",
            "unknown field",
        ),
    ],
)
def test_bad_bodies_are_400(address: str, payload: bytes, field: str, fragment: str) -> None:
    """Bodies that are not JSON, not an object, too deep, without a task or with another
    top-level field get 400, and nothing is created."""
    status, body, _ = call(address, "POST", "/cms/v1/tasks", payload)
    assert status == 400
    violations = body["details"]["validationError"]["fieldViolations"]
    assert violations[0]["field"] == field
    assert fragment in violations[0]["description"]
    assert call(address, "GET", "/cms/v1/tasks")[1]["metadata"]["total"] == 0


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


def test_progress_view_has_the_reference_shape(engine: TaskEngine, address: str) -> None:
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
    with (
        caplog.at_level(logging.ERROR, logger="taskengine.http"),
        serving(make_app(_BrokenEngine(engine))) as where,
    ):
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
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["type", "copyFieldDataOptions", "dataCollectionId", "x"]),
                inner,
                max_size=3,
            )
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


# -- the reference API's examples and error answers, over a stopped in-memory engine -------

# The four request bodies of the reference API's curl examples, byte for byte (DELETE_BY_QUERY's
# has a trailing comma after its filter).
REFERENCE_BODIES = {
    "UPDATE_PUBLISH_STATUS": (
        '{ "task": { "type": "UPDATE_PUBLISH_STATUS", "updatePublishStatusOptions": { '
        '"dataCollectionId": "Items", "environment": "LIVE", "filter": { "holidays": { "$in": '
        '["Halloween"] } }, "operation": "SCHEDULE_PUBLISHED_STATUS", '
        '"schedulePublishedStatusOptions": { "date": "2025-01-01T10:00:00Z" } } } }'
    ),
    "DELETE_BY_QUERY": (
        '{ "task": { "type": "DELETE_BY_QUERY", "deleteByQueryOptions": { "dataCollectionId": '
        '"Items", "environment": "LIVE", "filter": { "holidays": { "$in": ["Halloween"] } }, '
        "} } }"
    ),
    "EDIT_FIELD_DATA": (
        '{ "task": { "type": "EDIT_FIELD_DATA", "editFieldDataOptions": { "dataCollectionId": '
        '"Items", "environment": "LIVE", "filter": { "holidays": { "$in": ["Halloween"] } }, '
        '"fieldKey": "tags", "operations": { "addItems": ["sale"], "removeItems": ["outdated"], '
        '"replaceItems": [{ "from": "Goob", "to": "Good" }], "removeDuplicates": true } } } }'
    ),
    "COPY_FIELD_DATA": (
        '{ "task": { "type": "COPY_FIELD_DATA", "copyFieldDataOptions": { "dataCollectionId": '
        '"Items", "environment": "LIVE", "sourceFieldKey": "fullName", "targetFieldKey": '
        '"fullNameCopy" } } }'
    ),
}
OPTION_KEYS = {
    "DELETE_BY_QUERY": "deleteByQueryOptions",
    "COPY_FIELD_DATA": "copyFieldDataOptions",
    "EDIT_FIELD_DATA": "editFieldDataOptions",
    "UPDATE_PUBLISH_STATUS": "updatePublishStatusOptions",
}
COPY_BODY = REFERENCE_BODIES["COPY_FIELD_DATA"]


def make_storage() -> MemoryStorage:
    """A publish-plugin collection ``Items`` with a few Halloween items."""
    storage = MemoryStorage()
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items(
        "Items",
        "LIVE",
        [
            {
                "_id": f"{i:03d}",
                "holidays": ["Halloween"],
                "tags": ["Goob", "outdated"],
                "fullName": f"n{i}",
            }
            for i in range(6)
        ],
    )
    return storage


class Client:
    """A tiny http.client wrapper that returns (status, headers, parsed body)."""

    def __init__(self, address: str, token: str | None = None) -> None:
        self.address = address
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """Send one request on a new connection."""
        conn = http.client.HTTPConnection(self.address, timeout=10)
        try:
            sent = {"Content-Type": "application/json"}
            if self.token is not None:
                sent["Authorization"] = f"Bearer {self.token}"
            sent.update(headers or {})
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            raw = response.read()
            found = {k.lower(): v for k, v in response.getheaders()}
            return response.status, found, json.loads(raw) if raw else None
        finally:
            conn.close()


@contextlib.contextmanager
def serving_engine(engine: TaskEngine, **kwargs: Any) -> Iterator[Client]:
    """Serve an app over ``engine`` on a free loopback port."""
    server = make_server(make_app(engine, **kwargs), "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield Client(f"127.0.0.1:{server.server_port}", kwargs.get("token"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def stopped_engine() -> TaskEngine:
    """A stopped engine (tasks stay NEW unless the test runs them)."""
    return TaskEngine(make_storage(), clock=ManualClock())


@pytest.fixture
def client(stopped_engine: TaskEngine) -> Iterator[Client]:
    """A client of a server over ``stopped_engine``."""
    with serving_engine(stopped_engine) as c:
        yield c


def assert_application_error(body: Any) -> dict[str, Any]:
    """The body is the reference application-error envelope; return applicationError."""
    assert isinstance(body["message"], str)
    assert body["message"]
    error = body["details"]["applicationError"]
    assert set(error) == {"code", "description", "data"}
    assert isinstance(error["code"], str)
    assert isinstance(error["description"], str)
    assert isinstance(error["data"], dict)
    return dict(error)


def violations(body: Any) -> list[dict[str, str]]:
    """The fieldViolations of a reference validation-error envelope."""
    assert isinstance(body["message"], str)
    found = body["details"]["validationError"]["fieldViolations"]
    assert found
    assert all(set(v) >= {"field", "description"} for v in found)
    return list(found)


# -- the reference bodies ------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/autocms/v1/tasks", "/cms/v1/tasks"])
@pytest.mark.parametrize("kind", sorted(REFERENCE_BODIES))
def test_reference_curl_bodies_are_accepted_verbatim(
    client: Client, stopped_engine: TaskEngine, prefix: str, kind: str
) -> None:
    """Each reference curl body, POSTed as it is, creates a NEW task of its type."""
    status, headers, body = client.request("POST", prefix, REFERENCE_BODIES[kind])
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    task = body["task"]
    assert task["type"] == kind
    assert task["status"] == "NEW"
    assert [k for k in task if k.endswith("Options")] == [OPTION_KEYS[kind]]
    assert "startedAt" not in task
    assert "finishedAt" not in task
    assert stopped_engine.get_task(task["id"]).type == kind


def test_reference_tasks_run_to_completion_over_http() -> None:
    """With workers started, every reference task completes; the data shows the effect."""
    storage = make_storage()
    with TaskEngine(storage) as engine, serving_engine(engine) as client:
        ids = {}
        for kind in (
            "COPY_FIELD_DATA",
            "EDIT_FIELD_DATA",
            "UPDATE_PUBLISH_STATUS",
            "DELETE_BY_QUERY",
        ):
            _, _, body = client.request("POST", "/autocms/v1/tasks", REFERENCE_BODIES[kind])
            ids[kind] = body["task"]["id"]
            assert engine.wait(ids[kind], timeout=30).is_finished
        for kind, task_id in ids.items():
            status, _, body = client.request("GET", f"/autocms/v1/tasks/{task_id}")
            assert status == 200, (kind, body)
            assert body["task"]["status"] == "COMPLETED", (kind, body)
            assert "startedAt" in body["task"]
            assert "finishedAt" in body["task"]
        assert storage.count("Items", "LIVE").value == 0


# -- routes --------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/autocms/v1/tasks", "/cms/v1/tasks"])
def test_get_list_cancel_and_progress_routes(
    client: Client, stopped_engine: TaskEngine, prefix: str
) -> None:
    """get/list/cancel under both prefixes and the progress view answer in reference shapes."""
    ids = [client.request("POST", prefix, COPY_BODY)[2]["task"]["id"] for _ in range(3)]
    status, _, body = client.request("GET", f"{prefix}/{ids[0]}")
    assert status == 200
    assert set(body) == {"task"}
    assert body["task"]["id"] == ids[0]

    status, _, body = client.request("GET", f"{prefix}?paging.limit=2&paging.offset=0")
    assert status == 200
    assert set(body) == {"tasks", "metadata"}
    assert [t["id"] for t in body["tasks"]] == [ids[2], ids[1]]
    assert body["metadata"] == {"count": 2, "offset": 0, "total": 3}
    status, _, body = client.request("GET", f"{prefix}?paging.offset=2")
    assert [t["id"] for t in body["tasks"]] == [ids[0]]
    assert body["metadata"] == {"count": 1, "offset": 2, "total": 3}

    status, _, body = client.request("DELETE", f"{prefix}/{ids[1]}")
    assert status == 200
    assert body["task"]["status"] == "FAILED"
    assert body["task"]["failures"] == [
        {"code": "CANCELLED", "description": body["task"]["failures"][0]["description"]}
    ]
    status, _, again = client.request("DELETE", f"{prefix}/{ids[1]}")
    assert status == 200
    assert again == body

    status, _, body = client.request("GET", f"/api/backgroundtask/{ids[0]}")
    assert status == 200
    assert body["Id"] == ids[0]
    assert body["Complete"] is False
    assert body["Self"] == f"http://{client.address}/api/backgroundtask/{ids[0]}"
    assert set(body) >= {
        "Id",
        "Complete",
        "TotalElements",
        "ProcessedElements",
        "ProgressInPercent",
        "Message",
        "Self",
    }


def test_progress_of_completed_task_over_http(stopped_engine: TaskEngine, client: Client) -> None:
    """The completed progress view over HTTP (docs/progress.md), Self built from the Host header."""
    _, _, body = client.request("POST", "/cms/v1/tasks", COPY_BODY)
    stopped_engine.run_until_idle()
    status, headers, view = client.request(
        "GET", f"/api/backgroundtask/{body['task']['id']}", headers={"Host": "example.test"}
    )
    assert status == 200
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert view["Complete"] is True
    assert view["ProgressInPercent"] == 1.0
    assert view["TotalElements"] == 6
    assert view["ProcessedElements"] == 6
    assert view["Message"] == "Task Completed"
    assert "FinishedAt" in view
    assert "StartedAt" in view
    assert view["Self"] == f"http://example.test/api/backgroundtask/{body['task']['id']}"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/cms/v1/tasks/nope"),
        ("DELETE", "/cms/v1/tasks/nope"),
        ("GET", "/autocms/v1/tasks/nope"),
        ("DELETE", "/autocms/v1/tasks/nope"),
        ("GET", "/api/backgroundtask/nope"),
    ],
)
def test_unknown_ids_are_404_in_the_envelope(client: Client, method: str, path: str) -> None:
    """Unknown ids answer 404 with the application-error envelope, never a pending task."""
    status, _, body = client.request(method, path)
    assert status == 404
    assert_application_error(body)
    assert "task" not in body


def test_expired_task_is_404_for_get_cancel_and_progress_and_leaves_the_list() -> None:
    """After retention, get/cancel/progress over HTTP answer 404."""
    from datetime import timedelta

    clock = ManualClock()
    engine = TaskEngine(make_storage(), clock=clock, retention=timedelta(minutes=5))
    with serving_engine(engine) as client:
        task_id = client.request("POST", "/cms/v1/tasks", COPY_BODY)[2]["task"]["id"]
        client.request("DELETE", f"/cms/v1/tasks/{task_id}")
        clock.advance(timedelta(minutes=6))
        for method, path in (
            ("GET", f"/cms/v1/tasks/{task_id}"),
            ("DELETE", f"/cms/v1/tasks/{task_id}"),
            ("GET", f"/api/backgroundtask/{task_id}"),
        ):
            assert client.request(method, path)[0] == 404
        assert client.request("GET", "/cms/v1/tasks")[2]["metadata"]["total"] == 0


def test_unknown_route_is_404_in_the_application_error_envelope(client: Client) -> None:
    """A path outside the API is 404 in the envelope."""
    status, _, body = client.request("GET", "/nothing/here")
    assert status == 404
    assert_application_error(body)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/cms/v1/tasks"),
        ("DELETE", "/cms/v1/tasks"),
        ("PATCH", "/autocms/v1/tasks"),
        ("POST", "/cms/v1/tasks/abc"),
        ("PUT", "/autocms/v1/tasks/abc"),
        ("POST", "/api/backgroundtask/abc"),
        ("DELETE", "/api/backgroundtask/abc"),
    ],
)
def test_wrong_method_is_405_with_allow(client: Client, method: str, path: str) -> None:
    """A known route with the wrong method answers 405 with an Allow header."""
    status, headers, body = client.request(method, path, "{}")
    assert status == 405
    assert "allow" in headers
    assert headers["allow"]
    assert_application_error(body)


# -- bad bodies ----------------------------------------------------------------------------


def test_oversized_body_is_413_in_the_envelope_and_stores_nothing(
    stopped_engine: TaskEngine,
) -> None:
    """A body over the limit answers 413 in the envelope and stores nothing."""
    with serving_engine(stopped_engine, max_body=1000) as client:
        big = json.dumps({"task": {"type": "COPY_FIELD_DATA", "pad": "x" * 2000}})
        status, _, body = client.request("POST", "/cms/v1/tasks", big)
        assert status == 413
        assert_application_error(body)
    assert stopped_engine.list_tasks().total == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"task": }',
        b"not json",
        b"",
        b"   ",
        b'{"task": {"type": "X"}} trailing',
        b"\xff\xfe{}",
        b'{"a": NaN}',
        b"{'task': 1}",
    ],
)
def test_malformed_json_is_400(client: Client, stopped_engine: TaskEngine, raw: bytes) -> None:
    """Bodies that are not JSON answer 400 with a validation envelope, never a traceback."""
    status, _, body = client.request("POST", "/cms/v1/tasks", raw)
    assert status == 400, body
    violations(body)
    assert stopped_engine.list_tasks().total == 0


@pytest.mark.parametrize("raw", ["[]", '"task"', "1", "null", "true", '[{"task": {}}]'])
def test_non_object_body_is_400(client: Client, raw: str) -> None:
    """A JSON body that is not an object answers 400."""
    status, _, body = client.request("POST", "/cms/v1/tasks", raw)
    assert status == 400
    violations(body)


@pytest.mark.parametrize("raw", ["{}", '{"task": 5}', '{"task": null}', '{"task": []}'])
def test_missing_or_bad_task_is_400_naming_task(client: Client, raw: str) -> None:
    """No usable ``task`` in the body answers 400 naming the field ``task``."""
    status, _, body = client.request("POST", "/cms/v1/tasks", raw)
    assert status == 400
    assert any(v["field"].startswith("task") for v in violations(body))


@pytest.mark.parametrize("depth", [100, 5000, 200_000])
def test_deep_nesting_is_400(client: Client, depth: int) -> None:
    """Deeply nested bodies answer 400 (never a RecursionError or a 500)."""
    raw = '{"task": ' + "[" * depth + "]" * depth + "}"
    status, _, body = client.request("POST", "/cms/v1/tasks", raw)
    assert status == 400
    violations(body)


def test_invalid_task_is_400_with_every_violation(
    client: Client, stopped_engine: TaskEngine
) -> None:
    """An invalid task lists every field violation by path and nothing is stored."""
    raw = json.dumps(
        {
            "task": {
                "type": "COPY_FIELD_DATA",
                "copyFieldDataOptions": {
                    "dataCollectionId": "x" * 256,
                    "environment": "MARS",
                    "sourceFieldKey": "a",
                    "targetFieldKey": "_id",
                },
            }
        }
    )
    status, _, body = client.request("POST", "/cms/v1/tasks", raw)
    assert status == 400
    fields = {v["field"] for v in violations(body)}
    prefix = "task.copyFieldDataOptions."
    assert {
        prefix + "dataCollectionId",
        prefix + "environment",
        prefix + "targetFieldKey",
    } <= fields
    assert stopped_engine.list_tasks().total == 0


def test_missing_type_and_unknown_type_are_400(client: Client) -> None:
    """task.type is required and must be a known type."""
    for task in ({"copyFieldDataOptions": {}}, {"type": "NOPE"}):
        status, _, body = client.request("POST", "/cms/v1/tasks", json.dumps({"task": task}))
        assert status == 400
        assert "task.type" in {v["field"] for v in violations(body)}


@pytest.mark.parametrize(
    "query",
    [
        "paging.limit=abc",
        "paging.limit=0",
        "paging.limit=1000",
        "paging.offset=-1",
        "paging.offset=x",
    ],
)
def test_bad_paging_value_is_400_naming_the_parameter(client: Client, query: str) -> None:
    """Bad paging parameters answer 400 naming the parameter."""
    status, _, body = client.request("GET", f"/cms/v1/tasks?{query}")
    assert status == 400
    name = query.split("=")[0]
    assert name in {v["field"] for v in violations(body)}


# -- auth and internals --------------------------------------------------------------------


def test_bearer_token_is_required_when_configured(stopped_engine: TaskEngine) -> None:
    """With a token, requests without it or with a wrong one get 401; the right one works."""
    with serving_engine(stopped_engine, token="s3cret") as client:
        anonymous = Client(client.address)
        status, headers, body = anonymous.request("GET", "/cms/v1/tasks")
        assert status == 401
        assert_application_error(body)
        assert "www-authenticate" in headers
        status, _, _ = anonymous.request(
            "GET", "/cms/v1/tasks", headers={"Authorization": "Bearer wrong"}
        )
        assert status == 401
        status, _, _ = anonymous.request("POST", "/cms/v1/tasks", COPY_BODY)
        assert status == 401
        assert stopped_engine.list_tasks().total == 0
        status, _, body = client.request("POST", "/cms/v1/tasks", COPY_BODY)
        assert status == 200
        assert client.request("GET", "/api/backgroundtask/" + body["task"]["id"])[0] == 200


class BrokenEngine(TaskEngine):
    """An engine whose get_task has a bug carrying a secret in its message."""

    def get_task(self, task_id: str) -> Any:
        """Fail with an unexpected error."""
        raise RuntimeError("secret-internal-detail /etc/passwd")


def test_internal_error_is_500_without_internals(caplog: pytest.LogCaptureFixture) -> None:
    """A bug answers 500 in the envelope without leaking the exception text."""
    engine = BrokenEngine(make_storage())
    with serving_engine(engine) as client:
        conn = http.client.HTTPConnection(client.address, timeout=10)
        conn.request("GET", "/cms/v1/tasks/abc")
        response = conn.getresponse()
        raw = response.read().decode()
        conn.close()
    assert response.status == 500
    assert "secret" not in raw
    assert "Traceback" not in raw
    assert "RuntimeError" not in raw
    assert_application_error(json.loads(raw))


def test_four_clients_at_once_on_memory_storage_get_well_formed_answers() -> None:
    """Several clients at once create, poll and cancel; every answer is well formed."""
    with TaskEngine(make_storage(), workers=2) as engine, serving_engine(engine) as client:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(5):
                    status, _, body = client.request("POST", "/cms/v1/tasks", COPY_BODY)
                    assert status == 200
                    task_id = body["task"]["id"]
                    assert client.request("GET", f"/api/backgroundtask/{task_id}")[0] == 200
                    status, _, body = client.request("DELETE", f"/cms/v1/tasks/{task_id}")
                    assert status == 200
                    assert body["task"]["id"] == task_id
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert client.request("GET", "/cms/v1/tasks?paging.limit=100")[2]["metadata"]["total"] == 20


def test_error_envelopes_have_the_reference_shape() -> None:
    """The two reference error envelopes carry exactly the reference keys."""
    body = validation_error("bad", (Violation("task.type", "required"),))
    assert body == {
        "message": "bad",
        "details": {
            "validationError": {
                "fieldViolations": [{"field": "task.type", "description": "required"}]
            }
        },
    }
    app = application_error("gone", "TASK_NOT_FOUND", "no such task", {"taskId": "x"})
    assert app == {
        "message": "gone",
        "details": {
            "applicationError": {
                "code": "TASK_NOT_FOUND",
                "description": "no such task",
                "data": {"taskId": "x"},
            }
        },
    }
    assert application_error("m", "C", "d")["details"]["applicationError"]["data"] == {}


def test_create_with_slices_runs_one_combined_task(engine: TaskEngine, address: str) -> None:
    """``?slices=3`` runs the task in three slices; GET and the list show one task with
    the combined counters and ``"slices": 3``, never the slices."""
    status, body, _ = call(address, "POST", "/cms/v1/tasks?slices=3", copy_task())
    assert status == 200, body
    task_id = body["task"]["id"]
    assert body["task"]["slices"] == 3
    assert engine.wait(task_id, timeout=30).is_finished
    status, body, _ = call(address, "GET", f"/cms/v1/tasks/{task_id}")
    assert (body["task"]["status"], body["task"]["itemsSucceeded"]) == ("COMPLETED", 300)
    assert body["task"]["slices"] == 3
    status, page, _ = call(address, "GET", "/cms/v1/tasks")
    assert [t["id"] for t in page["tasks"]] == [task_id]
    assert page["metadata"]["total"] == 1


@pytest.mark.parametrize("value", ["abc", "0", "65", "1.5", "", "2&slices="])
def test_bad_slices_are_400_and_nothing_is_stored(
    engine: TaskEngine, address: str, value: str
) -> None:
    """A ``slices`` that is not an integer in 1..64 gets 400 naming ``slices``."""
    status, body, _ = call(address, "POST", f"/cms/v1/tasks?slices={value}", copy_task())
    assert status == 400, body
    violations = body["details"]["validationError"]["fieldViolations"]
    assert [v["field"] for v in violations] == ["slices"]
    assert engine.list_tasks().total == 0

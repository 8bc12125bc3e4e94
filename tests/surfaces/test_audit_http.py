"""Audit of the HTTP API over a real loopback socket against docs/http.md and docs/progress.md."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from taskengine.clock import ManualClock
from taskengine.engine import TaskEngine
from taskengine.http import make_app, make_server
from taskengine.storage.memory import MemoryStorage

# The four request bodies of the reference API's curl examples, byte for byte (DELETE_BY_QUERY's
# has a trailing comma after its filter).
SEED_BODIES = {
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
COPY_BODY = SEED_BODIES["COPY_FIELD_DATA"]


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
def serving(engine: TaskEngine, **kwargs: Any) -> Iterator[Client]:
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
def engine() -> TaskEngine:
    """A stopped engine (tasks stay NEW unless the test runs them)."""
    return TaskEngine(make_storage(), clock=ManualClock())


@pytest.fixture
def client(engine: TaskEngine) -> Iterator[Client]:
    """A client of a server over ``engine``."""
    with serving(engine) as c:
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


# -- the seed bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/autocms/v1/tasks", "/cms/v1/tasks"])
@pytest.mark.parametrize("kind", sorted(SEED_BODIES))
def test_seed_curl_bodies_are_accepted_verbatim(
    client: Client, engine: TaskEngine, prefix: str, kind: str
) -> None:
    """Each seed-001 curl body, POSTed as it is, creates a NEW task of its type."""
    status, headers, body = client.request("POST", prefix, SEED_BODIES[kind])
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    task = body["task"]
    assert task["type"] == kind
    assert task["status"] == "NEW"
    assert [k for k in task if k.endswith("Options")] == [OPTION_KEYS[kind]]
    assert "startedAt" not in task
    assert "finishedAt" not in task
    assert engine.get_task(task["id"]).type == kind


def test_seed_tasks_run_to_completion_over_http() -> None:
    """With workers started, every seed task completes; the data shows the effect."""
    storage = make_storage()
    with TaskEngine(storage) as engine, serving(engine) as client:
        ids = {}
        for kind in (
            "COPY_FIELD_DATA",
            "EDIT_FIELD_DATA",
            "UPDATE_PUBLISH_STATUS",
            "DELETE_BY_QUERY",
        ):
            _, _, body = client.request("POST", "/autocms/v1/tasks", SEED_BODIES[kind])
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
    client: Client, engine: TaskEngine, prefix: str
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


def test_progress_of_completed_task_over_http(engine: TaskEngine, client: Client) -> None:
    """The seed-002 completed shape over HTTP, Self built from the Host header."""
    _, _, body = client.request("POST", "/cms/v1/tasks", COPY_BODY)
    engine.run_until_idle()
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


def test_expired_task_is_404() -> None:
    """After retention, get/cancel/progress over HTTP answer 404."""
    from datetime import timedelta

    clock = ManualClock()
    engine = TaskEngine(make_storage(), clock=clock, retention=timedelta(minutes=5))
    with serving(engine) as client:
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


def test_unknown_route_is_404(client: Client) -> None:
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


def test_oversized_body_is_413(engine: TaskEngine) -> None:
    """A body over the limit answers 413 in the envelope and stores nothing."""
    with serving(engine, max_body=1000) as client:
        big = json.dumps({"task": {"type": "COPY_FIELD_DATA", "pad": "x" * 2000}})
        status, _, body = client.request("POST", "/cms/v1/tasks", big)
        assert status == 413
        assert_application_error(body)
    assert engine.list_tasks().total == 0


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
def test_malformed_json_is_400(client: Client, engine: TaskEngine, raw: bytes) -> None:
    """Bodies that are not JSON answer 400 with a validation envelope, never a traceback."""
    status, _, body = client.request("POST", "/cms/v1/tasks", raw)
    assert status == 400, body
    violations(body)
    assert engine.list_tasks().total == 0


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


def test_invalid_task_is_400_with_every_violation(client: Client, engine: TaskEngine) -> None:
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
    assert engine.list_tasks().total == 0


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
def test_bad_paging_is_400(client: Client, query: str) -> None:
    """Bad paging parameters answer 400 naming the parameter."""
    status, _, body = client.request("GET", f"/cms/v1/tasks?{query}")
    assert status == 400
    name = query.split("=")[0]
    assert name in {v["field"] for v in violations(body)}


# -- auth and internals --------------------------------------------------------------------


def test_bearer_token_is_required_when_configured(engine: TaskEngine) -> None:
    """With a token, requests without it or with a wrong one get 401; the right one works."""
    with serving(engine, token="s3cret") as client:
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
        assert engine.list_tasks().total == 0
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
    with serving(engine) as client:
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


def test_concurrent_clients_create_poll_and_cancel() -> None:
    """Several clients at once create, poll and cancel; every answer is well formed."""
    with TaskEngine(make_storage(), workers=2) as engine, serving(engine) as client:
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

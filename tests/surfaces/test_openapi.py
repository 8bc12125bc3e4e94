"""The OpenAPI document: shipped, served, identical to the docs copy, and true of the app."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from taskengine.engine import TaskEngine
from taskengine.http import make_app, make_waitress_server, openapi_document, stop_waitress_server
from taskengine.storage.memory import MemoryStorage

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads(openapi_document())
schema = schemathesis.openapi.from_dict(DOCUMENT)

CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

TASKS = [
    {
        "type": "DELETE_BY_QUERY",
        "deleteByQueryOptions": {"dataCollectionId": "Items", "filter": {"n": {"$gt": 90}}},
    },
    {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Items",
            "sourceFieldKey": "n",
            "targetFieldKey": "m",
        },
    },
    {
        "type": "EDIT_FIELD_DATA",
        "editFieldDataOptions": {
            "dataCollectionId": "Items",
            "fieldKey": "tags",
            "operations": {"addItems": ["a"], "replaceItems": [{"from": "x", "to": "y"}]},
        },
    },
    {
        "type": "UPDATE_PUBLISH_STATUS",
        "updatePublishStatusOptions": {
            "dataCollectionId": "Items",
            "operation": "SCHEDULE_DRAFT_STATUS",
            "scheduleDraftStatusOptions": {"date": "2030-01-01T00:00:00Z"},
        },
    },
    {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Missing",
            "sourceFieldKey": "n",
            "targetFieldKey": "m",
        },
    },
]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The app on waitress over an engine with an 'Items' collection (publish plugin)."""
    storage = MemoryStorage()
    storage.create_collection("Items", publish_plugin=True)
    storage.insert_items("Items", "LIVE", [{"_id": f"i{n:03d}", "n": n} for n in range(100)])
    storage.create_collection("Sliced")  # for the sliced task's test alone
    storage.insert_items("Sliced", "LIVE", [{"_id": f"s{n:03d}", "n": n} for n in range(30)])
    with TaskEngine(storage, workers=1, batch_size=20) as engine:
        server = make_waitress_server(make_app(engine), "127.0.0.1", 0)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.effective_port}"
        finally:
            stop_waitress_server(server)
            thread.join(10)


def _validator(name: str) -> Any:
    return jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]},
        validate_formats=True,
    )


def _get(base_url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(base_url.split("//", 1)[1], timeout=30)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body))
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_docs_copy_is_identical() -> None:
    """`docs/openapi.json` is byte for byte the document the package serves."""
    assert (ROOT / "docs" / "openapi.json").read_bytes() == openapi_document()


def test_document_is_openapi_3_1_covering_every_route() -> None:
    """The document is OpenAPI 3.1 and describes every route and method the app answers."""
    assert DOCUMENT["openapi"].startswith("3.1")
    methods = {path: set(ops) for path, ops in DOCUMENT["paths"].items()}
    for prefix in ("/cms/v1/tasks", "/autocms/v1/tasks"):
        assert methods[prefix] == {"get", "head", "post"}
        assert methods[prefix + "/{id}"] == {"get", "head", "delete"}
    assert methods["/api/backgroundtask/{id}"] == {"get", "head"}
    assert methods["/openapi.json"] == {"get", "head"}


def test_document_is_served_without_the_token(tmp_path: Path) -> None:
    """`GET /openapi.json` answers the document even when the API needs a token."""
    with TaskEngine(MemoryStorage()) as engine:
        server = make_waitress_server(make_app(engine, token="secret"), "127.0.0.1", 0)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.effective_port}"
            status, body = _get(url, "GET", "/openapi.json")
            denied, _ = _get(url, "GET", "/cms/v1/tasks")
        finally:
            stop_waitress_server(server)
            thread.join(10)
    assert (status, denied) == (200, 401)
    assert body == DOCUMENT


def test_real_tasks_match_the_task_schema(base_url: str) -> None:
    """Tasks of every type, in every state they reach, and their list, progress and cancel
    responses all validate against the document's schemas."""
    envelope, listing, progress = (
        _validator(name) for name in ("TaskEnvelope", "TaskList", "Progress")
    )
    ids = []
    for task in TASKS:
        status, body = _get(base_url, "POST", "/cms/v1/tasks", {"task": task})
        assert status == 200, body
        envelope.validate(body)
        ids.append(body["task"]["id"])
    seen = set()
    for task_id in ids:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # polls until the view says Complete
            status, body = _get(base_url, "GET", f"/cms/v1/tasks/{task_id}")
            envelope.validate(body)
            seen.add(body["task"]["status"])
            status, view = _get(base_url, "GET", f"/api/backgroundtask/{task_id}")
            progress.validate(view)
            if view["Complete"]:
                break
        status, body = _get(base_url, "DELETE", f"/cms/v1/tasks/{task_id}")
        envelope.validate(body)
    status, body = _get(base_url, "GET", "/cms/v1/tasks?paging.limit=100")
    listing.validate(body)
    assert {"COMPLETED", "FAILED"} <= seen


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
def test_api_conforms_to_the_document(case: Any, base_url: str) -> None:
    """Generated requests (valid and invalid) never get a 5xx, requests the document rules
    out get a 4xx, and every response's status, content type, headers and body are as the
    document says."""
    case.call_and_validate(base_url=base_url, checks=CHECKS)


def test_sliced_tasks_and_slices_match_the_task_schema(base_url: str) -> None:
    """A sliced task (``?slices=3``: ``"slices"`` in its JSON) and one of its slices
    (``"sliceOf"``, read by id) validate against the Task schema."""
    envelope = _validator("TaskEnvelope")
    copy = {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Sliced",
            "sourceFieldKey": "n",
            "targetFieldKey": "m",
        },
    }
    status, body = _get(base_url, "POST", "/cms/v1/tasks?slices=3", {"task": copy})
    assert status == 200, body
    envelope.validate(body)
    task_id = body["task"]["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # polls until the task has ended
        status, body = _get(base_url, "GET", f"/cms/v1/tasks/{task_id}")
        envelope.validate(body)
        if "finishedAt" in body["task"]:
            break
    assert (body["task"]["status"], body["task"]["slices"]) == ("COMPLETED", 3)
    assert body["task"]["itemsSucceeded"] == 30
    status, part = _get(base_url, "GET", f"/cms/v1/tasks/{task_id}~0")
    assert status == 200, part
    assert part["task"]["sliceOf"] == task_id
    envelope.validate(part)

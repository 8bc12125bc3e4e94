"""The API on waitress, as `taskengine serve` runs it: load, HEAD, chunked bodies, timeouts."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskengine.engine import TaskEngine
from taskengine.http import make_app, make_waitress_server, stop_waitress_server
from taskengine.storage.memory import MemoryStorage

TASK = {
    "task": {
        "type": "COPY_FIELD_DATA",
        "copyFieldDataOptions": {
            "dataCollectionId": "Items",
            "sourceFieldKey": "name",
            "targetFieldKey": "nameCopy",
        },
    }
}


@contextlib.contextmanager
def waitress_serving(app: Any, **kwargs: Any) -> Iterator[str]:
    """Serve ``app`` on waitress on a free loopback port in a thread; yield ``host:port``."""
    server = make_waitress_server(app, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.effective_port}"
    finally:
        stop_waitress_server(server)
        thread.join(10)
        assert not thread.is_alive(), "the waitress loop did not stop"


@pytest.fixture
def engine() -> Iterator[TaskEngine]:
    """A started engine over memory storage holding 'Items' (100 items)."""
    storage = MemoryStorage()
    storage.create_collection("Items")
    storage.insert_items("Items", "LIVE", [{"_id": f"i{n:03d}", "name": n} for n in range(100)])
    with TaskEngine(storage, workers=1, batch_size=20) as started:
        yield started


@pytest.fixture
def address(engine: TaskEngine) -> Iterator[str]:
    """The engine's app on waitress, without a token."""
    with waitress_serving(make_app(engine)) as where:
        yield where


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None, **kw: Any
) -> tuple[int, bytes, http.client.HTTPResponse]:
    """One request on ``conn``; returns (status, raw body, response)."""
    conn.request(method, path, body=body, **kw)
    response = conn.getresponse()
    return response.status, response.read(), response


def _created_id(address: str) -> str:
    conn = http.client.HTTPConnection(address, timeout=30)
    try:
        status, data, _ = request(conn, "POST", "/cms/v1/tasks", json.dumps(TASK))
    finally:
        conn.close()
    assert status == 200, data
    task_id: str = json.loads(data)["task"]["id"]
    return task_id


def test_head_answers_like_get_without_a_body(engine: TaskEngine, address: str) -> None:
    """HEAD gets GET's status and headers on every GET route, with no body, and the
    connection stays usable for the next request."""
    task_id = _created_id(address)
    engine.wait(task_id, timeout=30)  # a finished task no longer changes between requests
    paths = [
        "/cms/v1/tasks",
        f"/cms/v1/tasks/{task_id}",
        f"/autocms/v1/tasks/{task_id}",
        "/cms/v1/tasks/no-such-task",
        f"/api/backgroundtask/{task_id}",
        "/openapi.json",
    ]
    conn = http.client.HTTPConnection(address, timeout=30)
    try:
        for path in paths:
            get_status, get_body, get = request(conn, "GET", path)
            head_status, head_body, head = request(conn, "HEAD", path)
            assert head_status == get_status, path
            assert head_body == b"", path
            for name in ("Content-Type", "Content-Length", "Cache-Control"):
                assert head.getheader(name) == get.getheader(name), (path, name)
            assert head.getheader("Content-Length") == str(len(get_body)), path
    finally:
        conn.close()


def test_app_returns_no_body_for_head(engine: TaskEngine) -> None:
    """The WSGI app itself sends no body for HEAD (any server, not only waitress)."""
    from wsgiref.util import setup_testing_defaults

    app = make_app(engine)
    captured: list[Any] = []
    environ: dict[str, Any] = {"REQUEST_METHOD": "HEAD", "PATH_INFO": "/cms/v1/tasks"}
    setup_testing_defaults(environ)
    body = app(environ, lambda status, headers: captured.append((status, dict(headers))))
    status, headers = captured[0]
    assert status.startswith("200")
    assert b"".join(body) == b""
    assert int(headers["Content-Length"]) > 0


def test_chunked_body_is_read(address: str) -> None:
    """A POST whose body comes in chunks (no Content-Length) creates the task."""
    text = json.dumps(TASK).encode()
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)]
    conn = http.client.HTTPConnection(address, timeout=30)
    try:
        status, data, _ = request(
            conn,
            "POST",
            "/cms/v1/tasks",
            iter(chunks),
            encode_chunked=True,
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        )
    finally:
        conn.close()
    assert status == 200, data
    assert json.loads(data)["task"]["type"] == "COPY_FIELD_DATA"


def test_chunked_body_over_the_limit_is_413(engine: TaskEngine) -> None:
    """A chunked body larger than max_body gets 413 in the envelope, with the limit."""
    chunks = [b"x" * 1000] * 5
    with waitress_serving(make_app(engine, max_body=1000)) as where:
        conn = http.client.HTTPConnection(where, timeout=30)
        try:
            status, data, _ = request(
                conn,
                "POST",
                "/cms/v1/tasks",
                iter(chunks),
                encode_chunked=True,
                headers={"Transfer-Encoding": "chunked"},
            )
        finally:
            conn.close()
    assert status == 413
    error = json.loads(data)["details"]["applicationError"]
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["data"]["limit"] == 1000
    assert engine.list_tasks().total == 0


def _call_without_length(app: Any, body: bytes, terminated: bool) -> tuple[str, Any]:
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/cms/v1/tasks",
        "wsgi.input": io.BytesIO(body),
    }
    if terminated:
        environ["wsgi.input_terminated"] = True
    setup_testing_defaults(environ)
    environ.pop("CONTENT_LENGTH", None)
    statuses: list[str] = []
    out = app(environ, lambda status, headers: statuses.append(status))
    return statuses[0], json.loads(b"".join(out))


def test_body_without_length_is_read_to_its_end_when_terminated(engine: TaskEngine) -> None:
    """Without Content-Length, a server-terminated input is read to EOF (bounded by max_body:
    beyond it, 413); an unterminated one is not read at all."""
    body = json.dumps(TASK).encode()
    status, data = _call_without_length(make_app(engine), body, terminated=True)
    assert status.startswith("200"), data
    status, data = _call_without_length(make_app(engine, max_body=len(body) - 1), body, True)
    assert status.startswith("413")
    assert data["details"]["applicationError"]["data"] == {"limit": len(body) - 1}
    status, data = _call_without_length(make_app(engine), body, terminated=False)
    assert status.startswith("400")
    assert "empty" in data["details"]["validationError"]["fieldViolations"][0]["description"]


def test_half_sent_request_is_closed_after_the_timeout(engine: TaskEngine) -> None:
    """A client that stops in the middle of its body is disconnected after the timeout,
    and other clients are answered meanwhile."""
    with waitress_serving(make_app(engine), timeout=1) as where:
        host, port = where.split(":")
        slow = socket.create_connection((host, int(port)), timeout=30)
        try:
            slow.sendall(
                b"POST /cms/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n" + b'{"task": '
            )
            conn = http.client.HTTPConnection(where, timeout=30)
            try:
                status, _, _ = request(conn, "GET", "/cms/v1/tasks")
            finally:
                conn.close()
            assert status == 200
            started = time.monotonic()
            received = slow.recv(4096)  # blocks until the server closes (or 30 s pass)
            waited = time.monotonic() - started
        finally:
            slow.close()
    assert received == b""
    assert waited < 30


def test_many_concurrent_clients_are_all_answered(address: str) -> None:
    """200 clients connecting at once (each creating then reading a task) all get answers:
    no connection is reset or refused."""
    errors: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(200, timeout=60)

    def client() -> None:
        try:
            barrier.wait()
            conn = http.client.HTTPConnection(address, timeout=60)
            try:
                status, data, _ = request(conn, "POST", "/cms/v1/tasks", json.dumps(TASK))
                task_id = json.loads(data)["task"]["id"]
                again, _, _ = request(conn, "GET", f"/cms/v1/tasks/{task_id}")
            finally:
                conn.close()
            with lock:
                statuses.extend((status, again))
        except Exception as exc:
            with lock:
                errors.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert statuses == [200] * 400


def test_app_under_a_url_prefix(engine: TaskEngine) -> None:
    """Mounted under a prefix (waitress' url_prefix sets SCRIPT_NAME, as the README shows),
    the routes answer under it and the progress view's Self link keeps it."""
    import waitress.server

    server = waitress.server.create_server(
        make_app(engine), host="127.0.0.1", port=0, url_prefix="/tasks"
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection(f"127.0.0.1:{server.effective_port}", timeout=30)
        try:
            status, data, _ = request(conn, "POST", "/tasks/cms/v1/tasks", json.dumps(TASK))
            assert status == 200, data
            task_id = json.loads(data)["task"]["id"]
            status, data, _ = request(conn, "GET", f"/tasks/api/backgroundtask/{task_id}")
        finally:
            conn.close()
    finally:
        stop_waitress_server(server)
        thread.join(10)
    assert status == 200
    assert json.loads(data)["Self"].endswith(f"/tasks/api/backgroundtask/{task_id}")

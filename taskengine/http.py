"""The reference REST API as a WSGI application over a :class:`~taskengine.engine.TaskEngine`.

Routes (``/autocms/v1/tasks`` is an alias of ``/cms/v1/tasks``, as in the reference)::

    POST   /cms/v1/tasks   {"task": {...}}          -> {"task": {...}}
    GET    /cms/v1/tasks?paging.limit=&paging.offset=
                                                    -> {"tasks": [...], "metadata": {...}}
    GET    /cms/v1/tasks/{id}                       -> {"task": {...}}
    DELETE /cms/v1/tasks/{id}   (cancel)            -> {"task": {...}}
    GET    /api/backgroundtask/{id}   (the progress view, see docs/progress.md; no envelope)
    GET    /openapi.json                            -> the OpenAPI 3.1 document of all this

``HEAD`` is answered wherever ``GET`` is, with the same headers and no body.

Errors use the reference envelope: ``{"message", "details": {"validationError":
{"fieldViolations": [...]}}}`` for 400 and ``{"message", "details": {"applicationError":
{"code", "description", "data"}}}`` for everything else (401, 404, 405, 413, 500).
A 500 never carries internals; the traceback goes to the ``taskengine.http`` logger.

The app uses only the standard library and mounts in any WSGI server. Two servers come with
it, re-exported here from :mod:`taskengine._servers`: :func:`make_waitress_server`, the
production server ``taskengine serve`` runs (waitress, the ``taskengine[server]`` extra), and
:func:`make_server`, ``wsgiref`` with a thread per request and no dependency.
"""

from __future__ import annotations

import hmac
import importlib.resources
import logging
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs

from taskengine._jsonio import dumps, json_type_name, parse_json_object
from taskengine._servers import (
    DEFAULT_THREADS,
    DEFAULT_TIMEOUT,
    ThreadingWSGIServer,
    is_loopback,
    make_server,
    make_waitress_server,
    stop_waitress_server,
)
from taskengine._servers import DRAIN_LIMIT as _DRAIN_LIMIT
from taskengine.errors import (
    InvalidRequest,
    StorageError,
    TaskNotFound,
    Violation,
)

__all__ = [
    "DEFAULT_THREADS",
    "DEFAULT_TIMEOUT",
    "MAX_BODY",
    "OPENAPI_PATH",
    "TaskAPI",
    "ThreadingWSGIServer",
    "application_error",
    "is_loopback",
    "make_app",
    "make_server",
    "make_waitress_server",
    "openapi_document",
    "stop_waitress_server",
    "validation_error",
]

MAX_BODY = 1024 * 1024
"""The default largest request body, in bytes (1 MiB); larger bodies get 413."""

TASK_PREFIXES = ("/cms/v1/tasks", "/autocms/v1/tasks")
PROGRESS_PREFIX = "/api/backgroundtask/"
OPENAPI_PATH = "/openapi.json"
"""Where the app serves :func:`openapi_document` (without asking for the token)."""

_log = logging.getLogger("taskengine.http")

StartResponse = Callable[..., Any]
WSGIEnviron = dict[str, Any]


class _HasJSON(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class _HasProgressJSON(Protocol):
    def to_json(self, base_url: str) -> dict[str, Any]: ...


class Engine(Protocol):
    """What the HTTP app needs from an engine (``TaskEngine`` provides it)."""

    def create_task(self, spec: Any, *, slices: int = 1) -> _HasJSON:
        """Validate and store a new task (``slices``: run it as that many ``_id`` ranges)."""

    def get_task(self, task_id: str) -> _HasJSON:
        """The task with this id."""

    def cancel_task(self, task_id: str) -> _HasJSON:
        """Request cancellation; the task as it is now."""

    def list_tasks(self, limit: int = 30, offset: int = 0) -> _HasJSON:
        """A page of tasks, newest first."""

    def get_progress(self, task_id: str) -> _HasProgressJSON:
        """The progress view of a task."""


class _HTTPError(Exception):
    """A response decided before the handler ran (auth, routing, body limits)."""

    def __init__(
        self,
        status: HTTPStatus,
        code: str,
        description: str,
        data: Mapping[str, Any] | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.data = data
        self.headers = list(headers)


class TaskAPI:
    """A WSGI application serving the Background Tasks API over one engine.

    Thread-safe as far as the engine is: the app keeps no per-request state. Build it with
    :func:`make_app`.

    Args:
        engine: the engine to drive (anything with ``create_task``, ``get_task``,
            ``cancel_task``, ``list_tasks``, ``get_progress``).
        token: when set, every request must carry ``Authorization: Bearer <token>`` (or the
            bare token, as the reference's examples send it) or it gets 401.
        max_body: the largest accepted request body in bytes; a larger one gets 413.
    """

    def __init__(self, engine: Engine, *, token: str | None = None, max_body: int = MAX_BODY):
        if max_body < 1:
            raise ValueError(f"max_body must be at least 1 byte, got {max_body}")
        if token is not None and not token:
            raise ValueError("token must not be empty (pass None for no token)")
        self.engine = engine
        self.max_body = max_body
        self._token = token.encode("utf-8") if token is not None else None

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> list[bytes]:
        """Handle one WSGI request (``HEAD`` as ``GET``, without the body)."""
        body: Mapping[str, Any] | bytes
        try:
            status, body, headers = self._dispatch(environ)
        except Exception as exc:
            status, body, headers = _error_answer(exc, environ)
        head = str(environ.get("REQUEST_METHOD", "")).upper() == "HEAD"
        return _respond(start_response, status, body, headers, head=head)

    def _dispatch(
        self, environ: WSGIEnviron
    ) -> tuple[HTTPStatus, dict[str, Any] | bytes, list[tuple[str, str]]]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method == "HEAD":
            method = "GET"
        path = str(environ.get("PATH_INFO", "") or "/")
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        if path == OPENAPI_PATH:
            # The document describes the API and holds nothing secret; clients read it to
            # learn how to authenticate, so it is served without the token.
            if method != "GET":
                raise _not_allowed(method, ("GET", "HEAD"))
            return HTTPStatus.OK, openapi_document(), []
        self._authenticate(environ)
        for prefix in TASK_PREFIXES:
            if path == prefix:
                if method == "GET":
                    return HTTPStatus.OK, self._list(environ), []
                if method == "POST":
                    return HTTPStatus.OK, self._create(environ), []
                raise _not_allowed(method, ("GET", "HEAD", "POST"))
            if path.startswith(prefix + "/"):
                task_id = path[len(prefix) + 1 :]
                if "/" in task_id:
                    break
                if method == "GET":
                    return HTTPStatus.OK, {"task": self.engine.get_task(task_id).to_json()}, []
                if method == "DELETE":
                    return HTTPStatus.OK, {"task": self.engine.cancel_task(task_id).to_json()}, []
                raise _not_allowed(method, ("DELETE", "GET", "HEAD"))
        if path.startswith(PROGRESS_PREFIX) and "/" not in path[len(PROGRESS_PREFIX) :]:
            task_id = path[len(PROGRESS_PREFIX) :]
            if method != "GET":
                raise _not_allowed(method, ("GET", "HEAD"))
            progress = self.engine.get_progress(task_id)
            return HTTPStatus.OK, progress.to_json(base_url(environ)), []
        raise _HTTPError(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no route for {path}", {"path": path})

    def _authenticate(self, environ: WSGIEnviron) -> None:
        if self._token is None:
            return
        header = str(environ.get("HTTP_AUTHORIZATION", "")).strip()
        scheme, _, rest = header.partition(" ")
        offered = rest.strip() if scheme.lower() == "bearer" else header
        # compare_digest: the time taken must not reveal how much of the token matched.
        if not offered or not hmac.compare_digest(offered.encode("utf-8"), self._token):
            raise _HTTPError(
                HTTPStatus.UNAUTHORIZED,
                "UNAUTHENTICATED",
                "missing or wrong token: send 'Authorization: Bearer <token>'",
                headers=[("WWW-Authenticate", 'Bearer realm="taskengine"')],
            )

    def _list(self, environ: WSGIEnviron) -> dict[str, Any]:
        limit, offset = _paging(environ)
        return self.engine.list_tasks(limit=limit, offset=offset).to_json()

    def _create(self, environ: WSGIEnviron) -> dict[str, Any]:
        body = parse_json_object(self._read_body(environ), source="body")
        unknown = [Violation(key, "unknown field") for key in body if key != "task"]
        if unknown:
            raise InvalidRequest(unknown)  # the body is {"task": {...}} and nothing else
        slices = _slices(environ)
        spec = {"task": _task_of(body)}
        if slices is None:
            return {"task": self.engine.create_task(spec).to_json()}
        return {"task": self.engine.create_task(spec, slices=slices).to_json()}

    def _read_body(self, environ: WSGIEnviron) -> bytes:
        raw = str(environ.get("CONTENT_LENGTH", "") or "").strip()
        stream = environ.get("wsgi.input")
        if not raw:
            # No Content-Length: a chunked body the server did not turn into one. It can
            # only be read to its end when the server says the stream ends there (PEP 3333
            # leaves reading past the length undefined otherwise).
            if stream is None or not environ.get("wsgi.input_terminated"):
                return b""
            data: bytes = stream.read(self.max_body + 1)
            if len(data) > self.max_body:
                _drain(stream, _DRAIN_LIMIT)
                raise self._too_large(None)
            return data
        try:
            length = int(raw)
        except ValueError:
            raise InvalidRequest(
                [Violation("body", f"bad Content-Length header {raw!r}")]
            ) from None
        if length < 0:
            raise InvalidRequest([Violation("body", f"bad Content-Length header {raw!r}")])
        if length > self.max_body:
            # Read (and drop) what the client sends, within reason, so that it gets to
            # read the 413 instead of a connection reset.
            if stream is not None and length <= _DRAIN_LIMIT:
                _drain(stream, length)
            raise self._too_large(length)
        if length == 0 or stream is None:
            return b""
        data = stream.read(length)
        return data

    def _too_large(self, length: int | None) -> _HTTPError:
        if length is None:
            return _HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                f"the body has more than {self.max_body} bytes; the limit is {self.max_body}",
                {"limit": self.max_body},
            )
        return _HTTPError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            f"the body has {length} bytes; the limit is {self.max_body}",
            {"limit": self.max_body, "length": length},
        )


def _task_of(body: dict[str, Any]) -> dict[str, Any]:
    """The ``task`` object of a request body.

    Raises:
        InvalidRequest: ``task`` is missing or not an object.
    """
    if "task" not in body:
        raise InvalidRequest([Violation("task", "required")])
    spec = body["task"]
    if not isinstance(spec, dict):
        raise InvalidRequest([Violation("task", f"must be an object, got {json_type_name(spec)}")])
    return spec


def _drain(stream: Any, length: int) -> None:
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            return
        length -= len(chunk)


@lru_cache(maxsize=1)
def openapi_document() -> bytes:
    """The OpenAPI 3.1 document of this API (``taskengine/openapi.json``), as served."""
    return importlib.resources.files("taskengine").joinpath("openapi.json").read_bytes()


def make_app(engine: Engine, *, token: str | None = None, max_body: int = MAX_BODY) -> TaskAPI:
    """The WSGI application for ``engine``; see :class:`TaskAPI` for the arguments.

    The engine must be started (``engine.start()`` or ``with engine:``) for tasks to run;
    the app only creates, reads and cancels them.
    """
    return TaskAPI(engine, token=token, max_body=max_body)


def base_url(environ: WSGIEnviron) -> str:
    """``scheme://host[:port]`` plus the app's mount point, from the request."""
    scheme = str(environ.get("wsgi.url_scheme", "http"))
    host = str(environ.get("HTTP_HOST", "")).strip()
    if not host:
        host = str(environ.get("SERVER_NAME", "localhost"))
        port = str(environ.get("SERVER_PORT", ""))
        if port and port != {"http": "80", "https": "443"}.get(scheme):
            host = f"{host}:{port}"
    return f"{scheme}://{host}{environ.get('SCRIPT_NAME', '')}".rstrip("/")


def validation_error(message: str, violations: tuple[Violation, ...]) -> dict[str, Any]:
    """The reference envelope for a request with field violations (HTTP 400)."""
    return {
        "message": message,
        "details": {"validationError": {"fieldViolations": [v.to_json() for v in violations]}},
    }


def application_error(
    message: str, code: str, description: str, data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The reference envelope for an application error (401, 404, 405, 413, 415, 500)."""
    return {
        "message": message,
        "details": {
            "applicationError": {
                "code": code,
                "description": description,
                "data": dict(data) if data is not None else {},
            }
        },
    }


def _error_answer(
    exc: Exception, environ: WSGIEnviron
) -> tuple[HTTPStatus, dict[str, Any], list[tuple[str, str]]]:
    """The status, envelope and headers answering ``exc`` (see docs/http.md)."""
    if isinstance(exc, _HTTPError):
        message = _message(exc.status, exc.description)
        body = application_error(message, exc.code, exc.description, exc.data)
        return exc.status, body, exc.headers
    if isinstance(exc, InvalidRequest):
        return HTTPStatus.BAD_REQUEST, validation_error(str(exc), exc.violations), []
    if isinstance(exc, TaskNotFound):
        description = "no task with this id (never created, or expired)"
        body = application_error(str(exc), "TASK_NOT_FOUND", description, {"taskId": exc.task_id})
        return HTTPStatus.NOT_FOUND, body, []
    if isinstance(exc, StorageError):
        _log.exception("storage error while handling %s", _request_line(environ))
        description = "the storage failed; try again later"
        body = application_error("storage error", "STORAGE_ERROR", description)
        return HTTPStatus.INTERNAL_SERVER_ERROR, body, []
    # Anything else is a bug: log it in full, answer without details.
    _log.exception("unexpected error while handling %s", _request_line(environ))
    description = "the server failed to handle the request"
    body = application_error("internal error", "INTERNAL", description)
    return HTTPStatus.INTERNAL_SERVER_ERROR, body, []


def _not_allowed(method: str, allowed: tuple[str, ...]) -> _HTTPError:
    return _HTTPError(
        HTTPStatus.METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        f"{method} is not allowed here; use {', '.join(allowed)}",
        {"method": method, "allowed": list(allowed)},
        headers=[("Allow", ", ".join(allowed))],
    )


def _message(status: HTTPStatus, description: str) -> str:
    return f"{status.phrase}: {description}"


def _request_line(environ: WSGIEnviron) -> str:
    return f"{environ.get('REQUEST_METHOD', '?')} {environ.get('PATH_INFO', '?')}"


def _respond(
    start_response: StartResponse,
    status: HTTPStatus,
    body: Mapping[str, Any] | bytes,
    headers: list[tuple[str, str]],
    *,
    head: bool = False,
) -> list[bytes]:
    payload = body if isinstance(body, bytes) else dumps(body).encode("utf-8")
    start_response(
        f"{status.value} {status.phrase}",
        [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            *headers,
        ],
    )
    return [] if head else [payload]


def _slices(environ: WSGIEnviron) -> int | None:
    """The query's ``slices`` (docs/slices.md; the last of repeated values counts), or
    ``None`` when absent; the engine checks its range.

    Raises:
        InvalidRequest: a value that is not an integer (field ``slices``).
    """
    query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    values = query.get("slices")
    if values is None:
        return None
    raw = values[-1].strip()
    try:
        return int(raw)  # an empty value (``?slices=``) is not an integer either
    except ValueError:
        raise InvalidRequest([Violation("slices", f"must be an integer, got {raw!r}")]) from None


def _paging(environ: WSGIEnviron) -> tuple[int, int]:
    """``(limit, offset)`` from the query's ``paging.limit`` and ``paging.offset``
    (defaults 30 and 0; the last of repeated values counts).

    Raises:
        InvalidRequest: a value that is not an integer, by its field.
    """
    query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    violations: list[Violation] = []
    paging: dict[str, int] = {}
    for name, default in (("limit", 30), ("offset", 0)):
        values = query.get(f"paging.{name}", [])
        raw = values[-1].strip() if values else ""
        if not raw:
            paging[name] = default
            continue
        try:
            paging[name] = int(raw)
        except ValueError:
            violations.append(Violation(f"paging.{name}", f"must be an integer, got {raw!r}"))
    if violations:
        raise InvalidRequest(violations)
    return paging["limit"], paging["offset"]

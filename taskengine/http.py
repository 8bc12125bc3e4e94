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
from collections.abc import Mapping
from functools import lru_cache
from http import HTTPStatus
from typing import Any, Protocol

from taskengine._httpwire import (
    HTTPError,
    StartResponse,
    WSGIEnviron,
    application_error,
    base_url,
    drain,
    error_answer,
    not_allowed,
    paging_param,
    respond,
    slices_param,
    task_of,
    validation_error,
)
from taskengine._jsonio import parse_json_object
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
    Violation,
)

__all__ = [
    "DEFAULT_THREADS",
    "DEFAULT_TIMEOUT",
    "MAX_BODY",
    "OPENAPI_PATH",
    "StartResponse",
    "TaskAPI",
    "ThreadingWSGIServer",
    "WSGIEnviron",
    "application_error",
    "base_url",
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
            status, body, headers = error_answer(exc, environ)
        head = str(environ.get("REQUEST_METHOD", "")).upper() == "HEAD"
        return respond(start_response, status, body, headers, head=head)

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
                raise not_allowed(method, ("GET", "HEAD"))
            return HTTPStatus.OK, openapi_document(), []
        self._authenticate(environ)
        for prefix in TASK_PREFIXES:
            if path == prefix:
                if method == "GET":
                    return HTTPStatus.OK, self._list(environ), []
                if method == "POST":
                    return HTTPStatus.OK, self._create(environ), []
                raise not_allowed(method, ("GET", "HEAD", "POST"))
            if path.startswith(prefix + "/"):
                task_id = path[len(prefix) + 1 :]
                if "/" in task_id:
                    break
                if method == "GET":
                    return HTTPStatus.OK, {"task": self.engine.get_task(task_id).to_json()}, []
                if method == "DELETE":
                    return HTTPStatus.OK, {"task": self.engine.cancel_task(task_id).to_json()}, []
                raise not_allowed(method, ("DELETE", "GET", "HEAD"))
        if path.startswith(PROGRESS_PREFIX) and "/" not in path[len(PROGRESS_PREFIX) :]:
            task_id = path[len(PROGRESS_PREFIX) :]
            if method != "GET":
                raise not_allowed(method, ("GET", "HEAD"))
            progress = self.engine.get_progress(task_id)
            return HTTPStatus.OK, progress.to_json(base_url(environ)), []
        raise HTTPError(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no route for {path}", {"path": path})

    def _authenticate(self, environ: WSGIEnviron) -> None:
        if self._token is None:
            return
        header = str(environ.get("HTTP_AUTHORIZATION", "")).strip()
        scheme, _, rest = header.partition(" ")
        offered = rest.strip() if scheme.lower() == "bearer" else header
        # compare_digest: the time taken must not reveal how much of the token matched.
        if not offered or not hmac.compare_digest(offered.encode("utf-8"), self._token):
            raise HTTPError(
                HTTPStatus.UNAUTHORIZED,
                "UNAUTHENTICATED",
                "missing or wrong token: send 'Authorization: Bearer <token>'",
                headers=[("WWW-Authenticate", 'Bearer realm="taskengine"')],
            )

    def _list(self, environ: WSGIEnviron) -> dict[str, Any]:
        limit, offset = paging_param(environ)
        return self.engine.list_tasks(limit=limit, offset=offset).to_json()

    def _create(self, environ: WSGIEnviron) -> dict[str, Any]:
        body = parse_json_object(self._read_body(environ), source="body")
        unknown = [Violation(key, "unknown field") for key in body if key != "task"]
        if unknown:
            raise InvalidRequest(unknown)  # the body is {"task": {...}} and nothing else
        slices = slices_param(environ)
        spec = {"task": task_of(body)}
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
                drain(stream, _DRAIN_LIMIT)
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
                drain(stream, length)
            raise self._too_large(length)
        if length == 0 or stream is None:
            return b""
        data = stream.read(length)
        return data

    def _too_large(self, length: int | None) -> HTTPError:
        if length is None:
            return HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                f"the body has more than {self.max_body} bytes; the limit is {self.max_body}",
                {"limit": self.max_body},
            )
        return HTTPError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            f"the body has {length} bytes; the limit is {self.max_body}",
            {"limit": self.max_body, "length": length},
        )


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

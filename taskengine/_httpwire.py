"""The task API on the wire: request values in, JSON responses and error envelopes out.

Owns what the HTTP app (:mod:`taskengine.http`) and the dashboard
(:mod:`taskengine.dashboard`) share about a request and its answer, with no routing:

* reading a request: :func:`base_url`, the query's :func:`paging_param` and
  :func:`slices_param`, a body's :func:`task_of`, and :func:`drain` for a body not read;
* the reference error envelopes (:func:`validation_error` for 400,
  :func:`application_error` for the rest), :class:`HTTPError` for an answer decided
  before a handler runs, and :func:`error_answer`, which turns any exception into its
  status and envelope (docs/http.md);
* writing a JSON response: :func:`respond`.

Only the standard library; stateless and thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from taskengine._jsonio import dumps, json_type_name
from taskengine.errors import InvalidRequest, StorageError, TaskNotFound, Violation

__all__ = [
    "HTTPError",
    "StartResponse",
    "WSGIEnviron",
    "application_error",
    "base_url",
    "drain",
    "error_answer",
    "not_allowed",
    "paging_param",
    "respond",
    "slices_param",
    "task_of",
    "validation_error",
]

_log = logging.getLogger("taskengine.http")

StartResponse = Callable[..., Any]
"""A WSGI ``start_response`` callable."""
WSGIEnviron = dict[str, Any]
"""A WSGI request environment."""


class HTTPError(Exception):
    """A response decided before the handler ran (auth, routing, body limits).

    Attributes:
        status: the HTTP status.
        code: the application error's ``code``.
        description: the application error's ``description``.
        data: the application error's ``data`` (``None``: ``{}``).
        headers: extra response headers (``Allow`` for a 405).
    """

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


def task_of(body: dict[str, Any]) -> dict[str, Any]:
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


def drain(stream: Any, length: int) -> None:
    """Read and drop up to ``length`` bytes of a request body (so the connection can be
    reused after an early answer)."""
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            return
        length -= len(chunk)


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


def error_answer(
    exc: Exception, environ: WSGIEnviron
) -> tuple[HTTPStatus, dict[str, Any], list[tuple[str, str]]]:
    """The status, envelope and headers answering ``exc`` (see docs/http.md).

    A ``StorageError`` or an unexpected exception is logged in full to the
    ``taskengine.http`` logger and answered without internals (500).
    """
    if isinstance(exc, HTTPError):
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


def not_allowed(method: str, allowed: tuple[str, ...]) -> HTTPError:
    """The 405 answer to ``method``, naming the ``allowed`` ones (and in ``Allow``)."""
    return HTTPError(
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


def respond(
    start_response: StartResponse,
    status: HTTPStatus,
    body: Mapping[str, Any] | bytes,
    headers: list[tuple[str, str]],
    *,
    head: bool = False,
) -> list[bytes]:
    """Start a JSON response (``no-store``) and return its body (none for ``HEAD``)."""
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


def slices_param(environ: WSGIEnviron) -> int | None:
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


def paging_param(environ: WSGIEnviron) -> tuple[int, int]:
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

"""The dashboard: a page to follow, create and cancel tasks, and the WSGI app serving it.

:func:`make_dashboard_app` builds a WSGI application that answers everything the task API
(:func:`taskengine.http.make_app`) answers, plus (relative to where it is mounted)::

    GET  /                       the page (HTML; its script and style below); no token needed
    GET  /dashboard.js, /dashboard.css
    GET  /dashboard/v1/tasks?paging.limit=&paging.offset=
                                 a task page as the API lists it, each unfinished task with
                                 its "owner" (host/pid, or why it waits): one request per
                                 refresh of the list
    GET  /dashboard/v1/tasks/{id}
                                 {"task": ...} as the API's get, with the "owner"
    POST /dashboard/v1/validate  {"task": {...}} -> {"valid": true, "type", "options"}, or the
                                 400 a create would answer; nothing is stored
    GET  /dashboard/v1/collections
                                 every collection: flags and item counts per environment

The page holds no data: it is served without the token so that it can ask for it, and
every data request (the API's and the three above) needs the token when one is set. The
page keeps the token in the tab's ``sessionStorage`` only. It ships with the package (no
CDN, no build step) and renders every value from the store as text. See docs/dashboard.md.
"""

from __future__ import annotations

import importlib.resources
from functools import cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from taskengine._httpwire import (
    HTTPError,
    StartResponse,
    WSGIEnviron,
    error_answer,
    not_allowed,
    paging_param,
    respond,
    task_of,
)
from taskengine._jsonio import parse_json_object
from taskengine.dashboard._data import collections_json, task_json, tasks_json, validate
from taskengine.http import MAX_BODY, TaskAPI

if TYPE_CHECKING:
    from taskengine.engine import TaskEngine

__all__ = ["DATA_PREFIX", "STATIC_FILES", "DashboardApp", "make_dashboard_app", "page_files"]

DATA_PREFIX = "/dashboard/v1/"
"""Where the dashboard's own JSON routes live, relative to the app's mount point."""

STATIC_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
"""Route -> (file under ``taskengine/dashboard/static``, content type)."""

_SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
]


@cache
def page_files() -> dict[str, bytes]:
    """The page's files as served (``index.html``, ``dashboard.js``, ``dashboard.css``)."""
    folder = importlib.resources.files("taskengine.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name, _ in STATIC_FILES.values()}


class DashboardApp:
    """A WSGI application: the dashboard page, its data routes and the whole task API.

    Build it with :func:`make_dashboard_app`. Thread-safe as far as the engine is.

    Attributes:
        api: the task API it answers every other route with.
        prefix: the path it is mounted under (``""`` at the root).
    """

    def __init__(
        self,
        engine: TaskEngine,
        *,
        token: str | None = None,
        max_body: int = MAX_BODY,
        prefix: str = "",
    ) -> None:
        prefix = prefix.strip()
        if prefix and (not prefix.startswith("/") or "//" in prefix):
            raise ValueError(f"prefix must be empty or a path starting with '/', got {prefix!r}")
        self.engine = engine
        self.api = TaskAPI(engine, token=token, max_body=max_body)
        self.prefix = prefix.rstrip("/")

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> list[bytes]:
        """Handle one WSGI request."""
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        head = method == "HEAD"
        path = str(environ.get("PATH_INFO", ""))
        if self.prefix:
            if path != self.prefix and not path.startswith(self.prefix + "/"):
                return self._answer_error(
                    HTTPError(
                        HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no route for {path}", {"path": path}
                    ),
                    environ,
                    start_response,
                    head,
                )
            environ = dict(environ)
            environ["SCRIPT_NAME"] = str(environ.get("SCRIPT_NAME", "")) + self.prefix
            path = path[len(self.prefix) :]
            environ["PATH_INFO"] = path
        if path == "":
            # Mounted at /x and asked for /x: the page's relative links need /x/.
            return self._redirect(environ, start_response, head)
        if path in STATIC_FILES:
            return self._static(path, method, start_response, environ)
        if path.startswith(DATA_PREFIX):
            try:
                body = self._data(method, path[len(DATA_PREFIX) :], environ)
            except Exception as exc:
                return self._answer_error(exc, environ, start_response, head)
            return respond(start_response, HTTPStatus.OK, body, [], head=head)
        return self.api(environ, start_response)

    def _data(self, method: str, route: str, environ: WSGIEnviron) -> dict[str, Any]:
        if method == "HEAD":
            method = "GET"
        self.api._authenticate(environ)
        if route == "tasks":
            if method != "GET":
                raise not_allowed(method, ("GET", "HEAD"))
            limit, offset = paging_param(environ)
            return tasks_json(self.engine, limit, offset)
        if route.startswith("tasks/") and "/" not in route[6:] and route[6:]:
            if method != "GET":
                raise not_allowed(method, ("GET", "HEAD"))
            return task_json(self.engine, route[6:])
        if route == "collections":
            if method != "GET":
                raise not_allowed(method, ("GET", "HEAD"))
            return collections_json(self.engine)
        if route == "validate":
            if method != "POST":
                raise not_allowed(method, ("POST",))
            body = parse_json_object(self.api._read_body(environ), source="body")
            return validate(self.engine, task_of(body))
        path = DATA_PREFIX + route
        raise HTTPError(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no route for {path}", {"path": path})

    def _static(
        self, path: str, method: str, start_response: StartResponse, environ: WSGIEnviron
    ) -> list[bytes]:
        if method not in ("GET", "HEAD"):
            return self._answer_error(
                not_allowed(method, ("GET", "HEAD")), environ, start_response, False
            )
        name, content_type = STATIC_FILES[path]
        payload = page_files()[name]
        start_response(
            "200 OK",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(payload))),
                ("Cache-Control", "no-cache"),
                *_SECURITY_HEADERS,
            ],
        )
        return [] if method == "HEAD" else [payload]

    def _redirect(
        self, environ: WSGIEnviron, start_response: StartResponse, head: bool
    ) -> list[bytes]:
        location = quote(str(environ.get("SCRIPT_NAME", ""))) + "/"
        query = str(environ.get("QUERY_STRING", ""))
        if query:
            location += "?" + query
        start_response(
            "301 Moved Permanently",
            [("Location", location), ("Content-Length", "0"), ("Cache-Control", "no-store")],
        )
        return []

    @staticmethod
    def _answer_error(
        exc: Exception, environ: WSGIEnviron, start_response: StartResponse, head: bool
    ) -> list[bytes]:
        status, body, headers = error_answer(exc, environ)
        return respond(start_response, status, body, headers, head=head)


def make_dashboard_app(
    engine: TaskEngine,
    *,
    token: str | None = None,
    max_body: int = MAX_BODY,
    prefix: str = "",
) -> DashboardApp:
    """The dashboard and the task API over ``engine``, as one WSGI application.

    Args:
        engine: the engine to show and drive (started, for tasks to run).
        token: when set, every data request needs ``Authorization: Bearer <token>``
            (the page asks for it); the page's own files are served without it.
        max_body: the largest accepted request body in bytes (as :class:`TaskAPI`).
        prefix: a path to mount the app under when the host does not strip it itself
            (``"/tasks-ui"``: the page is ``/tasks-ui/``); requests outside it get 404. A
            host that mounts the app by ``SCRIPT_NAME`` leaves it empty.

    Raises:
        ValueError: a bad ``prefix``, ``token`` or ``max_body``.
    """
    return DashboardApp(engine, token=token, max_body=max_body, prefix=prefix)

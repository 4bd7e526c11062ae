"""The audit middleware: one event per API request, committed before the response starts.

It sits inside the application, so it sees the route that matched and what the access
dependency recorded (who, which project, which action). If the event cannot be written the
client gets 503 instead of the data: nothing is served unaudited. Unhandled errors become a
problem+json 500 here, so they are audited too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagebank.api.problems import internal_error, problem_response
from imagebank.services.audit import make_event
from imagebank.services.runtime import Runtime

log = logging.getLogger("imagebank.api")

#: Path parameters that name an object, most specific first (all are internal IDs).
OBJECT_PARAMS = (("instance", "instance"), ("series", "series"), ("study", "study"),
                 ("subject", "subject"), ("resource", "resource"), ("job_id", "job"),
                 ("token_id", "token"), ("username", "user"))
UNAUDITED = frozenset({"/api/v1/health", "/ui/sign-in"})
#: The REST API, DICOMweb (``/dicomweb``, ``/projects/{project}/dicomweb``) and the web UI's
#: pages (what a page shows is read as the API would read it: audited the same way).
AUDITED_PREFIXES = ("/api/", "/dicomweb", "/projects/", "/ui/")
#: The UI's style sheets and scripts: the same for everyone, nothing to audit.
UNAUDITED_PREFIXES = ("/ui/static/",)
#: On every API response: never sniff a download's type, never cache (the data may be
#: identifiable), never frame, never leak the URL (it holds IDs) to another site.
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
                    (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]
#: On the web UI's pages and files as well: nothing but this server's own scripts, styles,
#: images and API calls (the pages have no inline script or style), never framed.
UI_POLICY = (b"content-security-policy",
             b"default-src 'self'; script-src 'self'; style-src 'self'; "
             b"img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
             b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _headers_for(path: str) -> list[tuple[bytes, bytes]]:
    return [*SECURITY_HEADERS, UI_POLICY] if path.startswith("/ui/") else SECURITY_HEADERS


def _add_headers(message: Message, extra: list[tuple[bytes, bytes]]) -> None:
    """Add ``extra`` to a response's start message, except headers the route set itself."""
    headers = list(message.get("headers", []))
    present = {name.lower() for name, _value in headers}
    message["headers"] = [*headers, *(h for h in extra if h[0] not in present)]


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403, 404):
        return "denied"
    if status < 500:
        return "rejected"
    return "error"


def build_event(scope: Scope, status: int) -> dict[str, Any]:
    state = scope.get("state") or {}
    audit: dict[str, Any] = state.get("audit") or {}
    principal = state.get("principal")
    route = scope.get("route")
    template = getattr(route, "path", None) or "(no route)"
    params = scope.get("path_params") or {}
    level = object_id = None
    for name, kind in OBJECT_PARAMS:
        if name in params:
            level, object_id = kind, str(params[name])
            break
    method = scope.get("method", "")
    action = audit.get("action") or ("read" if method in ("GET", "HEAD") else "write")
    detail = audit.get("detail")
    client = scope.get("client")
    return make_event(
        actor_id=getattr(principal, "user_id", None) or audit.get("actor_id"),
        actor=getattr(principal, "username", None) or audit.get("actor"),
        via=getattr(principal, "via", None) or audit.get("via"),
        token_id=getattr(principal, "token_id", None),
        client=client[0] if client else None,
        method=method, route=template, action=action,
        project_id=audit.get("project_id") or params.get("project"),
        level=audit.get("level", level), object_id=audit.get("object_id", object_id),
        status=status, outcome=_outcome(status),
        detail=json.dumps(detail, sort_keys=True, default=str) if detail else None,
    )


class AuditMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(AUDITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        extra = _headers_for(path)
        if path in UNAUDITED or path.startswith(UNAUDITED_PREFIXES):
            async def headed_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    _add_headers(message, extra)
                await send(message)

            await self.app(scope, receive, headed_send)
            return
        started = time.monotonic()
        scope.setdefault("state", {})
        response_started = False
        replaced = False

        async def audited_send(message: Message) -> None:
            nonlocal response_started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                response_started = True
                event = build_event(scope, int(message["status"]))
                try:
                    await asyncio.wrap_future(self.runtime.audit.record(event))
                except Exception:  # noqa: BLE001 - any failure: refuse rather than serve unaudited
                    replaced = True
                    log.error("audit trail unavailable; request refused")
                    response = problem_response(
                        503, "The audit trail cannot be written, so the request was refused; "
                        "try again shortly.", "audit_unavailable")
                    await response(scope, receive, send)
                    return
                _add_headers(message, extra)
                log.info("%s %s %s %.1f ms", scope.get("method"),
                         getattr(scope.get("route"), "path", "-"), message["status"],
                         (time.monotonic() - started) * 1000)
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if response_started:
                raise
            await internal_error()(scope, receive, audited_send)

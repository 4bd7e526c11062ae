"""One error format for every failure: RFC 9457 problem details (application/problem+json).

``detail`` is a sentence a person can act on; ``code`` is stable for programs. Neither ever
carries patient data: validation errors name the parameter, never echo its value.
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagebank.api.security import ACCESS_ATTR
from imagebank.domain.errors import ImagebankError, ThrottledError

log = logging.getLogger("imagebank.api")

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str


def problem_response(status: int, detail: str, code: str,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": f"https://imagebank.dev/problems/{code}", "title": _title(status),
            "status": status, "detail": detail, "code": code, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def internal_error() -> JSONResponse:
    reference = uuid.uuid4().hex[:12]
    log.error("internal error, reference %s", reference)
    return problem_response(
        500, f"Something went wrong on the server (reference {reference}); nothing was "
        "changed by the failed step. Tell the administrator the reference.", "internal",
        reference=reference)


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, str]]]:
    errors = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        errors.append({"field": where, "problem": str(error.get("msg", "invalid"))})
    first = errors[0] if errors else {"field": "request", "problem": "invalid"}
    return f"Invalid {first['field']}: {first['problem']}.", errors


def _access_labels(app: FastAPI) -> dict[tuple[str, str], str]:
    """(path, method) -> the label of the route's access dependency (see ``security``)."""
    labels: dict[tuple[str, str], str] = {}
    for route in app.routes:
        if isinstance(route, APIRoute):
            label = next((getattr(d.dependency, ACCESS_ATTR) for d in route.dependencies
                          if hasattr(d.dependency, ACCESS_ATTR)), "public")
            labels.update({(route.path_format, m.lower()): label for m in route.methods or ()})
    return labels


def _describe_errors(document: dict[str, Any], labels: dict[tuple[str, str], str]) -> None:
    """Every error response is problem+json; each operation lists what its access rule
    can answer: 401 (not signed in), 403 (role, scope or CSRF), 404 (no such project), and
    400 when it takes a body (one that cannot be parsed, or a value the rules refuse)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    document["components"]["securitySchemes"] = {
        "token": {"type": "http", "scheme": "bearer",
                  "description": "An API token: `imagebank token create` or POST /me/tokens."},
        "session": {"type": "apiKey", "in": "cookie", "name": "imagebank_session",
                    "description": "The cookie set by POST /session; requests that change "
                    "something also send its CSRF token as X-CSRF-Token."},
    }
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            label = labels.get((path, method), "public")
            if label != "public":
                operation["security"] = [{"token": []}, {"session": []}]
            statuses: set[int] = set()
            if label != "public":
                statuses.update((401, 403))  # 403: a role, a token's scopes, or CSRF
            if label.startswith("project:"):
                statuses.add(404)
            if "requestBody" in operation:  # a body that is not what the operation takes
                statuses.add(400)
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses.setdefault(str(status), {})
            for status, response in responses.items():
                # (STOW-RS answers 409 with the DICOM JSON body PS3.18 prescribes)
                if status[0] in "45" and "application/dicom+json" not in response.get(
                        "content", {}):
                    response["description"] = _title(int(status))
                    response["content"] = content


def _wants_page(request: Request) -> bool:
    """A browser asking for a page of the UI (sent to sign in, not given an API problem)."""
    return (request.url.path.startswith("/ui/") and request.method == "GET"
            and "text/html" in request.headers.get("accept", ""))


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # FastAPI keeps the document once generated
            _describe_errors(generate(), _access_labels(app))
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ImagebankError)
    async def _imagebank(request: Request, exc: ImagebankError) -> Response:
        if _wants_page(request):
            if exc.status == 401:
                return RedirectResponse("/ui/sign-in", status_code=303)  # a browser: sign in
            if exc.status in (403, 404):
                from imagebank.api.ui import problem_page

                title = "Not allowed" if exc.status == 403 else "Not found"
                return problem_page(request, exc.status, title, exc.message)
        headers = None
        if isinstance(exc, ThrottledError):
            headers = {"Retry-After": str(exc.retry_after)}
        elif exc.status == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="imagebank"'}
        if exc.status >= 500:
            # The route's template, never the path: a DICOMweb path holds UIDs.
            log.error("%s error on %s", exc.code,
                      getattr(request.scope.get("route"), "path", "(no route)"))
        return problem_response(exc.status, exc.message, exc.code, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_detail(exc)
        return problem_response(422, detail, "invalid_request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: "There is nothing at this address; the API is under /api/v1 "
                         "(see /api/docs).",
                    405: "This address does not accept that method; see /api/docs."}
        detail = messages.get(exc.status_code) or str(exc.detail)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return problem_response(exc.status_code, detail, code,
                                dict(exc.headers) if exc.headers else None)

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
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def install(app: FastAPI) -> None:
    @app.exception_handler(ImagebankError)
    async def _imagebank(request: Request, exc: ImagebankError) -> JSONResponse:
        headers = None
        if isinstance(exc, ThrottledError):
            headers = {"Retry-After": str(exc.retry_after)}
        elif exc.status == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="imagebank"'}
        if exc.status >= 500:
            log.error("%s error on %s", exc.code, request.scope.get("path", "?"))
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

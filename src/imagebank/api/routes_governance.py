"""Consent records and the National Data Opt-out list (site administrators; decision 0023),
and a project's governance policy (anyone who reads the project; decision 0031).

Both lists are taken as the request body (``text/csv`` or ``text/plain``), as the CLI takes a
file: a list with a bad row is refused whole (400, every problem by line, never a value)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from imagebank.api.schemas import ConsentImportOut, OptOutListOut, ProjectPolicyOut
from imagebank.api.security import (
    API_PREFIX,
    administrator,
    project_access,
    resolve_principal,
    runtime_of,
)
from imagebank.domain.access import Permission
from imagebank.domain.errors import InvalidInputError

router = APIRouter(prefix=API_PREFIX)
#: The largest list accepted (a trust's opt-out list is about 11 bytes a patient).
MAX_LIST_BYTES = 64 * 1024 * 1024
_TEXT = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}}}}


async def _text(request: Request) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_LIST_BYTES:
            raise InvalidInputError(f"A list is at most {MAX_LIST_BYTES // 2**20} MiB.")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError("The list is not UTF-8 text.") from None


def _actor(request: Request) -> str:
    principal = resolve_principal(request)
    return principal.username if principal is not None else "unknown"


@router.get("/optout-lists", response_model=list[OptOutListOut], dependencies=[administrator],
            tags=["governance"])
def list_optout_lists(request: Request) -> list[dict[str, Any]]:
    """The imported versions of the National Data Opt-out list; the first is the one every
    release applies."""
    return _versions(request)


@router.post("/optout-lists", response_model=OptOutListOut, status_code=201,
             dependencies=[administrator], tags=["governance"], openapi_extra=_TEXT,
             responses={400: {}})
async def import_optout_list(
    request: Request,
    list_date: Annotated[date | None, Query(description="The list's date (default: today).")
                         ] = None,
) -> dict[str, Any]:
    """Import a version of the opt-out list: NHS numbers one per line, or a CSV with an
    ``nhs_number`` column (stored as keyed hashes only)."""
    from imagebank.services.consent import import_optout_text

    text = await _text(request)
    result = await run_in_threadpool(import_optout_text, runtime_of(request).archive, text,
                                     list_date=list_date, actor=_actor(request), via="api")
    versions = await run_in_threadpool(_versions, request)
    return next(v for v in versions if v["id"] == result["version"])


def _versions(request: Request) -> list[dict[str, Any]]:
    from imagebank.services.consent import optout_versions

    return optout_versions(runtime_of(request).archive)


@router.post("/consents", response_model=ConsentImportOut, dependencies=[administrator],
             tags=["governance"], openapi_extra=_TEXT, responses={400: {}, 422: {}})
async def import_consent_records(request: Request) -> dict[str, Any]:
    """Import consent decisions (CSV: nhs_number or patient_id and issuer, status, date,
    optionally project, scope, source). Withdrawals flag data already shared."""
    from imagebank.services.consent import import_consent_text

    text = await _text(request)
    result = await run_in_threadpool(import_consent_text, runtime_of(request).archive, text,
                                     actor=_actor(request), via="api")
    return result.as_dict()


#: What governs a project's releases, in words (the policy page says the same).
RESEARCH_POLICY = ("Every share into this project, and every export of it, follows this "
                   "policy: the strictest merge of its sites' policies.")
IDENTIFIABLE_POLICY = (
    "A site's identifiable project has no policy of its own. Its data leaves it only "
    "de-identified: shared into a research project, under that project's policy, or exported "
    "under the sites' policies named for that export. Each release's manifest records the "
    "policy it used.")
UNSET_POLICY = ("This research project has no policy stored with it: shares into it use the "
                "basic profile with no options, and the National Data Opt-out applies.")


@router.get("/projects/{project}/policy", response_model=ProjectPolicyOut,
            response_model_exclude_unset=True,  # the policy's fields as `policy show` has them
            dependencies=[project_access(Permission.READ)], tags=["governance"],
            responses={404: {}})
def project_policy(request: Request, project: str) -> dict[str, Any]:
    """The project's governance policy: for a research project, the YAML stored with it,
    its normalised form (as `imagebank policy show --json`), the sites it merges and the
    options its releases use; for an identifiable project, what applies instead."""
    from imagebank.services.policies import stored_policy

    row = runtime_of(request).archive.ensure_project(project)
    shown = stored_policy(row)
    if shown is None:
        shown = {"text": None, "policy": None, "sites": [], "options": []}
        applies = UNSET_POLICY if row["zone"] == "research" else IDENTIFIABLE_POLICY
    else:
        applies = RESEARCH_POLICY
    return {"project": project, "zone": row["zone"], **shown, "applies": applies}

"""Cohort search (issue 6, decision 0022): ``POST /projects/{project}/cohorts/search``.

Anyone who may read a project may search it. Exact counts and IDs go to the members and
owners of a site's own (identifiable) project and to site administrators; everyone else
(viewers, collaborators, and every user of a research project) gets counts suppressed and
rounded under the policy (a research project's own; for a site's project, the smallest count
of 10). A query that does not parse is a 422 problem with its ``position`` and ``message``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from imagebank.api.problems import problem_response
from imagebank.api.schemas import CohortOut, CohortSearchIn
from imagebank.api.security import (
    API_PREFIX,
    project_access,
    resolve_principal,
    runtime_of,
    set_audit,
)
from imagebank.domain.access import Permission
from imagebank.domain.cohort import CohortQueryError

router = APIRouter(prefix=API_PREFIX, tags=["cohorts"])


@router.post("/projects/{project}/cohorts/search", response_model=CohortOut,
             dependencies=[project_access(Permission.READ, "cohort_search")],
             responses={404: {}, 422: {"description": "The query does not parse: the "
                                       "problem's position (0-based) and message say where "
                                       "and why."}})
async def search_cohort(request: Request, project: str, body: CohortSearchIn
                        ) -> dict[str, Any] | JSONResponse:
    """Count the people, studies and series a cohort query matches in the project."""
    from imagebank.services.cohort import gives_exact, search

    principal = resolve_principal(request)
    assert principal is not None
    archive = runtime_of(request).archive
    exact = gives_exact(archive, project, principal)
    try:
        result = await run_in_threadpool(search, archive, project, body.query, exact=exact,
                                         limit=body.limit)
    except CohortQueryError as exc:
        set_audit(request, detail={"query": body.query[:1000], "position": exc.position})
        return problem_response(422, exc.message, exc.code, position=exc.position,
                                message=exc.message)
    set_audit(request, detail=result.audit_detail())
    return result.as_dict()

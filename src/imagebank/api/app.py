"""The FastAPI application: ``create_app(runtime)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from imagebank import __version__
from imagebank.api import (
    problems,
    routes_accounts,
    routes_cohort,
    routes_data,
    routes_dicomweb,
    routes_governance,
    routes_jobs,
    routes_projects,
    ui,
    ui_admin,
    ui_browse,
    ui_ohif,
    ui_viewer,
    ui_work,
)
from imagebank.api.middleware import AuditMiddleware
from imagebank.api.security import API_PREFIX
from imagebank.services.runtime import Runtime

DESCRIPTION = """\
imagebank's REST API. Authenticate with an API token (`Authorization: Bearer ibt_...`,
made with `imagebank token create` or `POST /api/v1/me/tokens`) or sign in with
`POST /api/v1/session` (cookie + `X-CSRF-Token`). Every request is audited. Errors are
RFC 9457 problem details (`application/problem+json`).
"""


def create_app(runtime: Runtime, *, background: bool = True, requeue: bool = True
               ) -> FastAPI:
    """The application over ``runtime``; ``background`` starts the audit writer and the job
    runner with the application (off for tests that drive jobs themselves); ``requeue``
    returns interrupted jobs to the queue at start (off in a multi-process server's workers:
    the parent did it)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start(run_jobs=background, requeue=requeue)
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(
        title="imagebank",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    problems.install(app)
    # The routes are added as they are (not through include_router) so that the route table
    # holds each APIRoute with its full path: the audit records it and a test walks it.
    for module in (routes_accounts, routes_projects, routes_data, routes_jobs, routes_dicomweb,
                   routes_governance, routes_cohort, ui, ui_browse, ui_viewer, ui_work,
                   ui_admin, ui_ohif):
        app.router.routes.extend(module.router.routes)
    app.add_middleware(AuditMiddleware, runtime=runtime)
    return app

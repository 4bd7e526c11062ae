"""Web UI pages (decision 0027): The OHIF viewer, served at /ohif/ when set-up has fetched it."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)

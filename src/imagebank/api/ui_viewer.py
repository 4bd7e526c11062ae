"""Web UI pages (decision 0027): The series viewer (WADO-RS rendered and frames)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)

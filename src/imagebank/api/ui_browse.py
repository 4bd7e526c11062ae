"""Web UI pages (decision 0027):
Browsing a project (subjects, studies, series with thumbnails), search and the cohort builder.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)

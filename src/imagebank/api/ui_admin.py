"""Web UI pages (decision 0027):
The audit trail, a project's policy and members, users and tokens.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)

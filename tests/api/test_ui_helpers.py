"""Small helpers of the web UI's templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imagebank.api import ui
from imagebank.api.ui import dicom_date, human_size


@pytest.mark.parametrize(("size", "shown"), [
    (None, ""), (0, "0 bytes"), (1023, "1,023 bytes"), (1024, "1 KiB"), (1536, "1.5 KiB"),
    (5 * 1024**2 + 10, "5 MiB"), (4 * 1024**3, "4 GiB"), (3000 * 1024**3, "3,000 GiB"),
])
def test_sizes_are_shown_in_binary_units(size: int | None, shown: str) -> None:
    assert human_size(size) == shown


TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "imagebank" / "api" / "templates"


def test_every_form_posts_so_that_nothing_typed_lands_in_an_address() -> None:
    # A form without a method is a GET: without its script (not loaded yet, or failed),
    # Enter would put what was typed (a password, a patient ID) into the URL.
    forms = [(path.name, tag) for path in sorted(TEMPLATES.glob("*.html"))
             for tag in re.findall(r"<form\b[^>]*>", path.read_text())]
    assert len(forms) >= 8
    wrong = [(name, tag) for name, tag in forms
             if not re.search(r'\bmethod="(post|dialog)"', tag)]
    assert wrong == []


def test_pages_and_their_files_carry_the_security_headers(sqlite_client: TestClient) -> None:
    for url in ("/ui/sign-in", "/ui/static/ui.css", "/ui/static/ui.js"):
        response = sqlite_client.get(url)
        assert response.status_code == 200, url
        headers = response.headers
        assert headers["x-frame-options"] == "DENY", url
        assert headers["x-content-type-options"] == "nosniff", url
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, url
        assert "unsafe-inline" not in policy, url
    # A static file keeps its own caching; a page is never cached.
    assert sqlite_client.get("/ui/static/ui.css").headers["cache-control"] == "no-cache"
    assert sqlite_client.get("/ui/sign-in").headers["cache-control"] == "no-store"
    # The API has the other headers, not the UI's policy.
    health = sqlite_client.get("/api/v1/health")
    assert health.headers["x-frame-options"] == "DENY"
    assert "content-security-policy" not in health.headers


@pytest.mark.parametrize(("value", "shown"), [
    ("20240131", "2024-01-31"), ("19000101", "1900-01-01"),
    (None, ""), ("", ""),
    ("2024.01.31", "2024.01.31"),  # old-style (ACR-NEMA) dates: as they are
    ("202401", "202401"), ("20240131-20240201", "20240131-20240201"),  # partial, a range
    ("2024013", "2024013"), ("202401311", "202401311"), ("2024O131", "2024O131"),
    ("２０２４０１３１", "２０２４０１３１"),  # digits, but not ASCII ones
    ("<script>", "<script>"),  # escaped by the template, not here
])
def test_dicom_dates_are_shown_as_yyyy_mm_dd(value: str | None, shown: str) -> None:
    assert dicom_date(value) == shown


def test_the_dicom_date_filter_is_registered_for_the_templates() -> None:
    template = ui.TEMPLATES.env.from_string("{{ a|dicom_date }} {{ b|dicom_date or 'none' }}")
    assert template.render(a="19991231", b=None) == "1999-12-31 none"

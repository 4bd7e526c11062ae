"""Small helpers of the web UI's templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imagebank.api.ui import human_size


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

"""Screenshots of the web UI's main pages, for docs/screenshots/ (run after a UI change):

    .venv/bin/python scripts/ui_screenshots.py [--shared ../shared/data] [--out docs/screenshots]

It builds the demo archive (`imagebank demo`: synthetic CT and MR studies, fictional clinical
histories, the public anonymised CT) in a temporary folder, serves it on loopback, signs in
as a demo administrator in Debian's Chromium (headless) and saves one PNG a page. Nothing
real is shown: every patient in the demo is synthetic or from the public test data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from playwright.sync_api import Page, sync_playwright

from imagebank.api.app import create_app
from imagebank.services.archive import RESEARCH as RESEARCH_ZONE
from imagebank.services.archive import Archive
from imagebank.services.demo import SHARED_PROJECT, SYNTHETIC_PROJECT, build_demo
from imagebank.services.policies import project_policy
from imagebank.services.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
#: Pages shot whole (the others: the first 1280×800).
FULL_PAGE = {"cohort", "policy"}
RESEARCH = "lung-research"
PASSWORD = "demo screenshots only"  # noqa: S105 (a throwaway archive)


def _first(archive: Archive, project: str, modality: str) -> tuple[str, str]:
    """A study of the project with a series of ``modality``: (study ID, series ID)."""
    for study in archive.studies(project, limit=1000):
        for series in archive.series(study["id"]):
            if series.get("modality") == modality:
                return study["id"], series["id"]
    raise SystemExit(f"The demo has no {modality} series in {project}.")


def _pages(archive: Archive) -> list[tuple[str, str, Callable[[Page], Any] | None]]:
    """(file name, path, what to do on the page before the shot)."""
    study, series = _first(archive, SYNTHETIC_PROJECT, "CT")
    p = f"/ui/projects/{SYNTHETIC_PROJECT}"

    def cohort(page: Page) -> None:
        box = page.get_by_label("Query", exact=False).first
        box.fill("condition[ICD10:C34*] within 90 days before imaging[modality = CT]")
        page.wait_for_timeout(1500)

    def viewer(page: Page) -> None:
        page.wait_for_function(
            "() => performance.getEntriesByName('imagebank:first-image').length > 0")
        page.keyboard.press("ArrowDown")
        page.wait_for_timeout(500)

    def ohif(page: Page) -> None:
        page.wait_for_function(
            """() => [...document.querySelectorAll('canvas')].some(c => {
                 if (!c.width || !c.height) return false;
                 const g = c.getContext('2d', {willReadFrequently: true});
                 if (!g) return true;
                 const d = g.getImageData(0, 0, c.width, c.height).data;
                 for (let i = 0; i < d.length; i += 4 * 97) if (d[i] > 30) return true;
                 return false; })""", timeout=60_000)
        # OHIF's first-visit tour and its investigational-use notice (kept: it is true).
        for name in ("Skip all", "Confirm and hide"):
            button = page.get_by_role("button", name=name)
            if button.count():
                button.first.click()
        page.wait_for_timeout(2000)

    study_uid = archive.get("study", study)["study_instance_uid"]
    return [
        ("projects", "/ui/projects", None),
        ("project", p, None),
        ("subjects", f"{p}/subjects", None),
        ("study", f"{p}/studies/{study}", lambda page: page.wait_for_timeout(1000)),
        ("viewer", f"{p}/series/{series}/view", viewer),
        ("search", f"{p}/search", None),
        ("cohort", f"{p}/cohort", cohort),
        ("upload", f"{p}/upload", None),
        ("quarantine", f"/ui/projects/{SHARED_PROJECT}/quarantine", None),
        ("jobs", "/ui/jobs", None),
        ("audit", f"{p}/audit", None),
        ("policy", f"/ui/projects/{RESEARCH}/policy", None),
        ("users", "/ui/users", None),
        ("account", "/ui/account", None),
        ("ohif", f"/ohif/viewer?StudyInstanceUIDs={study_uid}", ohif),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--only", nargs="*", help="only these pages (file names)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imagebank-shots-") as tmp:
        archive = Archive.open(Path(tmp) / "data", workers=1)
        try:
            build_demo(archive, shared=args.shared)
            # A research project under the three example sites' harmonised policy.
            policies = sorted((ROOT / "docs" / "policies").glob("*.yaml"))
            archive.create_project(RESEARCH, "Lung cancer imaging cohort",
                                   "A research project: de-identified data only.",
                                   zone=RESEARCH_ZONE, policy=project_policy(policies))
            runtime = Runtime.for_archive(archive)
            runtime.accounts.add_user("admin", PASSWORD, admin=True)
            failures = _shoot(runtime, archive, args.out, set(args.only or []))
        finally:
            archive.close()
    return 1 if failures else 0


def _shoot(runtime: Runtime, archive: Archive, out: Path, only: set[str]) -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(runtime, background=True),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    failures = 0
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(f"{base}/ui/sign-in")
            page.screenshot(path=out / "sign-in.png")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/ui/projects")
            for name, path, before in _pages(archive):
                if only and name not in only:
                    continue
                response = page.goto(base + path)
                if response is None or response.status != 200:
                    print(f"{name}: HTTP {response.status if response else '?'}",
                          file=sys.stderr)
                    failures += 1
                    continue
                if before is not None:
                    before(page)
                page.screenshot(path=out / f"{name}.png", full_page=name in FULL_PAGE)
                print(f"{name}.png")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return failures


if __name__ == "__main__":
    sys.exit(main())

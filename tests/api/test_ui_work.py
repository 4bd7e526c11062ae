"""Uploads, the quarantine and jobs in a real browser (Debian's Chromium, headless; decision
0030). A module's own world and server, with the job runner running, since these tests
change data: upload a file by the file input and see it stored and on the project's page,
a folder by the folder picker, a drop; a non-DICOM file quarantined with its reason, then
retried and discarded on the quarantine page; a job's progress bar reaching done. Stopping
an upload, a folder the browser cannot read, and the jobs API failing are tried too, and
every test fails on an uncaught error or a console error in the page."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiworld import World
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, Route, expect
from pydicom import dcmread
from uikit import page_errors, served_world, sign_in

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.ids import quarantine_object_key
from imagebank.index import repo
from imagebank.services import quarantine as items

WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
           "resultTypes": ["violations"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, str]]:
    """This module's own world (SQLite), served with the job runner running."""
    with served_world(tmp_path_factory.mktemp("ui-work"), background=True) as served:
        yield served


def _series(patient: int, slices: int = 1) -> list[bytes]:
    spec = SeriesSpec(modality="CT", slices=slices, rows=8, columns=8)
    return [to_bytes(ds) for ds in make_study(SyntheticPatient.make(patient), series=[spec])]


def _violations(page: Page) -> list[str]:
    results: Any = Axe().run(page, options=WCAG_AA)
    return [f"{v['id']}: {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
            for v in results.response["violations"]]


def _newest_item(world: World, project: str = "alpha") -> dict[str, Any]:
    return items.list_items(world.runtime.archive, project, limit=1000)[-1]


@pytest.fixture
def errors(page: Page) -> Iterator[list[str]]:
    """The page's uncaught errors (unhandled rejections too) and console errors: none, when
    the test ends."""
    seen = page_errors(page)
    yield seen
    assert seen == []


def _problem(status: int, words: str) -> dict[str, Any]:
    return {"status": status, "content_type": "application/problem+json",
            "body": json.dumps({"type": "about:blank", "status": status, "title": "Error",
                                "detail": words})}


# -- uploads ------------------------------------------------------------------------------------
def test_a_file_uploaded_by_the_file_input_is_stored_and_shows_on_the_projects_page(
        site: tuple[World, str], page: Page, tmp_path: Path, errors: list[str]) -> None:
    world, base = site
    (data,) = _series(200)
    chosen = tmp_path / "scan.dcm"
    chosen.write_bytes(data)
    again = tmp_path / "scan copy.dcm"
    again.write_bytes(data)
    studies = len(world.runtime.archive.studies("alpha"))
    sign_in(page, base, "member")
    page.goto(f"{base}/ui/projects/alpha/upload")
    expect(page.get_by_role("link", name="Upload")).to_have_attribute("aria-current", "page")
    page.get_by_label("Choose files").set_input_files([chosen, again])

    status = page.get_by_role("status")
    expect(status).to_contain_text("Done: 2 of 2 files")
    expect(status).to_contain_text("1 stored, 1 already there, 0 quarantined, 0 failed")
    rows = page.locator("#upload-list tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#upload-list tr[data-outcome=stored]")).to_contain_text("Stored")
    expect(page.locator("#upload-list tr[data-outcome=duplicate]")).to_contain_text(
        "Already there")
    expect(page.locator("#upload-bytes")).to_have_js_property("value", 2 * len(data))
    expect(page.locator("#upload-done")).to_have_js_property("value", 2)

    # A link to the study that received it, by its internal ID only; the study is listed on
    # the project's page.
    link = page.locator("#upload-studies a[data-study]")
    expect(link).to_have_count(1)
    study_id = link.get_attribute("data-study")
    assert study_id and link.get_attribute("href") == (
        f"/ui/projects/alpha/studies/{study_id}")
    expect(link).to_contain_text("CT")  # named from the API: date · description · modality
    assert len(world.runtime.archive.studies("alpha")) == studies + 1
    page.goto(f"{base}/ui/projects/alpha")
    expect(page.locator(f"tr[data-study='{study_id}']")).to_have_count(1)


def test_a_folder_by_the_folder_picker_keeps_the_page_small(
        site: tuple[World, str], page: Page, tmp_path: Path, errors: list[str]) -> None:
    world, base = site
    folder = tmp_path / "export"
    blobs = _series(201, slices=60) + _series(202, slices=60)
    for i, blob in enumerate(blobs):
        sub = folder / f"series{i % 2}" / ("deeper" if i % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:04d}.dcm").write_bytes(blob)
    (folder / "DICOMDIR-notes.txt").write_text("not an image")
    instances = world.runtime.archive.stats()["instances"]
    sign_in(page, base, "member")
    page.goto(f"{base}/ui/projects/alpha/upload")
    started = time.monotonic()
    page.get_by_label("Choose a folder (with its subfolders)").set_input_files(folder)
    expect(page.get_by_role("status")).to_contain_text("Done: 121 of 121 files",
                                                       timeout=60_000)
    seconds = time.monotonic() - started
    expect(page.get_by_role("status")).to_contain_text("120 stored, 0 already there, "
                                                       "1 quarantined, 0 failed")
    # Not one row per file: the last 50, and the one problem with its reason.
    expect(page.locator("#upload-list tbody tr")).to_have_count(50)
    problem = page.locator("#upload-problems tbody tr")
    expect(problem).to_have_count(1)
    expect(problem).to_contain_text("export/DICOMDIR-notes.txt")
    expect(problem).to_contain_text("Quarantined: not dicom")
    expect(problem).to_contain_text("DICM")
    expect(page.locator("#upload-studies a[data-study]")).to_have_count(2)
    assert world.runtime.archive.stats()["instances"] == instances + 120
    # Its quarantine item is named by the file's path in the folder (sent in a header).
    assert _newest_item(world)["source"] == "upload: export/DICOMDIR-notes.txt"
    print(f"\n121 files uploaded through the page in {seconds:.1f} s "
          f"({121 / seconds:.0f} files/s)")


def test_files_dropped_on_the_drop_zone_are_sent(site: tuple[World, str], page: Page,
                                                 errors: list[str]) -> None:
    _world, base = site
    sign_in(page, base, "member")
    page.goto(f"{base}/ui/projects/alpha/upload")
    # A drop as the browser makes it (files, no folder entries: the zone's plain path).
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(["plain words"], "dropped.txt", {type: "text/plain"}));
        const zone = document.getElementById("drop-zone");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true,
                                                      cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true,
                                                  cancelable: true}));
    }""")
    expect(page.get_by_role("status")).to_contain_text("Done: 1 of 1 files")
    row = page.locator("#upload-problems tbody tr")
    expect(row).to_contain_text("dropped.txt")
    expect(row).to_contain_text("Quarantined: not dicom")


def test_a_folder_the_browser_cannot_read_is_said(site: tuple[World, str], page: Page,
                                                  errors: list[str]) -> None:
    world, base = site
    sign_in(page, base, "member")
    page.goto(f"{base}/ui/projects/alpha/upload")
    # A dropped folder whose second read fails (moved away, or no permission), as Chromium's
    # FileSystemDirectoryReader reports it: the file read first is still sent.
    page.evaluate("""() => {
        const file = new File(["words, no image"], "first.txt", {type: "text/plain"});
        const fileEntry = {isFile: true, isDirectory: false, name: "first.txt",
                           file: (ok) => ok(file)};
        let reads = 0;
        const folder = {isFile: false, isDirectory: true, name: "scans", createReader: () => ({
            readEntries: (ok, fail) => {
                reads += 1;
                if (reads === 1) ok([fileEntry]);
                else fail(new DOMException("A requested file or directory could not be found.",
                                           "NotFoundError"));
            }})};
        DataTransferItem.prototype.webkitGetAsEntry = function () { return folder; };
        const dt = new DataTransfer();
        dt.items.add(file);
        document.getElementById("drop-zone").dispatchEvent(
            new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    status = page.get_by_role("status")
    expect(status).to_contain_text("Done: 1 of 1 files")
    expect(status).to_contain_text("0 stored, 0 already there, 1 quarantined, 0 failed.")
    expect(status).to_contain_text("1 folder could not be read.")
    unread = page.locator("#upload-problems tbody tr[data-outcome=unread]")
    expect(unread).to_contain_text("scans/")
    expect(unread).to_contain_text("The browser could not read this folder")
    assert _newest_item(world)["source"] == "upload: scans/first.txt"


def test_stopping_counts_what_was_not_sent_and_what_may_have_been_stored(
        site: tuple[World, str], page: Page, tmp_path: Path, errors: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    world, base = site
    archive = world.runtime.archive
    # The server takes each file whole, then waits before storing it: the page can stop
    # requests whose file has gone (outcome unknown) and some still queued (three at a time).
    release = threading.Event()
    arrived: list[int] = []
    real = archive.receive

    def slow(objects: Any, project: str, **kwargs: Any) -> Any:
        arrived.append(1)
        release.wait(30)
        return real(objects, project, **kwargs)

    monkeypatch.setattr(archive, "receive", slow)
    chosen = []
    for n, blob in enumerate(_series(204, slices=5)):
        path = tmp_path / f"slice{n}.dcm"
        path.write_bytes(blob)
        chosen.append(path)
    try:
        sign_in(page, base, "member")
        page.goto(f"{base}/ui/projects/alpha/upload")
        page.get_by_label("Choose files").set_input_files(chosen)
        deadline = time.monotonic() + 10
        while len(arrived) < 3 and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert len(arrived) == 3
        # The server has three files whole; wait until the page has seen them go (its byte
        # count), as a user reading the progress bar would.
        three = sum(path.stat().st_size for path in chosen[:3])
        page.wait_for_function("n => document.getElementById('upload-bytes').value >= n",
                               arg=three)
        page.get_by_role("button", name="Stop sending").click()
        status = page.get_by_role("status")
        expect(status).to_contain_text("Stopped: 5 of 5 files.")
        expect(status).to_contain_text("0 failed, 2 not sent, 3 of unknown outcome.")
        expect(page.locator("[data-count=notsent]")).to_have_text("2")
        expect(page.locator("[data-count=unknown]")).to_have_text("3")
        expect(page.locator("#upload-done")).to_have_js_property("value", 5)
        waiting = page.locator("#upload-problems tbody tr[data-outcome=notsent]")
        expect(waiting).to_contain_text("2 files still waiting")
        unknown = page.locator("#upload-problems tbody tr[data-outcome=unknown]")
        expect(unknown).to_have_count(3)
        expect(unknown.first).to_contain_text("it may have been stored")
        expect(page.get_by_text("Stopped before it was sent")).to_have_count(0)
    finally:
        release.set()
    # ... and indeed the server stores what it had received whole.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not archive.find(_uid(chosen[0])):
        time.sleep(0.05)
    assert all(archive.find(_uid(path)) for path in chosen[:3])
    assert not any(archive.find(_uid(path)) for path in chosen[3:])


def _uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_a_file_over_the_limit_is_not_sent(site: tuple[World, str], page: Page,
                                           tmp_path: Path, errors: list[str]) -> None:
    _world, base = site
    sign_in(page, base, "member")

    def small_limit(route: Any) -> None:  # the page as a server with a 10-byte limit sends it
        response = route.fetch()
        html = response.text()
        assert 'data-max-size="' in html
        html = html.replace('data-max-size="', 'data-max-size="10" data-was="', 1)
        route.fulfill(response=response, body=html)

    page.route(f"{base}/ui/projects/alpha/upload", small_limit)
    page.goto(f"{base}/ui/projects/alpha/upload")
    big = tmp_path / "big.dcm"
    big.write_bytes(b"x" * 4096)
    page.get_by_label("Choose files").set_input_files(big)
    expect(page.get_by_role("status")).to_contain_text("Done: 1 of 1 files")
    expect(page.get_by_role("status")).to_contain_text("0 quarantined, 1 failed")
    row = page.locator("#upload-problems tbody tr")
    expect(row).to_contain_text("Not sent")
    expect(row).to_contain_text("Larger than the limit of 10 bytes.")


# -- the quarantine -----------------------------------------------------------------------------
def test_a_non_dicom_upload_is_quarantined_then_discarded(site: tuple[World, str],
                                                          page: Page, tmp_path: Path,
                                                          errors: list[str]) -> None:
    world, base = site
    archive = world.runtime.archive
    junk = tmp_path / "letter.txt"
    junk.write_text("Dear colleague, ...")
    sign_in(page, base, "owner")
    page.goto(f"{base}/ui/projects/alpha/upload")
    page.get_by_label("Choose files").set_input_files(junk)
    row = page.locator("#upload-list tbody tr").first
    expect(row).to_contain_text("Quarantined: not dicom")
    expect(row).to_contain_text("no 'DICM' marker")
    item = _newest_item(world)
    assert item["reason"] == "not_dicom" and item["size_bytes"] == junk.stat().st_size
    assert item["source"] == "upload: letter.txt"

    page.get_by_role("link", name="Quarantine").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha/quarantine")
    line = page.locator(f"tr[data-item='{item['id']}']")
    expect(line.locator(".reason")).to_have_text("not_dicom")
    expect(line.locator(".source")).to_have_text("upload: letter.txt")
    count = page.locator("#quarantine-reasons tr[data-reason=not_dicom] td")
    before = int(count.inner_text())

    # Retry by keyboard: refused again, said in the live region; the row stays.
    line.get_by_role("button", name="Retry").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#quarantine-status")).to_contain_text("Refused again (not dicom)")
    expect(line).to_have_count(1)
    expect(count).to_have_text(str(before))

    # Discard, confirmed: the row goes, the counts follow, the bytes are gone.
    dialogs: list[str] = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    line.get_by_role("button", name="Discard").click()
    expect(page.locator("#quarantine-status")).to_contain_text("Discarded")
    expect(line).to_have_count(0)
    assert dialogs and "deleted for good" in dialogs[0]
    if before > 1:
        expect(count).to_have_text(str(before - 1))
    else:
        expect(count).to_have_count(0)
    assert item["id"] not in {i["id"] for i in items.list_items(archive, "alpha", limit=1000)}
    assert archive.store.stat(item["object_key"]) is None


def test_a_discard_cancelled_at_the_confirmation_keeps_the_item(site: tuple[World, str],
                                                                page: Page) -> None:
    world, base = site
    world.runtime.archive.ingest_bytes([(b"keep me", "kept.bin")], "alpha")
    item = _newest_item(world)
    sign_in(page, base, "owner")
    page.goto(f"{base}/ui/projects/alpha/quarantine")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator(f"tr[data-item='{item['id']}']").get_by_role("button", name="Discard").click()
    expect(page.locator(f"tr[data-item='{item['id']}']")).to_have_count(1)
    assert items.get_item(world.runtime.archive, item["id"])["id"] == item["id"]


def test_a_retry_that_archives_links_to_the_study(site: tuple[World, str], page: Page,
                                                  errors: list[str]) -> None:
    world, base = site
    archive = world.runtime.archive
    (data,) = _series(203)
    # A valid file quarantined by a rule since relaxed: bytes kept under a quarantine key.
    item_id = uuid.uuid4().hex
    key = quarantine_object_key("alpha", item_id)
    archive.store.put(key, data)
    with archive.sessions.begin() as session:
        repo.add_quarantine(session, [{
            "id": item_id, "project_id": "alpha", "reason": "unreadable",
            "message": "Held by an earlier rule.", "source": "scanner/IM0001",
            "size_bytes": len(data), "sha256": None, "object_key": key, "instance_id": None}])
    sign_in(page, base, "owner")
    page.goto(f"{base}/ui/projects/alpha/quarantine")
    line = page.locator(f"tr[data-item='{item_id}']")
    expect(line.locator(".source")).to_have_text("scanner/IM0001")
    line.get_by_role("button", name="Retry").click()
    expect(page.locator("#quarantine-status")).to_contain_text("Retried: Archived")
    expect(line.locator(".reason")).to_have_text("archived")
    link = line.get_by_role("link", name="Open its study")
    expect(link).to_be_focused()
    study_id = link.get_attribute("href").rsplit("/", 1)[-1]  # type: ignore[union-attr]
    assert archive.get("study", study_id)["project_id"] == "alpha"
    assert item_id not in {i["id"] for i in items.list_items(archive, "alpha", limit=1000)}


def test_the_pages_meet_wcag_aa(site: tuple[World, str], page: Page) -> None:
    world, base = site
    world.runtime.archive.ingest_bytes([(b"<b>odd</b>", "<i>odd</i>.bin")], "alpha")
    sign_in(page, base, "owner")
    for path in ("/ui/projects/alpha/upload", "/ui/projects/alpha/quarantine", "/ui/jobs",
                 "/ui/projects/lab/upload"):
        page.goto(base + path)
        expect(page.locator("main h1")).to_be_visible()
        assert _violations(page) == [], path


# -- jobs ---------------------------------------------------------------------------------------
@pytest.fixture
def gate(site: tuple[World, str]) -> Iterator[threading.Event]:
    """Exports wait for this event before they run (so that a page sees them running)."""
    jobs = site[0].runtime.jobs
    real = jobs.handlers["export"]
    event = threading.Event()

    def gated(context: Any) -> dict[str, Any]:
        context.progress(0, None, "waiting for the test", force=True)
        event.wait(30)
        return real(context)

    jobs.handlers["export"] = gated
    try:
        yield event
    finally:
        event.set()
        jobs.handlers["export"] = real


def _start_export(world: World, base: str, user: str) -> str:
    answer = httpx.post(f"{base}/api/v1/projects/alpha/exports", headers=world.headers(user),
                        json={"ids": [world.ids["study"]]})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_a_jobs_progress_bar_reaches_done_and_a_queued_job_is_cancelled(
        site: tuple[World, str], page: Page, gate: threading.Event, errors: list[str]) -> None:
    world, base = site
    jobs = world.runtime.jobs
    first = _start_export(world, base, "collaborator")
    deadline = time.monotonic() + 10
    while jobs.get(first)["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _start_export(world, base, "collaborator")  # waits behind the first
    sign_in(page, base, "collaborator")
    page.goto(f"{base}/ui/jobs")
    running = page.locator(f"tr[data-job='{first}']")
    queued = page.locator(f"tr[data-job='{second}']")
    expect(running.locator(".state")).to_have_text("running")
    expect(queued.locator(".state")).to_have_text("queued")
    expect(running.locator(".message")).to_have_text("waiting for the test")

    page.once("dialog", lambda dialog: dialog.accept())
    queued.get_by_role("button", name="Cancel").click()
    expect(queued.locator(".state")).to_have_text("cancelled")
    expect(queued.get_by_role("button", name="Cancel")).to_have_count(0)
    assert jobs.get(second)["state"] == "cancelled"

    gate.set()  # the export runs: the page follows it by itself to the end
    bar = running.locator("progress")
    expect(running.locator(".state")).to_have_text("succeeded")
    total = len(world.runtime.archive.instance_objects("study", [world.ids["study"]]))
    assert total >= 2
    expect(bar).to_have_js_property("max", total)  # every instance of the study, written
    expect(bar).to_have_js_property("value", total)
    expect(running.locator(".count")).to_have_text(f"{total} of {total}")
    expect(page.locator("#jobs-status")).to_contain_text("succeeded")
    download = running.get_by_role("link", name="Download")
    assert download.get_attribute("href") == f"/api/v1/jobs/{first}/result"

    # The job's own page says the same, and its result.
    running.get_by_role("link", name="Export", exact=True).click()
    expect(page).to_have_url(f"{base}/ui/jobs/{first}")
    expect(page.locator("#job-result")).to_contain_text("instances")
    expect(page.locator("tr[data-job] .state")).to_have_text("succeeded")


def test_another_users_job_page_is_not_found(site: tuple[World, str], page: Page) -> None:
    world, base = site
    job = world.runtime.jobs.submit("export", "alpha", {"level": "study",
                                                        "ids": [world.ids["study"]]},
                                    world.runtime.accounts.get_user("member")["id"])
    sign_in(page, base, "viewer")
    response = page.goto(f"{base}/ui/jobs/{job['id']}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.goto(f"{base}/ui/jobs")
    expect(page.locator(f"tr[data-job='{job['id']}']")).to_have_count(0)


def _running_export(world: World, base: str) -> str:
    job = _start_export(world, base, "collaborator")
    deadline = time.monotonic() + 10
    while world.runtime.jobs.get(job)["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    return job


def test_the_jobs_page_backs_off_when_the_api_fails_and_says_it_once(
        site: tuple[World, str], page: Page, gate: threading.Event, errors: list[str]) -> None:
    world, base = site
    job = _running_export(world, base)
    sign_in(page, base, "collaborator")
    asked: list[float] = []

    def failing(route: Route) -> None:
        asked.append(time.monotonic())
        route.fulfill(**_problem(500, "The index is not answering."))

    page.route("**/api/v1/jobs", failing)
    page.goto(f"{base}/ui/jobs")
    status = page.locator("#jobs-status")
    expect(status).to_have_text("The jobs could not be updated: The index is not answering. "
                                "Trying again, less often.")
    # Said once: the live region is not rewritten at the next failures.
    page.evaluate("""() => {
        window.statusChanges = 0;
        new MutationObserver(() => { window.statusChanges += 1; }).observe(
            document.getElementById("jobs-status"), {childList: true, characterData: true,
                                                     subtree: true});
    }""")
    page.wait_for_timeout(5500)
    # Every 1 s, that would be 6 requests; waiting 1, 2, 4 s: 3.
    assert 2 <= len(asked) <= 3, [round(t - asked[0], 1) for t in asked]
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert all(gap > 1.5 for gap in gaps), gaps
    assert page.evaluate("window.statusChanges") == 0
    # The API answers again: the page follows the job again, and says so.
    page.unroute("**/api/v1/jobs")
    expect(status).to_have_text("The jobs are followed again.", timeout=15_000)
    expect(page.locator(f"tr[data-job='{job}'] .state")).to_have_text("running")


def test_a_job_gone_is_no_longer_asked_for_and_an_ended_session_signs_in(
        site: tuple[World, str], page: Page, gate: threading.Event, errors: list[str]) -> None:
    world, base = site
    job = _running_export(world, base)
    sign_in(page, base, "collaborator")
    asked: list[str] = []

    def gone(route: Route) -> None:
        asked.append(route.request.url)
        route.fulfill(**_problem(404, f"No job {job}."))

    page.route(f"**/api/v1/jobs/{job}", gone)
    page.goto(f"{base}/ui/jobs/{job}")
    row = page.locator(f"tr[data-job='{job}']")
    expect(row.locator(".state")).to_have_text("gone")
    expect(row.locator(".message")).to_have_text("This job no longer exists.")
    expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.locator("#jobs-status")).to_have_text("A job followed here no longer exists.")
    page.wait_for_timeout(2500)
    assert len(asked) == 1  # not asked for again

    # The jobs list, when the session has ended: to the sign-in page.
    page.route("**/api/v1/jobs", lambda route: route.fulfill(
        **_problem(401, "Sign in to continue.")))
    page.goto(f"{base}/ui/jobs")
    expect(page).to_have_url(f"{base}/ui/sign-in")

"""Browsing, search and the cohort builder (decision 0028): in Chromium (Playwright) on the
served standard world, and rendering details (escaping, roles, other projects' IDs) through
the TestClient. Alpha holds a CT study (SYN0000000) and an MR study (SYN0000001)."""

from __future__ import annotations

import io
import json
import re
import time
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin

import httpx
import pydicom
import pytest
from apiworld import World
from axe_playwright_python.sync_playwright import Axe
from fastapi.testclient import TestClient
from playwright.sync_api import Page, Request, Route, expect
from sqlalchemy import text
from uikit import sign_in

from imagebank.api import ui_browse
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from testkit import add_clinical_patient

HTML = {"Accept": "text/html"}
HOSTILE = "<script>alert(1)</script>"
WCAG_AA = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
           "resultTypes": ["violations"]}


def _study_of(world: World, modality: str) -> dict[str, Any]:
    return next(s for s in world.runtime.archive.studies("alpha")
                if s["modalities_in_study"] == modality)


def _violations(page: Page) -> list[str]:
    results: Any = Axe().run(page, options=WCAG_AA)
    return [f"{v['id']}: {v['help']} at " + ", ".join(str(n["target"]) for n in v["nodes"][:5])
            for v in results.response["violations"]]


def _count(page: Page, name: str) -> Any:
    return page.locator(f"#cohort-counts [data-count={name}] dd")


# -- in the browser -------------------------------------------------------------------------
def test_browse_from_a_project_to_a_series_with_its_thumbnail(served: tuple[World, str],
                                                              page: Page) -> None:
    world, base = served
    ct = _study_of(world, "CT")
    series = world.runtime.archive.series(ct["id"])[0]
    sign_in(page, base, "collaborator")
    page.get_by_role("link", name="Alpha study").click()
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Subjects").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha/subjects")
    expect(page.locator("tr[data-subject]")).to_have_count(2)
    page.get_by_role("link", name="SYN0000000").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha/subjects/{ct['subject_id']}")
    expect(page.get_by_role("heading", name="Subject SYN0000000")).to_be_visible()
    expect(page.locator("tr[data-study]")).to_have_count(1)
    page.locator(f"tr[data-study='{ct['id']}'] a").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha/studies/{ct['id']}")
    card = page.locator(f"li[data-series='{series['id']}']")
    expect(card).to_contain_text("CT")
    expect(card).to_contain_text(f"{series['num_instances']} instances")
    thumb = card.locator("img.thumb")
    expect(thumb).to_have_attribute("loading", "lazy")
    assert "series 1 (CT" in (thumb.get_attribute("alt") or "")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=thumb.element_handle(), timeout=10_000)
    assert thumb.evaluate("img => img.naturalWidth") > 0
    view = card.get_by_role("link", name="View series 1")
    assert view.get_attribute("href") == f"/ui/projects/alpha/series/{series['id']}/view"
    download = card.get_by_role("link", name="Download series 1 (zip)")
    assert download.get_attribute("href") == (
        f"/api/v1/projects/alpha/series/{series['id']}/archive")
    assert page.get_by_role("link", name="Download the study (zip)").get_attribute(
        "href") == f"/api/v1/projects/alpha/studies/{ct['id']}/archive"


def test_a_series_without_an_image_shows_no_preview(served: tuple[World, str], page: Page,
                                                    tmp_path: Path) -> None:
    # Into beta, which no other test of this module reads.
    world, base = served
    archive = world.runtime.archive
    spec = SeriesSpec(modality="SR", slices=1, rows=8, columns=8)
    ds = next(iter(make_study(SyntheticPatient.make(90), series=[spec])))
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    (tmp_path / "sr").mkdir()
    (tmp_path / "sr" / "report.dcm").write_bytes(to_bytes(ds))
    assert archive.ingest([tmp_path / "sr"], "beta", workers=1).stored == 1
    study = next(s for s in archive.studies("beta") if s["patient_id"] == "SYN0000090")
    sign_in(page, base, "admin")
    page.goto(f"{base}/ui/projects/beta/studies/{study['id']}")
    card = page.locator("li.series-card")
    expect(card.get_by_role("img", name="No preview of this series")).to_be_visible()
    expect(card.locator("img")).to_have_count(0)
    expect(card.get_by_role("link", name="View series 1")).to_be_visible()


def test_the_project_page_links_studies_subjects_and_search(served: tuple[World, str],
                                                            page: Page) -> None:
    world, base = served
    mr = _study_of(world, "MR")
    sign_in(page, base, "viewer")
    page.goto(f"{base}/ui/projects/alpha")
    page.locator(f"tr[data-study='{mr['id']}']").get_by_role("link", name="SYN0000001").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha/subjects/{mr['subject_id']}")
    page.go_back()
    page.get_by_role("link", name="Search the studies").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha/search")


def test_search_by_modality_posts_its_criteria_and_finds_the_mr_study(
        served: tuple[World, str], page: Page) -> None:
    world, base = served
    mr, ct = _study_of(world, "MR"), _study_of(world, "CT")
    sign_in(page, base, "viewer")
    page.goto(f"{base}/ui/projects/alpha")
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Search").click()
    page.get_by_label("Modality").fill("mr")
    page.get_by_label("Patient ID").fill("SYN*")
    with page.expect_request(lambda r: r.url.endswith("/studies/search")) as sent:
        page.get_by_role("button", name="Search").click()
    request: Request = sent.value
    assert request.method == "POST" and "?" not in request.url
    assert json.loads(request.post_data or "{}") == {
        "ModalitiesInStudy": "MR", "PatientID": "SYN*", "limit": 100, "offset": 0}
    expect(page.get_by_role("status")).to_have_text("1 study matches.")
    rows = page.locator("tr[data-study]")
    expect(rows).to_have_count(1)
    assert rows.get_attribute("data-study") == mr["id"]
    assert page.locator(f"tr[data-study='{ct['id']}']").count() == 0
    expect(rows).to_contain_text("SYN0000001")
    # The page's address carries no criteria, before and after.
    assert page.url == f"{base}/ui/projects/alpha/search"
    rows.get_by_role("link").click()
    expect(page).to_have_url(f"{base}/ui/projects/alpha/studies/{mr['id']}")
    page.go_back()
    assert "mr" not in page.url.lower().replace("/ui/", "")


def test_search_shows_what_matches_nothing_and_what_is_wrong(served: tuple[World, str],
                                                             page: Page) -> None:
    _world, base = served
    sign_in(page, base, "viewer")
    page.goto(f"{base}/ui/projects/alpha/search")
    page.get_by_label("Description contains").fill("CHEST")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("status")).to_have_text("1 study matches.")
    page.get_by_label("Description contains").fill("NO SUCH STUDY")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("status")).to_have_text("No studies match.")
    expect(page.locator("#search-results")).to_be_hidden()
    page.get_by_label("Description contains").fill("")
    page.get_by_label("Study date from").fill("2030-01-01")
    page.get_by_label("Study date to").fill("2020-01-01")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#search-error")).to_have_text("StudyDate's range starts after it ends.")
    assert page.url == f"{base}/ui/projects/alpha/search"


def test_cohort_counts_change_as_a_criterion_is_added(served: tuple[World, str],
                                                      page: Page) -> None:
    _world, base = served
    sign_in(page, base, "owner")
    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.post_data or "")
            if r.url.endswith("/cohorts/search") else None)
    page.goto(f"{base}/ui/projects/alpha/cohort")
    query = page.get_by_label("Query")
    expect(query).to_have_value("imaging[]")
    expect(_count(page, "people")).to_have_text("2")
    expect(_count(page, "studies")).to_have_text("2")
    expect(page.locator("#cohort-counts")).to_contain_text("Exact counts.")
    page.get_by_role("button", name="Add a criterion").click()
    row = page.locator(".cohort-row").nth(1)
    expect(row.get_by_label("Kind")).to_be_focused()
    row.get_by_label("Modality").press_sequentially("MR", delay=20)
    expect(query).to_have_value("imaging[] and imaging[modality = 'MR']")
    expect(_count(page, "people")).to_have_text("1")
    expect(_count(page, "series")).to_have_text("1")
    expect(page.locator("#cohort-counts code")).to_have_text(
        "imaging[] and imaging[modality = MR]")  # the API's normalised text
    # Typing is debounced: the two keystrokes were one search (besides the first count).
    assert len(searches) <= 3, searches
    row.get_by_label("Must").select_option("not")
    expect(_count(page, "people")).to_have_text("1")  # the CT patient
    row.get_by_label("Combine with the one above").select_option("or")
    expect(query).to_have_value("imaging[] or not imaging[modality = 'MR']")
    expect(_count(page, "people")).to_have_text("2")
    # The list: links to the matched subjects' and studies' pages.
    row.get_by_role("button", name="Remove this criterion").click()
    expect(page.get_by_role("button", name="Add a criterion")).to_be_focused()
    query.fill("imaging[modality = MR]")
    expect(_count(page, "people")).to_have_text("1")
    page.get_by_role("button", name="List the subjects and studies").click()
    studies = page.get_by_role("table", name="Studies matched")
    expect(studies.locator("tbody tr")).to_have_count(1)
    expect(studies).to_contain_text("MR")
    assert page.url == f"{base}/ui/projects/alpha/cohort"


def test_cohort_shows_the_parsers_words_beside_the_query(served: tuple[World, str],
                                                         page: Page) -> None:
    _world, base = served
    sign_in(page, base, "member")
    page.goto(f"{base}/ui/projects/alpha/cohort")
    expect(_count(page, "people")).to_have_text("2")
    query = page.get_by_label("Query")
    query.fill("imagin[modality = CT]")
    error = page.locator("#cohort-error")
    expect(error).to_contain_text("found 'imagin'. Did you mean 'imaging'?")
    expect(error.locator("pre")).to_have_text("imagin[modality = CT]\n^")
    expect(query).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("button", name="List the subjects and studies")).to_be_disabled()
    query.fill("imaging[modality = ]")
    expect(error).to_contain_text("'modality' needs a value, found ']'.")
    expect(error.locator("pre")).to_have_text("imaging[modality = ]\n" + " " * 19 + "^")
    query.fill("imaging[modality = CT]")
    expect(_count(page, "people")).to_have_text("1")
    expect(error).to_be_empty()
    expect(query).not_to_have_attribute("aria-invalid", "true")


def test_a_viewers_cohort_counts_are_shown_as_the_api_suppresses_them(
        served: tuple[World, str], page: Page) -> None:
    _world, base = served
    sign_in(page, base, "viewer")
    page.goto(f"{base}/ui/projects/alpha/cohort")
    expect(_count(page, "people")).to_have_text("< 10")
    expect(_count(page, "series")).to_have_text("< 10")
    expect(page.locator("#cohort-counts")).to_contain_text(
        "Counts from 1 to 9 are shown as “< 10”.")
    page.get_by_role("button", name="List the subjects and studies").click()
    expect(page.locator("#cohort-listed")).to_contain_text("shown only where counts are exact")
    assert page.locator("#cohort-listed table").count() == 0


def _cohort_count(world: World, base: str, query: str, user: str = "owner") -> str:
    """The number of people the REST cohort search shows ``user`` for ``query``."""
    response = httpx.post(f"{base}/api/v1/projects/alpha/cohorts/search",
                          json={"query": query, "limit": 0}, headers=world.headers(user))
    assert response.status_code == 200, response.text
    return str(response.json()["counts"]["people"]["shown"])


def test_cohort_rows_combine_top_down(served: tuple[World, str], page: Page) -> None:
    """Rows "CT, or MR, and MR" are (CT or MR) and MR: the MR patient; the language alone
    would read CT or (MR and MR): both patients."""
    world, base = served
    ct, mr = "imaging[modality = 'CT']", "imaging[modality = 'MR']"
    grouped = f"({ct} or {mr}) and {mr}"
    expected = _cohort_count(world, base, grouped)
    assert expected != _cohort_count(world, base, f"{ct} or {mr} and {mr}")
    sign_in(page, base, "owner")
    page.goto(f"{base}/ui/projects/alpha/cohort")
    rows = page.locator(".cohort-row")
    rows.nth(0).get_by_label("Modality").fill("CT")
    for join in ("or", "and"):
        page.get_by_role("button", name="Add a criterion").click()
        row = rows.last
        row.get_by_label("Combine with the one above").select_option(join)
        row.get_by_label("Modality").fill("MR")
    query = page.get_by_label("Query")
    expect(query).to_have_value(grouped)
    expect(page.locator("#cohort-counts code")).to_have_text(
        "(imaging[modality = CT] or imaging[modality = MR]) and imaging[modality = MR]")
    expect(_count(page, "people")).to_have_text(expected)
    # Each change of connective closes the group above it; a run of one does not.
    page.get_by_role("button", name="Add a criterion").click()
    rows.last.get_by_label("Combine with the one above").select_option("or")
    rows.nth(1).get_by_label("Combine with the one above").select_option("and")
    expect(query).to_have_value(f"({ct} and {mr} and {mr}) or imaging[]")
    expect(_count(page, "people")).to_have_text(
        _cohort_count(world, base, f"({ct} and {mr} and {mr}) or imaging[]"))


#: Everything #cohort-listed ever holds, as the page changes it.
WATCH_LISTED = """() => {
  const listed = document.getElementById('cohort-listed');
  window.listedTexts = [];
  new MutationObserver(() => window.listedTexts.push(listed.textContent))
    .observe(listed, {childList: true, subtree: true, characterData: true});
}"""


def test_a_late_list_of_an_earlier_query_is_never_shown(served: tuple[World, str],
                                                        page: Page) -> None:
    world, base = served
    mr, ct = _study_of(world, "MR"), _study_of(world, "CT")
    sign_in(page, base, "owner")
    page.goto(f"{base}/ui/projects/alpha/cohort")
    query, listed = page.get_by_label("Query"), page.locator("#cohort-listed")
    query.fill("imaging[modality = MR]")
    expect(page.locator("#cohort-counts code")).to_have_text("imaging[modality = MR]")
    held: list[Route] = []

    def hold_lists(route: Route) -> None:  # a list (limit > 0) waits; counts go through
        if json.loads(route.request.post_data or "{}").get("limit") and not held:
            held.append(route)
        else:
            route.continue_()

    page.route("**/cohorts/search", hold_lists)
    page.evaluate(WATCH_LISTED)
    page.get_by_role("button", name="List the subjects and studies").click()
    expect(listed).to_have_text("Listing…")
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)  # lets Playwright call the route handler
    assert len(held) == 1
    query.fill("imaging[modality = CT]")  # while MR's list is on its way
    expect(page.locator("#cohort-counts code")).to_have_text("imaging[modality = CT]")
    expect(listed).to_be_empty()
    with page.expect_response(lambda r: r.url.endswith("/cohorts/search")
                              and '"limit":100' in (r.request.post_data or "")):
        held[0].continue_()  # MR's list arrives, late
    page.get_by_role("button", name="List the subjects and studies").click()
    studies = page.get_by_role("table", name="Studies matched")
    expect(studies).to_contain_text(ct["study_instance_uid"])
    texts: list[str] = page.evaluate("() => window.listedTexts")
    assert texts and not any(mr["study_instance_uid"] in t for t in texts), texts
    assert mr["study_instance_uid"] not in (listed.text_content() or "")


@pytest.mark.parametrize("path", ["subjects", "subject", "study", "search", "cohort"])
def test_the_browsing_pages_have_no_wcag_aa_violation(served: tuple[World, str], page: Page,
                                                      path: str) -> None:
    world, base = served
    ids = world.ids
    address = {"subjects": "subjects", "subject": f"subjects/{ids['subject']}",
               "study": f"studies/{ids['study']}", "search": "search",
               "cohort": "cohort"}[path]
    sign_in(page, base, "owner")
    page.goto(f"{base}/ui/projects/alpha/{address}")
    if path == "search":
        page.get_by_role("button", name="Search").click()
        expect(page.locator("tr[data-study]")).to_have_count(2)
    if path == "cohort":
        expect(_count(page, "people")).to_have_text("2")
        page.get_by_role("button", name="List the subjects and studies").click()
        expect(page.get_by_role("table", name="Subjects matched")).to_be_visible()
    if path == "study":
        page.wait_for_function("() => [...document.images].every(i => i.complete)")
    assert _violations(page) == []


# -- rendering, roles and other projects (TestClient) -----------------------------------------
def _pages(world: World) -> list[str]:
    ids = world.ids
    return ["/ui/projects/alpha/subjects", f"/ui/projects/alpha/subjects/{ids['subject']}",
            f"/ui/projects/alpha/studies/{ids['study']}", "/ui/projects/alpha/search",
            "/ui/projects/alpha/cohort"]


def test_an_outsider_finds_no_page_of_the_project(sqlite_world: World,
                                                  sqlite_client: TestClient) -> None:
    outsider = {**sqlite_world.headers("outsider"), **HTML}
    for path in _pages(sqlite_world):
        response = sqlite_client.get(path, headers=outsider)
        assert response.status_code == 404, path
        assert "No project &#39;alpha&#39;." in response.text
        assert "SYN000000" not in response.text
        ghost = sqlite_client.get(path.replace("/alpha/", "/nosuchproject/"), headers=outsider)
        assert ghost.status_code == 404
    viewer = {**sqlite_world.headers("viewer"), **HTML}
    for path in _pages(sqlite_world):
        assert sqlite_client.get(path, headers=viewer).status_code == 200, path


def test_another_projects_subject_or_study_is_not_found(sqlite_world: World,
                                                        sqlite_client: TestClient) -> None:
    ids = sqlite_world.ids
    owner = {**sqlite_world.headers("admin"), **HTML}
    for level, key in (("subjects", "beta_subject"), ("studies", "beta_study")):
        response = sqlite_client.get(f"/ui/projects/alpha/{level}/{ids[key]}", headers=owner)
        assert response.status_code == 404
        assert "in project &#39;alpha&#39;" in response.text
        assert sqlite_client.get(f"/ui/projects/beta/{level}/{ids[key]}",
                                 headers=owner).status_code == 200
    missing = sqlite_client.get(f"/ui/projects/alpha/studies/{'0' * 32}", headers=owner)
    assert missing.status_code == 404


NEEDS_DOWNLOAD = "Viewing and downloading images needs the collaborator role"


def test_a_viewer_sees_no_thumbnail_no_download_and_no_viewer_link(
        sqlite_world: World, sqlite_client: TestClient) -> None:
    path = f"/ui/projects/alpha/studies/{sqlite_world.ids['study']}"
    study = sqlite_world.runtime.archive.get("study", sqlite_world.ids["study"])
    view = f'href="/ui/projects/alpha/series/{sqlite_world.ids["series"]}/view"'
    viewer = sqlite_client.get(path, headers=sqlite_world.headers("viewer")).text
    assert "<img" not in viewer and "/thumbnail" not in viewer and "/archive" not in viewer
    assert NEEDS_DOWNLOAD in viewer
    assert 'class="thumb placeholder" role="img"' in viewer
    # The viewer's page needs DOWNLOAD (it shows pixels): no link to a 403.
    assert "/view" not in viewer and "Open in OHIF" not in viewer
    assert sqlite_client.get(f"/ui/projects/alpha/series/{sqlite_world.ids['series']}/view",
                             headers=sqlite_world.headers("viewer")).status_code == 403
    collaborator = sqlite_client.get(path, headers=sqlite_world.headers("collaborator")).text
    assert collaborator.count("<img") == 1
    assert (f'src="/projects/alpha/dicomweb/studies/{study["study_instance_uid"]}/series/'
            in collaborator)
    assert view in collaborator
    assert NEEDS_DOWNLOAD not in collaborator


def _hostile_study(folder: Path) -> Path:
    """A study whose descriptions and names are markup."""
    spec = SeriesSpec(modality="CT", slices=1, rows=16, columns=16, description=HOSTILE,
                      institution=HOSTILE)
    folder.mkdir(parents=True)
    for i, ds in enumerate(make_study(SyntheticPatient.make(77), series=[spec])):
        ds.StudyDescription = HOSTILE
        ds.PatientName = "<img src=x onerror=alert(1)>^EVIL"
        ds.AccessionNumber = "<b>A1</b>"
        (folder / f"{i}.dcm").write_bytes(to_bytes(ds))
    return folder


def test_hostile_dicom_strings_are_escaped_on_every_page(sqlite_world: World,
                                                         sqlite_client: TestClient,
                                                         tmp_path: Path) -> None:
    archive = sqlite_world.runtime.archive
    assert archive.ingest([_hostile_study(tmp_path / "hostile")], "alpha", workers=1).stored
    study = next(s for s in archive.studies("alpha") if s["patient_id"] == "SYN0000077")
    owner = sqlite_world.headers("owner")
    for path in (f"/ui/projects/alpha/studies/{study['id']}",
                 f"/ui/projects/alpha/subjects/{study['subject_id']}",
                 "/ui/projects/alpha/subjects", "/ui/projects/alpha"):
        body = sqlite_client.get(path, headers=owner).text
        assert "<script>alert" not in body and "<img src=x" not in body and "<b>A1" not in body
        assert "onerror=alert" not in body.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    page = sqlite_client.get(f"/ui/projects/alpha/studies/{study['id']}", headers=owner).text
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # study, series, alt
    assert "&lt;b&gt;A1&lt;/b&gt;" in page


FACTS_WITHHELD = "clinical facts are shown only to those whom cohort search gives exact results"


def test_a_subjects_facts_are_shown_only_to_those_cohort_search_is_exact_for(
        sqlite_world: World, sqlite_client: TestClient, tmp_path: Path) -> None:
    """The REST API shows a subject's facts to no one and exact cohort results only to a
    site project's members, owners and administrators: the page shows facts to them alone."""
    archive = sqlite_world.runtime.archive
    add_clinical_patient(archive, tmp_path / "clinical", "alpha", "9434765919", patient=40)
    subject = next(s for s in archive.subjects("alpha") if s["patient_id"] == "9434765919")
    with archive.sessions.begin() as session:
        codes = [f"{system}:{code}" for system, code in session.execute(text(
            "SELECT system, code FROM clinical_facts WHERE subject_id = :s AND system != ''"),
            {"s": subject["id"]}).all()]
    assert codes
    for user in ("viewer", "collaborator", "member", "owner", "admin"):
        exact = sqlite_client.post("/api/v1/projects/alpha/cohorts/search",
                                   json={"query": "imaging[]", "limit": 0},
                                   headers=sqlite_world.headers(user)).json()["exact"]
        assert exact is (user in ("member", "owner", "admin")), user
        body = sqlite_client.get(f"/ui/projects/alpha/subjects/{subject['id']}",
                                 headers=sqlite_world.headers(user)).text
        assert ('id="facts"' in body) is exact, user
        assert (FACTS_WITHHELD in body) is not exact, user
        if not exact:
            assert not any(code in body for code in codes), user


def test_the_subject_page_shows_the_projects_clinical_facts(sqlite_world: World,
                                                            sqlite_client: TestClient,
                                                            tmp_path: Path) -> None:
    archive = sqlite_world.runtime.archive
    add_clinical_patient(archive, tmp_path / "clinical", "alpha", "9434765919", patient=40)
    subject = next(s for s in archive.subjects("alpha") if s["patient_id"] == "9434765919")
    body = sqlite_client.get(f"/ui/projects/alpha/subjects/{subject['id']}",
                             headers=sqlite_world.headers("member")).text
    with archive.sessions.begin() as session:
        total = session.execute(text("SELECT count(*) FROM clinical_facts WHERE subject_id = "
                                     ":s"), {"s": subject["id"]}).scalar_one()
        earliest = session.execute(text(
            "SELECT system, code FROM clinical_facts WHERE subject_id = :s AND system != '' AND "
            "start IS NOT NULL "
            "ORDER BY start, id LIMIT 5"), {"s": subject["id"]}).all()
    shown = min(total, ui_browse.SUBJECT_FACTS)
    facts = body[body.index('id="facts"'):]
    assert facts.count("<tr>") == shown + 1  # and the header row
    assert earliest and all(f"<code>{system}:{code}</code>" in facts
                            for system, code in earliest)
    if total > shown:
        assert f"The earliest {shown} of {total} facts are shown." in body
    # A subject without facts has no such table.
    other = sqlite_client.get(f"/ui/projects/alpha/subjects/{sqlite_world.ids['subject']}",
                              headers=sqlite_world.headers("member")).text
    assert 'id="facts"' not in other and FACTS_WITHHELD not in other


def test_a_withdrawal_is_not_shown_on_the_subject_page(sqlite_world: World,
                                                       sqlite_client: TestClient) -> None:
    """SubjectOut has no withdrawal: neither has the page (decision 0027)."""
    subject = sqlite_world.ids["subject"]
    with sqlite_world.runtime.archive.sessions.begin() as session:
        session.execute(text("UPDATE subjects SET withdrawn_at = :t WHERE id = :s"),
                        {"t": datetime(2024, 5, 6, tzinfo=UTC), "s": subject})
    api = sqlite_client.get(f"/api/v1/projects/alpha/subjects/{subject}",
                            headers=sqlite_world.headers("admin")).json()
    assert "withdrawn_at" not in api and api["id"] == subject
    for user in ("viewer", "owner", "admin"):
        body = sqlite_client.get(f"/ui/projects/alpha/subjects/{subject}",
                                 headers=sqlite_world.headers(user)).text
        assert "2024-05-06" not in body and "ithdrawn" not in body, user


def test_dicom_dates_are_shown_as_yyyy_mm_dd(sqlite_world: World,
                                             sqlite_client: TestClient) -> None:
    archive = sqlite_world.runtime.archive
    study = archive.get("study", sqlite_world.ids["study"])
    subject = archive.get("subject", study["subject_id"])
    day, born = str(study["study_date"]), str(subject["patient_birth_date"])
    assert re.fullmatch(r"[0-9]{8}", day) and re.fullmatch(r"[0-9]{8}", born)
    shown, shown_born = f"{day[:4]}-{day[4:6]}-{day[6:]}", f"{born[:4]}-{born[4:6]}-{born[6:]}"
    owner = sqlite_world.headers("owner")
    for path, dates in (("/ui/projects/alpha", [shown]),
                        ("/ui/projects/alpha/subjects", [shown_born]),
                        (f"/ui/projects/alpha/subjects/{subject['id']}", [shown, shown_born]),
                        (f"/ui/projects/alpha/studies/{study['id']}", [shown])):
        body = sqlite_client.get(path, headers=owner).text
        for date in dates:
            assert date in body, (path, date)
        assert day not in body and born not in body, path


def _odd_uid_study(folder: Path, study_uid: str, series_uids: list[str]) -> Path:
    """A study whose UIDs are not UIDs (the ingest is tolerant of what it reads)."""
    spec = SeriesSpec(modality="CT", slices=1, rows=8, columns=8)
    folder.mkdir(parents=True)
    studies = make_study(SyntheticPatient.make(78), series=[spec] * len(series_uids))
    for i, (ds, series_uid) in enumerate(zip(studies, series_uids, strict=True)):
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        (folder / f"{i}.dcm").write_bytes(to_bytes(ds))
    return folder


def test_uids_in_urls_are_encoded_and_never_leave_the_studys_path(
        sqlite_world: World, sqlite_client: TestClient, tmp_path: Path) -> None:
    archive = sqlite_world.runtime.archive
    study_uid = "9.9/../../../api/v1/me"
    series_uids = ["9.8/../x?y=1#z", ".."]
    stored = archive.ingest([_odd_uid_study(tmp_path / "odd", study_uid, series_uids)],
                            "alpha", workers=1)
    assert stored.stored == 2  # such UIDs can be stored
    study = next(s for s in archive.studies("alpha") if s["study_instance_uid"] == study_uid)
    series = {s["series_instance_uid"]: s for s in archive.series(study["id"])}
    body = sqlite_client.get(f"/ui/projects/alpha/studies/{study['id']}",
                             headers=sqlite_world.headers("collaborator")).text
    sources = [unescape(src) for src in re.findall(r'<img class="thumb"[^>]*src="([^"]*)"',
                                                   body)]
    assert len(sources) == 1  # the ".." series: no URL can carry it
    prefix = "/projects/alpha/dicomweb/studies/"
    for src in sources:
        # A browser resolves dot segments and stops at ? and #: nothing is taken away.
        assert urljoin("http://host/ui/projects/alpha/studies/x", src) == "http://host" + src
        assert "?" not in src and "#" not in src
        parts = src.removeprefix(prefix).split("/")
        assert src.startswith(prefix) and len(parts) == 4, src
        assert [unquote(parts[0]), parts[1], unquote(parts[2]), parts[3]] == [
            study_uid, "series", series_uids[0], "thumbnail"]
    dots = body[body.index(f'data-series="{series[".."]["id"]}"'):]
    assert dots.index('aria-label="No preview of this series"') < dots.index("</li>")
    assert f"/series/{series['..']['id']}/view" in dots  # our own IDs: the viewer still opens


def test_path_segments_quote_everything_but_unreserved_characters() -> None:
    assert ui_browse.path_segment("1.2.840.10008.1") == "1.2.840.10008.1"
    assert ui_browse.path_segment("1/../2?x#y%") == "1%2F..%2F2%3Fx%23y%25"
    assert [ui_browse.path_segment(v) for v in ("", ".", "..")] == [None] * 3
    assert ui_browse.path_segment("...") == "..."  # not a dot segment


def test_subjects_are_listed_a_page_at_a_time(sqlite_world: World, sqlite_client: TestClient,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_browse, "SUBJECTS_PAGE", 1)
    viewer = sqlite_world.headers("viewer")
    first = sqlite_client.get("/ui/projects/alpha/subjects", headers=viewer).text
    assert "SYN0000000" in first and "SYN0000001" not in first
    assert 'href="?offset=1">Next subjects' in first and "Previous" not in first
    second = sqlite_client.get("/ui/projects/alpha/subjects", params={"offset": 1},
                               headers=viewer).text
    assert "SYN0000001" in second and "SYN0000000" not in second
    assert 'href="?offset=0">Previous subjects' in second and "Next subjects" not in second
    beyond = sqlite_client.get("/ui/projects/alpha/subjects", params={"offset": 9},
                               headers=viewer).text
    assert "no subjects this far" in beyond


# -- the REST study search the page uses ------------------------------------------------------
def _found(client: TestClient, world: World, body: dict[str, Any], user: str = "viewer"
           ) -> list[str]:
    response = client.post("/api/v1/projects/alpha/studies/search", json=body,
                           headers=world.headers(user))
    assert response.status_code == 200, response.text
    return [s["patient_id"] for s in response.json()["items"]]


def test_the_study_search_matches_as_qido_does(world: World, client: TestClient) -> None:
    # On SQLite and PostgreSQL.
    mr = _study_of(world, "MR")
    assert _found(client, world, {}) == [s["patient_id"] for s in
                                         world.runtime.archive.studies("alpha")]
    assert _found(client, world, {"ModalitiesInStudy": "MR"}) == ["SYN0000001"]
    assert _found(client, world, {"ModalitiesInStudy": "CT"}) == ["SYN0000000"]
    assert _found(client, world, {"PatientID": "SYN0000000"}) == ["SYN0000000"]
    name = str(mr["patient_name"])
    assert _found(client, world, {"PatientName": name.lower()}) == ["SYN0000001"]
    assert _found(client, world, {"StudyDescription": "*BRAIN*"}) == ["SYN0000001"]
    assert _found(client, world, {"AccessionNumber": mr["accession_number"]}) == ["SYN0000001"]
    day = mr["study_date"]
    studies = world.runtime.archive.studies("alpha")
    assert _found(client, world, {"StudyDate": f"-{day}"}) == [
        s["patient_id"] for s in studies if s["study_date"] <= day]
    assert _found(client, world, {"StudyDate": f"{day}-"}) == [
        s["patient_id"] for s in studies if s["study_date"] >= day]
    assert _found(client, world, {"StudyDate": day}) == ["SYN0000001"]
    assert _found(client, world, {"StudyDate": "19000101-19000102"}) == []
    assert _found(client, world, {"PatientID": "SYN0000001", "ModalitiesInStudy": "CT"}) == []
    page = client.post("/api/v1/projects/alpha/studies/search", json={"limit": 1},
                       headers=world.headers("viewer")).json()
    assert len(page["items"]) == 1 and page["next_offset"] == 1
    # Beta's study is never found under alpha, even by the administrator.
    assert _found(client, world, {"PatientID": "SYN0000002"}, user="admin") == []


def test_the_study_search_refuses_what_cannot_match(sqlite_world: World,
                                                    sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    url = "/api/v1/projects/alpha/studies/search"
    bad = client.post(url, json={"StudyDate": "20240230x"}, headers=world.headers("viewer"))
    assert bad.status_code == 400
    assert bad.json()["detail"] == "StudyDate takes YYYYMMDD or a range YYYYMMDD-YYYYMMDD."
    unknown = client.post(url, json={"PatientBirthDate": "19700101"},
                          headers=world.headers("viewer"))
    assert unknown.status_code == 422  # only the criteria named in the schema
    assert "19700101" not in unknown.text


def test_the_study_search_is_audited_without_its_values(sqlite_world: World,
                                                        sqlite_client: TestClient) -> None:
    world, client = sqlite_world, sqlite_client
    with world.runtime.archive.sessions.begin() as session:
        before = int(session.execute(text("SELECT seq FROM audit_head")).scalar_one())
    assert _found(client, world, {"PatientID": "SYN0000001", "PatientName": "*ALEX*"}) == [
        "SYN0000001"]
    events = world.runtime.audit.events(since=before, limit=10)
    assert len(events) == 1
    event = events[0]
    assert (event["action"], event["project_id"]) == ("search", "alpha")
    assert json.loads(event["detail"]) == {"filters": ["PatientID", "PatientName"]}
    assert "SYN0000001" not in json.dumps(event) and "ALEX" not in json.dumps(event)


def test_a_hostile_study_is_found_and_given_back_as_data(sqlite_world: World,
                                                         sqlite_client: TestClient,
                                                         tmp_path: Path) -> None:
    world, client = sqlite_world, sqlite_client
    archive = world.runtime.archive
    archive.ingest([_hostile_study(tmp_path / "hostile")], "alpha", workers=1)
    response = client.post("/api/v1/projects/alpha/studies/search",
                           json={"StudyDescription": "<script>*"},
                           headers=world.headers("viewer"))
    items = response.json()["items"]
    assert [s["study_description"] for s in items] == [HOSTILE]
    stored = pydicom.dcmread(io.BytesIO(archive.instance_bytes(
        archive.instances(archive.series(items[0]["id"])[0]["id"])[0]["id"])))
    assert stored.StudyDescription == HOSTILE

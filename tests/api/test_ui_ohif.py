"""OHIF at /ohif/ (decision 0032): the pinned OHIF 3 build that `make ohif` fetched, served by
imagebank and reading its DICOMweb, in Debian's Chromium, opened from our study page; and how
/ohif/ serves files, with the TestClient over a small stand-in build (rebasing onto /ohif/,
the app's client routes, no study list, paths that try to leave the folder, the link from
the study page, OHIF not installed).

The browser's world is its own: a project "ct" holding the real CT of
shared/data/dcmqi-ct-3slice (3 slices, 512x512, GE, Implicit VR Little Endian), on which
"reader" is a collaborator (pixel data needs the download permission), and a project
"hidden" with a study of another patient, on which the reader has no role."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from apiworld import PASSWORD, write_study
from fastapi.testclient import TestClient
from playwright.sync_api import Page, Response, expect
from uikit import serve, sign_in

from imagebank.api.app import create_app
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime
from imagebank.settings import CHECKOUT_OHIF_DIR
from testkit import SHARED_DATA

CT = SHARED_DATA / "dcmqi-ct-3slice" / "ct-3slice"
#: OHIF's start-up in headless Chromium (its 17 MB bundle, then the study) is given this long.
START_UP_MS = 60_000
NOT_INSTALLED = "OHIF is not installed here: run `make ohif` (scripts/fetch_ohif.py) first."


@dataclass
class Site:
    base: str
    study_id: str  # the CT's, in "ct"
    study_uid: str
    hidden_uid: str  # the study in "hidden"
    hidden_patient: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert (CHECKOUT_OHIF_DIR / "index.html").is_file(), NOT_INSTALLED
    folder = tmp_path_factory.mktemp("ohif")
    archive = Archive.open(folder / "data", workers=1)
    runtime = Runtime.for_archive(archive)
    archive.create_project("ct", "Real CT")
    archive.create_project("hidden", "Hidden")
    summary = archive.ingest([CT], "ct", workers=1)
    assert summary.stored == 3
    write_study(folder / "hidden", 17, slices=2)
    archive.ingest([folder / "hidden"], "hidden", workers=1)
    runtime.accounts.add_user("reader", PASSWORD)
    runtime.accounts.grant("ct", "reader", "collaborator")
    hidden = archive.studies("hidden")[0]
    subject = archive.get("subject", hidden["subject_id"])
    ct = archive.studies("ct")[0]
    try:
        with serve(runtime) as base:
            yield Site(base, ct["id"], ct["study_instance_uid"],
                       hidden["study_instance_uid"], str(subject["patient_name"]))
    finally:
        archive.close()


class Watch:
    """Every DICOMweb response of a page, and every request that left the server."""

    def __init__(self, page: Page, base: str) -> None:
        self.base = base
        self.dicomweb: list[tuple[int, str, str]] = []  # (status, path, Accept)
        self.elsewhere: list[str] = []
        page.context.on("response", self._response)
        page.context.on("request", lambda request: self._request(request.url))

    def _request(self, url: str) -> None:
        if not url.startswith((self.base + "/", "blob:", "data:")):
            self.elsewhere.append(url)

    def _response(self, response: Response) -> None:
        path = response.url.removeprefix(self.base)
        if path.startswith("/dicomweb"):
            accept = response.request.headers.get("accept", "")
            self.dicomweb.append((response.status, path, accept))

    def failed(self) -> list[tuple[int, str, str]]:
        return [r for r in self.dicomweb if r[0] >= 400]

    def frames(self) -> list[tuple[int, str, str]]:
        return [r for r in self.dicomweb if re.search(r"/frames/[0-9,]+$", r[1])]

    def fetched_frames(self) -> set[str]:
        """The instances (and frame numbers) whose frames came back."""
        return {path.rsplit("/instances/", 1)[1] for status, path, _ in self.frames()
                if status == 200}


#: The viewport's canvas (Cornerstone3D draws each viewport into one): how many of its pixels
#: are lit, and how many grey levels they have (a drawn CT has hundreds; a blank or uniform
#: canvas, at most a few).
CANVAS_PIXELS = """() => {
  const canvas = [...document.querySelectorAll('canvas.cornerstone-canvas')]
      .find(c => c.width > 64 && c.height > 64);
  if (!canvas) return null;
  const copy = document.createElement('canvas');
  copy.width = canvas.width; copy.height = canvas.height;
  const context = copy.getContext('2d');
  context.drawImage(canvas, 0, 0);
  const data = context.getImageData(0, 0, copy.width, copy.height).data;
  let lit = 0; const levels = new Set();
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] + data[i + 1] + data[i + 2] > 48) lit++;
    levels.add(data[i]);
  }
  return {lit: lit, total: data.length / 4, levels: levels.size};
}"""


def test_our_study_page_opens_the_ct_study_in_ohif_which_draws_it(site: Site, page: Page
                                                                   ) -> None:
    watch = Watch(page, site.base)
    sign_in(page, site.base, "reader")
    page.goto(f"{site.base}/ui/projects/ct/studies/{site.study_id}")
    started = time.monotonic()
    page.get_by_role("link", name="Open in OHIF").click()
    expect(page).to_have_url(f"{site.base}/ohif/viewer?StudyInstanceUIDs={site.study_uid}")
    page.wait_for_function(f"() => {{ const p = ({CANVAS_PIXELS})(); "
                           "return p !== null && p.levels > 32; }", polling=200,
                           timeout=START_UP_MS)
    print(f"OHIF: the first image in {time.monotonic() - started:.2f} s")  # shown with -s
    drawn = page.evaluate(CANVAS_PIXELS)
    assert drawn["lit"] > drawn["total"] // 10, drawn  # the body of the CT, not a blank canvas
    assert drawn["levels"] > 32, drawn
    # the page is cross-origin isolated (COOP/COEP), so OHIF may use SharedArrayBuffer
    assert page.evaluate("window.crossOriginIsolated") is True
    expect(page.locator("body")).to_contain_text("Apr-2003")  # the study's date, from QIDO
    deadline = time.monotonic() + START_UP_MS / 1000
    while len(watch.fetched_frames()) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(100)  # OHIF prefetches the other slices
    assert len(watch.fetched_frames()) == 3, watch.frames()  # every slice, by WADO-RS frames
    assert watch.failed() == [], watch.failed()
    assert any("transfer-syntax=" in accept for _, _, accept in watch.frames())
    assert any(path.endswith("/metadata") for _, path, _ in watch.dicomweb)
    assert watch.elsewhere == [], watch.elsewhere  # nothing from the internet
    # Every study search OHIF made named the study, or its patient (the viewer's list of
    # the patient's studies: a DICOMweb request, not the page's address); none lists all.
    searches = [parse_qs(urlsplit(path).query) for _, path, _ in watch.dicomweb
                if urlsplit(path).path == "/dicomweb/studies"]
    assert any(q.get("StudyInstanceUID") == [site.study_uid] for q in searches), searches
    assert all(q.get("StudyInstanceUID") == [site.study_uid] or "00100020" in q
               for q in searches), searches
    assert site.hidden_uid not in page.content()
    expect(page.locator("body")).not_to_contain_text(site.hidden_patient.split("^")[0])


def test_ohif_has_no_study_list_its_root_is_our_projects_page(site: Site, page: Page
                                                              ) -> None:
    """OHIF's study list keeps its filters (PatientName, MRN) in its address: it is off."""
    watch = Watch(page, site.base)
    sign_in(page, site.base, "reader")
    page.goto(f"{site.base}/ohif/")
    expect(page).to_have_url(f"{site.base}/ui/projects")
    expect(page.get_by_role("link", name="Real CT")).to_be_visible()
    assert watch.dicomweb == []


def test_ohif_without_a_session_goes_to_sign_in(site: Site, page: Page) -> None:
    page.goto(f"{site.base}/ohif/viewer?StudyInstanceUIDs={site.study_uid}")
    expect(page).to_have_url(f"{site.base}/ui/sign-in")


def test_ohif_paths_cannot_leave_its_folder(site: Site) -> None:
    """Raw requests (no client tidies the path): every form of .. is refused."""
    host = urlsplit(site.base)
    secret = "hatchling"  # in pyproject.toml, two folders above .ohif/dist
    for path in ("/ohif/../../pyproject.toml", "/ohif/%2e%2e/%2e%2e/pyproject.toml",
                 "/ohif/..%2f..%2fpyproject.toml", "/ohif/assets/../../../pyproject.toml",
                 "/ohif/%2e%2e%2f%2e%2e%2f%2e%2e%2fpyproject.toml"):
        connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        assert secret not in body, path
        assert response.status in (400, 404), (path, response.status)


# -- serving, with the TestClient over a stand-in build ----------------------------------------
STAND_IN = {
    "index.html": '<!doctype html><html><head><link rel="manifest" href="/manifest.json">'
                  '<script>window.PUBLIC_URL="/"</script><script src="/app-config.js">'
                  '</script><script defer src="/app.bundle.0123456789abcdef.js"></script>'
                  '<link href="/app.bundle.css" rel="stylesheet"></head><body>'
                  '<a href="//example.org/x">x</a></body></html>',
    "app.bundle.0123456789abcdef.js": '(() => {\n__webpack_require__.p = "/";\n})();\n'
                                      "import('/dicom-microscopy-viewer/viewer.min.js');\n",
    "app.bundle.css": "@font-face{src:url(/fedcba9876543210.woff2)}",
    "fedcba9876543210.woff2": "font",
    "manifest.json": '{"icons": [{"src": "/assets/icon.png"}]}',
    "worker.js": "self.onmessage = () => 0;",
    "assets/logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>",
}


#: The stand-in's study UID (it ingests: the ingest is tolerant of what it reads); a viewer's
#: headers on the stand-in.
ODD_UID = "1.2/../../x&y=<z>#"
LOOKER: dict[str, str] = {}


def _odd_uid_study(folder: Path) -> Path:
    """A one-image study whose StudyInstanceUID is ``ODD_UID``."""
    folder.mkdir(parents=True)
    spec = SeriesSpec(modality="CT", slices=1, rows=8, columns=8)
    for i, ds in enumerate(make_study(SyntheticPatient.make(79), series=[spec])):
        ds.StudyInstanceUID = ODD_UID
        (folder / f"{i}.dcm").write_bytes(to_bytes(ds))
    return folder


def _stand_in(folder: Path) -> Path:
    for name, text in STAND_IN.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    """An app whose OHIF folder is a stand-in build, with a secret beside it and a link to
    the secret inside it; and a bearer token of a signed-in user."""
    root = tmp_path_factory.mktemp("stand-in")
    dist = _stand_in(root / "dist")
    (root / "secret.txt").write_text("secret beside the build")
    (dist / "link.txt").symlink_to(root / "secret.txt")
    archive = Archive.open(root / "data", workers=1, ohif_dir=dist)
    runtime = Runtime.for_archive(archive)
    runtime.accounts.add_user("reader", PASSWORD)
    token, _ = runtime.accounts.create_token("reader", scopes=["read"])
    # A project with a study whose UID is not a UID: "reader" collaborates, "looker" views.
    archive.create_project("p", "P")
    archive.ingest([_odd_uid_study(root / "odd")], "p", workers=1)
    runtime.accounts.grant("p", "reader", "collaborator")
    runtime.accounts.add_user("looker", PASSWORD)
    runtime.accounts.grant("p", "looker", "viewer")
    looker, _ = runtime.accounts.create_token("looker", scopes=["read"])
    LOOKER["Authorization"] = f"Bearer {looker}"
    app = create_app(runtime, background=False)
    try:
        with TestClient(app, base_url="https://testserver", raise_server_exceptions=False,
                        headers={"Authorization": f"Bearer {token}"}) as client:
            yield client, dist
    finally:
        archive.close()


def test_the_page_and_the_bundle_are_rebased_onto_ohif(stand_in: tuple[TestClient, Path]
                                                       ) -> None:
    client, _ = stand_in
    page = client.get("/ohif/viewer?StudyInstanceUIDs=1.2.3")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert re.findall(r'(?:src|href)="(/(?!/)[^"]*)"', page.text) == [
        "/ohif/manifest.json", "/ohif/app-config.js", "/ohif/app.bundle.0123456789abcdef.js",
        "/ohif/app.bundle.css"]
    assert 'window.PUBLIC_URL="/ohif/"' in page.text
    assert 'href="//example.org/x"' in page.text  # not a path of ours: left alone
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert page.headers["referrer-policy"] == "no-referrer"

    bundle = client.get("/ohif/app.bundle.0123456789abcdef.js")
    assert bundle.headers["content-type"] == "text/javascript; charset=utf-8"
    assert '__webpack_require__.p = "/ohif/";' in bundle.text
    assert "import('/ohif/dicom-microscopy-viewer/viewer.min.js')" in bundle.text
    assert bundle.headers["cache-control"] == "public, max-age=31536000, immutable"
    again = client.get("/ohif/app.bundle.0123456789abcdef.js",
                       headers={"If-None-Match": bundle.headers["etag"]})
    assert again.status_code == 304 and again.content == b""

    css = client.get("/ohif/app.bundle.css")
    assert css.text == "@font-face{src:url(/ohif/fedcba9876543210.woff2)}"
    assert css.headers["cache-control"] == "no-cache"  # its name has no hash
    font = client.get("/ohif/fedcba9876543210.woff2")
    assert font.headers["content-type"] == "font/woff2"
    assert font.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get("/ohif/manifest.json").json() == {"icons": [{"src": "/ohif/assets/icon.png"}]}
    worker = client.get("/ohif/worker.js")
    assert worker.text == STAND_IN["worker.js"]  # nothing to rebase: sent as it is
    assert client.get("/ohif/worker.js", headers={"If-None-Match": worker.headers["etag"]}
                      ).status_code == 304
    svg = client.get("/ohif/assets/logo.svg")
    assert svg.headers["content-type"] == "image/svg+xml"


def test_client_routes_get_the_page_and_missing_files_are_not_found(
        stand_in: tuple[TestClient, Path]) -> None:
    client, _ = stand_in
    for route in ("/ohif/viewer?StudyInstanceUIDs=1.2.3", "/ohif/viewer/dicomweb",
                  "/ohif/segmentation?StudyInstanceUIDs=1.2.3", "/ohif/index.html"):
        response = client.get(route)
        assert response.status_code == 200, route
        assert 'window.PUBLIC_URL="/ohif/"' in response.text, route
    for missing in ("/ohif/1234.bundle.0000000000000000.js", "/ohif/assets/none.png",
                    "/ohif/nothing.css"):
        response = client.get(missing)
        assert response.status_code == 404, missing
        assert response.json()["code"] == "not_found"
    assert client.get("/ohif", follow_redirects=False).headers["location"].endswith("/ohif/")


def test_ohif_itself_is_our_projects_page(stand_in: tuple[TestClient, Path]) -> None:
    client, _ = stand_in
    for path in ("/ohif/", "/ohif/?PatientName=SMITH*"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/ui/projects", path
    assert "Projects" in client.get("/ohif/", headers={"Accept": "text/html"}).text


def test_the_study_page_links_to_the_study_in_ohif_for_those_who_download(
        stand_in: tuple[TestClient, Path]) -> None:
    client, _ = stand_in
    study = client.get("/api/v1/projects/p/studies").json()["items"][0]
    assert study["study_instance_uid"] == ODD_UID
    path = f"/ui/projects/p/studies/{study['id']}"
    body = client.get(path, headers={"Accept": "text/html"}).text
    links = [unescape(h) for h in re.findall(r'<a class="ohif" href="([^"]*)"', body)]
    assert links == ["/ohif/viewer?StudyInstanceUIDs=1.2%2F..%2F..%2Fx%26y%3D%3Cz%3E%23"]
    assert parse_qs(urlsplit(links[0]).query) == {"StudyInstanceUIDs": [ODD_UID]}
    assert client.get(links[0]).status_code == 200  # OHIF's page
    viewer = client.get(path, headers={**LOOKER, "Accept": "text/html"}).text
    assert "Open in OHIF" not in viewer and "/ohif/" not in viewer
    assert "needs the collaborator role" in viewer


def test_nothing_outside_the_folder_is_served(stand_in: tuple[TestClient, Path]) -> None:
    client, dist = stand_in
    secret = (dist.parent / "secret.txt").read_text()
    for path in ("/ohif/%2e%2e/secret.txt", "/ohif/..%2fsecret.txt",
                 "/ohif/assets/%2e%2e/%2e%2e/secret.txt", "/ohif/link.txt",
                 "/ohif/%2e%2e/dist/../secret.txt", "/ohif/%2e%2e"):
        response = client.get(path)
        assert secret not in response.text, path
        assert response.status_code == 404, (path, response.status_code)


def test_app_config_points_ohif_at_this_servers_dicomweb(stand_in: tuple[TestClient, Path]
                                                         ) -> None:
    client, _ = stand_in
    config = client.get("/ohif/app-config.js")
    assert config.status_code == 200
    assert config.headers["content-type"] == "text/javascript; charset=utf-8"
    text = config.text
    assert '"routerBasename": "/ohif"' in text and '"showStudyList": false' in text
    assert 'window.location.origin + "/dicomweb"' in text
    for setting in ('"imageRendering": "wadors"', '"thumbnailRendering": "thumbnail"',
                    '"supportsFuzzyMatching": true', '"dicomUploadEnabled": false',
                    '"qidoSupportsIncludeField": true'):
        assert setting in text, setting
    assert "http" not in text  # no other server: the page's own origin


def test_a_browser_without_a_session_is_sent_to_sign_in(stand_in: tuple[TestClient, Path]
                                                        ) -> None:
    client, _ = stand_in
    response = client.get("/ohif/viewer?StudyInstanceUIDs=1.2.3", follow_redirects=False,
                          headers={"Authorization": ""})
    assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in"
    assets = client.get("/ohif/app.bundle.css", headers={"Authorization": ""})
    assert assets.status_code == 200  # the app's files are public; its data is not


def test_ohif_not_installed_is_a_page_saying_how(tmp_path: Path) -> None:
    empty = tmp_path / "no-ohif"
    empty.mkdir()
    archive = Archive.open(tmp_path / "data", workers=1, ohif_dir=empty)
    runtime = Runtime.for_archive(archive)
    archive.create_project("p", "P")
    write_study(tmp_path / "study", 3)
    archive.ingest([tmp_path / "study"], "p", workers=1)
    runtime.accounts.add_user("reader", PASSWORD)
    runtime.accounts.grant("p", "reader", "collaborator")
    token, _ = runtime.accounts.create_token("reader", scopes=["read"])
    try:
        with TestClient(create_app(runtime, background=False),
                        base_url="https://testserver") as client:
            for path in ("/ohif/viewer?StudyInstanceUIDs=1.2.3", "/ohif/app.js"):
                response = client.get(path, headers={"Accept": "text/html"})
                assert response.status_code == 503, path
                assert response.headers["content-type"].startswith("text/html")
                assert "OHIF is not installed" in response.text
                assert "make ohif" in response.text
            assert client.get("/ohif/", follow_redirects=False).status_code == 303
            # No link to it from a study page, even for those who may download.
            study = archive.studies("p")[0]
            page = client.get(f"/ui/projects/p/studies/{study['id']}",
                              headers={"Authorization": f"Bearer {token}"}).text
            assert "Download the study" in page and "/ohif/" not in page
    finally:
        archive.close()


def test_the_pinned_build_is_rebased_whole(tmp_path: Path) -> None:
    """The real build that `make ohif` installed: after rebasing, its page names nothing at
    the root and its webpack runtime loads chunks from /ohif/."""
    assert (CHECKOUT_OHIF_DIR / "index.html").is_file(), NOT_INSTALLED
    archive = Archive.open(tmp_path / "data", workers=1)  # the default OHIF folder
    runtime = Runtime.for_archive(archive)
    runtime.accounts.add_user("reader", PASSWORD)
    token, _ = runtime.accounts.create_token("reader", scopes=["read"])
    try:
        with TestClient(create_app(runtime, background=False), base_url="https://testserver",
                        headers={"Authorization": f"Bearer {token}"}) as client:
            page = client.get("/ohif/viewer")
            assert page.status_code == 200
            paths = re.findall(r'(?:src|href|content)="(/[^"]*)"', page.text)
            assert len(paths) > 10 and all(p.startswith("/ohif/") for p in paths), paths
            bundle = re.search(r'src="/ohif/(app\.bundle\.[0-9a-f]+\.js)"', page.text)
            assert bundle is not None
            code = client.get(f"/ohif/{bundle.group(1)}").text
            assert '__webpack_require__.p = "/ohif/";' in code
            assert '__webpack_require__.p = "/";' not in code
            css = client.get("/ohif/app.bundle.css").text
            assert "url(/ohif/" in css and not re.search(r"url\(/(?!ohif/)", css)
    finally:
        archive.close()

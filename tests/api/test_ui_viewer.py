"""The series viewer (decision 0029) in Debian's Chromium, and its page's rendering details
with the TestClient.

The module's own world adds to alpha a CT series whose InstanceNumbers and file names are
both shuffled against the slices' positions, an RLE Lossless series (compressed: the archive
decodes its frames), a YBR_FULL colour series (drawn from rendered images), an MR series with
windows of its own, a series whose UIDs hold characters a URL must escape, a coronal series
and one whose two images lie in different planes (orientation markers)."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pytest
from apiworld import World, build_world, make_client
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, Route, expect
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless
from uikit import page_errors, serve, sign_in

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime

SLICES = 12
HOSTILE = "<script>alert(1)</script>"
#: The MR series' windows (center, width): two each, the first is the image's own.
MR_WINDOWS = ([300, 50], [800, 100])
#: UIDs that ingest lets through and a URL must escape ('?', '#', '%', a space).
ODD_SERIES_UID = "1.2.826.0.1.3680043.9.7?a#b%20c"
ODD_SOP_UID = "1.2.826.0.1.3680043.9.7.1?x#y% z"


@dataclass
class Viewing:
    world: World
    base: str
    shuffled: str  # series IDs
    rle: str
    colour: str
    mr: str
    odd: str
    coronal: str
    mixed: str
    mr_range: tuple[int, int]  # the lowest and highest value of every MR image
    #: the shuffled series' SOP Instance UIDs, in order of position along the normal (+z)
    by_position: list[str]

    def url(self, series: str, project: str = "alpha") -> str:
        return f"{self.base}/ui/projects/{project}/series/{series}/view"


def _series_id(archive: Archive, datasets: list[Dataset]) -> str:
    found = archive.find(str(datasets[0].SeriesInstanceUID))
    return next(row["id"] for level, row in found if level == "series")


def _write(folder: Path, datasets: list[Dataset], names: list[int]) -> None:
    folder.mkdir(parents=True)
    for ds, name in zip(datasets, names, strict=True):
        (folder / f"{name:03d}.dcm").write_bytes(to_bytes(ds))


def _shuffled(folder: Path) -> tuple[list[Dataset], list[str]]:
    """A CT series whose InstanceNumbers and file names both disagree with the positions."""
    spec = SeriesSpec(slices=SLICES, rows=64, columns=64, description="SHUFFLED AXIAL")
    datasets = list(make_study(SyntheticPatient.make(40), series=[spec]))
    numbers = list(range(1, SLICES + 1))
    random.Random(7).shuffle(numbers)
    for ds, number in zip(datasets, numbers, strict=True):
        ds.InstanceNumber = number
    names = list(range(SLICES))
    random.Random(8).shuffle(names)
    _write(folder, datasets, names)
    by_position = [str(ds.SOPInstanceUID) for ds in
                   sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))]
    by_number = [str(ds.SOPInstanceUID) for ds in
                 sorted(datasets, key=lambda d: int(d.InstanceNumber))]
    by_name = [str(ds.SOPInstanceUID) for _, ds in sorted(zip(names, datasets, strict=True),
                                                           key=lambda pair: pair[0])]
    assert by_position not in (by_number, by_name, by_number[::-1], by_name[::-1])
    return datasets, by_position


def _rle(folder: Path) -> list[Dataset]:
    spec = SeriesSpec(slices=3, rows=48, columns=48, description="RLE AXIAL")
    datasets = list(make_study(SyntheticPatient.make(41), series=[spec]))
    for ds in datasets:
        ds.compress(RLELossless)
    _write(folder, datasets, list(range(3)))
    return datasets


def _colour(folder: Path) -> list[Dataset]:
    """YBR_FULL, 8 bits: not a format viewer.js windows itself (the server renders it)."""
    spec = SeriesSpec(slices=2, rows=32, columns=32, description="COLOUR")
    datasets = list(make_study(SyntheticPatient.make(42), series=[spec]))
    for k, ds in enumerate(datasets):
        y, x = np.mgrid[:32, :32]
        ybr = np.stack([(x * 8) % 256, (y * 8) % 256, np.full_like(x, 128 + k * 20)], axis=-1)
        for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
            delattr(ds, keyword)
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_FULL"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = ybr.astype(np.uint8).tobytes()
    _write(folder, datasets, list(range(2)))
    return datasets


def _mr(folder: Path) -> list[Dataset]:
    """MR: no Hounsfield scale, two windows in each header (the first is the one to use)."""
    spec = SeriesSpec(modality="MR", slices=3, rows=32, columns=32, description="T2 AXIAL")
    datasets = list(make_study(SyntheticPatient.make(44), series=[spec]))
    for ds in datasets:
        ds.WindowCenter, ds.WindowWidth = MR_WINDOWS
    _write(folder, datasets, list(range(3)))
    return datasets


def _odd(folder: Path) -> list[Dataset]:
    spec = SeriesSpec(slices=2, rows=16, columns=16, description="ODD UIDS")
    datasets = list(make_study(SyntheticPatient.make(45), series=[spec]))
    for ds in datasets:
        ds.SeriesInstanceUID = ODD_SERIES_UID
    datasets[0].SOPInstanceUID = datasets[0].file_meta.MediaStorageSOPInstanceUID = ODD_SOP_UID
    _write(folder, datasets, list(range(2)))
    return datasets


CORONAL = [1, 0, 0, 0, 0, -1]  # rows to the patient's left, columns to the feet


def _coronal(folder: Path) -> list[Dataset]:
    """The synthetic axial CT turned coronal: slices stacked front to back (along +y)."""
    spec = SeriesSpec(slices=3, rows=32, columns=32, description="CORONAL")
    datasets = list(make_study(SyntheticPatient.make(46), series=[spec]))
    for k, ds in enumerate(datasets):
        ds.ImageOrientationPatient = CORONAL
        ds.ImagePositionPatient = [-11.2, -20.0 + 2.5 * k, 11.2]
        del ds.SliceLocation
    _write(folder, datasets, list(range(3)))
    return datasets


def _mixed(folder: Path) -> list[Dataset]:
    """Two images: an axial one (instance 1) and a coronal one (instance 2)."""
    spec = SeriesSpec(slices=2, rows=16, columns=16, description="LOCALISER")
    datasets = list(make_study(SyntheticPatient.make(47), series=[spec]))
    datasets[1].ImageOrientationPatient = CORONAL
    _write(folder, datasets, list(range(2)))
    return datasets


def build_viewing(runtime: Runtime, folder: Path, base: str = "") -> Viewing:
    world = build_world(runtime, folder)
    archive = runtime.archive
    shuffled, by_position = _shuffled(folder / "shuffled")
    rle = _rle(folder / "rle")
    colour = _colour(folder / "colour")
    mr = _mr(folder / "mr")
    odd = _odd(folder / "odd")
    coronal = _coronal(folder / "coronal")
    mixed = _mixed(folder / "mixed")
    for name in ("shuffled", "rle", "colour", "mr", "odd", "coronal", "mixed"):
        summary = archive.ingest([folder / name], "alpha", workers=1)
        assert summary.stored > 0, summary
    ranges = {(int(ds.pixel_array.min()), int(ds.pixel_array.max())) for ds in mr}
    assert len(ranges) == 1, ranges
    return Viewing(world, base, _series_id(archive, shuffled), _series_id(archive, rle),
                   _series_id(archive, colour), _series_id(archive, mr),
                   _series_id(archive, odd), _series_id(archive, coronal),
                   _series_id(archive, mixed), ranges.pop(), by_position)


@pytest.fixture(scope="module")
def viewing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewing]:
    folder = tmp_path_factory.mktemp("viewer")
    archive = Archive.open(folder / "data", workers=1)
    try:
        found = build_viewing(Runtime.for_archive(archive), folder)
        with serve(found.world.runtime) as base:
            found.base = base
            yield found
    finally:
        archive.close()


# -- in the browser -----------------------------------------------------------------------
def _until(page: Page, expression: str, timeout: float = 10.0) -> Any:
    """Wait until ``expression`` is truthy in the page, and return its value. (Playwright's
    wait_for_function evaluates a string with eval, which the pages' CSP refuses;
    page.evaluate goes through the debugging protocol.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        page.wait_for_timeout(25)


def _open(page: Page, viewing: Viewing, series: str, user: str = "collaborator") -> None:
    sign_in(page, viewing.base, user)
    page.goto(viewing.url(series))
    _until(page, "window.imagebankViewer && window.imagebankViewer.stats.firstImageMs !== null")


def _canvas(page: Page) -> dict[str, Any]:
    """The canvas's pixels: how many distinct grey values, and a digest of them."""
    result: dict[str, Any] = page.evaluate("""() => {
        const c = document.getElementById("viewer-canvas");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        const seen = new Set(); let hash = 0;
        for (let i = 0; i < d.length; i += 4) {
            seen.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
            hash = (hash * 31 + d[i] + d[i + 1] * 7 + d[i + 2] * 13) >>> 0;
        }
        return {distinct: seen.size, hash, width: c.width, height: c.height};
    }""")
    return result


def _header_uid(page: Page) -> Any:
    row = page.locator("#header-rows tr", has=page.locator("td", has_text=re.compile(
        r"^SOPInstanceUID$")))
    return row.locator("td").nth(3)


def test_the_first_image_draws_and_arrow_down_moves_to_slice_two(viewing: Viewing, page: Page
                                                                 ) -> None:
    _open(page, viewing, viewing.shuffled)
    status = page.get_by_role("status")
    expect(status).to_have_text(f"Slice 1 of {SLICES}")
    pixels = _canvas(page)
    assert pixels["width"] > 0 and pixels["distinct"] > 1  # an image, not a blank canvas
    marks = page.evaluate("performance.getEntriesByName('imagebank:first-image').length")
    assert marks == 1
    expect(_header_uid(page)).to_have_text(viewing.by_position[0])
    expect(page.locator("#header-uid")).to_have_text(viewing.by_position[0])
    page.locator("#viewer-canvas").focus()
    page.keyboard.press("ArrowDown")
    expect(status).to_have_text(f"Slice 2 of {SLICES}")
    expect(page.locator("#ov-slice")).to_have_text(f"Slice 2/{SLICES}")
    expect(_header_uid(page)).to_have_text(viewing.by_position[1])
    assert page.evaluate("window.imagebankViewer.stats.lastDrawn") == 1
    assert _canvas(page)["hash"] != pixels["hash"]  # the phantom's insert moved


def test_slices_follow_position_not_instance_numbers_or_file_names(viewing: Viewing,
                                                                   page: Page) -> None:
    _open(page, viewing, viewing.shuffled)
    order = page.evaluate("""() => {
        const data = JSON.parse(document.getElementById("viewer-data").textContent);
        return data.images.map(([i, frame, loc]) => [data.instances[i].uid, frame, loc]);
    }""")
    assert [uid for uid, _f, _loc in order] == viewing.by_position
    locations = [loc for _u, _f, loc in order]
    assert locations == sorted(locations) and len(set(locations)) == SLICES
    expect(page.locator("#order-note")).to_contain_text("position along the slice normal")
    page.locator("#viewer-canvas").focus()
    page.keyboard.press("End")
    expect(page.get_by_role("status")).to_have_text(f"Slice {SLICES} of {SLICES}")
    expect(_header_uid(page)).to_have_text(viewing.by_position[-1])
    expect(page.locator("#ov-pos")).to_have_text(f"Position {locations[-1]:.2f} mm")
    page.keyboard.press("PageUp")
    expect(page.get_by_role("status")).to_have_text(f"Slice {SLICES - 10} of {SLICES}")
    page.keyboard.press("Home")
    expect(page.get_by_role("status")).to_have_text(f"Slice 1 of {SLICES}")
    # the slider, by keyboard
    page.get_by_label("Slice", exact=True).focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("status")).to_have_text(f"Slice 2 of {SLICES}")


def test_a_preset_changes_the_drawn_pixels_and_the_window_readout(viewing: Viewing,
                                                                  page: Page) -> None:
    _open(page, viewing, viewing.shuffled)
    readout = page.locator("#ov-wl")
    expect(readout).to_have_text("W 400 L 40")  # the instances' own window (soft tissue)
    expect(page.get_by_role("button", name="Soft tissue")).to_have_attribute(
        "aria-pressed", "true")
    before = _canvas(page)["hash"]
    page.locator("#viewer-canvas").focus()
    page.keyboard.press("1")
    expect(readout).to_have_text("W 1500 L -600")
    expect(page.get_by_role("button", name="Lung")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_label("Window center")).to_have_value("-600")
    expect(page.get_by_label("Window width")).to_have_value("1500")
    _until(page, "window.imagebankViewer.stats.draws > 1")
    lung = _canvas(page)["hash"]
    assert lung != before
    page.get_by_role("button", name="Bone").click()
    expect(readout).to_have_text("W 1800 L 400")
    # a free window, typed
    page.get_by_label("Window width").fill("80")
    page.get_by_label("Window center").fill("40")
    expect(readout).to_have_text("W 80 L 40")
    expect(page.get_by_role("button", name="Brain")).to_have_attribute("aria-pressed", "true")
    # and by right-drag: right widens, down raises the level
    page.locator("#viewer-canvas").hover()  # scrolled into view, the mouse at its centre
    box = page.locator("#viewer-canvas").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.down(button="right")
    page.mouse.move(x + 100, y + 40, steps=4)
    page.mouse.up(button="right")
    center, width = page.evaluate("window.imagebankViewer.window")
    assert width > 80 and center > 40
    expect(readout).to_have_text(f"W {width:g} L {center:g}")
    page.locator("#viewer-canvas").focus()
    page.keyboard.press("r")  # reset: the initial window again
    expect(readout).to_have_text("W 400 L 40")


def test_zoom_pan_and_the_shortcuts_dialog_by_keyboard(viewing: Viewing, page: Page) -> None:
    _open(page, viewing, viewing.shuffled)
    page.locator("#viewer-canvas").focus()
    before = _canvas(page)["hash"]
    page.keyboard.press("+")
    expect(page.locator("#ov-zoom")).to_have_text("Zoom 125%")
    page.keyboard.press("Shift+ArrowLeft")
    _until(page, "window.imagebankViewer.stats.draws >= 3")
    assert _canvas(page)["hash"] != before
    page.keyboard.press("-")
    page.keyboard.press("-")
    expect(page.locator("#ov-zoom")).to_have_text("Zoom 80%")
    page.keyboard.press("r")
    expect(page.locator("#ov-zoom")).to_have_text("Zoom 100%")
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Window presets")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Keyboard shortcuts").click()
    expect(dialog).to_be_visible()
    page.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()


def _markers(page: Page) -> dict[str, str]:
    return {side: page.locator(f"#ov-{side}").inner_text()
            for side in ("left", "top", "right", "bottom")}


def test_orientation_markers_name_the_edges_and_stay_there_when_zoomed(viewing: Viewing,
                                                                       page: Page) -> None:
    """Axial (the synthetic CT as made): R on the left, A at the top; coronal: R and H."""
    errors = page_errors(page)
    _open(page, viewing, viewing.shuffled)
    expect(page.locator("#ov-left")).to_have_text("R")
    assert _markers(page) == {"left": "R", "top": "A", "right": "L", "bottom": "P"}

    def edges() -> dict[str, float]:
        view = page.locator("#viewport").bounding_box()
        assert view is not None
        found = {}
        for side in ("left", "top", "right", "bottom"):
            box = page.locator(f"#ov-{side}").bounding_box()
            assert box is not None and box["width"] > 0
            found[side] = {"left": box["x"] - view["x"],
                           "top": box["y"] - view["y"],
                           "right": view["x"] + view["width"] - box["x"] - box["width"],
                           "bottom": view["y"] + view["height"] - box["y"] - box["height"],
                           }[side]
        return found

    # Each marker sits against its own edge of the viewport, and stays there when the image
    # is zoomed and panned (neither rotates it).
    assert all(0 <= gap < 2 for gap in edges().values()), edges()
    page.locator("#viewer-canvas").focus()
    page.keyboard.press("+")
    page.keyboard.press("Shift+ArrowLeft")
    expect(page.locator("#ov-zoom")).to_have_text("Zoom 125%")
    assert _markers(page) == {"left": "R", "top": "A", "right": "L", "bottom": "P"}
    assert all(0 <= gap < 2 for gap in edges().values()), edges()

    page.goto(viewing.url(viewing.coronal))
    expect(page.locator("#ov-top")).to_have_text("H")
    assert _markers(page) == {"left": "R", "top": "H", "right": "L", "bottom": "F"}
    assert errors == []


def test_the_whole_series_is_prefetched_with_progress(viewing: Viewing, page: Page) -> None:
    _open(page, viewing, viewing.shuffled)
    _until(page, f"window.imagebankViewer.stats.loaded === {SLICES}")
    expect(page.locator("#prefetch-text")).to_have_text(f"All {SLICES} loaded")
    assert page.locator("#prefetch").evaluate("p => p.value") == SLICES
    stats = page.evaluate("window.imagebankViewer.stats")
    assert stats["failed"] == 0 and stats["rendered"] == 0
    assert stats["bytes"] == SLICES * 64 * 64 * 2  # raw 16-bit frames
    # scrolling the cached series draws every slice
    page.locator("#viewer-canvas").focus()
    for _ in range(SLICES - 1):
        page.keyboard.press("ArrowDown")
    expect(page.get_by_role("status")).to_have_text(f"Slice {SLICES} of {SLICES}")
    _until(page, f"window.imagebankViewer.stats.lastDrawn === {SLICES - 1}")


def test_the_header_is_filtered(viewing: Viewing, page: Page) -> None:
    _open(page, viewing, viewing.shuffled)
    expect(_header_uid(page)).to_have_text(viewing.by_position[0])
    rows = page.locator("#header-rows tr:visible")
    assert rows.count() > 20
    page.get_by_label("Filter the header").fill("seriesdescription")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("(0008,103E)")
    expect(rows.first).to_contain_text("SHUFFLED AXIAL")
    expect(page.locator("#header-state")).to_have_text(re.compile(r"^1 of \d+ elements match"))
    page.get_by_text("DICOM header").click()  # collapsible
    expect(page.locator("#header-table")).to_be_hidden()


def test_a_compressed_series_is_drawn_from_raw_frames(viewing: Viewing, page: Page) -> None:
    _open(page, viewing, viewing.rle)
    assert _canvas(page)["distinct"] > 1
    _until(page, "window.imagebankViewer.stats.loaded === 3")
    stats = page.evaluate("window.imagebankViewer.stats")
    assert stats["rendered"] == 0 and stats["failed"] == 0
    assert stats["bytes"] == 3 * 48 * 48 * 2  # decoded by the archive


def test_a_format_the_browser_does_not_window_is_rendered(viewing: Viewing, page: Page
                                                          ) -> None:
    _open(page, viewing, viewing.colour)
    assert _canvas(page)["distinct"] > 10  # colours, from the server's PNG
    stats = page.evaluate("window.imagebankViewer.stats")
    assert stats["rendered"] >= 1 and stats["failed"] == 0
    expect(page.locator("#ov-wl")).to_have_text("Window: the image's own")


def _problem(status: int, words: str) -> dict[str, Any]:
    body = {"type": "about:blank", "status": status, "title": "Error", "detail": words}
    return {"status": status, "content_type": "application/problem+json",
            "body": json.dumps(body)}


def _frames_of(*uids: str) -> Callable[[str], bool]:
    """A route matcher for the frames of these instances (raw or rendered)."""
    def matches(url: str) -> bool:
        plain = unquote(url)
        return any(f"/instances/{uid}/frames/" in plain for uid in uids)
    return matches


def test_a_frame_answered_503_once_is_fetched_again_and_drawn(viewing: Viewing, page: Page
                                                              ) -> None:
    errors = page_errors(page)
    refused: list[str] = []

    def busy_once(route: Route) -> None:
        if refused:
            route.continue_()
            return
        refused.append(unquote(route.request.url))
        route.fulfill(**_problem(503, "The audit trail is busy; try again shortly."))

    sign_in(page, viewing.base, "collaborator")
    page.route(_frames_of(*viewing.by_position), busy_once)
    page.goto(viewing.url(viewing.shuffled))
    _until(page, "window.imagebankViewer && window.imagebankViewer.stats.firstImageMs !== null")
    assert len(refused) == 1 and f"/instances/{viewing.by_position[0]}/frames/1" in refused[0]
    stats = page.evaluate("window.imagebankViewer.stats")
    assert (stats["retries"], stats["failed"], stats["lastDrawn"]) == (1, 0, 0)
    assert _canvas(page)["distinct"] > 1
    expect(page.locator("#viewer-error")).to_be_empty()
    expect(_header_uid(page)).to_have_text(viewing.by_position[0])
    _until(page, f"window.imagebankViewer.stats.loaded === {SLICES}")
    assert errors == []


def test_a_frame_that_keeps_failing_is_given_up_then_fetched_again_on_return(
        viewing: Viewing, page: Page) -> None:
    errors = page_errors(page)
    busy, gone = viewing.by_position[1], viewing.by_position[2]
    calls = {busy: 0, gone: 0}
    failing = [True]

    def flaky(route: Route) -> None:
        uid = busy if f"/instances/{busy}/" in unquote(route.request.url) else gone
        calls[uid] += 1
        if not failing[0]:
            route.continue_()
        elif uid == busy:  # a 5xx: tried again, a few times
            route.fulfill(**_problem(503, "The server is busy."))
        else:  # a 4xx: final
            route.fulfill(**_problem(404, "No such frame."))

    sign_in(page, viewing.base, "collaborator")
    page.route(_frames_of(busy, gone), flaky)
    page.goto(viewing.url(viewing.shuffled))
    _until(page, "window.imagebankViewer && window.imagebankViewer.stats.failed === 2")
    assert calls == {busy: 4, gone: 1}
    assert page.evaluate("window.imagebankViewer.stats.retries") == 3
    expect(page.locator("#prefetch-text")).to_have_text(f"All {SLICES} loaded (2 could not be)")
    # Coming to a slice given up on fetches it again (failing still: given up again, said).
    page.locator("#viewer-canvas").focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#viewer-error")).to_have_text(
        "This image could not be shown: The server is busy. Move to another slice and back "
        "to try again.", timeout=10_000)
    assert calls[busy] == 8
    page.keyboard.press("ArrowDown")
    expect(page.locator("#viewer-error")).to_have_text(
        "This image could not be shown: No such frame. Move to another slice and back to try "
        "again.")
    assert calls[gone] == 2
    # The cause gone, going back and forth draws both.
    failing[0] = False
    page.keyboard.press("ArrowUp")
    _until(page, "window.imagebankViewer.stats.lastDrawn === 1")
    expect(page.locator("#viewer-error")).to_be_empty()
    page.keyboard.press("ArrowDown")
    _until(page, "window.imagebankViewer.stats.lastDrawn === 2")
    expect(page.locator("#prefetch-text")).to_have_text(f"All {SLICES} loaded")
    assert errors == []


def test_an_mr_series_offers_its_own_window_not_hounsfield_presets(viewing: Viewing,
                                                                   page: Page) -> None:
    errors = page_errors(page)
    _open(page, viewing, viewing.mr)
    readout = page.locator("#ov-wl")
    (center, *_), (width, *_) = MR_WINDOWS
    expect(readout).to_have_text(f"W {width} L {center}")  # the header's first window
    presets = page.get_by_role("group", name="Window presets").get_by_role("button")
    expect(presets).to_have_text([re.compile(r"^Image's own"), re.compile(r"^Full range")])
    expect(page.get_by_role("button", name="Lung")).to_have_count(0)
    own = page.get_by_role("button", name="Image's own")
    expect(own).to_have_attribute("aria-pressed", "true")
    # Full range: the lowest to the highest value of the image shown.
    page.locator("#viewer-canvas").focus()
    page.keyboard.press("2")
    low, high = viewing.mr_range
    expect(readout).to_have_text(f"W {high - low:g} L {(low + high) / 2:g}")
    expect(page.get_by_role("button", name="Full range")).to_have_attribute("aria-pressed",
                                                                           "true")
    expect(own).to_have_attribute("aria-pressed", "false")
    page.keyboard.press("3")  # no third preset here: nothing changes
    page.keyboard.press("1")
    expect(readout).to_have_text(f"W {width} L {center}")
    # a free window still
    page.get_by_label("Window width").fill("120")
    page.get_by_label("Window center").fill("60")
    expect(readout).to_have_text("W 120 L 60")
    expect(own).to_have_attribute("aria-pressed", "false")
    page.locator("#viewer-canvas").focus()
    page.keyboard.press("?")
    expect(page.get_by_role("dialog")).to_contain_text("Window presets: image's own, full range")
    assert errors == []


def test_uids_that_need_escaping_go_into_urls_escaped(viewing: Viewing, page: Page) -> None:
    """UIDs that are not digits and dots (ingest keeps what it can read) are escaped in each
    address: DICOMweb refuses them (422, final), rather than a '?' or '#' in them cutting the
    address short into another resource's."""
    errors = page_errors(page)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url)
            if "/dicomweb/" in request.url else None)
    sign_in(page, viewing.base, "collaborator")
    page.goto(viewing.url(viewing.odd))
    expect(page.locator("#viewer-error")).to_contain_text(
        "This image could not be shown: Invalid path.series_uid")
    _until(page, "window.imagebankViewer.stats.failed === 2")
    assert page.evaluate("window.imagebankViewer.stats.retries") == 0  # a 4xx is final
    frames = [url for url in asked if "/frames/" in url]
    assert len(frames) == 2 and all(
        f"/series/{quote(ODD_SERIES_UID, safe='')}/instances/" in url for url in frames)
    assert any(f"/instances/{quote(ODD_SOP_UID, safe='')}/" in url for url in frames)
    assert not any("?" in url or "#" in url for url in asked)
    assert errors == []


def test_the_viewer_has_no_wcag_aa_violation(viewing: Viewing, page: Page) -> None:
    _open(page, viewing, viewing.shuffled)
    expect(_header_uid(page)).to_have_text(viewing.by_position[0])
    options = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a",
                                                     "wcag21aa"]},
               "resultTypes": ["violations"]}
    results: Any = Axe().run(page, options=options)
    assert [(v["id"], [n["target"] for n in v["nodes"][:3]])
            for v in results.response["violations"]] == []
    # an MR series, with its own presets
    page.goto(viewing.url(viewing.mr))
    expect(page.get_by_role("button", name="Full range")).to_be_enabled()
    results = Axe().run(page, options=options)
    assert [(v["id"], [n["target"] for n in v["nodes"][:3]])
            for v in results.response["violations"]] == []


def test_a_viewer_role_gets_the_403_page_in_the_browser(viewing: Viewing, page: Page) -> None:
    sign_in(page, viewing.base, "viewer")
    response = page.goto(viewing.url(viewing.shuffled))
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("does not allow this (download)")
    assert page.locator("#viewer-canvas").count() == 0


# -- rendering details (TestClient) ---------------------------------------------------------
@pytest.fixture(scope="module")
def viewing_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Viewing, Any]]:
    folder = tmp_path_factory.mktemp("viewer-client")
    archive = Archive.open(folder / "data", workers=1)
    try:
        found = build_viewing(Runtime.for_archive(archive), folder)
        with make_client(found.world) as client:
            yield found, client
    finally:
        archive.close()


def _page(client: Any, world: World, user: str, path: str, html: bool = True) -> Any:
    headers = world.headers(user)
    if html:
        headers["Accept"] = "text/html"
    return client.get(path, headers=headers)


def _embedded(body: str) -> dict[str, Any]:
    match = re.search(r'<script id="viewer-data" type="application/json">(.*?)</script>',
                      body, re.S)
    assert match, "no viewer data in the page"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_the_page_carries_the_order_and_pixel_descriptions(viewing_client: tuple[Viewing, Any]
                                                           ) -> None:
    viewing, client = viewing_client
    path = f"/ui/projects/alpha/series/{viewing.shuffled}/view"
    response = _page(client, viewing.world, "collaborator", path)
    assert response.status_code == 200
    assert "no-store" in response.headers["cache-control"]
    data = _embedded(response.text)
    assert data["orderedBy"] == "position"
    assert [data["instances"][i]["uid"] for i, _f, _loc in data["images"]] == \
        viewing.by_position
    first = data["instances"][data["images"][0][0]]
    assert first | {"uid": "", "number": 0} == {
        "uid": "", "number": 0, "frames": 1, "rows": 64, "columns": 64, "bitsAllocated": 16,
        "bitsStored": 12, "signed": False, "samples": 1, "planar": 0,
        "photometric": "MONOCHROME2", "slope": 1.0, "intercept": -1024.0, "center": 40.0,
        "width": 400.0}
    archive = viewing.world.runtime.archive
    series = archive.get("series", viewing.shuffled)
    study = archive.get("study", series["study_id"])
    assert data["base"] == (f"/projects/alpha/dicomweb/studies/{study['study_instance_uid']}"
                            f"/series/{series['series_instance_uid']}")
    assert data["keywords"]["00080018"] == "SOPInstanceUID"
    # The data given to the script holds no patient data (the header comes from WADO-RS).
    subject = archive.get("subject", study["subject_id"])
    text = json.dumps(data)
    for value in (subject["patient_id"], subject["patient_name"],
                  subject["patient_birth_date"], study["accession_number"]):
        assert value and value not in text


def test_the_page_carries_orientation_markers(viewing_client: tuple[Viewing, Any]) -> None:
    viewing, client = viewing_client

    def view(series: str) -> dict[str, Any]:
        response = _page(client, viewing.world, "collaborator",
                         f"/ui/projects/alpha/series/{series}/view")
        assert response.status_code == 200
        return _embedded(response.text)

    axial, coronal, mixed = view(viewing.shuffled), view(viewing.coronal), view(viewing.mixed)
    # one set for a series whose images all agree
    assert (axial["markers"], axial["markersPerImage"]) == (["R", "A", "L", "P"], None)
    assert (coronal["markers"], coronal["markersPerImage"]) == (["R", "H", "L", "F"], None)
    # one per image (in display order: instance number here) when they differ
    assert mixed["orderedBy"] == "instance_number"
    assert mixed["markers"] is None
    assert mixed["markersPerImage"] == [["R", "A", "L", "P"], ["R", "H", "L", "F"]]


def test_a_viewer_role_gets_403_and_an_outsider_404(viewing_client: tuple[Viewing, Any]
                                                    ) -> None:
    viewing, client = viewing_client
    path = f"/ui/projects/alpha/series/{viewing.shuffled}/view"
    world = viewing.world
    refused = _page(client, world, "viewer", path)
    assert refused.status_code == 403
    assert "text/html" in refused.headers["content-type"]
    assert "viewer-data" not in refused.text
    assert _page(client, world, "outsider", path).status_code == 404
    api = _page(client, world, "viewer", path, html=False)
    assert api.status_code == 403 and api.json()["code"] == "forbidden"
    # a series of another project, under alpha's address: not found, as if it did not exist
    beta = _page(client, world, "admin", f"/ui/projects/alpha/series/{world.ids['beta_series']}"
                 "/view")
    ghost = _page(client, world, "admin", f"/ui/projects/alpha/series/{'0' * 32}/view")
    assert beta.status_code == ghost.status_code == 404
    assert _page(client, world, "admin", "/ui/projects/alpha/series/NOT-AN-ID/view"
                 ).status_code == 422


def test_a_hostile_series_description_is_escaped(viewing_client: tuple[Viewing, Any]) -> None:
    viewing, client = viewing_client
    archive = viewing.world.runtime.archive
    spec = SeriesSpec(slices=1, rows=8, columns=8, description=HOSTILE)
    (ds,) = make_study(SyntheticPatient.make(43), series=[spec])
    ds.StudyDescription = HOSTILE
    summary = archive.ingest_bytes([(to_bytes(ds), "hostile.dcm")], "alpha")
    assert summary.stored == 1
    series = _series_id(archive, [ds])
    response = _page(client, viewing.world, "owner", f"/ui/projects/alpha/series/{series}/view")
    assert response.status_code == 200
    assert HOSTILE not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


def test_hounsfield_presets_are_offered_for_ct_only(viewing_client: tuple[Viewing, Any]
                                                    ) -> None:
    viewing, client = viewing_client
    world = viewing.world

    def presets(series: str) -> list[tuple[str, str | None]]:
        body = _page(client, world, "owner", f"/ui/projects/alpha/series/{series}/view").text
        return re.findall(r'data-preset="(\w+)"(?:\s+data-center="(-?\d+)")?', body)

    assert presets(viewing.shuffled) == [("lung", "-600"), ("soft", "40"), ("bone", "400"),
                                         ("brain", "40")]
    assert presets(viewing.mr) == [("own", ""), ("range", "")]
    mr = _page(client, world, "owner", f"/ui/projects/alpha/series/{viewing.mr}/view").text
    assert "Lung" not in mr and "Window presets: image&#39;s own, full range" in mr
    first = _embedded(mr)["instances"][0]
    assert (first["center"], first["width"]) == (MR_WINDOWS[0][0], MR_WINDOWS[1][0])


def test_the_dicomweb_address_escapes_each_uid(viewing_client: tuple[Viewing, Any]) -> None:
    viewing, client = viewing_client
    path = f"/ui/projects/alpha/series/{viewing.odd}/view"
    data = _embedded(_page(client, viewing.world, "owner", path).text)
    study = viewing.world.runtime.archive.get(
        "study", viewing.world.runtime.archive.get("series", viewing.odd)["study_id"])
    assert data["base"] == (f"/projects/alpha/dicomweb/studies/{study['study_instance_uid']}"
                            "/series/1.2.826.0.1.3680043.9.7%3Fa%23b%2520c")
    # DICOMweb takes UIDs of digits and dots only: this one is refused, not mistaken for
    # the series '1.2.826.0.1.3680043.9.7' with a query string.
    metadata = client.get(f"{data['base']}/metadata", headers=viewing.world.headers("owner"))
    assert metadata.status_code == 422 and "series_uid" in metadata.json()["detail"]

"""(k) The series viewer in Chromium: a 300-slice CT series of 512x512 (decision 0029).

The series (``imagebank.dicom.synthetic``, 16-bit, ~150 MB) is written once and ingested into
a data folder cached under ``benchmarks/.work/``; each run copies it, adds a collaborator with
the CLI and serves it with ``imagebank serve`` (uvicorn) on loopback. Debian's
``/usr/bin/chromium``, headless, driven by Playwright, signs in once, then:

* **first image**: a fresh page opens the viewer; the time from navigation start to the
  viewer's ``performance.mark("imagebank:first-image")`` (the first slice drawn on the
  canvas: page, first frame over WADO-RS, windowing), median of ``ROUNDS`` page loads;
  target < 1 s. The same pages time the whole series' prefetch (every frame in memory).
* **scroll at 20/s**: a fresh page, and from its first image on (the prefetch still running)
  the next slice asked for every 50 ms by a timer in the page; slices actually drawn per
  second, and slices skipped (never drawn: not there in time); target 20/s with none skipped.
* **fastest scroll**: once the series is in memory, the next slice asked for as soon as the
  last is drawn (one per animation frame at best): slices drawn per second; target >= 20/s.
* **keyboard**: ArrowDown pressed through the series as fast as Playwright sends key
  presses; slices drawn per second (presses within one frame are drawn once).

Baseline: the same frames over HTTP from Python, one after another on one keep-alive
connection (``requests``, ``Accept: multipart/related; type="application/octet-stream"``),
and the stored files read from disk; the viewer's prefetch is printed as a ratio of the
former.

Run alone: ``python benchmarks/viewer.py [--smoke]`` (smoke: 20 slices of 128x128).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    WORK,
    Result,
    ensure_built,
    format_table,
    fresh_run_dir,
    remove,
    wait_until_quiet,
)
from rest_upload import ImagebankServer

PROJECT = "bench"
READER = "reader"
CHROMIUM = "/usr/bin/chromium"
ROUNDS = 5
FIRST_IMAGE_TARGET_MS = 1000.0
SCROLL_RATE = 20.0
RAW_ACCEPT = 'multipart/related; type="application/octet-stream"'
GROUP = "series viewer in Chromium"


def fixture_dir(slices: int, size: int) -> Path:
    return WORK / f"viewer-{slices}-{size}x{size}"


def _build(folder: Path, slices: int, size: int) -> dict[str, int]:
    from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
    from imagebank.services.archive import Archive

    files = folder / "files"
    files.mkdir(parents=True)
    spec = SeriesSpec(slices=slices, rows=size, columns=size, description="AXIAL 1.25mm")
    total = 0
    for k, ds in enumerate(make_study(SyntheticPatient.make(7), series=[spec])):
        data = to_bytes(ds)
        (files / f"IM{k + 1:05d}.dcm").write_bytes(data)
        total += len(data)
    archive = Archive.open(folder / "data")
    try:
        archive.create_project(PROJECT)
        summary = archive.ingest([files], PROJECT, workers=2)
    finally:
        archive.close()
    if summary.stored != slices:
        raise RuntimeError(f"{summary.stored} of {slices} slices were stored")
    return {"slices": slices, "bytes": total}


def _series(data: Path) -> dict[str, Any]:
    """The series' ID and its frames' WADO-RS addresses, in display order."""
    from imagebank.services.archive import Archive
    from imagebank.services.viewer import series_view

    archive = Archive.open(data)
    try:
        (study,) = archive.studies(PROJECT)
        (series,) = archive.series(study["id"])
        view = series_view(archive, PROJECT, series["id"])["view"]
        frames = [f"{view['base']}/instances/{view['instances'][i]['uid']}/frames/{f}"
                  for i, f, _loc in view["images"]]
    finally:
        archive.close()
    return {"id": series["id"], "frames": frames}


# -- baselines --------------------------------------------------------------------------------
def _baseline_http(url: str, frames: list[str], headers: dict[str, str], size: int
                   ) -> float:
    """Seconds to fetch every frame, one after another, on one keep-alive connection."""
    import requests

    with requests.Session() as session:
        session.get(url + frames[0], headers={**headers, "Accept": RAW_ACCEPT}, timeout=60)
        started = time.perf_counter()
        for frame in frames:
            response = session.get(url + frame, headers={**headers, "Accept": RAW_ACCEPT},
                                   timeout=60)
            if response.status_code != 200 or len(response.content) < size * size * 2:
                raise RuntimeError(f"a frame: {response.status_code}, "
                                   f"{len(response.content)} bytes")
        return time.perf_counter() - started


def _baseline_files(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        path.read_bytes()
    return time.perf_counter() - started


# -- the browser ----------------------------------------------------------------------------
# Functions, not bare expressions: Playwright evaluates an expression with eval, which the
# pages' Content-Security-Policy refuses.
_WAIT_FIRST = "() => window.imagebankViewer && window.imagebankViewer.stats.firstImageMs !== null"
_FIRST_MARK = "performance.getEntriesByName('imagebank:first-image')[0].startTime"

_SCROLL_AT_RATE = """(rate) => new Promise((resolve) => {
  const v = window.imagebankViewer;
  const seen = new Set([v.stats.lastDrawn]);
  const watch = () => { seen.add(v.stats.lastDrawn); if (!done) requestAnimationFrame(watch); };
  let done = false, k = 0;
  requestAnimationFrame(watch);
  const started = performance.now();
  const timer = setInterval(() => {
    k += 1;
    v.go(k);
    if (k >= v.count - 1) {
      clearInterval(timer);
      const elapsed = performance.now() - started;  // count - 1 steps
      // the last slice gets one more step's time to be drawn, as every other had
      setTimeout(() => {
        done = true;
        const skipped = [];
        for (let i = 1; i < v.count; i++) if (!seen.has(i)) skipped.push(i + 1);
        resolve({elapsed, drawn: seen.size - 1, loaded: v.stats.loaded, skipped});
      }, 1000 / rate);
    }
  }, 1000 / rate);
})"""

_SCROLL_FASTEST = """() => new Promise((resolve) => {
  const v = window.imagebankViewer;
  const first = v.stats.drawn;
  let k = v.index;
  const started = performance.now();
  const step = () => {
    if (v.stats.lastDrawn === k) {
      if (k === v.count - 1) {
        resolve({elapsed: performance.now() - started, drawn: v.stats.drawn - first});
        return;
      }
      k += 1;
      v.go(k);
    }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
})"""


def _open(context: Any, url: str) -> Any:
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(_WAIT_FIRST, timeout=60_000)
    return page


def _browser_runs(base: str, series: str, password: str, count: int, rounds: int,
                  log: Any) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    url = f"{base}/ui/projects/{PROJECT}/series/{series}/view"
    out: dict[str, Any] = {"first_ms": [], "all_ms": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(f"{base}/ui/sign-in")
            page.get_by_label("Username").fill(READER)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/ui/projects")
            page.close()
            for n in range(rounds + 1):  # the first is a warm-up (server caches, JIT)
                page = _open(context, url)
                first = float(page.evaluate(_FIRST_MARK))
                page.wait_for_function(f"() => window.imagebankViewer.stats.loaded === {count}",
                                       timeout=300_000)
                stats = page.evaluate("window.imagebankViewer.stats")
                if stats["failed"] or stats["rendered"]:
                    raise RuntimeError(f"the viewer failed or rendered frames: {stats}")
                if n:
                    out["first_ms"].append(first)
                    out["all_ms"].append(float(stats["allLoadedMs"]))
                    log(f"  round {n}: first image {first:.0f} ms, whole series "
                        f"{stats['allLoadedMs']:.0f} ms")
                if n < rounds:
                    page.close()
            # fastest scroll, the series in memory (the last round's page)
            page.evaluate("window.imagebankViewer.go(0)")
            page.wait_for_function("() => window.imagebankViewer.stats.lastDrawn === 0")
            out["fastest"] = page.evaluate(_SCROLL_FASTEST)
            # keyboard presses, as fast as they are sent
            page.evaluate("window.imagebankViewer.go(0)")
            page.wait_for_function("() => window.imagebankViewer.stats.lastDrawn === 0")
            page.locator("#viewer-canvas").focus()
            drawn = page.evaluate("window.imagebankViewer.stats.drawn")
            started = time.perf_counter()
            for _ in range(count - 1):
                page.keyboard.press("ArrowDown")
            pressed = time.perf_counter() - started
            page.wait_for_function(f"() => window.imagebankViewer.stats.lastDrawn === {count - 1}")
            out["keyboard"] = {"elapsed": (time.perf_counter() - started) * 1000,
                               "pressed": pressed * 1000,
                               "drawn": page.evaluate("window.imagebankViewer.stats.drawn")
                               - drawn}
            page.close()
            # scroll at 20/s from the first image, the prefetch still running
            page = _open(context, url)
            out["at_rate"] = page.evaluate(_SCROLL_AT_RATE, SCROLL_RATE)
            page.close()
        finally:
            browser.close()
    return out


def measure(slices: int = 300, size: int = 512, *, rounds: int = ROUNDS,
            quiet_wait: float = 120, log: Any = print) -> list[Result]:
    source = ensure_built(fixture_dir(slices, size), lambda f: _build(f, slices, size),
                          f"a {slices}-slice series of {size}x{size}", log)
    run = fresh_run_dir("viewer")
    results: list[Result] = []
    try:
        shutil.copytree(source / "data", run / "data")
        series = _series(run / "data")
        count = len(series["frames"])
        if count != slices:
            raise RuntimeError(f"the viewer lists {count} images, not {slices}")
        frame_mb = size * size * 2 / 1e6
        with ImagebankServer(run / "data", project=None, log=run / "serve.log") as server:
            password = "bench-" + secrets.token_urlsafe(18)
            server.cli("user", "add", READER, "--password-stdin", stdin=password + "\n")
            server.cli("project", "grant", PROJECT, READER, "collaborator")
            if quiet_wait:
                wait_until_quiet(max_wait=quiet_wait, log=log)
            http_s = _baseline_http(server.url, series["frames"], server.headers, size)
            files_s = _baseline_files(sorted((source / "files").glob("*.dcm")))
            log(f"  baseline: {count} frames over one HTTP connection in {http_s:.2f} s; "
                f"the files read in {files_s:.3f} s")
            runs = _browser_runs(server.url, series["id"], password, count, rounds, log)
        first = statistics.median(runs["first_ms"])
        whole = statistics.median(runs["all_ms"]) / 1000
        shape = f"{count} slices of {size}x{size}"
        results.append(Result(
            GROUP, f"first image after opening the viewer ({shape}), median of {rounds}",
            first, "ms", detail=f"max {max(runs['first_ms']):.0f} ms",
            target=f"< {FIRST_IMAGE_TARGET_MS:.0f} ms", met=first < FIRST_IMAGE_TARGET_MS,
            extra={"times_ms": runs["first_ms"]}))
        results.append(Result(
            GROUP, "whole series prefetched (frames in memory)", count / whole, "frames/s",
            detail=f"{whole:.2f} s from opening, {count * frame_mb / whole:.0f} MB/s",
            ratio=(count / whole) / (count / http_s),
            ratio_of="Python, one connection", extra={"times_ms": runs["all_ms"]}))
        at_rate = runs["at_rate"]
        rate = at_rate["drawn"] / (at_rate["elapsed"] / 1000)
        skipped = (count - 1) - at_rate["drawn"]
        results.append(Result(
            GROUP, f"scroll at {SCROLL_RATE:.0f}/s from the first image (prefetch running)",
            rate, "slices/s", detail=f"{skipped} of {count - 1} slices skipped; "
            f"{at_rate['loaded']} in memory at the end",
            target=f"{SCROLL_RATE:.0f}/s, none skipped", met=skipped == 0, extra=at_rate))
        fastest = runs["fastest"]
        fastest_rate = fastest["drawn"] / (fastest["elapsed"] / 1000)
        results.append(Result(
            GROUP, "fastest scroll (in memory; next slice once the last is drawn)",
            fastest_rate, "slices/s", detail="one slice per animation frame at best",
            target=f">= {SCROLL_RATE:.0f}/s", met=fastest_rate >= SCROLL_RATE, extra=fastest))
        keys = runs["keyboard"]
        results.append(Result(
            GROUP, "keyboard scroll (ArrowDown as fast as Playwright sends it)",
            keys["drawn"] / (keys["elapsed"] / 1000), "slices/s",
            detail=f"{count - 1} presses in {keys['pressed']:.0f} ms, {keys['drawn']} slices "
            "drawn; informative row", extra=keys))
        results.append(Result(
            GROUP, "baseline: the same frames over HTTP from Python, one connection",
            count / http_s, "frames/s", detail=f"{http_s:.2f} s, "
            f"{count * frame_mb / http_s:.0f} MB/s"))
        results.append(Result(
            GROUP, "baseline: the series' files read from disk (page cache warm)",
            count / files_s, "files/s", detail="the floor of any way of serving them"))
        for r in results[:5]:
            log(f"  {r.name}: {r.value:,.1f} {r.unit} ({r.detail})")
    finally:
        remove(run)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        results = measure(20, 128, rounds=2, quiet_wait=0)
    else:
        results = measure()
    print(format_table(results))


if __name__ == "__main__":
    main()

// The series viewer (decision 0029). The page gives the images in display order (by position
// along the slice normal, decided on the server) and how to turn each instance's stored
// values into grey levels. Pixels come from the project's WADO-RS frames as raw values
// (multipart/related; type="application/octet-stream": the archive decodes compressed ones),
// kept in memory and windowed here through a lookup table, so a window change is instant.
// What this script cannot window itself (colour other than RGB, palettes, 1-bit, float) or
// what the archive cannot send raw comes as a rendered PNG, windowed by the server.
// Frames are prefetched around the current slice, then the whole series, a few requests at
// a time; a request that fails for a passing reason (no answer, a 5xx such as the audit
// trail's 503) is tried again after a growing wait, a few times; a 4xx is final. Drawing
// happens in requestAnimationFrame. DICOM strings reach the page through textContent only;
// UIDs reach URLs percent-encoded.
"use strict";
(() => {
  const root = document.getElementById("viewer");
  if (!root) return;
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const images = data.images;  // [instance index, frame, location (mm) or null]
  const instances = data.instances;
  const count = images.length;
  const CONCURRENCY = 5;  // of the six connections a browser opens to a host (one for the rest)
  const AHEAD = 10;  // slices either side always fetched, whatever the memory budget
  const CACHE_BYTES = 1024 * 1024 * 1024;
  const ZOOM_STEP = 1.25;
  const RAW_ACCEPT = 'multipart/related; type="application/octet-stream"';
  const MAX_ATTEMPTS = 4;  // of one frame, when the failure is worth a retry
  const RETRY_MS = 300;    // the wait before the first retry, doubled before each next one
  const MARKER_IDS = ["ov-left", "ov-top", "ov-right", "ov-bottom"];  // orientation markers

  const $ = (id) => document.getElementById(id);
  const canvas = $("viewer-canvas");
  const context = canvas.getContext("2d");
  const frameCanvas = document.createElement("canvas");
  const frameContext = frameCanvas.getContext("2d");
  const slider = $("slice");
  const centerInput = $("wl-center");
  const widthInput = $("wl-width");
  const status = $("viewer-status");
  const errorBox = $("viewer-error");
  const progress = $("prefetch");
  const progressText = $("prefetch-text");
  const presets = Array.from(document.querySelectorAll("button.preset"));

  const stats = {drawn: 0, draws: 0, loaded: 0, failed: 0, retries: 0, rendered: 0, bytes: 0,
                 firstImageMs: null, allLoadedMs: null, lastDrawn: -1};
  const state = {index: 0, center: null, width: null, zoom: 1, panX: 0, panY: 0,
                 direction: 1, windowSet: false};
  const cache = new Map();     // image index -> {kind: "raw", values, bytes} | {kind: "png", ...}
  const pending = new Set();   // image indices being fetched
  const failures = new Map();  // image index -> message (given up on until revisited)
  const attempts = new Map();  // image index -> failed attempts so far
  const waiting = new Set();   // image indices waiting for their retry
  let firstSettled = false;    // has the first request been answered (or failed)?
  let inflight = 0;
  let cacheBytes = 0;
  let scheduled = false;
  let painted = {index: -1, key: ""};  // what frameCanvas holds

  // -- pixel formats ----------------------------------------------------------------------
  function monochrome(inst) {
    return inst.samples === 1 && (inst.photometric === "MONOCHROME2"
                                  || inst.photometric === "MONOCHROME1")
      && [8, 16, 32].includes(inst.bitsAllocated);
  }
  function rawSupported(inst) {
    return monochrome(inst) || (inst.samples === 3 && inst.photometric === "RGB"
                                && inst.bitsAllocated === 8);
  }
  function typed(buffer, inst) {
    const bits = inst.bitsAllocated;
    if (bits === 8) return inst.signed ? new Int8Array(buffer) : new Uint8Array(buffer);
    if (bits === 16) return inst.signed ? new Int16Array(buffer) : new Uint16Array(buffer);
    return inst.signed ? new Int32Array(buffer) : new Uint32Array(buffer);
  }

  // -- fetching ---------------------------------------------------------------------------
  function frameUrl(i) {
    const [which, frame] = images[i];
    return `${data.base}/instances/${encodeURIComponent(instances[which].uid)}/frames/${frame}`;
  }

  function indexOf(bytes, pattern, from) {
    const first = pattern[0];
    outer: for (let i = bytes.indexOf(first, from); i >= 0 && i <= bytes.length - pattern.length;
                i = bytes.indexOf(first, i + 1)) {
      for (let j = 1; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
      return i;
    }
    return -1;
  }

  // The body of the first part of a multipart/related response (PS3.18 8.6.1.2).
  function firstPart(buffer, contentType) {
    const match = /boundary="?([^";,\s]+)"?/i.exec(contentType || "");
    if (!match) throw new Error("The archive's answer is not multipart.");
    const encoder = new TextEncoder();
    const bytes = new Uint8Array(buffer);
    const open = indexOf(bytes, encoder.encode(`--${match[1]}`), 0);
    const headersEnd = open < 0 ? -1 : indexOf(bytes, encoder.encode("\r\n\r\n"), open);
    if (headersEnd < 0) throw new Error("The archive's answer has no part.");
    const start = headersEnd + 4;
    const close = encoder.encode(`\r\n--${match[1]}`);
    // The only part ends where the close delimiter starts: look for it at the end first.
    let end = bytes.length - close.length - 4;
    if (end < start || indexOf(bytes.subarray(end, end + close.length), close, 0) !== 0) {
      end = indexOf(bytes, close, start);
    }
    if (end < start) throw new Error("The archive's answer is cut short.");
    return buffer.slice(start, end);
  }

  // An error that trying again may cure: no answer, an answer cut short, a 5xx.
  function passing(message) {
    const error = new Error(message);
    error.retry = true;
    return error;
  }

  // The API problem's words; worth a retry for a 5xx (the audit trail's 503 "try again
  // shortly", a restart), final for a 4xx.
  async function refused(response) {
    const error = new Error(await window.imagebank.problem(response));
    error.retry = response.status >= 500;
    return error;
  }

  async function fetchChecked(url, accept) {
    let response;
    try {
      response = await window.imagebank.api("GET", url, {headers: {Accept: accept}});
    } catch (e) {
      throw passing("The archive could not be reached.");
    }
    window.imagebank.checkSession(response);
    return response;
  }

  async function received(promise) {
    try {
      return await promise;
    } catch (e) {
      throw passing("The image was cut short on its way.");
    }
  }

  async function loadRaw(i, inst) {
    const response = await fetchChecked(frameUrl(i), RAW_ACCEPT);
    if (response.status === 406) return loadRendered(i);
    if (!response.ok) throw await refused(response);
    const buffer = await received(response.arrayBuffer());
    const body = firstPart(buffer, response.headers.get("content-type"));
    const values = typed(body, inst);
    const expected = inst.rows * inst.columns * inst.samples;
    if (values.length < expected) throw new Error("The frame is shorter than its header says.");
    return {kind: "raw", values, bytes: body.byteLength};
  }

  async function loadRendered(i) {
    const key = windowKey();  // the window the image is asked with
    const windowed = state.center !== null && state.width !== null;
    const query = windowed ? `?window=${state.center},${Math.max(1, state.width)}` : "";
    const response = await fetchChecked(`${frameUrl(i)}/rendered${query}`, "image/png");
    if (!response.ok) throw await refused(response);
    const blob = await received(response.blob());
    const bitmap = await createImageBitmap(blob);
    stats.rendered += 1;
    return {kind: "png", bitmap, key, bytes: bitmap.width * bitmap.height * 4};
  }

  async function load(i) {
    const inst = instances[images[i][0]];
    return rawSupported(inst) ? loadRaw(i, inst) : loadRendered(i);
  }

  function bytesPerImage() {
    const inst = instances[images[state.index][0]];
    return Math.max(1, inst.rows * inst.columns * inst.samples * (inst.bitsAllocated / 8));
  }

  // The missing image nearest the current one (ahead first); -1 when none should be fetched.
  function nextToFetch() {
    const reach = Math.max(AHEAD, Math.floor(CACHE_BYTES / bytesPerImage() / 2));
    for (let d = 0; d < count && d <= reach; d++) {
      for (const i of d === 0 ? [state.index]
                     : [state.index + state.direction * d, state.index - state.direction * d]) {
        if (i >= 0 && i < count && !cache.has(i) && !pending.has(i) && !failures.has(i)
            && !waiting.has(i)) return i;
      }
    }
    return -1;
  }

  // The first request has been answered, well or not: the others may start, and the header.
  function settled() {
    if (firstSettled) return;
    firstSettled = true;
    showHeader();
  }

  // A failed image: tried again after a growing wait if the failure may pass, else (or after
  // MAX_ATTEMPTS) given up on, with the words, until the user comes back to it.
  function failed(i, error) {
    const tries = (attempts.get(i) || 0) + 1;
    attempts.set(i, tries);
    if (error.retry && tries < MAX_ATTEMPTS) {
      stats.retries += 1;
      waiting.add(i);
      setTimeout(() => {
        waiting.delete(i);
        pump();
      }, RETRY_MS * 2 ** (tries - 1));
      return;
    }
    failures.set(i, error.message);
    stats.failed += 1;
    if (i === state.index) request();
  }

  function pump() {
    // The first image alone, so that it has the server to itself; then a few at a time.
    const limit = firstSettled ? CONCURRENCY : 1;
    while (inflight < limit) {
      const i = nextToFetch();
      if (i < 0) break;
      inflight += 1;
      pending.add(i);
      load(i).then((entry) => {
        settled();
        attempts.delete(i);
        cache.set(i, entry);
        cacheBytes += entry.bytes;
        stats.loaded += 1;
        stats.bytes += entry.bytes;
        evict();
        if (i !== state.index) return;
        // The first image is drawn at once; later ones at the next animation frame.
        if (stats.firstImageMs === null) draw();
        else request();
      }, (error) => {
        settled();
        failed(i, error);
      }).finally(() => {
        inflight -= 1;
        pending.delete(i);
        showProgress();
        pump();
      });
    }
  }

  // Past the memory budget, the images farthest from the current one go first.
  function evict() {
    if (cacheBytes <= CACHE_BYTES) return;
    const far = Array.from(cache.keys()).sort(
      (a, b) => Math.abs(b - state.index) - Math.abs(a - state.index));
    for (const i of far) {
      if (cacheBytes <= CACHE_BYTES) break;
      forget(i);
    }
  }

  function forget(i) {
    const entry = cache.get(i);
    if (!entry) return;
    if (entry.bitmap) entry.bitmap.close();
    cacheBytes -= entry.bytes;
    cache.delete(i);
  }

  let progressShown = -1;
  function showProgress() {
    const done = cache.size + failures.size;
    progress.value = cache.size;
    // The live text changes in tenths (and at the end), not on every image.
    const step = Math.floor((done / count) * 10);
    if (step !== progressShown || done === count) {
      progressShown = step;
      progressText.textContent = done === count
        ? `All ${count} loaded${failures.size ? ` (${failures.size} could not be)` : ""}`
        : `${cache.size} of ${count}`;
    }
    if (done === count && stats.allLoadedMs === null) stats.allLoadedMs = performance.now();
  }

  // -- windowing and drawing --------------------------------------------------------------
  function windowKey() { return `${state.center},${state.width}`; }

  let lut = {key: "", table: null, offset: 0, mask: 0, shift: 0};
  const GREY = new Uint32Array(256);
  for (let g = 0; g < 256; g++) GREY[g] = (0xff000000 | (g << 16) | (g << 8) | g) >>> 0;

  // Grey level of a modality value x: the LINEAR window of PS3.3 C.11.2.1.2.1.
  function grey(x, center, width) {
    const low = center - 0.5 - (width - 1) / 2;
    const high = center - 0.5 + (width - 1) / 2;
    if (x <= low) return 0;
    if (x > high) return 255;
    return Math.round(((x - (center - 0.5)) / (width - 1) + 0.5) * 255);
  }

  // The stored value -> RGBA table of an instance (up to 16 bits stored), for the window.
  function lookup(inst) {
    const stored = Math.min(inst.bitsStored, inst.bitsAllocated, 16);
    const invert = inst.photometric === "MONOCHROME1";
    const key = `${stored}|${inst.signed}|${inst.slope}|${inst.intercept}|${invert}|${windowKey()}`;
    if (lut.key === key) return lut;
    const size = 2 ** stored;
    const offset = inst.signed ? size / 2 : 0;
    const table = new Uint32Array(size);
    const width = Math.max(1, state.width);
    for (let j = 0; j < size; j++) {
      const g = grey((j - offset) * inst.slope + inst.intercept, state.center, width);
      table[j] = GREY[invert ? 255 - g : g];
    }
    lut = {key, table, offset, mask: size - 1, shift: 32 - stored};
    return lut;
  }

  // A window for an image without one: the range of its modality values.
  function autoWindow(entry, inst) {
    let low = Infinity;
    let high = -Infinity;
    const values = entry.values;
    for (let p = 0; p < values.length; p++) {
      const v = values[p];
      if (v < low) low = v;
      if (v > high) high = v;
    }
    const a = low * inst.slope + inst.intercept;
    const b = high * inst.slope + inst.intercept;
    return [(a + b) / 2, Math.max(1, Math.abs(b - a))];
  }

  function paint(entry, inst, target) {
    const out = new Uint32Array(target.data.buffer);
    const values = entry.values;
    const n = inst.rows * inst.columns;
    if (inst.samples === 3) {  // RGB, 8 bits: shown as it is (no window)
      const planar = inst.planar === 1;
      for (let p = 0; p < n; p++) {
        const r = planar ? values[p] : values[3 * p];
        const g = planar ? values[n + p] : values[3 * p + 1];
        const b = planar ? values[2 * n + p] : values[3 * p + 2];
        out[p] = (0xff000000 | (b << 16) | (g << 8) | r) >>> 0;
      }
      return;
    }
    if (inst.bitsAllocated > 16 || inst.bitsStored > 16) {  // 32 bits: computed per pixel
      const width = Math.max(1, state.width);
      const invert = inst.photometric === "MONOCHROME1";
      for (let p = 0; p < n; p++) {
        const g = grey(values[p] * inst.slope + inst.intercept, state.center, width);
        out[p] = GREY[invert ? 255 - g : g];
      }
      return;
    }
    const {table, offset, mask, shift} = lookup(inst);
    if (inst.signed) {
      for (let p = 0; p < n; p++) out[p] = table[((values[p] << shift) >> shift) + offset];
    } else {
      for (let p = 0; p < n; p++) out[p] = table[values[p] & mask];
    }
  }

  let imageData = null;
  function frameSource(entry, inst) {
    if (entry.kind === "png") {
      if (entry.key !== windowKey()) refreshRendered();
      return entry.bitmap;
    }
    const key = windowKey();
    if (painted.index !== state.index || painted.key !== key || painted.entry !== entry) {
      if (frameCanvas.width !== inst.columns || frameCanvas.height !== inst.rows) {
        frameCanvas.width = inst.columns;
        frameCanvas.height = inst.rows;
      }
      if (!imageData || imageData.width !== inst.columns || imageData.height !== inst.rows) {
        imageData = frameContext.createImageData(inst.columns, inst.rows);
      }
      paint(entry, inst, imageData);
      frameContext.putImageData(imageData, 0, 0);
      painted = {index: state.index, key, entry};
    }
    return frameCanvas;
  }

  function fitCanvas() {
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    return ratio;
  }

  function draw() {
    scheduled = false;
    const ratio = fitCanvas();
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    const entry = cache.get(state.index);
    const inst = instances[images[state.index][0]];
    if (entry && !state.windowSet) initialWindow(entry, inst);
    showOverlay();
    errorBox.textContent = failures.has(state.index)
      ? `This image could not be shown: ${failures.get(state.index)} Move to another slice `
        + "and back to try again." : "";
    if (!entry) {
      $("ov-zoom").textContent = failures.has(state.index) ? "" : "Loading…";
      pump();
      return;
    }
    if (stats.lastDrawn !== state.index) markPresets();
    const source = frameSource(entry, inst);
    const scale = Math.min(canvas.width / source.width, canvas.height / source.height)
      * state.zoom;
    context.imageSmoothingEnabled = scale < 4;
    context.setTransform(scale, 0, 0, scale,
                         canvas.width / 2 + state.panX * ratio - (source.width * scale) / 2,
                         canvas.height / 2 + state.panY * ratio - (source.height * scale) / 2);
    context.drawImage(source, 0, 0);
    stats.draws += 1;
    if (stats.lastDrawn !== state.index) {
      stats.drawn += 1;
      stats.lastDrawn = state.index;
    }
    if (stats.firstImageMs === null) {
      performance.mark("imagebank:first-image");
      stats.firstImageMs = performance.now();
      pump();  // the rest may start now
    }
  }

  function request() {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(draw);
    }
  }

  // -- state changes ----------------------------------------------------------------------
  // The window first shown: the instance's own (WindowCenter/Width), else the range of the
  // values; a rendered image without one keeps the server's choice (no window: null).
  function initialWindow(entry, inst) {
    let center = inst.center;
    let width = inst.width;
    if ((center === null || width === null) && entry.kind === "raw" && monochrome(inst)) {
      [center, width] = autoWindow(entry, inst);
    }
    state.initialWindow = center === null || width === null ? [null, null] : [center, width];
    setWindow(...state.initialWindow);
  }

  function setWindow(center, width) {
    const known = center !== null && width !== null;
    state.center = known ? Math.round(Number(center) * 100) / 100 : null;
    state.width = known ? Math.max(1, Math.round(Number(width) * 100) / 100) : null;
    state.windowSet = true;
    // An input being typed in keeps what is typed.
    if (document.activeElement !== centerInput) centerInput.value = known ? state.center : "";
    if (document.activeElement !== widthInput) widthInput.value = known ? state.width : "";
    markPresets();
    request();
  }

  // A preset's window for the image shown, or null when it has none: a CT preset's fixed
  // values (HU); "own": the instance's first WindowCenter/Width; "range": its values' range.
  function presetWindow(button) {
    if (button.dataset.center !== undefined) {
      return [Number(button.dataset.center), Number(button.dataset.width)];
    }
    const inst = instances[images[state.index][0]];
    if (button.dataset.preset === "own") {
      return inst.center !== null && inst.width !== null ? [inst.center, inst.width] : null;
    }
    const entry = cache.get(state.index);
    if (button.dataset.preset !== "range" || !entry || entry.kind !== "raw"
        || !monochrome(inst)) return null;
    if (!entry.range) entry.range = autoWindow(entry, inst);
    return entry.range;
  }

  // Which preset is the window shown (aria-pressed), and which the image shown has at all.
  function markPresets() {
    const round = (v) => Math.round(Number(v) * 100) / 100;
    for (const button of presets) {
      const preset = presetWindow(button);
      button.disabled = preset === null;
      const on = preset !== null && state.center !== null && round(preset[0]) === state.center
        && Math.max(1, round(preset[1])) === state.width;
      button.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }

  let renderTimer = 0;
  function refreshRendered() {
    // A rendered image has its window burned in: fetch the current one again, once the
    // window has stopped changing.
    clearTimeout(renderTimer);
    renderTimer = setTimeout(async () => {
      const i = state.index;
      const entry = cache.get(i);
      if (!entry || entry.kind !== "png" || entry.key === windowKey()) return;
      try {
        const fresh = await loadRendered(i);
        forget(i);
        cache.set(i, fresh);
        cacheBytes += fresh.bytes;
        if (i === state.index) request();
      } catch (error) {
        errorBox.textContent = `This image could not be shown: ${error.message}`;
      }
    }, 150);
  }

  let statusTimer = 0;
  function go(target) {
    const next = Math.max(0, Math.min(count - 1, Math.round(target)));
    if (next === state.index) return;
    if (failures.has(next)) {  // given up on: coming back to it tries again
      failures.delete(next);
      attempts.delete(next);
    }
    state.direction = next > state.index ? 1 : -1;
    state.index = next;
    slider.value = String(next + 1);
    slider.setAttribute("aria-valuetext", `Slice ${next + 1} of ${count}`);
    $("slice-out").textContent = `${next + 1} / ${count}`;
    request();
    pump();
    // The live region is told once scrolling pauses, not sixty times a second.
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => {
      status.textContent = `Slice ${state.index + 1} of ${count}`;
    }, 120);
    scheduleHeader();
  }

  function zoomBy(factor, atX, atY) {
    const zoom = Math.max(0.1, Math.min(20, state.zoom * factor));
    const applied = zoom / state.zoom;
    // Keep the point under (atX, atY) (CSS pixels from the centre) where it is.
    state.panX = atX - (atX - state.panX) * applied;
    state.panY = atY - (atY - state.panY) * applied;
    state.zoom = zoom;
    request();
  }

  function reset() {
    state.zoom = 1;
    state.panX = 0;
    state.panY = 0;
    if (state.initialWindow) setWindow(...state.initialWindow);
    request();
  }

  function showOverlay() {
    const [which, frame, location] = images[state.index];
    const inst = instances[which];
    $("ov-slice").textContent = `Slice ${state.index + 1}/${count}`;
    $("ov-pos").textContent = location !== null ? `Position ${location.toFixed(2)} mm`
      : `Instance ${inst.number ?? "?"}${inst.frames > 1 ? `, frame ${frame}` : ""}`;
    $("ov-wl").textContent = !state.windowSet ? ""
      : state.center === null ? "Window: the image's own" : `W ${state.width} L ${state.center}`;
    $("ov-zoom").textContent = `Zoom ${Math.round(state.zoom * 100)}%`;
    // Orientation markers (left, top, right, bottom), computed on the server from
    // ImageOrientationPatient; zoom and pan do not rotate, so they hold at the edges.
    const markers = data.markersPerImage ? data.markersPerImage[state.index] : data.markers;
    MARKER_IDS.forEach((id, k) => { $(id).textContent = markers ? markers[k] : ""; });
  }

  // -- the DICOM header -------------------------------------------------------------------
  const headers = new Map();  // SOP Instance UID -> Promise of its DICOM JSON
  let headerTimer = 0;
  let headerShown = "";
  const MAX_ITEMS = 10;

  function scheduleHeader() {
    clearTimeout(headerTimer);
    headerTimer = setTimeout(showHeader, 200);
  }

  function metadata(uid) {
    if (!headers.has(uid)) {
      const url = `${data.base}/instances/${encodeURIComponent(uid)}/metadata`;
      const promise = fetchChecked(url, "application/dicom+json").then(async (response) => {
        if (!response.ok) throw new Error(await window.imagebank.problem(response));
        const body = await response.json();
        return Array.isArray(body) ? body[0] || {} : body;
      });
      promise.catch(() => headers.delete(uid));
      headers.set(uid, promise);
    }
    return headers.get(uid);
  }

  function text(value, vr) {
    if (value === null || value === undefined) return "";
    if (vr === "PN" && typeof value === "object") {
      return [value.Alphabetic, value.Ideographic, value.Phonetic]
        .filter((v) => v !== undefined).join("=");
    }
    return String(value);
  }

  function headerRows(dataset, depth, rows) {
    for (const tag of Object.keys(dataset).sort()) {
      const element = dataset[tag] || {};
      const vr = element.vr || "";
      const group = parseInt(tag.slice(0, 4), 16);
      const keyword = data.keywords[tag] || (group % 2 === 1 ? "(private)" : "");
      let value;
      if (vr === "SQ") {
        const items = element.Value || [];
        value = `${items.length} item${items.length === 1 ? "" : "s"}`;
      } else if (element.BulkDataURI !== undefined) {
        value = "(bulk data)";
      } else if (element.InlineBinary !== undefined) {
        value = "(binary data)";
      } else {
        value = (element.Value || []).map((v) => text(v, vr)).join("\\");
      }
      rows.push({tag: `(${tag.slice(0, 4)},${tag.slice(4)})`, keyword, vr, value, depth});
      if (vr === "SQ") {
        const items = element.Value || [];
        items.slice(0, MAX_ITEMS).forEach((item, n) => {
          rows.push({tag: "", keyword: `Item ${n + 1}`, vr: "", value: "", depth: depth + 1,
                     item: true});
          headerRows(item || {}, depth + 1, rows);
        });
        if (items.length > MAX_ITEMS) {
          rows.push({tag: "", keyword: `… ${items.length - MAX_ITEMS} more items`, vr: "",
                     value: "", depth: depth + 1, item: true});
        }
      }
    }
    return rows;
  }

  async function showHeader() {
    const inst = instances[images[state.index][0]];
    if (headerShown === inst.uid) return;
    const stateLine = $("header-state");
    try {
      const dataset = await metadata(inst.uid);
      if (instances[images[state.index][0]].uid !== inst.uid) return;  // moved on meanwhile
      const body = document.createDocumentFragment();
      for (const row of headerRows(dataset, 0, [])) {
        const tr = document.createElement("tr");
        tr.dataset.depth = String(Math.min(row.depth, 3));
        if (row.item) tr.className = "item";
        for (const cell of [row.tag, row.keyword, row.vr, row.value]) {
          const td = document.createElement("td");
          td.textContent = cell;
          tr.appendChild(td);
        }
        body.appendChild(tr);
      }
      $("header-rows").replaceChildren(body);
      $("header-uid").textContent = inst.uid;
      headerShown = inst.uid;
      stateLine.textContent = "";
      filterHeader();
    } catch (error) {
      stateLine.textContent = `The header could not be loaded: ${error.message}`;
    }
  }

  function filterHeader() {
    const needle = $("header-filter").value.trim().toLowerCase();
    let shown = 0;
    const rows = $("header-rows").rows;
    for (const row of rows) {
      const match = !needle || row.textContent.toLowerCase().includes(needle);
      row.hidden = !match;
      if (match) shown += 1;
    }
    if (needle) $("header-state").textContent = `${shown} of ${rows.length} elements match.`;
  }

  // -- input --------------------------------------------------------------------------------
  const help = $("viewer-help");
  function openHelp() {
    if (!help.open) help.showModal();
  }
  $("help-open").addEventListener("click", openHelp);

  function applyPreset(button) {
    const preset = presetWindow(button);
    if (preset !== null) setWindow(...preset);
  }
  presets.forEach((button) => button.addEventListener("click", () => applyPreset(button)));
  $("zoom-in").addEventListener("click", () => zoomBy(ZOOM_STEP, 0, 0));
  $("zoom-out").addEventListener("click", () => zoomBy(1 / ZOOM_STEP, 0, 0));
  $("view-reset").addEventListener("click", reset);
  slider.addEventListener("input", () => go(Number(slider.value) - 1));
  for (const input of [centerInput, widthInput]) {
    input.addEventListener("input", () => {
      const center = Number(centerInput.value);
      const width = Number(widthInput.value);
      if (centerInput.value !== "" && widthInput.value !== "" && Number.isFinite(center)
          && Number.isFinite(width) && width >= 1) setWindow(center, width);
    });
  }
  $("header-filter").addEventListener("input", filterHeader);

  const KEYS = {
    ArrowDown: () => go(state.index + 1), ArrowUp: () => go(state.index - 1),
    PageDown: () => go(state.index + 10), PageUp: () => go(state.index - 10),
    Home: () => go(0), End: () => go(count - 1),
    "+": () => zoomBy(ZOOM_STEP, 0, 0), "=": () => zoomBy(ZOOM_STEP, 0, 0),
    "-": () => zoomBy(1 / ZOOM_STEP, 0, 0), r: reset, R: reset, "?": openHelp,
  };
  const PAN = {ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1]};
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, dialog")) return;
    let action = null;
    if (event.shiftKey && PAN[event.key]) {
      const [dx, dy] = PAN[event.key];
      action = () => {
        state.panX += dx * 20;
        state.panY += dy * 20;
        request();
      };
    } else if (/^[1-4]$/.test(event.key) && presets[Number(event.key) - 1]) {
      action = () => applyPreset(presets[Number(event.key) - 1]);
    } else {
      action = KEYS[event.key] || null;
    }
    if (!action) return;
    event.preventDefault();
    action();
  });

  let wheelRest = 0;
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const rect = canvas.getBoundingClientRect();
    if (event.ctrlKey) {
      zoomBy(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP,
             event.clientX - rect.left - rect.width / 2,
             event.clientY - rect.top - rect.height / 2);
      return;
    }
    // One slice per wheel notch (an event of 100 pixels or more, or in lines); the small
    // steps of a trackpad add up to one slice per 100 pixels.
    if (event.deltaMode !== 0 || Math.abs(event.deltaY) >= 100) {
      wheelRest = 0;
      if (event.deltaY) go(state.index + Math.sign(event.deltaY));
      return;
    }
    wheelRest += event.deltaY;
    if (Math.abs(wheelRest) >= 100) {
      go(state.index + Math.sign(wheelRest));
      wheelRest = 0;
    }
  }, {passive: false});

  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.button !== 2) return;
    canvas.setPointerCapture(event.pointerId);
    drag = {x: event.clientX, y: event.clientY, button: event.button,
            center: state.center, width: state.width, panX: state.panX, panY: state.panY};
    canvas.focus();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (drag.button === 2 && drag.center !== null) {
      const speed = Math.max(0.5, drag.width / 300);
      setWindow(drag.center + dy * speed, Math.max(1, drag.width + dx * speed));
    } else if (drag.button === 0) {
      state.panX = drag.panX + dx;
      state.panY = drag.panY + dy;
      request();
    }
  });
  const endDrag = () => { drag = null; };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  new ResizeObserver(request).observe(canvas);

  window.imagebankViewer = {
    stats, go, setWindow,
    get index() { return state.index; },
    get window() { return [state.center, state.width]; },
    count,
  };
  showOverlay();
  pump();
  request();
})();

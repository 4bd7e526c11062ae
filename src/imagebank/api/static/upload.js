// Upload files and folders into a project through the REST API, one file a request
// (POST /api/v1/projects/{project}/instances), a few at a time, with XMLHttpRequest's upload
// progress. Folders dropped are walked (webkitGetAsEntry); the folder picker gives its files.
// Thousands of files: the page keeps counts and the last few rows, never one row per file.
// File names are shown with textContent only and never go into a URL: each file's path goes
// in the X-Imagebank-Filename header (percent-encoded), the source its quarantine item shows.
// Stopping counts what was left as not sent; a request stopped after its whole file was sent
// may have been stored, and is said to be of unknown outcome.
"use strict";
(() => {
  const root = document.getElementById("upload");
  if (!root) return;
  const project = root.dataset.project;
  const maxSize = Number(root.dataset.maxSize);
  const address = `/api/v1/projects/${encodeURIComponent(project)}/instances`;
  const IN_FLIGHT = 3;      // uploads at once
  const SHOWN = 50;         // rows of "Latest files"
  const PROBLEMS = 100;     // rows of "Files not stored"
  const STUDY_LINKS = 50;   // studies linked when done
  const ANNOUNCE_MS = 10000; // the live summary, at most this often while sending

  const $ = (id) => document.getElementById(id);
  const queue = [];
  const sending = new Map();  // XMLHttpRequest -> bytes of it sent so far
  const counts = {stored: 0, duplicate: 0, quarantined: 0, failed: 0, notsent: 0, unknown: 0};
  const studies = new Set();
  let files = 0, done = 0, bytes = 0, bytesDone = 0, walking = 0, stopped = false;
  let unreadable = 0;  // folders of a drop that could not be read
  let started = false, lastAnnounce = 0, drawPending = false;

  const number = (n) => n.toLocaleString("en-GB");
  const status = (text) => { $("upload-status").textContent = text; };

  // -- the queue -----------------------------------------------------------------------
  function begin() {
    if (started) return;
    started = true;
    status("Sending files…");
    lastAnnounce = Date.now();
    $("upload-stop").hidden = false;
  }

  function enqueue(file, path) {
    if (stopped) return;
    begin();
    queue.push({file, path: path || file.name});
    files += 1;
    bytes += file.size;
    pump();
    draw();
  }

  function pump() {
    while (!stopped && sending.size < IN_FLIGHT && queue.length) send(queue.shift());
    if (started && !sending.size && !walking && (stopped || !queue.length)) finish();
  }

  function send(item) {
    if (item.file.size > maxSize) {
      settle(item, "failed", "Not sent", `Larger than the limit of ${number(maxSize)} bytes.`,
             true, 0);
      return;
    }
    const xhr = new XMLHttpRequest();
    let uploaded = false;  // has the whole file gone? (then the server may have stored it)
    sending.set(xhr, 0);
    xhr.open("POST", address);
    const zip = /\.zip$/i.test(item.file.name);
    xhr.setRequestHeader("Content-Type", zip ? "application/zip" : "application/dicom");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-Imagebank-Filename", encodeURIComponent(item.path));
    if (window.imagebank.csrf) xhr.setRequestHeader("X-CSRF-Token", window.imagebank.csrf);
    xhr.upload.addEventListener("progress", (event) => {
      sending.set(xhr, event.loaded);
      draw();
    });
    xhr.upload.addEventListener("load", () => { uploaded = true; });
    xhr.addEventListener("load", () => {
      sending.delete(xhr);
      answer(item, xhr, zip);
    });
    xhr.addEventListener("error", () => {
      sending.delete(xhr);
      settle(item, "failed", "Failed", "The connection to the server failed.");
    });
    xhr.addEventListener("abort", () => {
      const sent = sending.get(xhr) || 0;
      sending.delete(xhr);
      // Wholly sent: the upload's "load" event, or its last progress event counted every byte
      // (the server may have the file before the browser has said so).
      if (uploaded || (item.file.size > 0 && sent >= item.file.size)) {
        settle(item, "unknown", "Outcome unknown", "Stopped after the whole file was sent: it " +
               "may have been stored. Look for it in the project, or in its quarantine.");
      } else {
        settle(item, "notsent", "Not sent", "Stopped before all of it was sent.", true, sent);
      }
    });
    xhr.send(item.file);
  }

  // -- an answer -----------------------------------------------------------------------
  function body(xhr) {
    try { return JSON.parse(xhr.responseText); } catch (e) { return null; }
  }

  function answer(item, xhr, zip) {
    const data = body(xhr) || {};
    if (xhr.status === 401) {
      stop();
      settle(item, "failed", "Failed", "Your session has ended; sign in again.");
      return;
    }
    if (xhr.status === 200) {
      (data.study_ids || []).forEach((id) => studies.add(id));
      if (zip) {
        const parts = [];
        for (const [key, word] of [["stored", "stored"], ["duplicates", "already there"],
          ["quarantined", "quarantined"], ["conflicts", "in conflict"]]) {
          if (data[key]) parts.push(`${number(data[key])} ${word}`);
        }
        counts.stored += data.stored || 0;
        counts.duplicate += data.duplicates || 0;
        counts.quarantined += (data.quarantined || 0) + (data.conflicts || 0);
        const bad = (data.quarantined || 0) + (data.conflicts || 0);
        settle(item, bad ? "quarantined" : "stored",
               `Zip archive: ${parts.join(", ") || "no files"}`, bad ? reasons(data) : "", false);
        return;
      }
      if (data.stored) settle(item, "stored", "Stored", "");
      else settle(item, "duplicate", "Already there", "The same file is archived already.");
      return;
    }
    const summary = data.summary;
    if ((xhr.status === 400 || xhr.status === 409) && summary) {
      const problem = (summary.problems || [])[0] || {};
      const reason = problem.reason || Object.keys(summary.reasons || {})[0] || "rejected";
      settle(item, "quarantined", `Quarantined: ${reason.replace(/_/g, " ")}`,
             problem.message || data.detail || "");
      return;
    }
    settle(item, "failed", "Failed",
           data.detail ? String(data.detail) : `The request failed (HTTP ${xhr.status}).`);
  }

  function reasons(data) {
    return (data.problems || []).slice(0, 3)
      .map((p) => `${p.reason.replace(/_/g, " ")}: ${p.message}`).join(" ");
  }

  // One file's outcome: counted (unless a zip counted its members), listed, and the next.
  // ``sent``: its bytes that went (all of them, unless it was not sent).
  function settle(item, outcome, words, detail, count = true, sent = item.file.size) {
    if (count) counts[outcome] += 1;
    done += 1;
    bytesDone += sent;
    row($("upload-list"), SHOWN, [item.path, number(item.file.size), words, detail],
        outcome, [false, true, false, false]);
    if (outcome !== "stored" && outcome !== "duplicate") {
      problem([item.path, words, detail], outcome);
    }
    draw();
    pump();
  }

  function problem(cells, outcome) {
    row($("upload-problems"), PROBLEMS, cells, outcome);
    const listed = counts.quarantined + counts.failed + counts.notsent + counts.unknown
      + unreadable;
    $("upload-problems-note").textContent =
      `${number(listed)} so far; the last ${PROBLEMS} are listed.`;
  }

  function row(table, keep, cells, outcome, numeric = []) {
    const tbody = table.tBodies[0];
    const tr = document.createElement("tr");
    tr.dataset.outcome = outcome;
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (numeric[i]) td.className = "n";
      tr.appendChild(td);
    });
    tbody.insertBefore(tr, tbody.firstChild);
    while (tbody.rows.length > keep) tbody.deleteRow(tbody.rows.length - 1);
  }

  // -- drawing (at most once a frame) ---------------------------------------------------
  function draw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      let sent = bytesDone;
      for (const loaded of sending.values()) sent += loaded;
      sent = Math.min(sent, bytes);
      $("upload-bytes").max = Math.max(bytes, 1);
      $("upload-bytes").value = sent;
      $("upload-bytes-text").textContent = `${number(sent)} of ${number(bytes)} bytes`;
      $("upload-done").max = Math.max(files, 1);
      $("upload-done").value = done;
      $("upload-done-text").textContent = `${number(done)} of ${number(files)} files`;
      for (const [key, value] of Object.entries(counts)) {
        root.querySelector(`[data-count="${key}"]`).textContent = number(value);
      }
      if (started && done < files && Date.now() - lastAnnounce > ANNOUNCE_MS) {
        lastAnnounce = Date.now();
        status(`Sending: ${number(done)} of ${number(files)} files done.`);
      }
    });
  }

  function summary() {
    const parts = [`${number(counts.stored)} stored`, `${number(counts.duplicate)} already there`,
                   `${number(counts.quarantined)} quarantined`, `${number(counts.failed)} failed`];
    if (counts.notsent) parts.push(`${number(counts.notsent)} not sent`);
    if (counts.unknown) parts.push(`${number(counts.unknown)} of unknown outcome`);
    const folders = unreadable ? ` ${number(unreadable)} folder${unreadable === 1 ? "" : "s"} ` +
      "could not be read." : "";
    return `${parts.join(", ")}.${folders}`;
  }

  function finish() {
    started = false;
    $("upload-stop").hidden = true;
    status(`${stopped ? "Stopped" : "Done"}: ${number(done)} of ${number(files)} files. ` +
           summary());
    draw();
    showStudies().catch(() => { /* the links keep the studies' IDs as their words */ });
  }

  // Stop: what is queued is counted as not sent (one line for them all), what is being
  // sent is stopped (each said by its abort event).
  function stop() {
    stopped = true;
    const left = queue.splice(0);
    if (left.length) {
      counts.notsent += left.length;
      done += left.length;
      problem([`${number(left.length)} file${left.length === 1 ? "" : "s"} still waiting`,
               "Not sent", "Stopped before they were sent."], "notsent");
    }
    for (const xhr of [...sending.keys()]) xhr.abort();
    draw();
    pump();
  }

  // Links to the studies that received files, named by date and description (from the API;
  // the link itself carries the study's internal ID only).
  async function showStudies() {
    if (!studies.size) return;
    const box = $("upload-studies");
    const list = box.querySelector("ul");
    list.textContent = "";
    const ids = [...studies].slice(0, STUDY_LINKS);
    for (const id of ids) {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.href = `/ui/projects/${encodeURIComponent(project)}/studies/${encodeURIComponent(id)}`;
      link.textContent = `Study ${id.slice(0, 8)}`;
      link.dataset.study = id;
      li.appendChild(link);
      list.appendChild(li);
    }
    if (studies.size > ids.length) {
      const li = document.createElement("li");
      li.textContent = `… and ${number(studies.size - ids.length)} more.`;
      list.appendChild(li);
    }
    box.hidden = false;
    for (const link of list.querySelectorAll("a[data-study]")) {
      try {
        const response = await window.imagebank.api(
          "GET", `/api/v1/projects/${encodeURIComponent(project)}/studies/${link.dataset.study}`);
        if (!response.ok) continue;
        const study = await response.json();
        const words = [study.study_date || "no date", study.study_description,
                       study.modalities_in_study].filter(Boolean);
        link.textContent = words.join(" · ");
      } catch (e) { /* the ID stays as the link's words */ }
    }
  }

  // -- choosing files ------------------------------------------------------------------
  function chosen(input) {
    stopped = false;
    for (const file of input.files) enqueue(file, file.webkitRelativePath || file.name);
    input.value = "";
  }
  $("upload-files").addEventListener("change", (e) => chosen(e.target));
  $("upload-folder").addEventListener("change", (e) => chosen(e.target));
  $("upload-stop").addEventListener("click", () => stop());

  const readEntries = (reader) => new Promise((ok, fail) => reader.readEntries(ok, fail));
  const fileOf = (entry) => new Promise((ok, fail) => entry.file(ok, fail));

  async function walk(entry, prefix) {
    if (stopped) return;
    if (entry.isFile) {
      try {
        enqueue(await fileOf(entry), prefix + entry.name);
      } catch (e) {
        begin();
        files += 1;
        settle({file: {size: 0, name: entry.name}, path: prefix + entry.name}, "failed",
               "Failed", "The browser could not read this file.");
      }
      return;
    }
    if (!entry.isDirectory) return;
    const reader = entry.createReader();
    const path = `${prefix}${entry.name}/`;
    for (;;) {
      let batch;
      try {
        batch = await readEntries(reader);  // at most 100 at a time: read until empty
      } catch (e) {
        folderUnread(path);
        return;
      }
      if (!batch.length) break;
      for (const child of batch) await walk(child, path);
    }
  }

  // A folder the browser could not read (moved, no permission): said, with what it means.
  function folderUnread(path) {
    begin();
    unreadable += 1;
    problem([path, "Not read", "The browser could not read this folder: the files in it " +
             "(or the rest of them) were not sent."], "unread");
    draw();
  }

  const zone = $("drop-zone");
  // A file dropped beside the zone would make the browser open it: not on this page.
  for (const type of ["dragover", "drop"]) {
    document.addEventListener(type, (e) => e.preventDefault());
  }
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    stopped = false;
    // The entries must be taken now: the drop's item list is emptied once the event ends.
    const items = [...e.dataTransfer.items].filter((i) => i.kind === "file");
    const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
    if (!entries.length || entries.some((entry) => entry === null)) {
      for (const file of e.dataTransfer.files) enqueue(file, file.name);
      return;
    }
    walking += 1;
    if (!started) status("Reading the folders…");
    try {
      for (const entry of entries) await walk(entry, "");
    } catch (error) {
      begin();
      unreadable += 1;
      problem(["(what was dropped)", "Not read",
               `The browser could not read it: ${error.message}`], "unread");
    } finally {
      walking -= 1;
      pump();
    }
  });
})();

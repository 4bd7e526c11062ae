// The jobs page and a job's page: while any job shown is queued or running, the REST API is
// asked every second (GET /api/v1/jobs, or /api/v1/jobs/{id}) and each row is redrawn in
// place: state, progress bar, message, Cancel or Download. Polling stops when nothing runs,
// and pauses while the page is hidden (every request is audited). When the API fails, the
// error is said once and the wait doubles (up to 30 s) until it answers again; a job that is
// gone (404) is marked so and no longer asked for; a session that has ended (401) goes to
// the sign-in page.
"use strict";
(() => {
  const table = document.getElementById("jobs");
  if (!table) return;
  const detail = table.classList.contains("job-detail");
  const status = document.getElementById("jobs-status");
  const ACTIVE = ["queued", "running"];
  const POLL_MS = 1000;
  const MAX_WAIT_MS = 30000;
  const KINDS = JSON.parse(table.dataset.kinds);  // ui_work.JOB_KINDS
  let timer = null;
  let failures = 0;       // polls that failed in a row
  let signedOut = false;

  const rows = () => [...table.tBodies[0].rows];
  const kind = (job) => KINDS[job.kind] || job.kind;
  const what = (job) => `${kind(job).toLowerCase()} job ${job.id.slice(0, 8)}`;
  const when = (iso) => (iso ? `${iso.replace("T", " ").slice(0, 19)} UTC` : "");

  function progress(cell, job) {
    let bar = cell.querySelector("progress");
    if (!bar) {
      bar = document.createElement("progress");
      cell.prepend(bar);
    }
    bar.setAttribute("aria-label", `Progress of the ${what(job)}`);
    const total = job.progress_total;
    if (total) {
      bar.max = total;
      bar.value = Math.min(job.progress_done, total);
    } else if (job.state === "succeeded") {
      bar.max = 1;
      bar.value = 1;
    } else {
      bar.removeAttribute("value");  // indeterminate: the total is not known yet
    }
    let text = cell.querySelector(".count");
    if (!text) {
      text = document.createElement("span");
      text.className = "n count";
      cell.append(" ", text);
    }
    text.textContent = total ? `${job.progress_done} of ${total}`
      : (job.progress_done ? String(job.progress_done) : "");
  }

  function actions(cell, job) {
    cell.textContent = "";
    const hidden = (words) => {
      const span = document.createElement("span");
      span.className = "sr-only";
      span.textContent = words;
      return span;
    };
    if (ACTIVE.includes(job.state)) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "danger";
      button.dataset.action = "cancel";
      button.append("Cancel", hidden(` the ${what(job)}`));
      cell.append(button);
    } else if (job.state === "succeeded" && job.result && job.result.file) {
      const link = document.createElement("a");
      link.href = `/api/v1/jobs/${encodeURIComponent(job.id)}/result`;
      link.setAttribute("download", "");
      link.append("Download", hidden(` the result of the ${what(job)}`));
      cell.append(link);
    }
  }

  function newRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const first = tr.insertCell();
    const link = document.createElement("a");
    link.href = `/ui/jobs/${encodeURIComponent(job.id)}`;
    link.textContent = kind(job);
    const created = document.createElement("span");
    created.className = "muted when";
    created.textContent = when(job.created_at);
    first.append(link, " ", created);
    const project = tr.insertCell();
    if (job.project_id) {
      const a = document.createElement("a");
      a.href = `/ui/projects/${encodeURIComponent(job.project_id)}`;
      a.textContent = job.project_id;
      project.append(a);
    }
    for (const name of ["state", "progress", "message", "actions"]) {
      tr.insertCell().className = name;
    }
    table.tBodies[0].prepend(tr);
    table.hidden = false;
    const empty = document.getElementById("jobs-empty");
    if (empty) empty.hidden = true;
    return tr;
  }

  function update(job) {
    const tr = rows().find((r) => r.dataset.job === job.id) || (detail ? null : newRow(job));
    if (!tr) return;
    const before = tr.dataset.state;
    tr.querySelector(".state").textContent = job.state;
    progress(tr.querySelector(".progress"), job);
    const message = tr.querySelector(".message");
    message.textContent = job.error || job.message || "";
    message.classList.toggle("error", Boolean(job.error));
    if (before !== job.state) {
      // Redrawn only when the state changes, so that a focused button stays put.
      actions(tr.querySelector(".actions"), job);
      tr.dataset.state = job.state;
      if (before && !ACTIVE.includes(job.state)) {
        status.textContent = `The ${what(job)} ${job.state}${job.error ? `: ${job.error}` : "."}`;
      }
    }
    if (detail) {
      for (const field of ["started_at", "finished_at"]) {
        const dd = document.querySelector(`[data-field="${field}"]`);
        if (dd) dd.textContent = when(job[field]) || "not yet";
      }
      const attempts = document.querySelector('[data-field="attempts"]');
      if (attempts) attempts.textContent = String(job.attempts);
      const waiting = document.getElementById("job-no-result");
      if (waiting && !ACTIVE.includes(job.state)) {
        waiting.textContent = "The job has ended: ";
        const again = document.createElement("a");
        again.href = window.location.pathname;
        again.textContent = "show what it did";
        waiting.append(again, ".");
      }
    }
  }

  const running = () => rows().some((r) => ACTIVE.includes(r.dataset.state));

  // A job the API no longer knows: said in its row, and not asked for again.
  function gone(tr) {
    tr.dataset.state = "gone";
    tr.querySelector(".state").textContent = "gone";
    const message = tr.querySelector(".message");
    message.textContent = "This job no longer exists.";
    message.classList.remove("error");
    tr.querySelector(".actions").textContent = "";
    const bar = tr.querySelector("progress");
    if (bar) bar.remove();
    status.textContent = "A job followed here no longer exists.";
  }

  // The API's JSON answer; null for 404 (gone). Throws with the API's words otherwise.
  async function read(url) {
    let response;
    try {
      response = await window.imagebank.api("GET", url);
    } catch (e) {
      throw new Error("The server could not be reached.");
    }
    if (response.status === 401) signedOut = true;
    window.imagebank.checkSession(response);
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(await window.imagebank.problem(response));
    return response.json();
  }

  async function follow(tr) {
    const job = await read(`/api/v1/jobs/${encodeURIComponent(tr.dataset.job)}`);
    if (job === null) gone(tr);
    else update(job);
  }

  async function poll() {
    timer = null;
    if (document.hidden || signedOut) return;  // resumed by visibilitychange
    try {
      if (detail) {
        await follow(rows()[0]);
      } else {
        const jobs = await read("/api/v1/jobs") || [];
        for (const job of jobs.slice().reverse()) update(job);
        // A running job shown here but no longer in the list is asked for by itself.
        const listed = new Set(jobs.map((job) => job.id));
        for (const tr of rows()) {
          if (ACTIVE.includes(tr.dataset.state) && !listed.has(tr.dataset.job)) await follow(tr);
        }
      }
      if (failures) status.textContent = "The jobs are followed again.";
      failures = 0;
    } catch (error) {
      if (signedOut) return;
      failures += 1;
      if (failures === 1) {  // said once, not at every try
        status.textContent = `The jobs could not be updated: ${error.message} ` +
          "Trying again, less often.";
      }
    }
    schedule();
  }

  function schedule() {
    if (timer === null && running() && !document.hidden && !signedOut) {
      timer = setTimeout(poll, Math.min(POLL_MS * 2 ** failures, MAX_WAIT_MS));
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) schedule();
  });

  table.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action=cancel]");
    if (!button) return;
    const tr = button.closest("tr[data-job]");
    if (!window.confirm("Cancel this job? What it has done so far stays done.")) return;
    button.disabled = true;
    try {
      const response = await window.imagebank.call("DELETE", `/api/v1/jobs/${tr.dataset.job}`);
      const job = await response.json();
      update(job);
      status.textContent = `Cancelled the ${what(job)}.`;
      (tr.querySelector("a") || status).focus();
    } catch (error) {
      status.textContent = error.message;
      button.disabled = false;
    }
  });

  schedule();
})();

// A project's quarantine: Retry (POST .../quarantine/{item}/retry) and Discard (DELETE
// .../quarantine/{item}, after a confirmation) for each item, through the REST API. The
// outcome is said in the live region and the item's row changes in place.
"use strict";
(() => {
  const root = document.getElementById("quarantine");
  if (!root) return;
  const project = root.dataset.project;
  const base = `/api/v1/projects/${encodeURIComponent(project)}/quarantine`;
  const status = document.getElementById("quarantine-status");
  const table = document.getElementById("quarantine-items");

  function say(text, bad = false) {
    status.textContent = text;
    status.classList.toggle("error", bad);
  }

  // The counts by reason follow the rows (a reason's row goes when it reaches 0).
  function count(reason, delta) {
    const reasons = document.getElementById("quarantine-reasons");
    let row = reasons && [...reasons.tBodies[0].rows].find((r) => r.dataset.reason === reason);
    if (!row && reasons && delta > 0) {
      row = reasons.tBodies[0].insertRow();
      row.dataset.reason = reason;
      const th = document.createElement("th");
      th.scope = "row";
      const code = document.createElement("code");
      code.textContent = reason;
      th.appendChild(code);
      row.appendChild(th);
      row.insertCell().className = "n";
      row.cells[1].textContent = "0";
    }
    if (row) {
      const n = Number(row.cells[1].textContent) + delta;
      if (n <= 0) row.remove();
      else row.cells[1].textContent = String(n);
    }
    const total = document.getElementById("quarantine-total");
    const left = Number(total.dataset.total) + delta;
    total.dataset.total = String(left);
    total.textContent = `${left} item${left === 1 ? "" : "s"} in quarantine.`;
  }

  // After a row leaves, the focus goes to the next row's first button (or the status).
  function focusAfter(row) {
    const next = row.nextElementSibling || row.previousElementSibling;
    const button = next && next.querySelector("button");
    (button || status).focus();
  }

  function busy(row, on) {
    for (const button of row.querySelectorAll("button")) button.disabled = on;
  }

  async function retry(row) {
    const id = row.dataset.item;
    busy(row, true);
    say("Retrying…");
    try {
      const response = await window.imagebank.call("POST", `${base}/${id}/retry`);
      const result = await response.json();
      const before = row.dataset.reason;
      if (result.archived) {
        count(before, -1);
        row.dataset.reason = "";
        row.classList.add("settled");
        row.querySelector(".reason").textContent = result.outcome === "stored"
          ? "archived" : "already archived";
        const message = row.querySelector(".message");
        message.textContent = `${result.message} `;
        if (result.study_id) {
          const link = document.createElement("a");
          link.href = `/ui/projects/${encodeURIComponent(project)}/studies/` +
            encodeURIComponent(result.study_id);
          link.textContent = "Open its study";
          message.appendChild(link);
        }
        const actions = row.querySelector(".actions");
        actions.textContent = "";
        say(`Retried: ${result.message}`);
        (row.querySelector("a") || status).focus();
        return;
      }
      const code = document.createElement("code");
      code.textContent = result.reason || result.outcome;
      row.querySelector(".reason").replaceChildren(code);
      row.querySelector(".message").textContent = result.message;
      if (result.reason && result.reason !== before) {
        count(before, -1);
        count(result.reason, 1);
        row.dataset.reason = result.reason;
      }
      say(`Refused again (${(result.reason || result.outcome).replace(/_/g, " ")}): ` +
          result.message);
      busy(row, false);
    } catch (error) {
      say(error.message, true);
      busy(row, false);
    }
  }

  async function discard(row) {
    const source = row.querySelector(".source").textContent || "this item";
    if (!window.confirm(`Discard ${source}? The item and its kept bytes are deleted ` +
                        "for good.")) return;
    busy(row, true);
    try {
      await window.imagebank.call("DELETE", `${base}/${row.dataset.item}`);
      if (row.dataset.reason) count(row.dataset.reason, -1);
      say("Discarded: the item and its bytes are gone.");
      focusAfter(row);
      row.remove();
      if (!table.tBodies[0].rows.length) say("Discarded. Nothing is left on this page.");
    } catch (error) {
      say(error.message, true);
      busy(row, false);
    }
  }

  if (table) {
    table.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button || button.disabled) return;
      const row = button.closest("tr[data-item]");
      if (button.dataset.action === "retry") retry(row);
      else discard(row);
    });
  }
})();

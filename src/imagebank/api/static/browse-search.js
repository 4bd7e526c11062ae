// Study search (decision 0028): the criteria go to the REST API in a request body
// (POST /api/v1/projects/{p}/studies/search), never into the page's URL; the matches are put
// into the table with textContent and announced in the status line (aria-live).
"use strict";
(() => {
  const form = document.getElementById("study-search");
  const project = form.dataset.project;
  const status = document.getElementById("search-status");
  const error = document.getElementById("search-error");
  const results = document.getElementById("search-results");
  const rows = document.getElementById("search-rows");
  const more = document.getElementById("search-more");
  const PAGE = 100;
  let criteria = null;
  let shown = 0;
  let serial = 0;

  // YYYY-MM-DD (a date input's value) as DICOM's YYYYMMDD.
  const da = (value) => value.replaceAll("-", "");
  const pn = (value) => (value || "").replaceAll("^", " ").trim();
  const {dicomDate} = window.imagebank;

  // The form's criteria in DICOM's matching syntax; an empty field is no criterion.
  function read() {
    const found = {};
    for (const input of form.querySelectorAll("input[data-key]")) {
      const value = input.value.trim();
      if (!value) continue;
      const key = input.dataset.key;
      if (key === "StudyDescription" && !/[*?]/.test(value)) {
        found[key] = `*${value}*`;  // "contains"
      } else if (key === "ModalitiesInStudy") {
        found[key] = value.toUpperCase();
      } else {
        found[key] = value;
      }
    }
    const from = document.getElementById("s-from").value;
    const to = document.getElementById("s-to").value;
    if (from || to) found.StudyDate = from === to ? da(from) : `${da(from)}-${da(to)}`;
    return found;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function add(study) {
    const row = document.createElement("tr");
    row.dataset.study = study.id;
    const first = cell(row, "");
    const link = document.createElement("a");
    link.href = `/ui/projects/${encodeURIComponent(project)}/studies/${encodeURIComponent(study.id)}`;
    link.textContent = dicomDate(study.study_date) || "(no date)";
    first.appendChild(link);
    cell(row, study.patient_id || "");
    cell(row, pn(study.patient_name));
    cell(row, study.accession_number || "");
    cell(row, study.study_description || "");
    cell(row, study.modalities_in_study || "");
    cell(row, String(study.num_series), "n");
    cell(row, String(study.num_instances), "n");
    rows.appendChild(row);
  }

  async function run(offset) {
    const mine = ++serial;
    error.textContent = "";
    status.textContent = "Searching…";
    form.setAttribute("aria-busy", "true");
    try {
      const response = await window.imagebank.call(
        "POST", `/api/v1/projects/${encodeURIComponent(project)}/studies/search`,
        {json: {...criteria, limit: PAGE, offset}});
      const page = await response.json();
      if (mine !== serial) return;  // a newer search has started
      if (offset === 0) {
        rows.replaceChildren();
        shown = 0;
      }
      page.items.forEach(add);
      shown += page.items.length;
      results.hidden = shown === 0;
      more.hidden = page.next_offset === null;
      more.dataset.offset = page.next_offset ?? "";
      status.textContent = shown === 0 ? "No studies match."
        : `${shown} ${shown === 1 ? "study matches" : "studies match"}`
          + (page.next_offset === null ? "." : "; there are more.");
    } catch (e) {
      if (mine !== serial) return;
      status.textContent = "";
      error.textContent = e.message;
    } finally {
      if (mine === serial) form.removeAttribute("aria-busy");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    criteria = read();
    run(0);
  });
  form.addEventListener("reset", () => {
    serial++;
    criteria = null;
    rows.replaceChildren();
    results.hidden = true;
    status.textContent = "";
    error.textContent = "";
  });
  more.addEventListener("click", () => {
    if (criteria && more.dataset.offset) run(Number(more.dataset.offset));
  });
})();

// The cohort builder (decision 0028). Criteria rows write the query text (decision 0022's
// language); the text, whoever wrote it, is what is counted: 300 ms after the last edit it
// goes to the REST API's cohort search (POST, in the body), and the counts are shown exactly
// as the API answers them (exact, or suppressed and rounded under the policy: nothing is
// counted or rounded here). A query that does not parse shows the API's words beside it.
// Rows read top-down: "A, or B, and C" is (A or B) and C. Every edit starts a new query
// (`serial`): an answer, count or list, for an earlier one is dropped, and the list is
// cleared.
"use strict";
(() => {
  const form = document.getElementById("cohort");
  const project = form.dataset.project;
  const url = `/api/v1/projects/${encodeURIComponent(project)}/cohorts/search`;
  const list = document.getElementById("cohort-rows");
  const template = document.getElementById("cohort-row");
  const query = document.getElementById("cohort-query");
  const error = document.getElementById("cohort-error");
  const counts = document.getElementById("cohort-counts");
  const listButton = document.getElementById("cohort-list");
  const listed = document.getElementById("cohort-listed");
  const DEBOUNCE_MS = 300;
  const LISTED = 100;
  let timer = null;
  let serial = 0;
  let made = 0;

  const el = (tag, text, className) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  };
  const quoted = (text) => `'${text.replaceAll("'", "''")}'`;
  const {dicomDate} = window.imagebank;

  // -- rows → query text --------------------------------------------------------------
  function partOf(row, name) {
    return row.querySelector(`[data-part="${name}"]`);
  }

  function eventText(row) {
    const kind = partOf(row, "kind").value;
    const filters = [];
    if (kind === "imaging") {
      const modality = partOf(row, "modality").value.trim();
      if (modality) filters.push(`modality = ${quoted(modality)}`);
    } else {
      const code = partOf(row, "code").value.trim();
      if (code) filters.push(code);
    }
    const from = partOf(row, "from").value;
    const to = partOf(row, "to").value;
    if (from && to) filters.push(`date between ${from} and ${to}`);
    else if (from) filters.push(`date >= ${from}`);
    else if (to) filters.push(`date <= ${to}`);
    return `${kind}[${filters.join(", ")}]`;
  }

  // The rows top-down, each joined to all those above it: the text so far is put in
  // parentheses whenever the connective changes, so "A, or B, and C" is "(A or B) and C"
  // (the language would read "A or B and C" as A or (B and C): "and" binds tighter).
  function build() {
    let text = "";
    let joined = null;
    list.querySelectorAll(".cohort-row").forEach((row, i) => {
      const term = (partOf(row, "not").value === "not" ? "not " : "") + eventText(row);
      if (i === 0) {
        text = term;
        return;
      }
      const join = partOf(row, "join").value;
      if (joined !== null && join !== joined) text = `(${text})`;
      text = `${text} ${join} ${term}`;
      joined = join;
    });
    return text;
  }

  function arrange() {
    list.querySelectorAll(".cohort-row").forEach((row, i) => {
      row.querySelector(".join").hidden = i === 0;
      const imaging = partOf(row, "kind").value === "imaging";
      row.querySelector(".imaging").hidden = !imaging;
      row.querySelector(".clinical").hidden = imaging;
    });
  }

  function rowsChanged() {
    arrange();
    query.value = build();
    schedule();
  }

  function addRow() {
    const row = template.content.firstElementChild.cloneNode(true);
    const n = ++made;
    for (const label of row.querySelectorAll("label[data-for]")) {
      const control = partOf(row, label.dataset.for);
      control.id = `c${n}-${label.dataset.for}`;
      label.htmlFor = control.id;
    }
    row.addEventListener("input", rowsChanged);
    row.addEventListener("change", rowsChanged);
    partOf(row, "remove").addEventListener("click", () => {
      row.remove();
      rowsChanged();
      document.getElementById("cohort-add").focus();
    });
    list.appendChild(row);
    rowsChanged();
    return row;
  }

  // -- counting -----------------------------------------------------------------------
  // The query changed: whatever is on its way for the old one is dropped, its list goes,
  // and listing waits for the new query's counts.
  function schedule() {
    serial += 1;
    listed.replaceChildren();
    listButton.disabled = true;
    clearTimeout(timer);
    timer = setTimeout(count, DEBOUNCE_MS);
  }

  function showError(message, position) {
    error.replaceChildren(el("p", message));
    if (Number.isInteger(position)) {
      const text = query.value.replace(/\s/g, " ");
      const pointer = el("pre", undefined, "pointer");
      pointer.setAttribute("aria-hidden", "true");
      pointer.textContent = `${text}\n${" ".repeat(position)}^`;
      error.appendChild(pointer);
      error.appendChild(el("p", `At character ${position + 1} of the query.`, "sr-only"));
    }
    query.setAttribute("aria-invalid", "true");
  }

  function clearError() {
    error.replaceChildren();
    query.removeAttribute("aria-invalid");
  }

  async function search(text, limit) {
    const response = await window.imagebank.api("POST", url, {json: {query: text, limit}});
    window.imagebank.checkSession(response);
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    return {ok: response.ok, status: response.status, body};
  }

  function showCounts(result) {
    const dl = el("dl", undefined, "count-list");
    for (const [key, label] of [["people", "People"], ["studies", "Studies"],
                                ["series", "Series"]]) {
      const item = el("div");
      item.dataset.count = key;
      item.appendChild(el("dt", label));
      item.appendChild(el("dd", result.counts[key].shown));
      dl.appendChild(item);
    }
    const note = el("p", undefined, "muted");
    if (result.exact) {
      note.textContent = "Exact counts.";
    } else {
      const small = result.smallest_count;
      note.textContent = (small ? `Counts from 1 to ${small - 1} are shown as “< ${small}”` :
        "Counts are shown under the project's policy")
        + (result.rounding > 1 ? `; others are rounded to a multiple of ${result.rounding}.` : ".");
    }
    const counted = el("p", "Counted: ", "muted");
    counted.appendChild(el("code", result.query));
    counts.replaceChildren(dl, note, counted);
  }

  async function count() {
    const text = query.value.trim();
    const mine = serial;  // schedule() moved it on for this text
    if (!text) {
      clearError();
      listButton.disabled = true;
      counts.replaceChildren(el("p", "Add a criterion, or write a query, to count.", "muted"));
      return;
    }
    counts.setAttribute("aria-busy", "true");
    try {
      const answer = await search(text, 0);
      if (mine !== serial) return;  // a later edit has been sent
      if (answer.ok) {
        clearError();
        showCounts(answer.body);
        listButton.disabled = false;
      } else {
        const body = answer.body || {};
        showError(body.message || body.detail || `The count failed (HTTP ${answer.status}).`,
                  answer.status === 422 ? body.position : undefined);
        listButton.disabled = true;
      }
    } catch (e) {
      if (mine === serial) showError(e.message);
    } finally {
      if (mine === serial) counts.removeAttribute("aria-busy");
    }
  }

  // -- listing ------------------------------------------------------------------------
  function table(caption, headings, rows) {
    const t = el("table", undefined, "list");
    t.appendChild(el("caption", caption));
    const head = el("tr");
    for (const h of headings) {
      const th = el("th", h);
      th.scope = "col";
      head.appendChild(th);
    }
    t.appendChild(el("thead")).appendChild(head);
    const body = el("tbody");
    for (const cells of rows) {
      const tr = el("tr");
      for (const c of cells) {
        const td = el("td");
        td.append(c);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    t.appendChild(body);
    return t;
  }

  function link(href, text) {
    const a = el("a", text);
    a.href = href;
    return a;
  }

  async function showList() {
    const text = query.value.trim();
    if (!text) return;
    const mine = serial;  // the query the counts shown are for
    listed.replaceChildren(el("p", "Listing…", "muted"));
    try {
      const answer = await search(text, LISTED);
      if (mine !== serial) return;  // the query has changed since: its list is not this one
      if (!answer.ok) {
        listed.replaceChildren(el("p", (answer.body && answer.body.detail)
          || `The list failed (HTTP ${answer.status}).`, "error"));
        return;
      }
      const result = answer.body;
      if (!result.exact) {
        listed.replaceChildren(el("p", "Lists of subjects and studies are shown only where "
          + "counts are exact: to this site project's members and owners."));
        return;
      }
      if (result.subjects.length === 0) {
        listed.replaceChildren(el("p", "No subjects match."));
        return;
      }
      const base = `/ui/projects/${encodeURIComponent(project)}`;
      const subjects = table("Subjects matched", ["Subject"], result.subjects.map(
        (id) => [link(`${base}/subjects/${encodeURIComponent(id)}`, id)]));
      const studies = table("Studies matched", ["Date", "Modalities", "Study Instance UID"],
        result.studies.map((s) => [
          link(`${base}/studies/${encodeURIComponent(s.id)}`, dicomDate(s.study_date) || "(no date)"),
          s.modalities_in_study || "", s.study_instance_uid]));
      const parts = [subjects, studies];
      if (result.truncated) {
        parts.push(el("p", `Each list stops at ${LISTED}.`, "muted"));
      }
      listed.replaceChildren(...parts);
    } catch (e) {
      if (mine === serial) listed.replaceChildren(el("p", e.message, "error"));
    }
  }

  document.getElementById("cohort-add").addEventListener("click", () => {
    const row = addRow();
    partOf(row, "kind").focus();
  });
  query.addEventListener("input", schedule);
  listButton.addEventListener("click", showList);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    count();
  });
  addRow();
})();

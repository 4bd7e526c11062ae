// The audit trail page: reads GET /api/v1/audit (or a project's) newest first, a page at a
// time, with the filters in the API's query string (never in the page's address), and, for
// an administrator, verifies the hash chain. Each new filter is a new generation: an answer
// that comes back after the filters changed (a slow "Older events") is dropped.
"use strict";
(() => {
  const {call} = window.imagebank;
  const {say, when, el} = window.imagebank.governance;
  const PAGE = 50;
  const form = document.getElementById("audit-filters");
  const source = form.dataset.source;
  const wholeTrail = form.dataset.project !== "1";
  const body = document.querySelector("#audit-events tbody");
  const status = document.getElementById("audit-status");
  const older = document.getElementById("audit-older");
  let filters = new URLSearchParams();
  let last = null;
  let shown = 0;
  let generation = 0;  // of the filters: bumped by each new filter

  function nextDay(date) {
    const day = new Date(`${date}T00:00:00Z`);
    day.setUTCDate(day.getUTCDate() + 1);
    return day.toISOString();
  }

  function readFilters() {
    const query = new URLSearchParams({order: "desc", limit: String(PAGE)});
    const value = (id) => document.getElementById(id).value.trim();
    if (value("f-actor")) query.set("actor", value("f-actor"));
    if (value("f-action")) query.set("action", value("f-action"));
    if (value("f-outcome")) query.set("outcome", value("f-outcome"));
    if (value("f-from")) query.set("from", `${value("f-from")}T00:00:00Z`);
    if (value("f-to")) query.set("to", nextDay(value("f-to")));
    return query;
  }

  function row(event) {
    const tr = el("tr", "", {"data-seq": event.seq, "data-action": event.action});
    const who = event.actor ? `${event.actor}${event.via ? ` · ${event.via}` : ""}`
      : "(not signed in)";
    const object = [event.level, event.object_id].filter(Boolean).join(" ");
    const outcome = event.status ? `${event.outcome} (${event.status})` : event.outcome;
    const cells = [[event.seq, "n"], [when(event.at), "when"], [who], [event.action],
                   [`${event.method} ${event.route}`, "route"]];
    if (wholeTrail) cells.push([event.project_id || ""]);
    cells.push([object, "object"], [outcome, `outcome-${event.outcome}`], [event.client || ""],
               [event.detail || "", "detail"]);
    for (const [text, className] of cells) {
      tr.append(el("td", text, className ? {class: className} : {}));
    }
    return tr;
  }

  async function load(more) {
    const mine = more ? generation : ++generation;
    const query = new URLSearchParams(filters);
    if (more && last !== null) query.set("before", String(last));
    older.disabled = true;
    say(status, "Loading the events…");
    try {
      const events = await (await call("GET", `${source}?${query}`)).json();
      if (mine !== generation) return;  // the filters changed meanwhile: not theirs
      if (!more) {
        body.replaceChildren();
        shown = 0;
      }
      for (const event of events) body.append(row(event));
      shown += events.length;
      if (events.length) last = events[events.length - 1].seq;
      older.hidden = events.length < PAGE;
      const end = events.length < PAGE ? " That is all of them." : "";
      say(status, shown ? `${shown} event${shown === 1 ? "" : "s"} shown, newest first.${end}`
        : "No events match.");
    } catch (error) {
      if (mine === generation) say(status, error.message, true);
    } finally {
      if (mine === generation) older.disabled = false;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = readFilters();
    last = null;
    load(false);
  });
  form.addEventListener("reset", () => {
    window.setTimeout(() => form.requestSubmit(), 0);  // after the fields are cleared
  });
  older.addEventListener("click", () => load(true));
  filters = readFilters();
  load(false);

  const verify = document.getElementById("audit-verify");
  if (verify) {
    const chain = document.getElementById("chain-status");
    verify.addEventListener("click", async () => {
      verify.disabled = true;
      say(chain, "Verifying the chain…");
      try {
        const report = await (await call("GET", "/api/v1/audit/verification")).json();
        const counted = `${report.events.toLocaleString("en-GB")} events checked`;
        if (report.ok) {
          const unknown = report.unknown_key_events ? ` (${report.unknown_key_events} under a ` +
            "key this server no longer has, so not checked)" : "";
          say(chain, `The chain is intact: ${counted}${unknown}.`);
        } else {
          say(chain, `The chain is broken: ${report.problems.length} problem` +
              `${report.problems.length === 1 ? "" : "s"} in ${counted}.`, true);
          const list = el("ul");
          for (const problem of report.problems) list.append(el("li", problem));
          chain.append(list);
        }
      } catch (error) {
        say(chain, error.message, true);
      } finally {
        verify.disabled = false;
      }
    });
  }
})();

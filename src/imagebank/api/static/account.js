// Your account: create an API token (shown once, with a copy button) and revoke one
// (confirmed), through /api/v1/me/tokens.
"use strict";
(() => {
  const {call} = window.imagebank;
  const {say, when, el, button, tokenRequest, reveal, hide} = window.imagebank.governance;
  const body = document.querySelector("#tokens tbody");
  const status = document.getElementById("tokens-status");
  const form = document.getElementById("new-token");
  const none = document.getElementById("no-tokens");

  function newRow(token) {
    const tr = el("tr", "", {"data-token": token.id});
    const prefix = el("code", `ibt_${token.id}_…`);
    const cell = el("td");
    cell.append(prefix);
    tr.append(el("td", token.name || "(no name)"), cell, el("td", token.scopes.join(", ")),
              el("td", when(token.created_at)), el("td", when(token.expires_at) || "never"),
              el("td", when(token.last_used_at) || "never"),
              el("td", "active", {class: "state"}));
    const last = el("td");
    last.append(button("Revoke", "revoke danger",
                       `Revoke the token ${token.name || token.id}`));
    tr.append(last);
    return tr;
  }

  body.addEventListener("click", async (event) => {
    const target = event.target.closest("button.revoke");
    if (!target) return;
    const tr = target.closest("tr");
    const label = tr.cells[0].textContent;
    if (!window.confirm(`Revoke the token ${label}? Programs using it will be refused.`)) {
      return;
    }
    try {
      await call("DELETE", `/api/v1/me/tokens/${encodeURIComponent(tr.dataset.token)}`);
      tr.querySelector(".state").textContent = "revoked";
      target.remove();
      say(status, `The token ${label} was revoked.`);
    } catch (error) {
      say(status, error.message, true);
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    hide(form);
    try {
      const json = tokenRequest(form);
      const made = await (await call("POST", "/api/v1/me/tokens", {json})).json();
      body.prepend(newRow(made));
      none.hidden = true;
      say(status, "The token was created: copy it now, it is not shown again.");
      reveal(form, made.token, status);
    } catch (error) {
      say(status, error.message, true);
    }
  });
})();

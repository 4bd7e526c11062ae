// The users page (site administrators): create a user, activate or deactivate one
// (confirmed), and make a token for one, shown once — all through /api/v1/users.
"use strict";
(() => {
  const {call} = window.imagebank;
  const {say, when, el, button, tokenRequest, reveal, hide} = window.imagebank.governance;
  const body = document.querySelector("#users tbody");
  const status = document.getElementById("users-status");
  const userForm = document.getElementById("new-user");
  const tokenForm = document.getElementById("user-token");
  const tokenUser = document.getElementById("user-token-user");
  const url = (name) => `/api/v1/users/${encodeURIComponent(name)}`;

  function toggleFor(user) {
    const verb = user.is_active ? "Deactivate" : "Activate";
    const control = button(verb, user.is_active ? "toggle danger" : "toggle",
                           `${verb} ${user.username}`);
    control.dataset.active = String(user.is_active);
    return control;
  }

  function newRow(user) {
    const tr = el("tr", "", {"data-user": user.username});
    tr.append(el("th", user.username, {scope: "row"}), el("td", user.is_admin ? "yes" : "no"),
              el("td", user.is_active ? "yes" : "no", {class: "active"}),
              el("td", when(user.created_at)), el("td", when(user.last_login_at) || "never"),
              el("td", Object.entries(user.roles || {}).map(([p, r]) => `${p}: ${r}`)
                .join(", ")));
    const last = el("td");
    last.append(toggleFor(user));
    tr.append(last);
    return tr;
  }

  body.addEventListener("click", async (event) => {
    const target = event.target.closest("button.toggle");
    if (!target) return;
    const tr = target.closest("tr");
    const name = tr.dataset.user;
    const active = target.dataset.active !== "true";
    if (!active && !window.confirm(`Deactivate ${name}? Their sessions end and their tokens ` +
                                   "stop working until they are activated again.")) {
      return;
    }
    try {
      const user = await (await call("PUT", `${url(name)}/active`, {json: {active}})).json();
      tr.querySelector(".active").textContent = user.is_active ? "yes" : "no";
      const replacement = toggleFor(user);
      target.replaceWith(replacement);
      replacement.focus();
      say(status, `${user.username} is ${user.is_active ? "active" : "deactivated"}.`);
    } catch (error) {
      say(status, error.message, true);
    }
  });

  userForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const json = {username: userForm.username.value.trim().toLowerCase(),
                  password: userForm.password.value, is_admin: userForm.is_admin.checked};
    try {
      const user = await (await call("POST", "/api/v1/users", {json})).json();
      body.append(newRow(user));
      tokenUser.append(el("option", user.username, {value: user.username}));
      userForm.reset();
      say(status, `The user ${user.username} was created.`);
    } catch (error) {
      userForm.password.value = "";
      say(status, error.message, true);
    }
  });

  tokenForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    hide(tokenForm);
    const name = tokenUser.value;
    try {
      const json = tokenRequest(tokenForm);
      const made = await (await call("POST", `${url(name)}/tokens`, {json})).json();
      say(status, `A token for ${made.username} was created: copy it now, it is not shown ` +
          "again.");
      reveal(tokenForm, made.token, status);
    } catch (error) {
      say(status, error.message, true);
    }
  });
})();

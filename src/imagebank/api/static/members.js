// A project's members page: change a role, add a member, remove one (confirmed), through
// PUT and DELETE /api/v1/projects/{project}/members/{username}.
"use strict";
(() => {
  const {call} = window.imagebank;
  const {say, when, el, button} = window.imagebank.governance;
  const table = document.getElementById("members");
  const body = table.querySelector("tbody");
  const status = document.getElementById("members-status");
  const form = document.getElementById("add-member");
  const base = `/api/v1/projects/${encodeURIComponent(table.dataset.project)}/members/`;
  const roles = [...document.getElementById("new-role").options].map((o) => o.value);

  function rowOf(name) {
    return [...body.rows].find((tr) => tr.dataset.member === name) || null;
  }

  function newRow(member) {
    const tr = el("tr", "", {"data-member": member.username});
    tr.append(el("th", member.username, {scope: "row"}));
    const cell = el("td");
    const select = el("select", "", {class: "role", "aria-label": `Role of ${member.username}`});
    for (const role of roles) select.append(el("option", role, {value: role}));
    cell.append(select, " ", button("Save", "save", `Save the role of ${member.username}`));
    tr.append(cell, el("td", "", {class: "granted-at"}), el("td", "", {class: "granted-by"}));
    const last = el("td");
    last.append(button("Remove", "remove danger", `Remove ${member.username}`));
    tr.append(last);
    return tr;
  }

  function show(tr, member) {
    tr.querySelector("select.role").value = member.role;
    tr.querySelector(".granted-at").textContent = when(member.granted_at);
    tr.querySelector(".granted-by").textContent = member.granted_by || "";
  }

  async function grant(name, role) {
    const response = await call("PUT", base + encodeURIComponent(name), {json: {role}});
    return response.json();
  }

  body.addEventListener("click", async (event) => {
    const target = event.target.closest("button");
    if (!target) return;
    const tr = target.closest("tr");
    const name = tr.dataset.member;
    try {
      if (target.classList.contains("save")) {
        const member = await grant(name, tr.querySelector("select.role").value);
        show(tr, member);
        say(status, `${member.username} is now ${member.role}.`);
      } else if (target.classList.contains("remove")) {
        if (!window.confirm(`Remove ${name} from this project? They will no longer see it.`)) {
          return;
        }
        await call("DELETE", base + encodeURIComponent(name));
        tr.remove();
        say(status, `${name} was removed from the project.`);
        form.querySelector("#new-username").focus();
      }
    } catch (error) {
      say(status, error.message, true);
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = form.querySelector("#new-username").value.trim().toLowerCase();
    if (!name) return;
    try {
      const member = await grant(name, form.querySelector("#new-role").value);
      let tr = rowOf(member.username);
      if (!tr) {
        tr = newRow(member);
        body.append(tr);
      }
      show(tr, member);
      form.reset();
      say(status, `${member.username} was given the role ${member.role}.`);
    } catch (error) {
      say(status, error.message, true);
    }
  });
})();

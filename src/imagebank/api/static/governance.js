// What the governance pages share (audit trail, members, users, your account): messages in
// a live region, times as the server shows them, table rows built from API answers with
// textContent only, and a new API token shown once with a copy button.
"use strict";
window.imagebank.governance = (() => {
  // A message (or a problem, in the error style) in an aria-live region.
  function say(region, text, error = false) {
    region.classList.toggle("error", error);
    region.textContent = text;
  }

  // An ISO time as "2026-03-01 14:05 UTC" (the pages' server-side form).
  function when(iso) {
    if (!iso) return "";
    const moment = new Date(iso);
    if (Number.isNaN(moment.getTime())) return "";
    return `${moment.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }

  // An element with text (never HTML) and attributes.
  function el(tag, text = "", attributes = {}) {
    const node = document.createElement(tag);
    if (text !== "") node.textContent = String(text);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  function button(text, className, label) {
    const node = el("button", text, {type: "button", class: className});
    if (label) node.setAttribute("aria-label", label);
    return node;
  }

  // The body of POST .../tokens from a token form (_tokens.html).
  // A token form's request body; an Error when no scope is ticked.
  function tokenRequest(form) {
    const scopes = [...form.querySelectorAll('input[name="scopes"]:checked')]
      .map((box) => box.value);
    if (!scopes.length) throw new Error("Choose at least one scope for the token.");
    const expires = form.querySelector('select[name="expires_days"]').value;
    return {name: form.querySelector('input[name="name"]').value.trim(), scopes,
            expires_days: expires ? Number(expires) : null};
  }

  // Show a new token once, beside its form, with a copy button; focus it for the keyboard.
  function reveal(form, token, region) {
    const box = document.getElementById(`${form.id}-reveal`);
    const field = box.querySelector(".token-value");
    field.value = token;
    box.hidden = false;
    const copy = box.querySelector(".copy");
    copy.onclick = async () => {
      try {
        await navigator.clipboard.writeText(field.value);
      } catch (e) {
        field.select();
        document.execCommand("copy");
      }
      say(region, "The token was copied.");
    };
    field.focus();
    field.select();
  }

  // Forget a token shown before (a new form submission, or leaving the page).
  function hide(form) {
    const box = document.getElementById(`${form.id}-reveal`);
    box.querySelector(".token-value").value = "";
    box.hidden = true;
  }

  return {say, when, el, button, tokenRequest, reveal, hide};
})();

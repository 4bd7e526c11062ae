// Sign in through the same REST API as every client: POST /api/v1/session sets the session
// cookie; the CSRF token it returns is kept for this tab (sessionStorage), for requests that
// change something.
"use strict";
document.getElementById("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const error = document.getElementById("sign-in-error");
  error.textContent = "";
  const response = await fetch("/api/v1/session", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({username: form.username.value, password: form.password.value}),
  });
  if (response.ok) {
    const body = await response.json();
    sessionStorage.setItem("imagebank-csrf", body.csrf_token || "");
    window.location.assign("/ui/projects");
    return;
  }
  let detail = "The sign-in failed.";
  try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
  error.textContent = detail;
});

// Sign in through the same REST API as every client: POST /api/v1/session sets the session
// cookie (HttpOnly); the pages then carry the session's CSRF token for their scripts.
"use strict";
document.getElementById("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const error = document.getElementById("sign-in-error");
  error.textContent = "";
  const response = await window.imagebank.api("POST", "/api/v1/session", {
    json: {username: form.username.value, password: form.password.value},
  });
  if (response.ok) {
    window.location.assign("/ui/projects");
    return;
  }
  error.textContent = await window.imagebank.problem(response);
});

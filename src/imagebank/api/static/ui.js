// What every page's scripts share: calling the REST API as the signed-in user (the session
// cookie, and the page's CSRF token on every request that changes something), and reading
// an API problem (RFC 9457) as one sentence for the user.
"use strict";
window.imagebank = (() => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  // fetch() with the CSRF token; `json` (an object) is sent as the JSON body.
  async function api(method, url, {json, body, headers = {}} = {}) {
    const sent = {...headers};
    if (method !== "GET" && method !== "HEAD" && csrf) sent["X-CSRF-Token"] = csrf;
    if (json !== undefined) {
      sent["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    return fetch(url, {method, headers: sent, body, credentials: "same-origin"});
  }

  // The problem's detail (or a plain sentence when the body is not a problem).
  async function problem(response) {
    try {
      const body = await response.json();
      if (body && body.detail) return String(body.detail);
    } catch (e) { /* not JSON */ }
    return `The request failed (HTTP ${response.status}).`;
  }

  // A 401 means the session has ended: off to sign in again, and the caller stops here.
  function checkSession(response) {
    if (response.status === 401) {
      window.location.assign("/ui/sign-in");
      throw new Error("Your session has ended; sign in again.");
    }
  }

  // fetch() that throws an Error with the problem's words when the answer is not 2xx.
  async function call(method, url, options) {
    const response = await api(method, url, options);
    checkSession(response);
    if (!response.ok) throw new Error(await problem(response));
    return response;
  }

  // DICOM's YYYYMMDD as YYYY-MM-DD (anything else as it is): the pages' `dicom_date` filter.
  const dicomDate = (value) => (value && /^\d{8}$/.test(value)
    ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6)}` : (value || ""));

  const out = document.getElementById("sign-out");
  if (out) {
    out.addEventListener("click", async () => {
      await api("DELETE", "/api/v1/session");
      window.location.assign("/ui/sign-in");
    });
  }
  return {api, call, checkSession, problem, dicomDate, csrf};
})();

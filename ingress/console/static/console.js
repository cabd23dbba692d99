// The console's progressive JavaScript: pages work without it (plain forms and links); with it they update live.
// No inline scripts (the Content-Security-Policy forbids them): pages mark elements with data-* attributes and
// this file wires them up.
"use strict";

const wabot = (() => {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  /** fetch() on our own origin, with the session's CSRF token on anything that changes state. */
  async function call(url, options = {}) {
    const headers = Object.assign({"X-CSRF-Token": csrf(), "Accept": "application/json"}, options.headers || {});
    const response = await fetch(url, Object.assign({}, options, {headers, credentials: "same-origin"}));
    if (response.status === 401 || response.redirected && response.url.includes("/console/login")) {
      window.location.assign("/console/login");
    }
    return response;
  }

  /** Run `refresh` now and every `ms` milliseconds while the page is visible. */
  function poll(refresh, ms) {
    let timer = null;
    const tick = async () => {
      try { await refresh(); } catch (e) { console.warn("refresh failed", e); }
      timer = window.setTimeout(tick, document.hidden ? ms * 5 : ms);
    };
    tick();
    return () => window.clearTimeout(timer);
  }

  const ready = (fn) => document.readyState === "loading" ? document.addEventListener("DOMContentLoaded", fn) : fn();
  return {call, poll, ready, csrf};
})();

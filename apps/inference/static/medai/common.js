// medai web pages, shared by every page: sign-in, the API client, sign-out and automatic logoff.
// Every page is a client of the public API (/v1), like any integrator.
// Tokens live in sessionStorage: gone when the tab closes (shared hospital workstations).
// A page script registers what to do once signed in: medai.onSignedIn(async (me) => { ... }).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;
  const signedInHandlers = [];
  const signedOutHandlers = [];
  let me = null;

  function tokens() {
    return { access: store.getItem("medai.access"), refresh: store.getItem("medai.refresh") };
  }

  function saveTokens(body) {
    store.setItem("medai.access", body.access_token);
    store.setItem("medai.refresh", body.refresh_token);
  }

  function clearTokens() {
    store.removeItem("medai.access");
    store.removeItem("medai.refresh");
  }

  function errorText(body, fallback) {
    return (body && body.error && body.error.message) || fallback;
  }

  async function refreshTokens() {
    const refresh = tokens().refresh;
    if (!refresh) return false;
    const resp = await fetch("/v1/auth/refresh", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ refresh_token: refresh }),
    });
    if (!resp.ok) return false;
    saveTokens(await resp.json());
    return true;
  }

  // fetch with the bearer token; on 401 try one refresh, then fall back to the sign-in form.
  async function api(path, options = {}, retry = true) {
    const headers = Object.assign({}, options.headers || {});
    if (!(options.body instanceof FormData) && !headers["Content-Type"]) headers["Content-Type"] = "application/json";
    headers.Authorization = "Bearer " + tokens().access;
    const resp = await fetch(path, Object.assign({}, options, { headers }));
    if (resp.status === 401 && retry && (await refreshTokens())) return api(path, options, false);
    if (resp.status === 401) { clearTokens(); show("Your session ended: sign in again."); }
    return resp;
  }

  // A websocket to a medai path, authenticated by the page's session token in the subprotocol
  // (never in the URL: URLs end up in logs).
  function socket(path) {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return new WebSocket(scheme + location.host + path, ["bearer", tokens().access]);
  }

  async function login(event) {
    event.preventDefault();
    $("login-error").textContent = "";
    $("login-button").disabled = true;
    try {
      const resp = await fetch("/v1/auth/login", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: $("username").value, password: $("password").value, location_id: $("location").value }),
      });
      const body = await resp.json().catch(() => null);
      if (!resp.ok) { $("login-error").textContent = errorText(body, "Sign-in failed (" + resp.status + ")."); return; }
      saveTokens(body);
      $("password").value = "";
      await show();
    } finally {
      $("login-button").disabled = false;
    }
  }

  // End the session on the server (its access and refresh tokens revoked), then here. An idle
  // tab's access token has often expired by the time it is signed out: refresh it once first,
  // or the refresh token would outlive the sign-out on the server.
  async function revoke() {
    const send = () => fetch("/v1/auth/logout", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + tokens().access },
      body: JSON.stringify({ refresh_token: tokens().refresh }),
    });
    let resp = await send();
    if (resp.status === 401 && (await refreshTokens())) resp = await send();
    return resp.ok;
  }

  async function logout(reason) {
    if (tokens().refresh) await revoke().catch(() => false);
    clearTokens();
    show(typeof reason === "string" ? reason : "");
  }

  function duration(seconds) {
    return seconds < 120 ? Math.round(seconds) + " seconds" : Math.round(seconds / 60) + " minutes";
  }

  async function whoami() {
    const resp = await api("/v1/auth/me");
    if (!resp.ok) return null;
    const body = await resp.json();
    $("whoami").textContent = body.username + " · " + body.role + " @ " + body.location_id;
    return body;
  }

  async function show(reason) {
    const signedIn = Boolean(tokens().access);
    $("login-panel").hidden = signedIn;
    $("page-content").hidden = !signedIn;
    $("logout").hidden = !signedIn;
    if (!signedIn) {
      me = null;
      $("whoami").textContent = "";
      $("login-reason").textContent = reason || "";
      for (const handler of signedOutHandlers) handler();
      return;
    }
    me = await whoami();
    if (!tokens().access) return; // whoami's 401 signed out meanwhile
    for (const handler of signedInHandlers) await handler(me);
  }

  // Automatic logoff: no key, click, touch or scroll for data-idle-seconds signs out, with a
  // warning during the last minute. Activity in any other tab of this session does not count:
  // each tab is its own session (sessionStorage).
  const idleSeconds = Number(document.body.dataset.idleSeconds) || 900;
  let lastActive = Date.now();
  function activity() { lastActive = Date.now(); }
  let idleSigningOut = false;
  let idleSaid = ""; // what the warning's live region last said
  function idleTick() {
    const warning = $("idle-warning");
    if (!tokens().access || idleSigningOut) { warning.hidden = true; idleSaid = ""; return; }
    const left = idleSeconds - (Date.now() - lastActive) / 1000;
    if (left <= 0) {
      warning.hidden = true;
      idleSaid = "";
      idleSigningOut = true;
      logout("You were signed out after " + duration(idleSeconds) + " without activity.")
        .finally(() => { idleSigningOut = false; lastActive = Date.now(); });
    } else if (left <= Math.min(60, idleSeconds / 2)) {
      // The warning is a live region: it speaks when it appears and at 30 and 10 s left, while
      // the seconds shown count down every second out of the screen reader's way (aria-hidden).
      const step = left > 30 ? "" : left > 10 ? "30" : "10";
      const said = "No activity: you will be signed out in " + (step ? "less than " + step : Math.ceil(left)) +
        " seconds. Move the mouse or press a key to stay.";
      if (warning.hidden || !idleSaid || (step && !idleSaid.includes("than " + step))) {
        const text = document.createElement("span");
        text.className = "visually-hidden";
        text.textContent = said;
        const shown = document.createElement("span");
        shown.setAttribute("aria-hidden", "true");
        shown.id = "idle-countdown";
        warning.replaceChildren(text, shown);
        idleSaid = said;
      }
      $("idle-countdown").textContent = "No activity: you will be signed out in " + Math.ceil(left) +
        " s. Move the mouse or press a key to stay.";
      warning.hidden = false;
    } else {
      warning.hidden = true;
      idleSaid = "";
    }
  }

  window.medai = {
    $, api, socket, tokens, refreshTokens, errorText, logout,
    me: () => me,
    onSignedIn: (handler) => signedInHandlers.push(handler),
    onSignedOut: (handler) => signedOutHandlers.push(handler),
  };
  window.refreshTokens = refreshTokens; // live.js reconnects through it after a 4401

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => logout("You signed out."));
    for (const name of ["keydown", "pointerdown", "pointermove", "touchstart", "wheel", "scroll"]) {
      document.addEventListener(name, activity, { passive: true, capture: true });
    }
    setInterval(idleTick, 1000);
    // Page scripts are deferred too and run after this one: let them register first.
    setTimeout(() => show(), 0);
  });
})();

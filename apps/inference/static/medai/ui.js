// medai clinician page: a client of the public API (/v1), like any integrator.
// Tokens live in sessionStorage (gone when the tab closes: shared hospital workstations).
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
let controller = null;

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

// fetch with the bearer token; on 401 try one refresh, then fall back to the login form.
async function api(path, options = {}, retry = true) {
  const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
  headers.Authorization = "Bearer " + tokens().access;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401 && retry && (await refreshTokens())) return api(path, options, false);
  if (resp.status === 401) { clearTokens(); show(); }
  return resp;
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

async function logout() {
  await api("/v1/auth/logout", { method: "POST", body: JSON.stringify({ refresh_token: tokens().refresh }) }, false)
    .catch(() => null);
  clearTokens();
  show();
}

async function loadModels() {
  const resp = await api("/v1/models");
  if (!resp.ok) return;
  const select = $("model");
  select.replaceChildren();
  const groups = { agent_type: "Agent types", model: "Models" };
  for (const kind of ["agent_type", "model"]) {
    const group = document.createElement("optgroup");
    group.label = groups[kind];
    for (const m of (await resp.clone().json()).data.filter((m) => m.medai && m.medai.kind === kind)) {
      const opt = document.createElement("option");
      opt.value = m.id;
      opt.textContent = m.id;
      group.appendChild(opt);
    }
    if (group.children.length) select.appendChild(group);
  }
}

async function whoami() {
  const resp = await api("/v1/auth/me");
  if (resp.ok) {
    const me = await resp.json();
    $("whoami").textContent = me.username + " · " + me.role + " @ " + me.location_id;
  }
}

// Blank as the server counts it (apps/inference/api/chat_request.py BLANK_CHARS): whitespace and
// the invisible zero-width characters. The server refuses such a question with a 400 anyway.
const BLANK = /^[\s\x1c-\x1f\x85\u200b-\u200d\u2060\ufeff]*$/;

function questionError(text) {
  $("question-error").textContent = text;
  $("question").setAttribute("aria-invalid", text ? "true" : "false");
}

function setBusy(busy) {
  $("ask-button").disabled = busy;
  $("stop-button").hidden = !busy;
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value;
  if (BLANK.test(question)) {
    questionError("Type a question first: it is empty or holds only spaces, so nothing was sent.");
    $("question").focus();
    return;
  }
  questionError("");
  const answer = $("answer");
  answer.textContent = "";
  $("answer-meta").textContent = "";
  $("status").textContent = "Asking…";
  setBusy(true);
  controller = new AbortController();
  const started = performance.now();
  try {
    const resp = await api("/v1/chat/completions", {
      method: "POST", signal: controller.signal,
      body: JSON.stringify({
        model: $("model").value, stream: true, max_tokens: Number($("max-tokens").value) || 256,
        messages: [{ role: "user", content: question }],
      }),
    });
    if (!resp.ok) {
      const body = await resp.json().catch(() => null);
      const param = body && body.error && body.error.param;
      if (resp.status === 400 && param && param.startsWith("messages")) {
        questionError("The question was not accepted: " + errorText(body, "it is not valid."));
        $("status").textContent = "Not sent to a model.";
        return;
      }
      $("status").textContent = errorText(body, "Request failed (" + resp.status + ").");
      return;
    }
    $("status").textContent = "Answering…";
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", model = "", finish = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const event = JSON.parse(data);
        if (event.error) { $("status").textContent = event.error.message; continue; }
        model = event.model || model;
        for (const choice of event.choices || []) {
          if (choice.delta && choice.delta.content) answer.textContent += choice.delta.content;
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    $("status").textContent = "Done.";
    $("answer-meta").textContent = "Answered by " + model + " in " + seconds + " s." +
      (finish === "length" ? " The answer was cut off at the token limit." : "");
  } catch (err) {
    $("status").textContent = err.name === "AbortError" ? "Stopped." : "Connection problem: " + err.message;
  } finally {
    setBusy(false);
    controller = null;
  }
}

async function show() {
  const signedIn = Boolean(tokens().access);
  $("login-panel").hidden = signedIn;
  $("chat-panel").hidden = !signedIn;
  $("logout").hidden = !signedIn;
  if (!signedIn) { $("whoami").textContent = ""; return; }
  await Promise.all([whoami(), loadModels()]);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("ask-form").addEventListener("submit", ask);
  $("logout").addEventListener("click", logout);
  $("stop-button").addEventListener("click", () => controller && controller.abort());
  $("question").addEventListener("input", () => { if (!BLANK.test($("question").value)) questionError(""); });
  show();
});

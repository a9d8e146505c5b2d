// medai History page: the clinician's own recent questions and answers (GET /v1/history), a search
// (POST /v1/history/search: the words travel in the body, never in a URL), and a click that
// reopens a conversation on the Ask page by its id alone (/?conversation=<id>: no PHI in URLs).
"use strict";

(function () {
  const { $, api, errorText } = window.medai;
  const PAGE_SIZE = 20;
  const SNIPPET = 240; // characters of an answer shown in the list
  let page = 1;

  function snippet(text) {
    const flat = (text || "").replace(/\s+/g, " ").trim();
    return flat.length > SNIPPET ? flat.slice(0, SNIPPET - 1) + "…" : flat;
  }

  function describe(exchange) {
    const parts = [new Date(exchange.created_at).toLocaleString(), exchange.agent_type || exchange.model];
    if (exchange.agent_type && exchange.model) parts.push(exchange.model);
    if (exchange.status !== "completed") parts.push(exchange.status === "cancelled" ? "stopped" : exchange.status);
    if (exchange.feedback) parts.push(exchange.feedback.rating === "up" ? "rated helpful" : "rated not helpful");
    return parts.filter(Boolean).join(" · ");
  }

  function row(exchange) {
    const li = document.createElement("li");
    li.className = "history-item";
    const link = document.createElement("a");
    link.className = "history-open";
    link.href = "/?conversation=" + encodeURIComponent(exchange.conversation_id);
    const question = document.createElement("span");
    question.className = "history-question";
    question.textContent = exchange.question || "(no question text)";
    const answer = document.createElement("span");
    answer.className = "history-answer";
    answer.textContent = exchange.answer ? snippet(exchange.answer) : exchange.error ? "Failed: " + exchange.error.message : "No answer yet.";
    const meta = document.createElement("span");
    meta.className = "history-meta muted";
    meta.textContent = describe(exchange);
    link.append(question, answer, meta);
    li.appendChild(link);
    return li;
  }

  function show(results, statusText) {
    $("history-list").replaceChildren(...results.map(row));
    $("history-status").textContent = statusText;
  }

  async function load(which) {
    page = which || 1;
    $("search-clear").hidden = true;
    $("history-status").textContent = "Loading…";
    const resp = await api("/v1/history?page=" + page + "&page_size=" + PAGE_SIZE);
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      if (resp.status === 404 && page > 1) return load(page - 1); // the last page emptied meanwhile
      show([], errorText(body, "Your history could not be read (error " + resp.status + ")."));
      return;
    }
    const pages = Math.max(1, Math.ceil(body.count / PAGE_SIZE));
    show(body.results, body.count ? body.count + (body.count === 1 ? " question" : " questions") + " in your history."
      : "Nothing in your history yet: questions you ask on the Ask page appear here.");
    $("history-pager").hidden = pages <= 1;
    $("history-page").textContent = "Page " + page + " of " + pages;
    $("history-newer").disabled = page <= 1;
    $("history-older").disabled = page >= pages;
  }

  async function search(event) {
    event.preventDefault();
    const q = $("history-q").value.trim();
    $("search-error").textContent = "";
    $("history-q").setAttribute("aria-invalid", "false");
    if (!q) { load(1); return; }
    $("history-status").textContent = "Searching…";
    const resp = await api("/v1/history/search", { method: "POST", body: JSON.stringify({ q, limit: 50 }) });
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      $("search-error").textContent = errorText(body, "The search failed (error " + resp.status + ").");
      $("history-q").setAttribute("aria-invalid", "true");
      $("history-status").textContent = "";
      return;
    }
    $("history-pager").hidden = true;
    $("search-clear").hidden = false;
    const n = body.results.length;
    show(body.results, n ? n + (n === 1 ? " question or answer holds " : " questions or answers hold ") + "those words."
      : "Nothing in your history holds those words.");
  }

  medai.onSignedIn(() => load(1));
  // A shared workstation: nothing of the history stays on the page once signed out.
  medai.onSignedOut(() => { show([], ""); $("history-q").value = ""; $("history-pager").hidden = true; });

  document.addEventListener("DOMContentLoaded", () => {
    $("search-form").addEventListener("submit", search);
    $("search-clear").addEventListener("click", () => { $("history-q").value = ""; load(1); $("history-q").focus(); });
    $("history-newer").addEventListener("click", () => load(page - 1));
    $("history-older").addEventListener("click", () => load(page + 1));
  });
})();

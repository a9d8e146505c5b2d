// medai Ask page: a question to an agent type (or a model), the answer streamed from
// /v1/chat/completions, follow-ups in the same conversation, copy, and a rating of each answer.
// Sign-in and the API client are common.js's (window.medai).
//
// Every exchange is sent with store: true, so it is kept (encrypted, until its retention ends) in
// the clinician's own history; the answer's headers name its exchange (X-Medai-Exchange-Id, what a
// rating names) and its conversation (X-Medai-Conversation-Id, what a follow-up sends as
// conversation_id, with the whole conversation's messages, as OpenAI's chat API wants).
// No PHI in URLs: the page's address carries the conversation's id only (/?conversation=<id>),
// so a reload, or a click in the History page, reopens it from /v1/conversations/{id}.
"use strict";

(function () {
  const { $, api, errorText } = window.medai;

  // Blank as the server counts it (apps/inference/validation: BLANK_CHARS): whitespace and the
  // invisible zero-width characters. The server refuses such a question with a 400 anyway.
  const BLANK = /^[\s\x1c-\x1f\x85\u200b-\u200d\u2060\ufeff]*$/;
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  const agents = new Map(); // option value → {kind, description}
  let defaultChoice = "";
  let controller = null; // the answer being streamed
  let conversationId = null; // the conversation the next question continues (null: a new one)
  let messages = []; // what the next question continues: earlier questions and answers, in order
  let lastStopped = false; // the last answer was stopped: its record may still be on its way

  // --- agent types and models ------------------------------------------------------------------

  async function loadModels() {
    const resp = await api("/v1/models");
    if (!resp.ok) return;
    const data = (await resp.json()).data;
    const select = $("model");
    const previous = select.value;
    select.replaceChildren();
    agents.clear();
    defaultChoice = "";
    const groups = { agent_type: "Agent types", model: "Models" };
    for (const kind of ["agent_type", "model"]) {
      const group = document.createElement("optgroup");
      group.label = groups[kind];
      for (const m of data.filter((m) => m.medai && m.medai.kind === kind)) {
        const opt = document.createElement("option");
        opt.value = m.id;
        opt.textContent = m.id;
        group.appendChild(opt);
        agents.set(m.id, { kind, description: m.medai.description || "" });
        if (kind === "agent_type" && m.medai.default) defaultChoice = m.id;
      }
      if (group.children.length) select.appendChild(group);
    }
    if (previous && agents.has(previous)) select.value = previous;
    else if (defaultChoice) select.value = defaultChoice;
    describeChoice();
  }

  function describeChoice() {
    const info = agents.get($("model").value);
    let text = "";
    if (info && info.kind === "agent_type") text = info.description;
    else if (info) text = "This model, asked directly: no agent type's instructions are added.";
    $("agent-description").textContent = text;
  }

  // --- the conversation on the page ------------------------------------------------------------

  function questionError(text) {
    $("question-error").textContent = text;
    $("question").setAttribute("aria-invalid", text ? "true" : "false");
  }

  function setBusy(busy) {
    $("ask-button").disabled = busy;
    $("stop-button").hidden = !busy;
    $("new-conversation").disabled = busy;
  }

  function inConversation() {
    const started = Boolean(conversationId);
    $("new-conversation").hidden = !started;
    $("question-label").textContent = started ? "Follow-up question" : "Question";
    $("question").placeholder = started ? "Ask a follow-up: the model is given this conversation so far."
      : "e.g. What are the first-line treatments for community-acquired pneumonia?";
  }

  function setAddress(id) {
    const url = id ? "/?conversation=" + encodeURIComponent(id) : "/";
    if (location.pathname + location.search !== url) history.replaceState(null, "", url);
  }

  // A new turn (question, answer, tools), appended to the conversation; the newest answer and its
  // line under it are #answer and #answer-meta, and only that answer is a live region (a screen
  // reader reads it once it is complete: aria-busy while it streams).
  function newTurn(question, live = true) {
    for (const old of document.querySelectorAll("#answer, #answer-meta")) old.removeAttribute("id");
    for (const old of document.querySelectorAll("#turns .answer[aria-live]")) old.removeAttribute("aria-live");
    const li = $("turn-template").content.firstElementChild.cloneNode(true);
    li.querySelector(".question-text").textContent = question;
    const answer = li.querySelector(".answer");
    answer.id = "answer";
    if (live) answer.setAttribute("aria-live", "polite");
    li.querySelector(".answer-meta").id = "answer-meta";
    const turn = { li, answer, exchangeId: null, rating: null };
    wireTools(turn);
    $("turns").appendChild(li);
    return turn;
  }

  function clearConversation(note, keepAddress) {
    if (controller) controller.abort();
    $("turns").replaceChildren();
    conversationId = null;
    messages = [];
    lastStopped = false;
    $("conversation-note").textContent = note || "";
    $("status").textContent = "";
    inConversation();
    if (!keepAddress) setAddress(null);
  }

  // --- copy and rate ---------------------------------------------------------------------------

  function wireTools(turn) {
    const li = turn.li;
    const status = li.querySelector(".tool-status");
    li.querySelector(".copy-button").addEventListener("click", () => copy(turn.answer.textContent, status));
    for (const button of li.querySelectorAll(".rate-button")) {
      button.addEventListener("click", () => rate(turn, button.dataset.rating));
    }
    li.querySelector(".feedback-form").addEventListener("submit", (event) => {
      event.preventDefault();
      rate(turn, turn.rating, true);
    });
  }

  function enableTools(turn) {
    if (!turn.exchangeId) return;
    turn.li.querySelector(".answer-tools").hidden = false;
  }

  async function copy(text, status) {
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = "Answer copied.";
      return;
    } catch (err) {
      // no clipboard permission (or not a secure context): the selection and the copy command
    }
    const scratch = document.createElement("textarea");
    scratch.value = text;
    scratch.setAttribute("readonly", "");
    scratch.className = "visually-hidden";
    document.body.appendChild(scratch);
    scratch.select();
    const copied = document.execCommand && document.execCommand("copy");
    scratch.remove();
    status.textContent = copied ? "Answer copied." : "Could not copy: select the answer and copy it.";
  }

  function showRating(turn, feedback) {
    const li = turn.li;
    turn.rating = feedback ? feedback.rating : null;
    for (const button of li.querySelectorAll(".rate-button")) {
      button.setAttribute("aria-pressed", String(button.dataset.rating === turn.rating));
    }
    const form = li.querySelector(".feedback-form");
    form.hidden = !turn.rating;
    li.querySelector(".reasons").hidden = turn.rating !== "down";
    if (feedback) {
      for (const box of li.querySelectorAll("input[name=reason]")) box.checked = (feedback.reasons || []).includes(box.value);
      li.querySelector(".feedback-comment").value = feedback.comment || "";
    }
  }

  // A rating sends the whole feedback as it stands (rating, reasons, comment): the server keeps one
  // per user per answer, and each one replaces the last.
  async function rate(turn, rating, withDetails) {
    const li = turn.li;
    const status = li.querySelector(".tool-status");
    const error = li.querySelector(".feedback-error");
    error.textContent = "";
    showRating(turn, { rating, reasons: checkedReasons(li), comment: li.querySelector(".feedback-comment").value });
    const body = {
      exchange_id: turn.exchangeId,
      rating,
      reasons: rating === "down" ? checkedReasons(li) : [],
      comment: li.querySelector(".feedback-comment").value,
    };
    status.textContent = "Saving your rating…";
    let resp = null;
    for (let attempt = 0; attempt < 4; attempt++) {
      resp = await api("/v1/feedback", { method: "POST", body: JSON.stringify(body) });
      if (resp.status !== 404 || !turn.stopped) break;
      await new Promise((r) => setTimeout(r, 500)); // a stopped answer's record is written just after
    }
    const answer = await resp.json().catch(() => null);
    if (!resp.ok) {
      status.textContent = "";
      const param = answer && answer.error && answer.error.param;
      error.textContent = "Your rating was not saved: " + errorText(answer, "error " + resp.status + ".") +
        (param === "comment" ? " Shorten the comment." : "");
      return;
    }
    const word = rating === "up" ? "helpful" : "not helpful";
    status.textContent = withDetails ? "Thank you: your feedback was sent." : "Rated " + word + ". Thank you.";
  }

  function checkedReasons(li) {
    return [...li.querySelectorAll("input[name=reason]:checked")].map((box) => box.value);
  }

  // --- asking ----------------------------------------------------------------------------------

  async function send(body) {
    for (let attempt = 0; ; attempt++) {
      const resp = await api("/v1/chat/completions", { method: "POST", signal: controller.signal, body: JSON.stringify(body) });
      // The conversation of an answer just stopped may not be recorded yet: ask again shortly.
      if (resp.status !== 404 || !lastStopped || attempt >= 3) return resp;
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  async function ask(event) {
    event.preventDefault();
    if (controller) return;
    const question = $("question").value;
    if (BLANK.test(question)) {
      questionError("Type a question first: it is empty or holds only spaces, so nothing was sent.");
      $("question").focus();
      return;
    }
    questionError("");
    const turn = newTurn(question);
    const answer = turn.answer;
    const meta = turn.li.querySelector(".answer-meta");
    $("status").textContent = "Asking…";
    $("conversation-note").textContent = "";
    setBusy(true);
    controller = new AbortController();
    const started = performance.now();
    const asked = [...messages, { role: "user", content: question }];
    let streaming = false;
    let text = "", model = "", finish = "", failure = "";
    try {
      const body = {
        model: $("model").value, stream: true, max_tokens: Number($("max-tokens").value) || 256,
        messages: asked, store: true,
      };
      if (conversationId) body.conversation_id = conversationId;
      const resp = await send(body);
      if (!resp.ok) {
        turn.li.remove();
        const err = await resp.json().catch(() => null);
        const param = err && err.error && err.error.param;
        if (resp.status === 400 && param && param.startsWith("messages")) {
          questionError("The question was not accepted: " + errorText(err, "it is not valid."));
          $("status").textContent = "Not sent to a model.";
        } else if (resp.status === 404 && err && err.error && err.error.code === "conversation_not_found") {
          clearConversation("That conversation is no longer kept (its retention ended): your question starts a new one.");
          $("status").textContent = "Not sent: ask again to start a new conversation.";
        } else {
          $("status").textContent = errorText(err, "Request failed (" + resp.status + ").");
        }
        return;
      }
      streaming = true;
      turn.exchangeId = resp.headers.get("X-Medai-Exchange-Id");
      conversationId = resp.headers.get("X-Medai-Conversation-Id") || conversationId;
      setAddress(conversationId);
      inConversation();
      $("question").value = "";
      answer.setAttribute("aria-busy", "true"); // announced once, when it is complete
      $("status").textContent = "Answering…";
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
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
          const chunk = JSON.parse(data);
          if (chunk.error) { failure = chunk.error.message; continue; }
          model = chunk.model || model;
          for (const choice of chunk.choices || []) {
            if (choice.delta && choice.delta.content) { text += choice.delta.content; answer.textContent = text; }
            if (choice.finish_reason) finish = choice.finish_reason;
          }
        }
      }
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      if (failure) {
        $("status").textContent = failure;
        meta.textContent = "The model server failed while answering" + (text ? ": the answer is incomplete." : ".");
      } else {
        $("status").textContent = "Done.";
        meta.textContent = "Answered by " + model + " in " + seconds + " s." +
          (finish === "length" ? " The answer was cut off at the token limit." : "");
      }
      lastStopped = false;
    } catch (err) {
      const stopped = err.name === "AbortError";
      $("status").textContent = stopped ? "Stopped." : "Connection problem: " + err.message;
      if (streaming) {
        meta.textContent = stopped ? "Stopped: the answer is what came until then." : "The answer is incomplete.";
        turn.stopped = true;
        lastStopped = true;
      } else {
        turn.li.remove();
      }
    } finally {
      answer.setAttribute("aria-busy", "false");
      if (streaming) {
        messages = asked.slice();
        if (text) messages.push({ role: "assistant", content: text });
        enableTools(turn);
      }
      setBusy(false);
      controller = null;
    }
  }

  // --- reopening a conversation from the history -----------------------------------------------

  async function reopen(id) {
    $("status").textContent = "Opening the conversation…";
    const resp = await api("/v1/conversations/" + encodeURIComponent(id));
    if (!resp.ok) {
      clearConversation(resp.status === 404
        ? "That conversation is no longer available: its retention ended, or it is not yours."
        : "The conversation could not be opened (error " + resp.status + ").");
      return;
    }
    const body = await resp.json();
    $("turns").replaceChildren();
    let last = null;
    for (const exchange of body.exchanges) {
      const turn = newTurn(exchange.question, false); // read back, not news: no announcement
      turn.exchangeId = exchange.exchange_id;
      turn.answer.textContent = exchange.answer || "";
      turn.li.querySelector(".answer-meta").textContent = describeExchange(exchange);
      enableTools(turn);
      showRating(turn, exchange.feedback);
      last = exchange;
    }
    conversationId = body.conversation_id;
    messages = last ? last.messages.slice() : [];
    if (last && last.answer) messages.push({ role: "assistant", content: last.answer });
    if (last && last.agent_type && agents.has(last.agent_type)) {
      $("model").value = last.agent_type;
      describeChoice();
    }
    inConversation();
    $("status").textContent = "";
    $("conversation-note").textContent = "Reopened from your history: a question now follows up on it.";
  }

  function describeExchange(exchange) {
    const when = new Date(exchange.created_at).toLocaleString();
    if (exchange.status === "cancelled") return "Stopped: the answer is what came until then. " + when + ".";
    if (exchange.error) return "Failed: " + exchange.error.message + " " + when + ".";
    if (exchange.answer == null) return "No answer (" + exchange.status + "). " + when + ".";
    return "Answered by " + exchange.model + " · " + when + "." +
      (exchange.finish_reason === "length" ? " The answer was cut off at the token limit." : "");
  }

  // --- wiring ----------------------------------------------------------------------------------

  medai.onSignedIn(async () => {
    await loadModels();
    const id = new URLSearchParams(location.search).get("conversation");
    if (id && UUID.test(id)) await reopen(id);
    else if (id) setAddress(null);
  });

  // A shared workstation: nothing of the conversation stays on the page once signed out.
  // (The address keeps a conversation's id until one was open here: signing in then reopens it.)
  medai.onSignedOut(() => {
    clearConversation("", !conversationId);
    $("question").value = "";
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("ask-form").addEventListener("submit", ask);
    $("stop-button").addEventListener("click", () => controller && controller.abort());
    $("new-conversation").addEventListener("click", () => {
      clearConversation("New conversation: your next question starts afresh.");
      $("question").focus();
    });
    $("model").addEventListener("change", describeChoice);
    $("question").addEventListener("input", () => { if (!BLANK.test($("question").value)) questionError(""); });
    $("question").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        $("ask-form").requestSubmit();
      }
    });
  });
})();

// medai Ask page: a question to an agent type or model, the answer streamed from
// /v1/chat/completions. Sign-in and the API client are common.js's (window.medai).
"use strict";

const { $, api, errorText } = window.medai;
let controller = null;

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

medai.onSignedIn(loadModels);

document.addEventListener("DOMContentLoaded", () => {
  $("ask-form").addEventListener("submit", ask);
  $("stop-button").addEventListener("click", () => controller && controller.abort());
  $("question").addEventListener("input", () => { if (!BLANK.test($("question").value)) questionError(""); });
});

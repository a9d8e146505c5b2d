// medai Tasks page: submit one or many questions (lines, or a CSV read in this browser) through
// the public async API, and follow them live over /ws/tasks/ (status, place in the queue, batch
// progress): no polling. After a reconnect the list is read again once, for what was missed.
// PHI stays out of URLs: questions and answers travel in POST bodies and API answers only; a
// task's question is known to this tab (memory) only if it was submitted from it.
"use strict";

(function () {
  const PRIORITIES = ["low", "normal", "high", "critical"];
  const FINISHED = ["completed", "failed", "cancelled", "expired"];
  const RETRYABLE = ["failed", "cancelled", "expired"];
  const MAX_ERRORS = 5; // CSV errors shown at once

  const tasks = new Map(); // task_id → {task_id, status, priority, agent_type, model, batch_id, position, changed_at, created_at}
  const rows = new Map(); // task_id → <li>
  const batches = new Map(); // batch_id → {batch_id, total, completed, …, created}
  const questions = new Map(); // task_id → question text, for tasks submitted from this tab
  let agents = [];
  let socket = null;
  let connectedOnce = false;
  let refused = false;
  let retryDelay = 1000;
  let retryTimer = null;
  let detailId = null;
  let signedIn = false;

  const $ = (id) => document.getElementById(id);
  const short = (id) => String(id || "").slice(0, 8);

  // --- CSV (RFC 4180: quoted fields, "" escapes, line breaks inside quotes, CRLF) ---------------

  class InputError extends Error {
    constructor(messages) { super(messages.join("\n")); this.messages = messages; }
  }

  // → [{cells: [...], line: n}] where line is the 1-based line where the record starts.
  function parseCsv(text) {
    const records = [];
    let cells = [], cell = "", quoted = false, afterQuote = false, line = 1, start = 1, i = 0;
    if (text.charCodeAt(0) === 0xfeff) i = 1; // a byte order mark
    const endRecord = () => { cells.push(cell); records.push({ cells, line: start }); cells = []; cell = ""; };
    for (; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"') {
          if (text[i + 1] === '"') { cell += '"'; i++; } else { quoted = false; afterQuote = true; }
        } else {
          if (c === "\n") line++;
          cell += c;
        }
        continue;
      }
      if (c === ",") { cells.push(cell); cell = ""; afterQuote = false; continue; }
      if (c === "\r" || c === "\n") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        endRecord(); afterQuote = false; line++; start = line;
        continue;
      }
      if (afterQuote) throw new InputError([`line ${line}: text after a closing quote; quote the whole field.`]);
      if (c === '"') {
        if (cell.trim() !== "") throw new InputError([`line ${line}: a quote inside an unquoted field; quote the whole field and double the quote ("").`]);
        cell = ""; quoted = true;
        continue;
      }
      cell += c;
    }
    if (quoted) throw new InputError([`line ${start}: a quoted field is not closed.`]);
    if (cell !== "" || cells.length) endRecord();
    return records.filter((r) => r.cells.some((c) => c.trim() !== ""));
  }

  // The CSV's rows → submit items, or an InputError naming each bad line and column.
  function csvItems(text, defaults) {
    const records = parseCsv(text);
    if (!records.length) throw new InputError(["The CSV file is empty."]);
    const header = records[0].cells.map((h) => h.trim().toLowerCase());
    const column = (...names) => header.findIndex((h) => names.includes(h));
    const q = column("question", "prompt");
    if (q < 0) {
      throw new InputError([`line ${records[0].line}: the first line must be a header with a "question" column (found: ${header.map((h) => '"' + h + '"').join(", ") || "nothing"}).`]);
    }
    const p = column("priority"), a = column("agent_type", "agent"), m = column("max_tokens");
    const errors = [], items = [], lines = [];
    for (const { cells, line } of records.slice(1)) {
      if (cells.length > header.length) {
        errors.push(`line ${line}: ${cells.length} fields, but the header names ${header.length}; quote a field that holds a comma.`);
        continue;
      }
      const value = (index) => (index >= 0 && index < cells.length ? cells[index].trim() : "");
      const question = value(q);
      if (!question) { errors.push(`line ${line}, column "question": empty.`); continue; }
      const priority = (value(p) || defaults.priority).toLowerCase();
      if (!PRIORITIES.includes(priority)) {
        errors.push(`line ${line}, column "priority": "${value(p)}" is not one of ${PRIORITIES.join(", ")}.`);
        continue;
      }
      const agent = value(a) || defaults.agent_type;
      if (agents.length && !agents.includes(agent)) {
        errors.push(`line ${line}, column "agent_type": "${agent}" is not an agent type you can use (${agents.join(", ")}).`);
        continue;
      }
      let maxTokens = defaults.max_tokens;
      if (value(m)) {
        maxTokens = Number(value(m));
        if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > 4096) {
          errors.push(`line ${line}, column "max_tokens": "${value(m)}" is not a whole number from 1 to 4096.`);
          continue;
        }
      }
      items.push(item(question, agent, priority, maxTokens));
      lines.push(`CSV line ${line}`);
    }
    if (errors.length) {
      const shown = errors.slice(0, MAX_ERRORS);
      if (errors.length > MAX_ERRORS) shown.push(`… and ${errors.length - MAX_ERRORS} more.`);
      throw new InputError(shown);
    }
    if (!items.length) throw new InputError([`The CSV has a header but no questions.`]);
    return { items, lines };
  }

  function item(question, agentType, priority, maxTokens) {
    return { agent_type: agentType, priority, max_tokens: maxTokens, messages: [{ role: "user", content: question }] };
  }

  function defaults() {
    const maxTokens = Number($("task-max-tokens").value);
    if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > 4096) {
      throw new InputError(["Max tokens must be a whole number from 1 to 4096."]);
    }
    return { agent_type: $("task-agent").value, priority: $("task-priority").value, max_tokens: maxTokens };
  }

  let csvText = null; // the chosen file's text
  let csvName = "";

  async function readCsv() {
    const file = $("task-csv").files[0];
    csvText = null; csvName = "";
    $("csv-summary").textContent = "";
    setInvalid("task-csv", false);
    if (!file) return;
    csvText = await file.text();
    csvName = file.name;
    try {
      const { items } = csvItems(csvText, defaults());
      $("csv-summary").textContent = `${csvName}: ${items.length} question${items.length === 1 ? "" : "s"} ready to submit.`;
      $("submit-error").textContent = "";
    } catch (err) {
      showInputError(err, "task-csv");
    }
  }

  function setInvalid(id, invalid) {
    if (invalid) $(id).setAttribute("aria-invalid", "true"); else $(id).removeAttribute("aria-invalid");
  }

  function showInputError(err, field) {
    const messages = err instanceof InputError ? err.messages : [String(err.message || err)];
    const box = $("submit-error");
    box.replaceChildren(...messages.map((m) => { const div = document.createElement("div"); div.textContent = m; return div; }));
    if (field) { setInvalid(field, true); $(field).focus(); }
  }

  // --- submitting ------------------------------------------------------------------------------

  async function submit(event) {
    event.preventDefault();
    $("submit-error").textContent = "";
    $("submit-status").textContent = "";
    setInvalid("task-lines", false);
    setInvalid("task-csv", false);
    const text = $("task-lines").value;
    const hasLines = text.trim() !== "";
    let items, lines, field;
    try {
      const base = defaults();
      if (csvText !== null && hasLines) {
        field = "task-lines";
        throw new InputError(["Submit either the lines or the CSV file, not both: clear one of them."]);
      }
      if (csvText !== null) {
        field = "task-csv";
        ({ items, lines } = csvItems(csvText, base));
      } else {
        field = "task-lines";
        items = []; lines = [];
        text.split(/\r?\n/).forEach((raw, index) => {
          if (raw.trim()) { items.push(item(raw.trim(), base.agent_type, base.priority, base.max_tokens)); lines.push(`line ${index + 1}`); }
        });
        if (!items.length) throw new InputError(["Type at least one question (one per line), or choose a CSV file."]);
      }
    } catch (err) {
      showInputError(err, field || "task-max-tokens");
      return;
    }
    const button = $("submit-button");
    button.disabled = true;
    $("submit-status").textContent = `Submitting ${items.length} task${items.length === 1 ? "" : "s"}…`;
    try {
      const batch = items.length > 1;
      const resp = await medai.api(batch ? "/v1/async/submit-batch" : "/v1/async/submit", {
        method: "POST", body: JSON.stringify(batch ? { requests: items } : items[0]),
      });
      const body = await resp.json().catch(() => null);
      if (!resp.ok) {
        $("submit-status").textContent = "";
        showInputError(new InputError([serverError(body, resp, lines)]), field);
        return;
      }
      if (batch) {
        body.task_ids.forEach((id, i) => {
          questions.set(id, items[i].messages[0].content);
          merge({ task_id: id, status: "queued", priority: items[i].priority, agent_type: items[i].agent_type, batch_id: body.batch_id });
        });
        noteBatch(body.batch_id, { total: new Set(body.task_ids).size });
        await loadBatch(body.batch_id);
        $("submit-status").textContent = `Queued ${items.length} tasks as batch ${short(body.batch_id)}.`;
      } else {
        questions.set(body.task_id, items[0].messages[0].content);
        merge(body);
        $("submit-status").textContent = body.deduplicated
          ? `The same question is already queued or answered: task ${short(body.task_id)}.`
          : `Queued task ${short(body.task_id)}.`;
      }
      $("task-lines").value = "";
      $("task-csv").value = "";
      csvText = null;
      $("csv-summary").textContent = "";
    } catch (err) {
      $("submit-status").textContent = "";
      showInputError(new InputError(["The server could not be reached: " + err.message]), null);
    } finally {
      button.disabled = false;
    }
  }

  // A server error, with a batch item's index (requests[3]) turned into the line it came from.
  function serverError(body, resp, lines) {
    let message = medai.errorText(body, `The server answered ${resp.status}.`);
    const param = (body && body.error && body.error.param) || "";
    const match = /^requests\[(\d+)\]\.?(.*)$/.exec(param) || /^requests\[(\d+)\]/.exec(message);
    if (match && lines[Number(match[1])]) {
      message = message.replace(/^requests\[\d+\][^:]*:\s*/, "");
      return `${lines[Number(match[1])]}: ${message}`;
    }
    if (lines.length === 1 && param) return `${lines[0]}: ${message}`;
    return message + (resp.status === 429 && resp.headers.get("Retry-After") ? ` (retry in ${resp.headers.get("Retry-After")} s)` : "");
  }

  // --- the list --------------------------------------------------------------------------------

  // Merge what an event or an API answer says about a task. An older event never overwrites a
  // newer state (changed_at); an API answer without changed_at fills in fields only when it is
  // the first news of the task, or when its status is a later one.
  function merge(data) {
    const known = tasks.get(data.task_id);
    if (known && data.changed_at && known.changed_at && data.changed_at < known.changed_at) return known;
    const task = Object.assign({}, known || {}, definedOnly(data));
    if (known && !data.changed_at && known.changed_at && rank(data.status) < rank(known.status)) {
      task.status = known.status; task.position = known.position;
    }
    if (task.status !== "queued") task.position = null;
    task.first_seen = (known && known.first_seen) || data.created_at || data.changed_at || new Date().toISOString();
    tasks.set(task.task_id, task);
    if (task.batch_id) noteBatch(task.batch_id, null);
    renderRow(task);
    if (detailId === task.task_id) renderDetailStatus(task, known);
    return task;
  }

  function rank(status) { return status === "queued" ? 0 : status === "processing" ? 1 : 2; }

  function definedOnly(data) {
    const out = {};
    for (const [k, v] of Object.entries(data)) if (v !== undefined && k !== "batch") out[k] = v;
    return out;
  }

  function matches(task) {
    const status = $("filter-status").value, priority = $("filter-priority").value, batch = $("filter-batch").value;
    return (!status || task.status === status) && (!priority || task.priority === priority) && (!batch || task.batch_id === batch);
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function statusText(task) {
    if (task.status === "queued" && task.position) return `queued · #${task.position} in line`;
    return task.status;
  }

  function renderRow(task) {
    let li = rows.get(task.task_id);
    if (!li) {
      li = el("li", "task-row");
      li.dataset.taskId = task.task_id;
      const open = el("button", "task-open");
      open.type = "button";
      open.addEventListener("click", () => openDetail(task.task_id));
      const cancel = el("button", "task-cancel secondary", "Cancel");
      cancel.type = "button";
      cancel.addEventListener("click", () => cancelTask(task.task_id, cancel));
      li.append(open, cancel);
      rows.set(task.task_id, li);
      insertRow(li, task);
    }
    const open = li.querySelector(".task-open");
    const question = questions.get(task.task_id);
    const badge = el("span", `badge status-${task.status}`, statusText(task));
    badge.dataset.status = task.status;
    const title = el("span", "task-title", question || `Task ${short(task.task_id)}`);
    const meta = el("span", "task-meta muted",
      [task.agent_type, task.model, task.batch_id ? `batch ${short(task.batch_id)}` : "", `#${short(task.task_id)}`].filter(Boolean).join(" · "));
    const prio = el("span", `prio prio-${task.priority}`, task.priority || "");
    const when = el("time", "muted", task.changed_at ? new Date(task.changed_at).toLocaleTimeString() : "");
    if (task.changed_at) when.dateTime = task.changed_at;
    const main = el("span", "task-main");
    main.append(title, meta);
    const side = el("span", "task-side");
    side.append(badge, prio, when);
    open.replaceChildren(main, side);
    open.setAttribute("aria-label", `${question ? "“" + question.slice(0, 60) + "”" : "Task " + short(task.task_id)}: ${statusText(task)}, ${task.priority} priority. Open details.`);
    li.dataset.status = task.status;
    const cancel = li.querySelector(".task-cancel");
    cancel.hidden = task.status !== "queued";
    cancel.setAttribute("aria-label", `Cancel task ${short(task.task_id)}`);
    li.hidden = !matches(task);
    $("list-empty").hidden = [...tasks.values()].some(matches);
  }

  function insertRow(li, task) {
    const list = $("task-list");
    const first = task.first_seen || task.created_at || task.changed_at || "";
    for (const other of list.children) {
      const t = tasks.get(other.dataset.taskId);
      if (t && (t.first_seen || "") < first) { list.insertBefore(li, other); return; }
    }
    list.appendChild(li);
  }

  function applyFilters() {
    for (const task of tasks.values()) {
      const li = rows.get(task.task_id);
      if (li) li.hidden = !matches(task);
    }
    $("list-empty").hidden = [...tasks.values()].some(matches);
    loadList(); // older tasks that match, from the server
  }

  async function loadList() {
    const params = new URLSearchParams({ page_size: "100" });
    for (const [name, id] of [["status", "filter-status"], ["priority", "filter-priority"], ["batch", "filter-batch"]]) {
      if ($(id).value) params.set(name, $(id).value);
    }
    // Query parameters carry ids and choices only, never a question.
    const resp = await medai.api("/v1/async/tasks?" + params.toString());
    const body = await resp.json().catch(() => null);
    if (!resp.ok) { $("list-error").textContent = medai.errorText(body, "The tasks could not be read."); return; }
    $("list-error").textContent = "";
    for (const task of body.results) merge(task);
    const ids = new Set(body.results.map((t) => t.batch_id).filter(Boolean));
    await Promise.all([...ids].map(loadBatch));
    $("list-empty").hidden = [...tasks.values()].some(matches);
  }

  // --- batches ---------------------------------------------------------------------------------

  function noteBatch(batchId, counts) {
    let batch = batches.get(batchId);
    const fresh = !batch;
    if (!batch) { batch = { batch_id: batchId, first_seen: new Date().toISOString() }; batches.set(batchId, batch); }
    if (counts && doneOf(counts) >= doneOf(batch)) Object.assign(batch, counts); // finished tasks stay finished: older counts never win
    if (fresh) {
      const option = el("option", "", `Batch ${short(batchId)}`);
      option.value = batchId;
      $("filter-batch").appendChild(option);
    }
    renderBatch(batch);
  }

  function doneOf(c) { return (c.completed || 0) + (c.failed || 0) + (c.cancelled || 0) + (c.expired || 0); }

  async function loadBatch(batchId) {
    const resp = await medai.api("/v1/async/batch-status/" + encodeURIComponent(batchId));
    if (resp.ok) { const body = await resp.json(); delete body.batch_id; noteBatch(batchId, body); }
  }

  function renderBatch(batch) {
    $("batches-panel").hidden = false;
    let li = document.querySelector(`#batch-list li[data-batch-id="${batch.batch_id}"]`);
    if (!li) {
      li = el("li", "batch");
      li.dataset.batchId = batch.batch_id;
      const label = el("div", "batch-label");
      label.id = `batch-label-${batch.batch_id}`;
      const bar = el("progress", "batch-bar");
      bar.max = 100;
      bar.setAttribute("aria-labelledby", label.id);
      const text = el("div", "batch-text muted");
      const show = el("button", "secondary batch-show", "Show its tasks");
      show.type = "button";
      show.addEventListener("click", () => { $("filter-batch").value = batch.batch_id; applyFilters(); });
      li.append(label, bar, text, show);
      $("batch-list").prepend(li);
    }
    const total = batch.total || 0;
    const done = doneOf(batch);
    const percent = batch.progress_percent != null ? batch.progress_percent : total ? Math.round((100 * done) / total) : 0;
    li.querySelector(".batch-label").textContent = `Batch ${short(batch.batch_id)} · ${total} task${total === 1 ? "" : "s"} · ${percent}%`;
    const bar = li.querySelector(".batch-bar");
    bar.value = percent;
    bar.textContent = percent + "%";
    li.dataset.percent = String(percent);
    const parts = [`${done} of ${total} done`];
    for (const name of ["completed", "failed", "cancelled", "expired", "processing", "queued"]) {
      if (batch[name]) parts.push(`${batch[name]} ${name}`);
    }
    li.querySelector(".batch-text").textContent = parts.join(" · ");
  }

  // --- live: /ws/tasks/ ------------------------------------------------------------------------

  function setLive(text, ok) {
    $("live-state").textContent = text;
    $("live-state").classList.toggle("live-ok", Boolean(ok));
  }

  function connect() {
    clearTimeout(retryTimer);
    if (socket || refused || !signedIn || !medai.tokens().access) return;
    const ws = medai.socket("/ws/tasks/");
    socket = ws;
    ws.onopen = () => {
      retryDelay = 1000;
      setLive("Live", true);
      if (connectedOnce) loadList(); // what changed while the socket was away
      connectedOnce = true;
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "task.update") {
        const data = message.data;
        if (data.batch_id && data.batch) noteBatch(data.batch_id, data.batch);
        merge(data);
      } else if (message.type === "task.positions") {
        for (const [id, position] of Object.entries(message.data.positions)) {
          const task = tasks.get(id);
          if (task && task.status === "queued" && task.position !== position) { task.position = position; renderRow(task); if (detailId === id) renderDetailStatus(task, task); }
        }
      }
    };
    ws.onclose = async (event) => {
      if (socket !== ws) return;
      socket = null;
      if (!signedIn) return;
      if (event.code === 4403) { refused = true; setLive("Live updates need the read scope."); return; }
      if (event.code === 4401) {
        setLive("Signing in again…");
        if (!(await medai.refreshTokens().catch(() => false))) return;
        retryTimer = setTimeout(connect, 100);
        return;
      }
      setLive(event.code === 1013 ? "Live updates paused (server restarting), reconnecting…" : "Reconnecting…");
      retryTimer = setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    };
  }

  // --- detail, cancel, retry -------------------------------------------------------------------

  const FIELDS = [
    ["Status", (t) => statusText(t)],
    ["Priority", (t) => t.priority],
    ["Agent type", (t) => t.agent_type],
    ["Model", (t) => t.model || "—"],
    ["Batch", (t) => (t.batch_id ? short(t.batch_id) : "—")],
    ["Submitted", (t) => time(t.created_at)],
    ["Started", (t) => time(t.started_at)],
    ["Finished", (t) => time(t.finished_at)],
    ["Queue wait", (t) => ms(t.queue_wait_ms)],
    ["Inference", (t) => ms(t.inference_ms)],
    ["Tokens", (t) => (t.prompt_tokens != null ? `${t.prompt_tokens} in · ${t.completion_tokens} out` : "—")],
    ["Attempts", (t) => (t.attempts != null ? String(t.attempts) : "—")],
    ["Task id", (t) => t.task_id],
  ];

  function time(value) { return value ? new Date(value).toLocaleString() : "—"; }
  function ms(value) { return value == null ? "—" : value < 1000 ? `${value} ms` : `${(value / 1000).toFixed(1)} s`; }

  async function openDetail(id) {
    detailId = id;
    const panel = $("task-detail");
    panel.hidden = false;
    $("detail-title").textContent = `Task ${short(id)}`;
    $("detail-answer").textContent = "";
    $("detail-error").textContent = "";
    $("detail-status").textContent = "";
    const question = questions.get(id);
    $("detail-question").hidden = !question;
    $("detail-question").textContent = question ? "Question: " + question : "";
    renderDetailStatus(tasks.get(id) || { task_id: id }, null);
    panel.focus();
    await refreshDetail(id);
  }

  // Everything the status endpoint says (timings, tokens), and the answer once there is one.
  async function refreshDetail(id) {
    const resp = await medai.api("/v1/async/status/" + encodeURIComponent(id));
    const body = await resp.json().catch(() => null);
    if (detailId !== id) return;
    if (!resp.ok) { $("detail-error").textContent = medai.errorText(body, "The task could not be read."); return; }
    const task = merge(body);
    Object.assign(task, body); // timings and tokens: the detail's own fields
    renderDetailStatus(task, null);
    if (task.status === "completed") {
      const result = await medai.api("/v1/async/result/" + encodeURIComponent(id));
      const answer = await result.json().catch(() => null);
      if (detailId !== id) return;
      if (result.ok) {
        const choice = (answer.choices || [])[0] || {};
        $("detail-answer").textContent = (choice.message && choice.message.content) || "(an empty answer)";
      } else {
        $("detail-error").textContent = medai.errorText(answer, "The answer could not be read.");
      }
    } else if (task.status === "failed" || task.status === "expired") {
      $("detail-error").textContent = task.error ? `${task.error.message} (${task.error.code})` : `The task ${task.status}.`;
    }
  }

  function renderDetailStatus(task, before) {
    const dl = $("detail-fields");
    const items = [];
    for (const [label, value] of FIELDS) {
      const dt = el("dt", "", label);
      const dd = el("dd", "", value(task) || "—");
      if (label === "Status") { dd.className = `badge status-${task.status}`; dd.dataset.status = task.status || ""; }
      items.push(dt, dd);
    }
    dl.replaceChildren(...items);
    $("detail-cancel").hidden = task.status !== "queued";
    $("detail-retry").hidden = !RETRYABLE.includes(task.status);
    // It has just ended: read its timings, tokens and answer once.
    if (before && before.status !== task.status && FINISHED.includes(task.status)) refreshDetail(task.task_id);
  }

  async function cancelTask(id, button) {
    if (button) button.disabled = true;
    try {
      const resp = await medai.api("/v1/async/cancel/" + encodeURIComponent(id), { method: "POST" });
      const body = await resp.json().catch(() => null);
      const message = resp.ok ? `Task ${short(id)} cancelled.` : medai.errorText(body, "The task could not be cancelled.");
      if (resp.ok) merge(body);
      if (detailId === id) $("detail-status").textContent = message; else $("submit-status").textContent = message;
    } finally {
      if (button) button.disabled = false;
    }
  }

  async function retryTask(id) {
    const button = $("detail-retry");
    button.disabled = true;
    try {
      const resp = await medai.api("/v1/async/retry/" + encodeURIComponent(id), { method: "POST", body: "{}" });
      const body = await resp.json().catch(() => null);
      if (!resp.ok) { $("detail-status").textContent = medai.errorText(body, "The task could not be retried."); return; }
      if (questions.has(id)) questions.set(body.task_id, questions.get(id));
      merge(body);
      await openDetail(body.task_id);
      $("detail-status").textContent = `Queued again as task ${short(body.task_id)} (retry of ${short(id)}).`;
    } finally {
      button.disabled = false;
    }
  }

  function closeDetail() {
    const id = detailId;
    detailId = null;
    $("task-detail").hidden = true;
    const row = rows.get(id);
    if (row) row.querySelector(".task-open").focus();
  }

  // --- agent types, sign-in and sign-out -------------------------------------------------------

  async function loadAgents() {
    const resp = await medai.api("/v1/models");
    if (!resp.ok) return;
    const list = (await resp.json()).data.filter((m) => m.medai && m.medai.kind === "agent_type");
    agents = list.map((m) => m.id);
    const select = $("task-agent");
    const chosen = select.value;
    select.replaceChildren(...list.map((m) => {
      const option = el("option", "", m.medai.description ? `${m.id} — ${m.medai.description}` : m.id);
      option.value = m.id;
      return option;
    }));
    const preferred = list.find((m) => m.medai.default) || list.find((m) => m.id === "MedicalQA") || list[0];
    if (agents.includes(chosen)) select.value = chosen; else if (preferred) select.value = preferred.id;
  }

  function reset() {
    signedIn = false;
    if (socket) { const ws = socket; socket = null; ws.close(1000); }
    clearTimeout(retryTimer);
    tasks.clear(); rows.clear(); batches.clear(); questions.clear();
    $("task-list").replaceChildren();
    $("batch-list").replaceChildren();
    $("batches-panel").hidden = true;
    for (const option of [...$("filter-batch").options].slice(1)) option.remove();
    $("task-detail").hidden = true;
    detailId = null; connectedOnce = false; refused = false; csvText = null;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("submit-form").addEventListener("submit", submit);
    $("task-csv").addEventListener("change", readCsv);
    $("task-lines").addEventListener("input", () => setInvalid("task-lines", false));
    for (const id of ["filter-status", "filter-priority", "filter-batch"]) $(id).addEventListener("change", applyFilters);
    $("detail-close").addEventListener("click", closeDetail);
    $("detail-cancel").addEventListener("click", () => cancelTask(detailId, $("detail-cancel")));
    $("detail-retry").addEventListener("click", () => retryTask(detailId));
    $("task-detail").addEventListener("keydown", (event) => { if (event.key === "Escape") closeDetail(); });
  });

  medai.onSignedIn(async () => {
    signedIn = true;
    connect();
    await Promise.all([loadAgents(), loadList()]);
  });
  medai.onSignedOut(reset);
})();

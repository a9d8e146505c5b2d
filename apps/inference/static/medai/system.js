// medai System page: GPU memory and temperature per GPU (live over /ws/gpu/, the monitor
// publishes every 2 s), pressure and thermal state, the models the GPU policy allows now, the
// queue by priority and each backend's health and circuit (GET /v1/system/status, read every
// POLL_MS and whenever the policy changes). A sample older than the server's staleness limit is
// shown as stale, whether the socket says so or no frame came at all.
"use strict";

(function () {
  const { $, api, socket, errorText } = window.medai;
  const POLL_MS = 5000;
  const PRIORITIES = ["critical", "high", "normal", "low"];
  const LEVEL_TEXT = { LOW: "Low", NORMAL: "Normal", HIGH: "High", CRITICAL: "Critical" };

  let ws = null;
  let running = false;
  let pollTimer = null;
  let tickTimer = null;
  let retryTimer = null;
  let retryDelay = 1000;
  let staleAfter = 6; // seconds; the server's MEDAI_GPU_STALE_AFTER once read
  let sample = { at: null, ageAtReceipt: null, receivedAt: 0, simulated: false, gpus: [] };
  let lastPolicy = "";
  let socketNote = "";
  let lastAnnounced = "";
  let loaded = false; // a read or a frame arrived

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    return node;
  }

  // A GPU in either shape: GET /v1/gpu/status's (memory: {...}, pressure_level) or the monitor's
  // raw gpu.update frame (memory_total_mb, level).
  function normalizeGpu(g) {
    const m = g.memory || {
      total_mb: g.memory_total_mb, used_mb: g.memory_used_mb, free_mb: g.memory_free_mb, used_percent: g.memory_percent,
    };
    return {
      index: g.index, name: g.name, simulated: Boolean(g.simulated), memory: m,
      temperature_c: g.temperature_c, power_w: g.power_w, utilization_percent: g.utilization_percent,
      pressure_level: g.pressure_level || g.level, thermal_state: g.thermal_state || g.thermal, models: g.models || [],
    };
  }

  function ageNow() {
    if (sample.at == null) return null;
    return (sample.ageAtReceipt || 0) + (Date.now() - sample.receivedAt) / 1000;
  }

  function takeSample(data) {
    loaded = true;
    sample = {
      at: data.sampled_at == null ? null : data.sampled_at,
      ageAtReceipt: data.age_seconds == null ? 0 : data.age_seconds,
      receivedAt: Date.now(),
      simulated: Boolean(data.simulated),
      gpus: (data.gpus || []).map(normalizeGpu),
    };
    renderGpus();
    renderFreshness();
  }

  function meter(label, value, max, low, high, text) {
    const id = "m-" + Math.random().toString(36).slice(2);
    const row = el("div", { class: "meter-row" });
    row.append(el("span", { id: id, class: "meter-label" }, label));
    const m = el("meter", { min: "0", max: String(max), low: String(low), high: String(high), optimum: "0", "aria-labelledby": id });
    m.value = value == null ? 0 : value;
    row.append(m, el("span", { class: "meter-value" }, text));
    return row;
  }

  function renderGpus() {
    const list = $("gpu-list");
    list.replaceChildren();
    if (!sample.gpus.length) {
      list.append(el("p", { class: "muted" }, sample.at == null ? "No GPU sample yet." : "No GPU reported."));
      return;
    }
    for (const g of sample.gpus) {
      const card = el("article", { class: "gpu-card", "data-gpu": String(g.index) });
      const title = el("h3", {}, "GPU " + g.index + " · " + (g.name || ""));
      if (g.simulated || sample.simulated) title.append(" ", el("span", { class: "badge simulated" }, "simulated"));
      card.append(title);
      const m = g.memory || {};
      const pct = m.used_percent == null ? null : Number(m.used_percent);
      card.append(meter("Memory", pct, 100, 70, 90,
        pct == null ? "—" : Math.round(pct) + "% · " + Math.round(m.used_mb) + " of " + Math.round(m.total_mb) + " MB"));
      const t = g.temperature_c;
      card.append(meter("Temperature", t, 100, 75, 85, t == null ? "not reported" : Math.round(t) + " °C"));
      const facts = el("p", { class: "muted gpu-facts" });
      const parts = ["Pressure " + (LEVEL_TEXT[g.pressure_level] || g.pressure_level || "—"),
        "thermal " + (g.thermal_state || "—").toLowerCase()];
      if (g.utilization_percent != null) parts.push("utilization " + Math.round(g.utilization_percent) + "%");
      if (g.power_w != null) parts.push(Math.round(g.power_w) + " W");
      parts.push(g.models.length ? "running " + g.models.join(", ") : "no model running");
      facts.textContent = parts.join(" · ");
      card.append(facts);
      card.dataset.level = g.pressure_level || "";
      list.append(card);
    }
  }

  // The one line a screen reader hears (role=status): said again only when the state changes,
  // not every second; the age goes in the line below it.
  function renderFreshness() {
    const line = $("system-freshness");
    const age = ageNow();
    let state, text;
    if (!loaded) {
      state = "waiting";
      text = "Waiting for the first GPU sample…";
    } else if (sample.at == null) {
      state = "stale";
      text = "STALE: no GPU sample. The monitor is not publishing.";
    } else if (age > staleAfter) {
      state = "stale";
      text = "STALE: the last GPU sample is old. The monitor stopped publishing; the figures below are not current.";
    } else {
      state = "live";
      text = "Live" + (sample.simulated ? " (simulated GPU: no hardware)" : "") + ".";
    }
    if (socketNote) text += " " + socketNote;
    if (text !== lastAnnounced) { line.textContent = text; lastAnnounced = text; }
    line.dataset.state = state;
    $("system-panel").classList.toggle("stale", state === "stale");
    $("system-age").textContent = age == null ? "" : "Last sample " + Math.round(age) + " s ago (stale after " + staleAfter + " s).";
  }

  function renderPolicy(body) {
    $("pressure-level").textContent = LEVEL_TEXT[body.pressure_level] || body.pressure_level || "—";
    $("thermal-state").textContent = (body.thermal_state || "—").toLowerCase();
    const allowed = body.policy && body.policy.allowed_models;
    $("allowed-models").textContent = allowed === "all" ? "all enabled models" : (allowed && allowed.length ? allowed.join(", ") : "none");
    const p = body.policy || {};
    $("admits-new").textContent = p.paused_for_oom ? "paused (GPU out of memory)" : p.admits_new_work ? "accepted" :
      p.admits_critical ? "only critical" : "paused";
    $("concurrency").textContent = p.concurrency == null ? "—" :
      p.concurrency + (p.reserved_for_urgent ? " (" + p.reserved_for_urgent + " kept for urgent work)" : "") + ", batches of " + p.batch_size;
  }

  function renderQueue(q) {
    for (const prio of PRIORITIES) {
      const row = document.querySelector('#queue-table tr[data-priority="' + prio + '"]');
      row.querySelector(".org").textContent = String(q.organization.depth[prio]);
      row.querySelector(".mine").textContent = String(q.yours.depth[prio]);
    }
    $("queue-org-total").textContent = String(q.organization.queued);
    $("queue-mine-total").textContent = String(q.yours.queued);
    const parts = [q.organization.processing + " running in your organization",
      "oldest waiting " + Math.round(q.organization.oldest_wait_s) + " s",
      q.workers_alive + (q.workers_alive === 1 ? " worker" : " workers") + " alive"];
    if (q.emergency_mode) parts.push("EMERGENCY MODE: only high and critical tasks are accepted");
    $("queue-meta").textContent = parts.join(" · ");
  }

  function renderBackends(rows) {
    const body = $("backend-rows");
    body.replaceChildren();
    if (!rows.length) {
      const tr = el("tr");
      tr.append(el("td", { colspan: "5", class: "muted" }, "No model endpoint is enabled."));
      body.append(tr);
      return;
    }
    for (const b of rows) {
      const tr = el("tr", { "data-model": b.model });
      tr.append(el("th", { scope: "row" }, b.model));
      const health = b.up === true ? ["up", "Up"] : b.up === false ? ["down", "Down"] : ["unknown", "Not checked"];
      const hc = el("td", { "data-label": "Health" });
      hc.append(el("span", { class: "badge " + health[0] }, health[1]));
      tr.append(hc);
      const circuit = { closed: ["up", "Closed"], half_open: ["unknown", "Half-open (trying)"], open: ["down", "Open"] }[b.circuit] ||
        ["unknown", b.circuit];
      const cc = el("td", { "data-label": "Circuit" });
      cc.append(el("span", { class: "badge " + circuit[0] }, circuit[1]));
      tr.append(cc);
      tr.append(el("td", { "data-label": "Latency" }, b.latency_ema_ms == null ? "—" : Math.round(b.latency_ema_ms) + " ms"));
      tr.append(el("td", { "data-label": "Allowed now" }, b.allowed_now ? "Yes" : "No (GPU pressure)"));
      body.append(tr);
    }
  }

  async function poll() {
    if (!running) return;
    clearTimeout(pollTimer);
    try {
      const resp = await api("/v1/system/status");
      const body = await resp.json().catch(() => null);
      if (!running) return;
      if (!resp.ok) {
        $("system-error").textContent = errorText(body, "Could not read the system status (" + resp.status + ").");
      } else {
        $("system-error").textContent = "";
        staleAfter = body.stale_after_seconds || staleAfter;
        // The socket's sample is newer than a read's unless the read's is.
        if (sample.at == null || (body.sampled_at != null && body.sampled_at >= sample.at)) takeSample(body);
        renderPolicy(body);
        renderQueue(body.queue);
        renderBackends(body.backends);
        lastPolicy = JSON.stringify(body.policy && body.policy.allowed_models);
      }
    } catch (err) {
      if (running) $("system-error").textContent = "Could not reach medai: " + err.message;
    }
    if (running) pollTimer = setTimeout(poll, POLL_MS);
  }

  function connect() {
    if (!running || ws) return;
    ws = socket("/ws/gpu/");
    ws.onopen = () => { retryDelay = 1000; socketNote = ""; renderFreshness(); };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type !== "gpu.status" && message.type !== "gpu.update") return;
      const data = message.data;
      takeSample(data);
      if (message.type === "gpu.status") {
        renderPolicy(data);
        if (JSON.stringify(data.policy && data.policy.allowed_models) !== lastPolicy) poll();
      } else if (data.policy) {
        const level = data.policy.level;
        if (level && $("pressure-level").textContent !== (LEVEL_TEXT[level] || level)) poll(); // the policy moved
      }
    };
    ws.onclose = async (event) => {
      ws = null;
      if (!running) return;
      if (event.code === 4403) { socketNote = "Live GPU updates need the gpu:read scope."; renderFreshness(); return; }
      if (event.code === 4401) {
        await window.medai.refreshTokens().catch(() => false);
      } else {
        socketNote = "Live updates interrupted, reconnecting…";
        retryDelay = Math.min(retryDelay * 2, 30000);
      }
      renderFreshness();
      retryTimer = setTimeout(connect, event.code === 4401 ? 0 : retryDelay);
    };
  }

  function start() {
    stop();
    running = true;
    loaded = false;
    renderFreshness();
    poll();
    connect();
    tickTimer = setInterval(renderFreshness, 1000);
  }

  function stop() {
    running = false;
    clearTimeout(pollTimer);
    clearTimeout(retryTimer);
    clearInterval(tickTimer);
    if (ws) { const old = ws; ws = null; old.close(); }
  }

  window.medai.onSignedIn(async () => start());
  window.medai.onSignedOut(stop);
})();

// medai clinician page: the live GPU line, from /ws/gpu/.
// The access token goes in the Sec-WebSocket-Protocol header (new WebSocket(url, ["bearer", token])),
// never in the URL: URLs end up in logs. The server answers the "bearer" subprotocol.
// Close codes: 4401 the token expired (refresh it, reconnect), 4403 no "read" scope (stop),
// 1013 Redis is restarting (reconnect with a growing delay).
"use strict";

(function () {
  const store = window.sessionStorage;
  let socket = null;
  let status = null; // the last gpu.status / gpu.update data
  let receivedAt = 0; // when it arrived (ms)
  let delay = 1000; // reconnect delay, doubled up to 30 s
  let retryAt = 0;
  let refused = false;
  let note = "";

  const line = () => document.getElementById("gpu-status");

  function describe() {
    if (!status) return note || "GPU: waiting for the first sample…";
    const age = status.age_seconds == null ? null : status.age_seconds + (Date.now() - receivedAt) / 1000;
    const gpus = (status.gpus || []).map((g) => {
      const memory = g.memory ? g.memory.used_percent : g.memory_percent;
      const temperature = g.temperature_c == null ? "" : ", " + Math.round(g.temperature_c) + " °C";
      return "GPU " + g.index + " " + Math.round(memory) + "% memory" + temperature;
    });
    const level = status.pressure_level || (status.policy && status.policy.level) || "";
    let text = (gpus.length ? gpus.join(" · ") : "no GPU") + (level ? " · pressure " + level : "") +
      (status.simulated ? " (simulated)" : "");
    if (status.stale) {
      text += age == null ? " · STALE: no sample from the monitor" :
        " · STALE: last sample " + Math.round(age) + " s old, the monitor is not publishing";
    } else if (age != null) {
      text += " · sampled " + Math.round(age) + " s ago";
    }
    return text + (note ? " · " + note : "");
  }

  function render() {
    const el = line();
    if (!el) return;
    const stale = Boolean(status && status.stale) || socket === null;
    el.hidden = !store.getItem("medai.access");
    el.textContent = describe();
    el.classList.toggle("stale", stale);
    el.dataset.stale = String(Boolean(status && status.stale));
  }

  function open() {
    const token = store.getItem("medai.access");
    if (!token || socket || refused || Date.now() < retryAt) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/gpu/", ["bearer", token]);
    socket.onopen = () => { delay = 1000; note = ""; render(); };
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "gpu.status" || message.type === "gpu.update") {
        status = Object.assign({}, status || {}, message.data);
        receivedAt = Date.now();
        render();
      }
    };
    socket.onclose = async (event) => {
      socket = null;
      if (event.code === 4403) {
        refused = true;
        note = "GPU state needs the read scope";
      } else if (event.code === 4401) {
        note = "signing in again…";
        if (typeof window.refreshTokens === "function") await window.refreshTokens().catch(() => false);
      } else {
        note = event.code === 1013 ? "live updates paused (server restarting), reconnecting…" : "reconnecting…";
        retryAt = Date.now() + delay;
        delay = Math.min(delay * 2, 30000);
      }
      render();
    };
  }

  function tick() {
    if (!store.getItem("medai.access")) {
      if (socket) socket.close(1000);
      socket = null; status = null; refused = false; note = "";
    } else {
      open();
    }
    render();
  }

  document.addEventListener("DOMContentLoaded", () => {
    tick();
    setInterval(tick, 1000);
  });
})();

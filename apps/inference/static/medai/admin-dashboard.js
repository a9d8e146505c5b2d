// The admin dashboard's live figures: the queue and the GPUs, from /ws/admin/dashboard/.
// The socket authenticates with the admin's session cookie (no token in this page), which the
// server accepts only from this site's Origin (apps/accounts/sessionauth.py). It reconnects with
// a growing delay; 4401/4403 (signed out, not staff) stop it and say so.
(function () {
  "use strict";
  const root = document.querySelector(".md-dash[data-live-url]");
  if (!root) return;
  const status = document.getElementById("md-live");
  const statusText = document.getElementById("md-live-text");
  const NONE = "\u2014";
  const NBSP = "\u00a0";

  function setState(state, text) {
    if (status.dataset.state !== state || statusText.textContent !== text) {
      status.dataset.state = state;
      statusText.textContent = text;
    }
  }

  // The same formats as apps/audit/display.py.
  const fmt = {
    count: (v) => (v === null || v === undefined ? NONE : Math.round(v).toLocaleString("en-US")),
    seconds: (v) => (v === null || v === undefined ? NONE : fmt.ms(v * 1000)),
    ms(v) {
      if (v === null || v === undefined) return NONE;
      if (v < 10) return v.toFixed(1) + NBSP + "ms";
      if (v < 1000) return v.toFixed(0) + NBSP + "ms";
      if (v < 10000) return (v / 1000).toFixed(2) + NBSP + "s";
      if (v < 60000) return (v / 1000).toFixed(1) + NBSP + "s";
      return (v / 60000).toFixed(1) + NBSP + "min";
    },
    percentOf(v) {
      if (v === null || v === undefined) return NONE;
      if (v === 0) return "0" + NBSP + "%";
      if (v < 0.1) return "<0.1" + NBSP + "%";
      return (v < 10 ? v.toFixed(1) : v.toFixed(0)) + NBSP + "%";
    },
    mib: (v) => (v === null || v === undefined ? NONE : v < 1024 ? v.toFixed(0) + NBSP + "MiB" : (v / 1024).toFixed(1) + NBSP + "GiB"),
    celsius: (v) => (v === null || v === undefined ? NONE : v.toFixed(0) + NBSP + "\u00b0C"),
    watts: (v) => (v === null || v === undefined ? NONE : v.toFixed(0) + NBSP + "W"),
  };

  function text(scope, name, value) {
    scope.querySelectorAll('[data-live="' + name + '"]').forEach((el) => {
      if (el.textContent !== value) el.textContent = value;
    });
  }

  function bar(scope, name, percent) {
    const width = Math.max(0, Math.min(100, percent)).toFixed(1) + "%";
    scope.querySelectorAll('[data-live-bar="' + name + '"]').forEach((el) => el.setAttribute("width", width));
  }

  function showQueue(q) {
    text(root, "queue.queued", fmt.count(q.queued));
    text(root, "queue.processing", fmt.count(q.processing));
    text(root, "queue.oldest_wait", fmt.seconds(q.oldest_wait_s));
    for (const d of q.depth) {
      text(root, "queue." + d.priority, fmt.count(d.queued));
      bar(root, "queue." + d.priority, d.bar);
    }
  }

  function showGpu(g) {
    const level = root.querySelector('[data-live="gpu.pressure_level"]');
    if (level) level.dataset.level = g.pressure_level;
    text(root, "gpu.pressure_level", g.pressure_level);
    text(root, "gpu.thermal_state", g.thermal_state);
    text(root, "gpu.age", fmt.seconds(g.age_seconds));
    root.querySelectorAll('[data-live-show="gpu.stale"]').forEach((el) => { el.hidden = !g.stale; });
    for (const gpu of g.gpus) {
      const card = root.querySelector('[data-gpu="' + gpu.index + '"]');
      if (!card) continue; // a GPU the page did not know: the next reload shows it
      text(card, "mem", fmt.mib(gpu.used_mb) + " of " + fmt.mib(gpu.total_mb));
      text(card, "pct", fmt.percentOf(gpu.used_percent));
      text(card, "temp", fmt.celsius(gpu.temperature_c));
      text(card, "power", fmt.watts(gpu.power_w));
      text(card, "util", fmt.percentOf(gpu.utilization_percent));
      text(card, "level", gpu.pressure_level);
      text(card, "thermal", gpu.thermal_state || NONE);
      const fill = card.querySelector('[data-live-bar="mem"]');
      if (fill) {
        fill.setAttribute("class", "md-fill md-level-" + String(gpu.pressure_level || "").toLowerCase());
        bar(card, "mem", gpu.bar);
      }
    }
  }

  let delay = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + root.dataset.liveUrl);
    socket.addEventListener("open", () => { delay = 1000; });
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.type !== "dashboard.live") return;
      if (frame.data.queue) showQueue(frame.data.queue);
      if (frame.data.gpu) showGpu(frame.data.gpu);
      const at = new Date(frame.data.at || Date.now());
      setState("live", "Live \u00b7 updated " + at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }));
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401 || event.code === 4403) {
        setState("down", event.code === 4401 ? "Signed out: reload to sign in" : "Live figures not allowed");
        return;
      }
      setState("down", "Reconnecting\u2026");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }
  connect();
})();

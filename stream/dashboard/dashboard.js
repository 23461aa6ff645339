// streamrec live dashboard: polls /api/series every second and draws the series on <canvas>.
// No dependencies, no build step. `window.streamrec` exposes what is plotted (for tests and debugging):
//   streamrec.points = {quality, throughput, lag, finetunes}  (also data-points="" on each <figure>)
//   streamrec.polls / streamrec.errors / streamrec.lastUpdate / streamrec.state (the merged series)
"use strict";

(() => {
  const POLL_MS = 1000;
  const MAX_FINETUNES = 512;
  const FIELDS = ["t", "auc", "hr_at_10", "ndcg_at_10", "events_per_s", "lag"];
  const rootStyle = getComputedStyle(document.documentElement);
  const colour = (name) => rootStyle.getPropertyValue(name).trim() || "#ccc";

  const state = { capacity: 3600, finetunes: [], current: null, windowS: 0 };
  for (const f of FIELDS) state[f] = [];
  const api = (window.streamrec = {
    points: { quality: 0, throughput: 0, lag: 0, finetunes: 0 },
    polls: 0,
    errors: 0,
    lastUpdate: null,
    lastError: null,
    state,
  });

  // ---- data ---------------------------------------------------------------------------------------
  function merge(data) {
    const n = (data.t || []).length;
    for (const f of FIELDS) {
      const incoming = data[f] || new Array(n).fill(null);
      for (let i = 0; i < n; i++) state[f].push(incoming[i]);
    }
    state.capacity = data.capacity || state.capacity;
    const extra = state.t.length - state.capacity;
    if (extra > 0) for (const f of FIELDS) state[f].splice(0, extra);
    const lastFt = state.finetunes.length ? state.finetunes[state.finetunes.length - 1].t : -Infinity;
    for (const ft of data.finetunes || []) if (ft.t > lastFt) state.finetunes.push(ft);
    if (state.finetunes.length > MAX_FINETUNES) state.finetunes.splice(0, state.finetunes.length - MAX_FINETUNES);
    if (data.current) state.current = data.current;
    state.now = data.now;
  }

  async function poll() {
    const last = state.t.length ? state.t[state.t.length - 1] : null;
    const url = last === null ? "/api/series" : `/api/series?since=${encodeURIComponent(last)}`;
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      merge(await response.json());
      api.polls += 1;
      api.lastUpdate = Date.now();
      setStatus("live", `live · updated ${clock(Date.now() / 1000)} · ${state.t.length} samples`);
    } catch (err) {
      api.errors += 1;
      api.lastError = String(err);
      setStatus("error", `cannot reach the worker (${err.message || err}); retrying`);
    }
    render();
  }

  // ---- formatting ---------------------------------------------------------------------------------
  const pad = (x) => String(x).padStart(2, "0");
  function clock(t) {
    const d = new Date(t * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function number(x, digits = 0) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    return Number(x).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function compact(x) {
    if (x === null || x === undefined) return "–";
    const a = Math.abs(x);
    if (a >= 1e6) return `${(x / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
    if (a >= 1e3) return `${(x / 1e3).toFixed(a >= 1e4 ? 0 : 1)}k`;
    if (a > 0 && a < 0.01) return String(Number(x.toPrecision(2)));
    return String(Math.round(x * 1000) / 1000);
  }
  function lastValue(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
    return null;
  }
  function setText(id, text) {
    const el = document.getElementById(id);
    if (el && el.textContent !== text) el.textContent = text;
  }
  function setStatus(kind, text) {
    const el = document.getElementById("status");
    el.dataset.state = kind;
    el.textContent = text;
  }

  // ---- drawing ------------------------------------------------------------------------------------
  function niceStep(span, ticks) {
    const raw = span / Math.max(1, ticks);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  }

  function prepare(canvas) {
    const rect = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(50, Math.round(rect.width));
    const h = Math.max(50, Math.round(rect.height));
    if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
      canvas.width = w * dpr;
      canvas.height = h * dpr;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  // Draws lines (and optional stems) of `series` over time range [t0, t1]; returns points plotted.
  function drawChart(figure, t0, t1, series, opts) {
    const canvas = figure.querySelector("canvas");
    const { ctx, w, h } = prepare(canvas);
    const m = { left: 52, right: 12, top: 8, bottom: 22 };
    const pw = w - m.left - m.right;
    const ph = h - m.top - m.bottom;
    let yMax = 0;
    let plotted = 0;
    for (const s of series) {
      for (let i = 0; i < s.t.length; i++) {
        const v = s.values[i];
        if (v === null || s.t[i] < t0 || s.t[i] > t1) continue;
        yMax = Math.max(yMax, v);
        plotted += 1;
      }
    }
    yMax = opts.yCap ? Math.min(opts.yCap, yMax * 1.1 || opts.yCap) : yMax * 1.1;
    if (!(yMax > 0)) yMax = opts.yCap || 1;
    const step = niceStep(yMax, 4);
    yMax = Math.ceil(yMax / step - 1e-9) * step;
    const span = Math.max(t1 - t0, 1e-6);
    const x = (t) => m.left + ((t - t0) / span) * pw;
    const y = (v) => m.top + ph - (v / yMax) * ph;

    // grid and axes
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = colour("--grid");
    ctx.fillStyle = colour("--dim");
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = 0; v <= yMax + step / 2; v += step) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(m.left, yy);
      ctx.lineTo(w - m.right, yy);
      ctx.stroke();
      ctx.fillText(compact(v), m.left - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const xTicks = Math.max(2, Math.floor(pw / 110));
    let previousLabel = "";
    for (let i = 0; i <= xTicks; i++) {
      const t = t0 + (span * i) / xTicks;
      const label = clock(t);
      if (label === previousLabel) continue; // short spans: one label per second
      previousLabel = label;
      ctx.fillText(label, Math.min(w - m.right - 22, Math.max(m.left + 22, x(t))), h - m.bottom + 6);
    }

    // fine-tune moments: dashed vertical markers
    ctx.save();
    ctx.strokeStyle = colour("--ft");
    ctx.globalAlpha = 0.55;
    ctx.setLineDash([4, 4]);
    for (const ft of state.finetunes) {
      if (ft.t < t0 || ft.t > t1) continue;
      const xx = Math.round(x(ft.t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, m.top);
      ctx.lineTo(xx, m.top + ph);
      ctx.stroke();
    }
    ctx.restore();

    if (!plotted) {
      ctx.fillStyle = colour("--dim");
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(opts.empty || "waiting for data…", m.left + pw / 2, m.top + ph / 2);
    }

    ctx.lineWidth = 1.8;
    ctx.lineJoin = "round";
    for (const s of series) {
      ctx.strokeStyle = ctx.fillStyle = colour(s.colour);
      if (s.stems) {
        for (let i = 0; i < s.t.length; i++) {
          const v = s.values[i];
          if (v === null || s.t[i] < t0 || s.t[i] > t1) continue;
          ctx.beginPath();
          ctx.moveTo(x(s.t[i]), y(0));
          ctx.lineTo(x(s.t[i]), y(v));
          ctx.stroke();
          ctx.beginPath();
          ctx.arc(x(s.t[i]), y(v), 3, 0, 2 * Math.PI);
          ctx.fill();
        }
        continue;
      }
      ctx.beginPath();
      let pen = false;
      let lonely = null;
      for (let i = 0; i < s.t.length; i++) {
        const v = s.values[i];
        if (v === null || s.t[i] < t0 || s.t[i] > t1) {
          pen = false;
          continue;
        }
        if (pen) ctx.lineTo(x(s.t[i]), y(v));
        else {
          ctx.moveTo(x(s.t[i]), y(v));
          lonely = [x(s.t[i]), y(v)];
        }
        pen = true;
      }
      ctx.stroke();
      if (plotted === 1 && lonely) {
        ctx.beginPath();
        ctx.arc(lonely[0], lonely[1], 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    return plotted;
  }

  function countVisible(t, values, t0, t1) {
    let n = 0;
    for (let i = 0; i < t.length; i++) if (values[i] !== null && t[i] >= t0 && t[i] <= t1) n += 1;
    return n;
  }

  function render() {
    const t = state.t;
    const tEnd = Math.max(t.length ? t[t.length - 1] : 0, state.now || 0);
    const tFirst = t.length ? t[0] : tEnd - 60;
    // "all": the data spans the whole width from its first sample; a window ends at the newest sample.
    const t0 = state.windowS > 0 ? tEnd - state.windowS : tFirst;
    const t1 = Math.max(tEnd, t0 + 2);

    const charts = {
      quality: [
        { t, values: state.hr_at_10, colour: "--hr" },
        { t, values: state.auc, colour: "--auc" },
        { t, values: state.ndcg_at_10, colour: "--ndcg" },
      ],
      throughput: [{ t, values: state.events_per_s, colour: "--rate" }],
      lag: [{ t, values: state.lag, colour: "--lag" }],
      finetunes: [{
        t: state.finetunes.map((f) => f.t),
        values: state.finetunes.map((f) => f.seconds),
        colour: "--ft",
        stems: true,
      }],
    };
    const opts = { quality: { yCap: 1 }, throughput: {}, lag: {}, finetunes: { empty: "no fine-tune yet" } };
    for (const [name, series] of Object.entries(charts)) {
      const figure = document.getElementById(`chart-${name}`);
      drawChart(figure, t0, t1, series, opts[name]);
      // A sample counts once per chart (quality: when any of its three metrics is known).
      const points = name === "quality"
        ? countVisible(t, t.map((_, i) => state.hr_at_10[i] ?? state.auc[i] ?? state.ndcg_at_10[i] ?? null), t0, t1)
        : countVisible(series[0].t, series[0].values, t0, t1);
      api.points[name] = points;
      figure.dataset.points = String(points);
    }

    const cur = state.current || {};
    const q = cur.quality || {};
    setText("v-hr", number(lastValue(state.hr_at_10) ?? q.hr_at_10, 3));
    setText("v-auc", number(lastValue(state.auc) ?? q.auc, 3));
    setText("v-ndcg", number(lastValue(state.ndcg_at_10) ?? q.ndcg_at_10, 3));
    setText("v-rate", number(lastValue(state.events_per_s)));
    setText("v-lag", number(cur.lag_total ?? lastValue(state.lag)));
    setText("v-applied", number(cur.events_applied));
    setText("v-dlq", number(cur.dlq_total));
    setText("v-version", number(cur.model_version));
    setText("v-sizes", cur.users_held === undefined ? "–" : `${compact(cur.users_held)} · ${compact(cur.items_held)}`);
  }

  // ---- wiring -------------------------------------------------------------------------------------
  for (const button of document.querySelectorAll(".window button")) {
    button.addEventListener("click", () => {
      state.windowS = Number(button.dataset.window);
      for (const b of document.querySelectorAll(".window button")) b.classList.toggle("active", b === button);
      render();
    });
  }
  let resizePending = false;
  window.addEventListener("resize", () => {
    if (resizePending) return;
    resizePending = true;
    requestAnimationFrame(() => {
      resizePending = false;
      render();
    });
  });

  async function loop() {
    await poll();
    setTimeout(loop, POLL_MS);
  }
  loop();
})();

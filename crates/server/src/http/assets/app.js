// fleetmon dashboard script. The pages are rendered on the server; this keeps them live and
// draws charts. Three parts:
//  1. live regions: on an event from /api/v1/stream, re-read this page and swap in the new
//     content of every element marked data-live (focus kept), at most once a second;
//  2. charts: each figure.chart carries PromQL queries; run them through
//     /prometheus/api/v1/query_range for the picked range and draw them with uPlot;
//  3. small helpers: filters submit on change, the time-range picker;
//  4. alerts: the silence confirm form posts to /api/v1/silences, expire buttons delete.
// Text from the server's JSON is only ever set with textContent.
"use strict";
(function () {
  const body = document.body;
  const device = body.dataset.device || null;
  const liveEl = document.getElementById("live");

  // 3. Filters submit as soon as a choice changes.
  for (const s of document.querySelectorAll("select[data-autosubmit]")) {
    s.addEventListener("change", () => s.form.requestSubmit());
  }

  // 1. Live regions. At most once a second, and never more than a quarter of the time
  // spent waiting for the server (a big fleet's pages take longer to render).
  const minGap = body.dataset.page === "energy" ? 10000 : 1000;
  let inflight = false;
  let timer = null;
  let last = 0;
  let took = 0;
  function schedule() {
    if (timer !== null) return;
    const gap = Math.max(minGap, 4 * took);
    timer = setTimeout(refresh, Math.max(0, gap - (Date.now() - last)));
  }
  async function refresh() {
    timer = null;
    if (inflight) return schedule();
    inflight = true;
    const t0 = Date.now();
    try {
      const r = await fetch(location.href, { cache: "no-store" });
      if (r.ok) swap(new DOMParser().parseFromString(await r.text(), "text/html"));
    } catch (_) {
      // The server may be restarting; the next event brings the next try.
    } finally {
      inflight = false;
      last = Date.now();
      took = last - t0;
    }
  }
  function swap(doc) {
    const active = document.activeElement;
    for (const el of document.querySelectorAll("[data-live][id]")) {
      const fresh = doc.getElementById(el.id);
      if (!fresh) continue;
      // Leave a region alone while someone fills in a form in it; the next refresh catches up.
      if (el.querySelector("details[open]") || (el.contains(active) && active.form)) continue;
      const focused = el.contains(active) && active.getAttribute("href");
      el.replaceChildren(...Array.from(fresh.childNodes, (n) => document.importNode(n, true)));
      if (focused) {
        const again = Array.from(el.querySelectorAll("[href]")).find(
          (a) => a.getAttribute("href") === focused,
        );
        if (again) again.focus();
      }
    }
    body.dataset.refreshed = String(Date.now());
  }
  if (window.EventSource) {
    const url = "/api/v1/stream" + (device ? "?device=" + encodeURIComponent(device) : "");
    const es = new EventSource(url);
    es.addEventListener("open", () => {
      liveEl.textContent = "live";
      liveEl.classList.add("on");
    });
    es.addEventListener("error", () => {
      liveEl.textContent = "reconnecting…";
      liveEl.classList.remove("on");
    });
    es.addEventListener("fleet", schedule);
    es.addEventListener("devices", schedule);
    es.addEventListener("device", () => {
      schedule();
      scheduleCharts();
    });
  }

  // 4. Alerts: silence with one click and a confirmation, expire a silence.
  document.addEventListener("toggle", (e) => {
    const d = e.target;
    if (!(d instanceof HTMLDetailsElement) || !d.open || !d.classList.contains("silence")) return;
    const author = d.querySelector('input[name="author"]');
    try {
      if (author && !author.value) author.value = localStorage.getItem("fleetmon.author") || "";
    } catch (_) { /* storage may be off */ }
    const first = d.querySelector('input[name="comment"]');
    if (first) first.focus();
  }, true);
  async function send(method, url, payload, statusEl) {
    try {
      const r = await fetch(url, {
        method,
        headers: payload ? { "content-type": "application/json" } : {},
        body: payload ? JSON.stringify(payload) : undefined,
      });
      if (r.ok) return true;
      const j = await r.json().catch(() => ({}));
      if (statusEl) statusEl.textContent = j.error || "HTTP " + r.status;
    } catch (e) {
      if (statusEl) statusEl.textContent = "could not reach the server";
    }
    return false;
  }
  document.addEventListener("submit", async (e) => {
    const f = e.target;
    if (!f.matches("form[data-silence]")) return;
    e.preventDefault();
    const status = f.querySelector(".form-status");
    status.textContent = "";
    const author = f.elements.author.value.trim();
    const silence = {
      matchers: JSON.parse(f.dataset.silence),
      duration: f.elements.duration.value,
      createdBy: author,
      comment: f.elements.comment.value.trim(),
    };
    if (await send("POST", "/api/v1/silences", silence, status)) {
      try { localStorage.setItem("fleetmon.author", author); } catch (_) { /* ignore */ }
      const d = f.closest("details");
      d.open = false;
      d.querySelector("summary").focus();
      refresh();
    }
  });
  document.addEventListener("click", async (e) => {
    const b = e.target.closest("button[data-expire]");
    if (!b) return;
    b.disabled = true;
    if (await send("DELETE", "/api/v1/silences/" + encodeURIComponent(b.dataset.expire), null, null)) refresh();
    else b.disabled = false;
  });

  // 2. Charts.
  const figures = Array.from(document.querySelectorAll("figure.chart"));
  if (!figures.length || !window.uPlot) return;
  const RANGES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
  const PALETTE = ["#2f81f7", "#e5534b", "#3fa35b", "#c69026", "#986ee2", "#1b9aaa", "#e16f24", "#8b949e"];
  let range = new URLSearchParams(location.search).get("range");
  if (!(range in RANGES)) range = "1h";
  const plots = new Map();

  const UNITS = {
    ratio: (v) => (v * 100).toFixed(Math.abs(v) < 0.01 ? 2 : Math.abs(v) < 0.1 ? 1 : 0) + " %",
    bytes: (v) => bytes(v),
    "bytes/s": (v) => bytes(v) + "/s",
    "/s": (v) => num(v) + "/s",
    seconds: (v) => seconds(v),
    celsius: (v) => v.toFixed(1) + " °C",
    volts: (v) => v.toFixed(2) + " V",
    amperes: (v) => v.toFixed(2) + " A",
    watts: (v) => v.toFixed(2) + " W",
    "": (v) => num(v),
  };
  function num(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + " M";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + " k";
    return a >= 10 || v === 0 ? v.toFixed(0) : v.toPrecision(2);
  }
  function bytes(v) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : v.toFixed(0)) + " " + units[i];
  }
  function seconds(v) {
    const a = Math.abs(v);
    if (a < 1) return (v * 1000).toPrecision(3) + " ms";
    if (a < 120) return v.toFixed(1) + " s";
    if (a < 7200) return (v / 60).toFixed(0) + " min";
    if (a < 172800) return (v / 3600).toFixed(1) + " h";
    return (v / 86400).toFixed(1) + " d";
  }

  // The labels that tell a chart's series apart (those not equal on all of them).
  function names(all) {
    const keys = new Set();
    for (const s of all) for (const k of Object.keys(s.metric)) keys.add(k);
    const varying = [...keys].filter(
      (k) => k !== "__name__" && k !== "device" && new Set(all.map((s) => s.metric[k])).size > 1,
    );
    return all.map((s) => [s.label, ...varying.map((k) => s.metric[k])].filter(Boolean).join(" ") || s.metric.__name__ || "value");
  }

  async function draw(fig) {
    const status = fig.querySelector(".chart-status");
    const span = RANGES[range];
    const end = Math.floor(Date.now() / 1000);
    const step = Math.max(1, Math.round(span / 300));
    const start = end - 300 * step;
    const rate = Math.max(4 * step, 60) + "s";
    let results;
    try {
      results = await Promise.all(
        JSON.parse(fig.dataset.queries).map(async (q) => {
          const params = new URLSearchParams({ query: q.query.replaceAll("$RATE", rate), start, end, step });
          const r = await fetch("/prometheus/api/v1/query_range?" + params);
          const j = await r.json();
          if (j.status !== "success") throw new Error(j.error || "query failed");
          return j.data.result.map((s) => ({ label: q.label, metric: s.metric, values: s.values }));
        }),
      );
    } catch (e) {
      status.textContent = "could not load: " + e.message;
      return;
    }
    const all = results.flat();
    const xs = [];
    for (let t = start; t <= end; t += step) xs.push(t);
    const data = [xs];
    let points = 0;
    for (const s of all) {
      const ys = new Array(xs.length).fill(null);
      for (const [t, v] of s.values) {
        const i = Math.round((t - start) / step);
        if (i >= 0 && i < xs.length) { ys[i] = parseFloat(v); points++; }
      }
      data.push(ys);
    }
    fig.dataset.points = String(points);
    fig.dataset.series = String(all.length);
    status.textContent = points ? "" : "no data in this range";
    const labels = names(all);
    const key = labels.join("\u0000");
    const old = plots.get(fig);
    if (old && old.key === key) {
      old.plot.setData(data);
    } else {
      if (old) old.plot.destroy();
      const el = fig.querySelector(".plot");
      el.replaceChildren();
      const fmt = UNITS[fig.dataset.unit] || UNITS[""];
      const css = getComputedStyle(document.documentElement);
      const fg = css.getPropertyValue("--muted").trim() || "#888";
      const grid = css.getPropertyValue("--line").trim() || "#8884";
      const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
      const plot = new uPlot(
        {
          width: Math.max(200, el.clientWidth),
          height: 180,
          scales: { x: { time: true } },
          series: [{}, ...labels.map((label, i) => ({
            label, stroke: PALETTE[i % PALETTE.length], width: 1.5,
            value: (u, v) => (v == null ? "–" : fmt(v)),
          }))],
          axes: [axis, { ...axis, size: 70, values: (u, vals) => vals.map(fmt) }],
        },
        data,
        el,
      );
      plots.set(fig, { plot, key });
    }
    fig.dataset.drawn = String(Date.now());
  }
  function drawAll() {
    return Promise.all(figures.map(draw)).then(() => { body.dataset.chartsDrawn = String(Date.now()); });
  }

  let chartTimer = null;
  let chartsLast = 0;
  function scheduleCharts() {
    if (chartTimer !== null) return;
    const gap = range === "1h" ? 2000 : 15000;
    chartTimer = setTimeout(() => { chartTimer = null; chartsLast = Date.now(); drawAll(); },
      Math.max(0, gap - (Date.now() - chartsLast)));
  }

  for (const b of document.querySelectorAll("[data-range]")) {
    b.setAttribute("aria-pressed", String(b.dataset.range === range));
    b.addEventListener("click", () => {
      range = b.dataset.range;
      for (const o of document.querySelectorAll("[data-range]")) o.setAttribute("aria-pressed", String(o === b));
      const u = new URL(location.href);
      u.searchParams.set("range", range);
      history.replaceState(null, "", u);
      drawAll();
    });
  }
  const resize = new ResizeObserver((entries) => {
    for (const e of entries) {
      const p = plots.get(e.target.closest("figure.chart"));
      if (p) p.plot.setSize({ width: Math.max(200, e.contentRect.width), height: 180 });
    }
  });
  for (const f of figures) resize.observe(f.querySelector(".plot"));
  chartsLast = Date.now();
  drawAll();
})();

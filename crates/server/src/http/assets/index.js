// Live refresh of the device table: fetch the device list every two seconds and redraw.
"use strict";
(function () {
  const body = document.getElementById("devices");
  const counts = document.getElementById("counts");
  const pick = (values, metric) => {
    const v = values.filter((x) => x.metric === metric).map((x) => x.value);
    return v.length ? Math.max(...v) : null;
  };
  const rank = (l) => ({ ok: 0, warning: 1, critical: 2 })[l] ?? 0;
  const pct = (v) => (v === null ? "–" : (v * 100).toFixed(0) + " %");
  const num = (v, unit) => (v === null ? "–" : v.toFixed(1) + " " + unit);
  const ago = (ms) => {
    if (!ms) return "never";
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    return s < 90 ? s + " s ago" : Math.round(s / 60) + " min ago";
  };
  const cell = (text, cls) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  };
  async function refresh() {
    try {
      const r = await fetch("/api/v1/devices");
      if (!r.ok) return;
      const list = await r.json();
      const level = (l) => list.devices.filter((d) => d.health.level === l).length;
      counts.textContent = `${list.total} devices · ${list.online} online · ${list.offline} offline · ${level("warning")} warning · ${level("critical")} critical`;
      const rows = list.devices.map((d) => {
        const tr = document.createElement("tr");
        const status = cell(d.status, "status " + d.status);
        const reasons = [...d.health.reasons].sort((a, b) => rank(b.level) - rank(a.level));
        const health = cell(
          reasons.length === 0
            ? "ok"
            : reasons[0].message + (reasons.length > 1 ? ` (+${reasons.length - 1})` : ""),
          "health " + d.health.level,
        );
        health.title = reasons.map((r) => r.message).join("; ");
        tr.append(
          status,
          health,
          cell(d.id, "id"),
          cell(d.tags.site || "–"),
          cell(ago(d.last_seen_ms)),
          cell(String(d.batches_received), "num"),
          cell(pct(pick(d.last_values, "cpu_usage_ratio")), "num"),
          cell(pct(pick(d.last_values, "memory_used_ratio")), "num"),
          cell(num(pick(d.last_values, "temperature_celsius"), "°C"), "num"),
          cell(pct(pick(d.last_values, "battery_charge_ratio")), "num"),
        );
        return tr;
      });
      body.replaceChildren(...rows);
    } catch (_) {
      // The server may be restarting; try again on the next tick.
    }
  }
  setInterval(refresh, 2000);
})();

// Live refresh of the device table: fetch the device list every two seconds and redraw.
"use strict";
(function () {
  const body = document.getElementById("devices");
  const counts = document.getElementById("counts");
  const pick = (values, metric) => {
    const v = values.filter((x) => x.metric === metric).map((x) => x.value);
    return v.length ? Math.max(...v) : null;
  };
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
      counts.textContent = `${list.total} devices · ${list.online} online · ${list.offline} offline`;
      const rows = list.devices.map((d) => {
        const tr = document.createElement("tr");
        const status = cell(d.status, "status " + d.status);
        tr.append(
          status,
          cell(d.id, "id"),
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

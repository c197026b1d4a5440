// Browser test of the fleetmon dashboard: Debian's chromium driven by playwright-core.
//
//   node web-tests/dashboard.mjs BASE_URL ARTIFACT_DIR
//
// Expects a server at BASE_URL with a simulated fleet of more than 50 devices, `site`,
// `group`, `lat` and `lon` tags on them, one tagged device that never reported (`ghost-1`,
// whose site is markup, to prove escaping), and a firmware policy that puts some devices out
// of policy, an alert rule `CpuBusy` firing for sim-00001 and sim-00002, and at least one
// `no_client_certificate` security event (crates/fleetmon/tests/browser.rs sets this up).
// Silences an alert with one click and a confirmation, then expires the silence. Opens every
// view, checks what it
// shows against the JSON API, uses the filters, sorting, pages and the time-range picker,
// checks that charts are drawn (canvas pixels in the series colour), that pages update
// without a reload, and that no request goes anywhere but the server. Screenshots go to
// ARTIFACT_DIR. Exits non-zero on the first failure, saying what failed.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, artifacts] = process.argv.slice(2);
if (!base || !artifacts) {
  console.error("usage: node web-tests/dashboard.mjs BASE_URL ARTIFACT_DIR");
  process.exit(2);
}
const origin = new URL(base).origin;
mkdirSync(artifacts, { recursive: true });

const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

function check(ok, message) {
  if (!ok) throw new Error(message);
}
async function api(path) {
  const r = await fetch(origin + path);
  check(r.ok, `${path}: HTTP ${r.status}`);
  return r.json();
}
const int = (s) => parseInt(String(s).replace(/[^\d]/g, ""), 10);
let step = "";
const log = (s) => { step = s; console.log("·", s); };

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
const foreign = [];
const problems = [];
const timings = {};
try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  context.on("request", (r) => {
    const u = new URL(r.url());
    if (u.origin !== origin && u.protocol !== "data:") foreign.push(r.url());
  });
  context.on("dialog", (d) => problems.push("dialog opened: " + d.message()));
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  const shot = (name) => page.screenshot({ path: join(artifacts, name + ".png"), fullPage: true });
  const timing = async (name) => {
    timings[name] = await page.evaluate(() => {
      const n = performance.getEntriesByType("navigation")[0];
      return { interactive_ms: Math.round(n.domInteractive), load_ms: Math.round(n.loadEventEnd) };
    });
  };

  // Overview.
  log("overview: counts, problems, map, integrity, energy");
  const fleet = await api("/api/v1/fleet");
  await page.goto(base);
  await timing("overview");
  const card = async (label) => int(await page.textContent(`[data-count="${label}"]`));
  check((await card("devices")) === fleet.fleet.total, `overview shows ${await card("devices")} devices, the API ${fleet.fleet.total}`);
  check(fleet.fleet.total > 50, `the fleet has ${fleet.fleet.total} devices; the test needs more than 50`);
  check((await card("offline")) >= 1, "the never-seen device is not counted offline");
  const problemsText = await page.textContent("#ov-problems");
  check(problemsText.includes("ghost-1") && problemsText.includes("never seen"), "top problems miss ghost-1 offline (never seen)");
  check(/firmware \S+ is below the minimum/.test(problemsText) || problemsText.includes("firmware_outdated"), "top problems miss the firmware policy reasons");
  const dots = await page.locator("#ov-map svg circle").count();
  check(dots > 0, "the map draws no device");
  const sitesText = await page.textContent("#ov-sites");
  check(sitesText.includes("<script>alert(1)</script>"), "a site tag holding markup is not shown as text");
  check(int(await page.textContent('#ov-integrity [data-integrity="received"]')) > 0, "integrity totals show nothing received");
  check((await page.textContent("#ov-energy")).includes("on battery power"), "no energy summary");
  for (const [href, label] of [["/alerts", "Alerts"], ["/security", "Security events"]]) {
    check((await page.locator(`nav a[href="${href}"]`, { hasText: label }).count()) === 1, `no ${label} link in the navigation`);
  }
  await page.keyboard.press("Tab");
  check((await page.evaluate(() => document.activeElement.textContent)) === "Skip to content", "the first Tab does not reach the skip link");
  await shot("overview");
  await page.emulateMedia({ colorScheme: "dark" });
  await shot("overview-dark");
  await page.emulateMedia({ colorScheme: "light" });
  await page.setViewportSize({ width: 820, height: 1180 });
  await shot("overview-tablet");
  await page.setViewportSize({ width: 1366, height: 900 });

  // Device list.
  log("device list: counts, pages, filters, search, sorting");
  await page.goto(base + "devices");
  await timing("devices");
  check(int(await page.getAttribute("[data-matched]", "data-matched")) === fleet.fleet.total, "the list does not match the whole fleet");
  check((await page.locator("table.devices tbody tr").count()) === 50, "the first page does not hold 50 devices");
  await page.click('a[rel="next"]');
  await page.waitForURL(/offset=50/);
  check((await page.locator("table.devices tbody tr").count()) === fleet.fleet.total - 50, "the second page does not hold the rest");
  await page.goto(base + "devices");
  await page.selectOption('select[name="status"]', "offline");
  await page.waitForURL(/status=offline/);
  const offlineIds = await page.locator("table.devices tbody td.id").allTextContents();
  check(offlineIds.includes("ghost-1"), `status=offline lists ${offlineIds}`);
  const listOffline = await api("/api/v1/devices?status=offline");
  check(offlineIds.length === listOffline.matched, `status=offline lists ${offlineIds.length}, the API ${listOffline.matched}`);
  await page.goto(base + "devices");
  const firstSite = Object.keys(fleet.sites).find((s) => s.startsWith("site-"));
  await page.selectOption('select[name="site"]', firstSite);
  await page.waitForURL(/site=/);
  check(int(await page.getAttribute("[data-matched]", "data-matched")) === fleet.sites[firstSite].total, `site filter count differs from the API for ${firstSite}`);
  await page.goto(base + "devices");
  await page.fill('input[name="q"]', "sim-0001");
  await page.keyboard.press("Enter");
  await page.waitForURL(/q=sim-0001/);
  const searched = await page.locator("table.devices tbody td.id").allTextContents();
  check(searched.length === 10 && searched.every((id) => id.startsWith("sim-0001")), `search sim-0001 found ${searched}`);
  await page.goto(base + "devices");
  await page.click('th a:text-is("cpu")');
  await page.waitForURL(/sort=-cpu/);
  const cpus = (await page.locator("table.devices tbody tr td:nth-child(9)").allTextContents())
    .filter((t) => t !== "–").map(int);
  check(cpus.length > 10 && cpus.every((v, i) => i === 0 || cpus[i - 1] >= v), `cpu not sorted descending: ${cpus}`);
  check((await page.getAttribute('th[aria-sort]', "aria-sort")) === "descending", "the sorted column has no aria-sort");
  await shot("devices");

  // Device page.
  log("device page: health, panels, charts, time range, live");
  const id = "sim-00001";
  const detail = await api("/api/v1/devices/" + id);
  await page.goto(base + "devices/" + id);
  await timing("device");
  check((await page.textContent("h1")).trim() === id, "the device page is not titled by its id");
  const summary = await page.textContent("#dv-summary");
  check(summary.includes(detail.status), `the health panel does not say ${detail.status}`);
  for (const r of detail.health.reasons) check(summary.includes(r.message), `reason missing: ${r.message}`);
  check((await page.locator('#dv-alerts tr[data-alert="CpuBusy"]').count()) === 1, "the device page does not list its CpuBusy alert");
  check(await page.locator("#dv-events").isVisible(), "no security events panel on the device page");
  for (const panel of ["#dv-integrity", "#dv-network", "#dv-energy", "#dv-inventory", "#dv-agent"]) {
    check(await page.locator(panel).isVisible(), `no ${panel} panel`);
  }
  check((await page.textContent("#dv-inventory")).includes(detail.firmware), "firmware not shown");
  await page.waitForSelector("body[data-charts-drawn]", { timeout: 15000 });
  const drawn = async () => page.evaluate(() => {
    const figs = [...document.querySelectorAll("figure.chart")];
    const blue = (d) => { let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200 && Math.abs(d[i] - 47) < 50 && Math.abs(d[i + 1] - 129) < 50 && Math.abs(d[i + 2] - 247) < 50) n++; return n; };
    return figs.map((f) => {
      const c = f.querySelector("canvas");
      const d = c ? c.getContext("2d").getImageData(0, 0, c.width, c.height).data : [];
      let painted = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++;
      return { title: f.querySelector("figcaption").textContent, points: +(f.dataset.points || 0), painted, series: blue(d) };
    });
  });
  let charts = await drawn();
  check(charts.length >= 10, `only ${charts.length} charts on the device page`);
  for (const title of ["CPU", "Memory and swap", "Round-trip time and jitter", "Throughput", "Temperature"]) {
    const c = charts.find((x) => x.title === title);
    check(c && c.points > 0 && c.painted > 0 && c.series > 0, `chart ${title} not drawn: ${JSON.stringify(c)}`);
  }
  // A flat series (all zero errors, a constant) can sit on the plot's edge where no line
  // pixel shows, so two charts may go without one; live redraws may be under way, so look
  // again for a few seconds before calling more charts undrawn.
  const withData = (cs) => cs.filter((c) => c.points > 0 && c.series > 0).length;
  for (let i = 0; i < 10 && withData(charts) < charts.length - 2; i++) {
    await page.waitForTimeout(500);
    charts = await drawn();
  }
  check(withData(charts) >= charts.length - 2, `charts without a drawn line: ${JSON.stringify(charts.filter((c) => !(c.points > 0 && c.series > 0)))}`);
  await shot("device");
  const before = await page.getAttribute("body", "data-charts-drawn");
  await page.click('button[data-range="24h"]');
  check((await page.getAttribute('button[data-range="24h"]', "aria-pressed")) === "true", "24 h not pressed");
  check((await page.getAttribute('button[data-range="1h"]', "aria-pressed")) === "false", "1 h still pressed");
  await page.waitForFunction((b) => document.body.dataset.chartsDrawn !== b, before, { timeout: 15000 });
  check(page.url().includes("range=24h"), "the range is not in the URL");
  charts = await drawn();
  check(charts.filter((c) => c.points > 0 && c.painted > 0).length >= 5, "charts not redrawn for 24 h");
  await page.click('button[data-range="7d"]');
  await page.click('button[data-range="30d"]');
  await page.click('button[data-range="1h"]');
  // Live: the received count grows without the page reloading.
  await page.evaluate(() => { window.__sameDocument = true; });
  const received = async () => int(await page.textContent('#dv-integrity [data-integrity="received"]'));
  const was = await received();
  await page.waitForFunction(
    (w) => parseInt(document.querySelector('#dv-integrity [data-integrity="received"]').textContent.replace(/[^\d]/g, ""), 10) > w,
    was, { timeout: 8000 },
  );
  check(await page.evaluate(() => window.__sameDocument === true), "the page reloaded instead of updating");
  check((await page.textContent("#live")).includes("live"), "the live indicator is off");
  await page.emulateMedia({ colorScheme: "dark" });
  await shot("device-dark");
  await page.emulateMedia({ colorScheme: "light" });

  // The other views.
  log("integrity, energy and firmware views");
  const integ = await api("/api/v1/integrity");
  await page.goto(base + "integrity");
  check(int(await page.textContent('#in-totals [data-integrity="received"]')) >= integ.totals.received, "integrity view behind the API");
  await shot("integrity");
  await page.goto(base + "energy");
  const batteries = int(await page.getAttribute("[data-batteries]", "data-batteries"));
  const onBattery = (await api("/api/v1/devices")).devices.filter((d) => d.last_values.some((v) => v.metric === "battery_charge_ratio")).length;
  check(batteries === onBattery && batteries > 0, `energy view lists ${batteries} batteries, the API ${onBattery}`);
  await shot("energy");
  await page.goto(base + "firmware");
  const all = (await api("/api/v1/devices")).devices;
  const outOfPolicy = all.filter((d) => d.health.reasons.some((r) => r.check.startsWith("firmware"))).length;
  check(outOfPolicy > 0, "the firmware policy puts no device out of policy; the test needs some");
  check(int(await page.getAttribute("[data-out-of-policy]", "data-out-of-policy")) === outOfPolicy, "out-of-policy count differs from the API");
  const versions = await page.locator("#fw-versions tbody tr").count();
  check(versions >= 2, `only ${versions} firmware versions listed`);
  await shot("firmware");

  // Alerts: listed as the API lists them; silence one with a click and a confirmation.
  log("alerts: listed, silenced with one click and a confirmation, expired");
  const alerts = (await api("/api/v1/alerts")).alerts.filter((a) => a.labels.alertname === "CpuBusy");
  check(alerts.length === 2 && alerts.every((a) => a.state === "firing"), `CpuBusy alerts in the API: ${JSON.stringify(alerts)}`);
  await page.goto(base + "alerts");
  await timing("alerts");
  const alertRow = (dev) => page.locator(`#al-alerts tr[data-alert="CpuBusy"][data-device="${dev}"]`);
  for (const dev of ["sim-00001", "sim-00002"]) {
    check((await alertRow(dev).count()) === 1, `the alerts view does not list CpuBusy on ${dev}`);
    check((await alertRow(dev).getAttribute("data-state")) === "firing", `CpuBusy on ${dev} not shown firing`);
    check((await alertRow(dev).textContent()).includes("CPU of " + dev), `the summary of CpuBusy on ${dev} is missing`);
  }
  check(int(await page.textContent('[data-count="firing"]')) >= 2, "the firing count is below 2");
  await shot("alerts");
  const row1 = alertRow("sim-00001");
  await row1.locator("details.silence summary").click();
  check(await row1.locator("form.silence-form").isVisible(), "the silence button opens no form");
  await row1.locator('select[name="duration"]').selectOption("1h");
  await row1.locator('input[name="comment"]').fill("browser test: looking into it");
  await row1.locator('input[name="author"]').fill("web-test");
  await shot("alerts-silence-form");
  await row1.locator('button[type="submit"]').click();
  await page.waitForSelector('#al-alerts tr[data-alert="CpuBusy"][data-device="sim-00001"] [data-muting="silenced"]', { timeout: 10000 });
  check((await alertRow("sim-00002").locator('[data-muting="silenced"]').count()) === 0, "the other device's alert is silenced too");
  const silences = (await api("/api/v1/silences")).silences;
  const mine = silences.find((s) => s.createdBy === "web-test");
  check(mine && mine.status.state === "active", `no active silence by web-test in the API: ${JSON.stringify(silences)}`);
  const m = Object.fromEntries(mine.matchers.map((x) => [x.name, x.value]));
  check(m.alertname === "CpuBusy" && m.device === "sim-00001" && mine.matchers.length === 2, `silence matchers ${JSON.stringify(mine.matchers)}`);
  check(mine.comment === "browser test: looking into it", "the comment was not kept");
  const api1 = (await api("/api/v1/alerts")).alerts.find((a) => a.labels.alertname === "CpuBusy" && a.labels.device === "sim-00001");
  check(api1.muting.silencedBy.includes(mine.id), "the API does not show the alert silenced");
  const silenceRow = page.locator(`#al-silences tr[data-silence-id="${mine.id}"]`);
  await silenceRow.waitFor({ timeout: 10000 });
  check((await silenceRow.getAttribute("data-state")) === "active", "the silence is not listed as active");
  check((await silenceRow.textContent()).includes("web-test"), "the silence's author is not listed");
  await shot("alerts-silenced");
  await silenceRow.locator("button[data-expire]").click();
  await page.waitForSelector(`#al-silences tr[data-silence-id="${mine.id}"][data-state="expired"]`, { timeout: 10000 });
  const expired = (await api("/api/v1/silences")).silences.find((s) => s.id === mine.id);
  check(expired.status.state === "expired", "the API does not show the silence expired");
  await page.waitForFunction(() => !document.querySelector('#al-alerts tr[data-device="sim-00001"] [data-muting="silenced"]'), null, { timeout: 10000 });

  // Security events.
  log("security events: listed, counted by kind, filtered");
  const noCert = (await api("/api/v1/events?kind=no_client_certificate")).events;
  check(noCert.length > 0, "the API has no no_client_certificate event; the test needs one");
  await page.goto(base + "security");
  await timing("security");
  check((await page.locator('#se-events tr[data-kind="no_client_certificate"]').count()) >= 1, "the security view lists no no_client_certificate event");
  check(int(await page.textContent('[data-kind-count="no_client_certificate"]')) === noCert.length, "the chart's count differs from the API");
  check((await page.textContent("#se-events")).includes(noCert[0].source), "the event's source is not shown");
  await shot("security");
  await page.selectOption('select[name="kind"]', "no_client_certificate");
  await page.waitForURL(/kind=no_client_certificate/);
  const kinds = await page.locator("#se-events tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.kind));
  check(kinds.length === noCert.length && kinds.every((k) => k === "no_client_certificate"), `kind filter lists ${kinds}`);
  await page.goto(base + "security?device=nobody");
  check(int(await page.getAttribute("[data-matched]", "data-matched")) === 0, "the device filter lets other devices' events through");

  // Live on the overview: the integrity total grows without a reload.
  log("overview live update");
  await page.goto(base);
  await page.evaluate(() => { window.__sameDocument = true; });
  const total0 = int(await page.textContent('#ov-integrity [data-integrity="received"]'));
  await page.waitForFunction(
    (w) => parseInt(document.querySelector('#ov-integrity [data-integrity="received"]').textContent.replace(/[^\d]/g, ""), 10) > w,
    total0, { timeout: 8000 },
  );
  check(await page.evaluate(() => window.__sameDocument === true), "the overview reloaded instead of updating");

  log("requests and errors");
  check(foreign.length === 0, "requests to other hosts: " + foreign.join(", "));
  check(problems.length === 0, problems.join("\n"));
  console.log("timings " + JSON.stringify(timings));
  console.log("ok: every view checked; screenshots in " + artifacts);
} catch (e) {
  console.error(`FAILED at "${step}": ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

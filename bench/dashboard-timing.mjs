// Times dashboard pages in Debian's chromium with the Performance API (run by
// bench/dashboard.sh). Each page is opened RUNS times in a fresh tab, caches warm after the
// first; prints the median and the worst of: domInteractive, loadEventEnd, and for the device
// page the time until every chart was drawn.
//   node bench/dashboard-timing.mjs BASE_URL DEVICE_ID
import { chromium } from "../web-tests/node_modules/playwright-core/index.mjs";

const [base, device] = process.argv.slice(2);
const RUNS = 7;
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
const pages = [
  ["overview", ""],
  ["device list", "devices"],
  ["device list, worst first, page 3", "devices?sort=-health&offset=100"],
  ["device list, search", "devices?q=sim-0004"],
  ["device page", "devices/" + device, true],
];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log("page                               interactive ms (median/max)   load ms (median/max)   charts drawn ms (median/max)");
for (const [name, path, charts] of pages) {
  const rows = [];
  for (let i = 0; i < RUNS; i++) {
    const page = await context.newPage();
    await page.goto(base + path, { waitUntil: "load" });
    if (charts) await page.waitForSelector("body[data-charts-drawn]", { timeout: 30000 });
    rows.push(await page.evaluate(() => {
      const n = performance.getEntriesByType("navigation")[0];
      const drawn = document.body.dataset.chartsDrawn;
      return {
        interactive: n.domInteractive,
        load: n.loadEventEnd,
        charts: drawn ? Number(drawn) - performance.timeOrigin : null,
      };
    }));
    await page.close();
  }
  const col = (k) => {
    const xs = rows.map((r) => r[k]).filter((x) => x !== null);
    return xs.length ? `${Math.round(median(xs))} / ${Math.round(Math.max(...xs))}` : "–";
  };
  console.log(`${name.padEnd(35)}${col("interactive").padEnd(30)}${col("load").padEnd(23)}${col("charts")}`);
}
await browser.close();

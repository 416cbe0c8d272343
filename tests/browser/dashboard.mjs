// Drives the admin dashboard in headless Chromium for tests/tests/dashboard.rs.
//
// Usage: node dashboard.mjs <dashboard-url> <screenshot.png>
// Prints `ROWS <json>`, `TIERS <tier>=<state> ...` (the cache tiers shown) and `READY` once the backends table shows every backend and the
// live request feed is open, then `LIVE <status> <backend>` once the requests table shows
// a request to `/seen-live`, then reads a backend id from stdin, waits until the page shows it unhealthy, prints
// `UNHEALTHY <refreshes it took>`, saves a screenshot and prints `DONE`.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, screenshot] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
  page.on("pageerror", (e) => console.log("PAGEERROR " + e.message));
  await page.goto(url);
  await page.waitForFunction(
    () => document.querySelectorAll("#backends tbody tr").length >= 3,
    null,
    { timeout: 15000 },
  );
  const rows = await page.$$eval("#backends tbody tr", (trs) =>
    trs.map((tr) => ({
      id: tr.dataset.backend,
      state: tr.querySelector("td.state").textContent,
      health: tr.querySelector("td.health").dataset.health,
      breaker: tr.querySelector("td.breaker").dataset.breaker,
    })),
  );
  console.log("ROWS " + JSON.stringify(rows));
  const tiers = await page.waitForFunction(
    () => {
      const rows = [...document.querySelectorAll("#tiers tbody tr")];
      return rows.length >= 2 && rows.map((tr) => tr.dataset.tier + "=" + tr.dataset.state).join(" ");
    },
    null,
    { timeout: 15000 },
  );
  console.log("TIERS " + (await tiers.jsonValue()));
  await page.waitForFunction(() => document.body.dataset.tail === "open", null, { timeout: 15000 });
  console.log("READY");
  const live = await page.waitForSelector('#requests tbody tr[data-path="/seen-live"]', { timeout: 15000 });
  console.log("LIVE " + (await live.evaluate((tr) => tr.dataset.status + " " + tr.dataset.backend)));

  const { value: id } = await lines.next();
  const before = Number(await page.evaluate(() => document.body.dataset.refreshes));
  await page.waitForFunction(
    (id) => document.querySelector(`tr[data-backend="${id}"] td.health`)?.dataset.health === "unhealthy",
    id.trim(),
    { timeout: 15000, polling: 100 },
  );
  const after = Number(await page.evaluate(() => document.body.dataset.refreshes));
  console.log("UNHEALTHY " + (after - before));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("DONE");
} finally {
  await browser.close();
}
// stdin is still open: leave without waiting for it.
process.exit(0);

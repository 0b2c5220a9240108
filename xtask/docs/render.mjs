// Renders the docs portal in headless Chromium, with every request that would leave the
// machine refused and recorded, and prints what it found as JSON: the operations the
// page shows, and the requests it tried (`cargo xtask docs`).
import { chromium } from "playwright-core";

const [page_url, executable] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: executable,
  // As root, Chromium needs --no-sandbox; the other flags keep it off the network.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const outside = [];
try {
  const page = await browser.newPage();
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("file:") || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
    outside.push(url);
    return route.abort();
  });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(page_url);
  await page.waitForSelector("[data-section-id^='operation/']", { timeout: 60000 });
  const operations = await page.$$eval("[data-section-id^='operation/']",
    (nodes) => [...new Set(nodes.map((n) => n.getAttribute("data-section-id").slice("operation/".length)))]);
  console.log(JSON.stringify({ operations, outside, errors }));
} finally {
  await browser.close();
}

// Renders the docs portal in headless Chromium with every request that would leave the
// machine refused and recorded, and prints what it found as JSON (`cargo xtask docs
// --check`). `node render.mjs CHROMIUM static FILE_URL`: the operations the page shows,
// each with the labels of its code samples' tabs. `node render.mjs CHROMIUM try-it
// DOCS_URL TOKEN`: the served portal's try-it console given the token, listAgents chosen
// and sent, and the status it showed. Requests to the portal's own server are allowed.
import { chromium } from "playwright-core";

const [executable, mode, url, token] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: executable,
  // As root, Chromium needs --no-sandbox; the other flags keep it off the network.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const origin = url.startsWith("http") ? new URL(url).origin : null;
const outside = [];
const errors = [];
try {
  const page = await browser.newPage();
  await page.route("**/*", (route) => {
    const address = route.request().url();
    const local = ["file:", "data:", "blob:"].some((scheme) => address.startsWith(scheme));
    if (local || (origin && address.startsWith(origin + "/"))) return route.continue();
    outside.push(address);
    return route.abort();
  });
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(url);
  await page.waitForSelector("[data-section-id^='operation/']", { timeout: 60000 });
  if (mode === "static") {
    const operations = await page.$$eval("[data-section-id^='operation/']", (nodes) => {
      const found = {};
      for (const node of nodes) {
        const id = node.getAttribute("data-section-id").slice("operation/".length);
        // The samples' tabs are in the operation's row, beside its description.
        const tabs = [...node.querySelectorAll("[role='tab']")].map((tab) => tab.textContent.trim());
        found[id] = [...new Set([...(found[id] || []), ...tabs])];
      }
      return found;
    });
    console.log(JSON.stringify({ operations, outside, errors }));
  } else {
    await page.click("#tryit summary");
    await page.fill("#tryit-token", token);
    await page.selectOption("#tryit-operation", "listAgents");
    await page.click("#tryit-send");
    await page.waitForSelector("#tryit-status[data-status]", { timeout: 30000 });
    const status = await page.textContent("#tryit-status");
    const response = await page.textContent("#tryit-response");
    console.log(JSON.stringify({ status, response: response.slice(0, 200), outside, errors }));
  }
} finally {
  await browser.close();
}

// Watches the admin console during a running spike: log in as the admin, let the figures and
// the chart fill for a few seconds, check they moved, save a screenshot.
// Run by admission/tests/api/browser.rs, which starts the services and the spike.
//
// Env: PAGE_URL, EMAIL, PASSWORD, SCREENSHOT_DIR, CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const { PAGE_URL, EMAIL, PASSWORD, SCREENSHOT_DIR } = process.env;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
mkdirSync(SCREENSHOT_DIR, { recursive: true });

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1100, height: 720 } });
const console_lines = [];
page.on("console", (m) => console_lines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => console_lines.push(`pageerror: ${e.message}`));

try {
  await page.goto(PAGE_URL);
  await page.getByLabel("Email").fill(EMAIL);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  // Figures arrive, then the chart needs a few seconds of samples.
  await page.waitForFunction(() => document.getElementById("f-served").textContent !== "–", null, { timeout: 15_000 });
  await page.waitForFunction(
    () => (document.getElementById("line-in").getAttribute("points") || "").split(" ").length >= 8,
    null, { timeout: 20_000 });
  const read = (id) => page.locator(`#${id}`).textContent();
  const shown = {
    status: await read("f-status"),
    served: await read("f-served"),
    remaining: await read("f-remaining"),
    points: (await page.locator("#line-in").getAttribute("points")).split(" ").length,
  };
  await page.screenshot({ path: `${SCREENSHOT_DIR}/console.png` });
  console.log(JSON.stringify(shown));
} catch (error) {
  await page.screenshot({ path: `${SCREENSHOT_DIR}/console-failure.png` }).catch(() => {});
  console.error(String(error));
  console.error(console_lines.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}

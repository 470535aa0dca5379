// Drives the waiting-room page like a buyer on a phone: log in, enter the sale (which opens a
// few seconds later, so the page must wait out a 425), wait in the queue, see the outcome.
// Run by admission/tests/api/browser.rs, which starts the services and plays the worker.
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
const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 });
const console_lines = [];
page.on("console", (m) => console_lines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => console_lines.push(`pageerror: ${e.message}`));

try {
  await page.goto(PAGE_URL);
  await page.getByText(/left/).first().waitFor({ timeout: 10_000 });
  await page.getByLabel("Email").fill(EMAIL);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("button", { name: "Enter the sale" }).click();
  // The order may already be paid by the time the page looks again.
  const gotOne = page.getByText("You got one!").or(page.getByText("Paid — it's yours!"));
  await page.getByText("You're in the queue").or(gotOne).waitFor({ timeout: 30_000 });
  await page.screenshot({ path: `${SCREENSHOT_DIR}/waiting-room-queued.png` });
  await gotOne.waitFor({ timeout: 30_000 });
  const outcome = await page.locator("#eta").textContent();
  if (!/^Order [0-9a-f-]{36}$/.test(outcome)) throw new Error(`unexpected outcome text: ${outcome}`);
  await page.screenshot({ path: `${SCREENSHOT_DIR}/waiting-room.png` });
  console.log(JSON.stringify({ outcome }));
} catch (error) {
  await page.screenshot({ path: `${SCREENSHOT_DIR}/waiting-room-failure.png` }).catch(() => {});
  console.error(String(error));
  console.error(console_lines.join("\n"));
  console.error(await page.content());
  process.exitCode = 1;
} finally {
  await browser.close();
}

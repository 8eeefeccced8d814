// Browser test of the web UI, in Debian's chromium driven by playwright-core.
// usage: node ui.mjs BASE_URL TOKEN SCREENSHOT_DIR WEBHOOK_SECRET HOOK_BODY_FILE
// Exits non-zero with a message on the first failed check.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, token, shots, secret, hookFile] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok - " + what);
}

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  let dialogs = 0;
  page.on("dialog", async (d) => {
    dialogs += 1;
    await d.dismiss();
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  // Logging in: the token once, then pages.
  await page.goto(base + "/ui");
  check(page.url().includes("/ui/login"), "an anonymous visitor is sent to the login page");
  await page.fill("input[name=token]", token);
  await Promise.all([page.waitForURL(/\/ui(\?|$)/), page.click("button[type=submit]")]);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "pipetrail_token");
  check(session && session.httpOnly && session.sameSite === "Strict", "the token is kept in an HttpOnly, SameSite=Strict cookie");
  const rows = await page.locator("#events tbody tr").count();
  check(rows >= 10, `the audit log lists events (${rows} rows)`);
  await page.screenshot({ path: join(shots, "audit-log.png") });

  // Filter by actor.
  await page.fill("input[name=actor]", "bob");
  await Promise.all([page.waitForURL(/actor=bob/), page.click("form.filters button[type=submit]")]);
  const actors = await page.locator("#events tbody tr td:nth-child(2)").allTextContents();
  check(actors.length > 0 && actors.every((a) => a.trim() === "bob"), "filtering by actor shows only bob's events");
  const csv = await page.locator("a", { hasText: "Export CSV" }).getAttribute("href");
  check(csv === "/api/v1/export?format=csv&actor=bob", "the CSV export link carries the filter");
  await page.screenshot({ path: join(shots, "audit-log-filtered.png") });

  // The pipeline page: who and when, the deleted banner, the timeline.
  await Promise.all([page.waitForURL(/\/ui\/pipelines\/gitlab\/287/), page.locator("a[href='/ui/pipelines/gitlab/287']").first().click()]);
  check((await page.locator("#triggered-by").textContent()).includes("alice"), "the pipeline page names who triggered it");
  check(await page.locator("#deleted-banner").isVisible(), "a deleted pipeline shows the red banner");
  check((await page.locator("#deleted-banner").textContent()).includes("Erin"), "the banner names who deleted it");
  const who = await page.locator("#who").textContent();
  check(who.includes("bob") && who.includes("retried"), "who retried is listed with its evidence");
  const bars = await page.locator("#timeline rect.bar").count();
  check(bars === 4, `the timeline has one bar per started job attempt (${bars})`);
  const box = await page.locator("#timeline").boundingBox();
  check(box && box.width > 400 && box.height > 50, "the timeline is drawn");
  const tip = await page.locator("#timeline rect.bar[data-job='1001'] title").textContent();
  check(tip.includes("runner: shared-1"), "hovering a bar names the runner");
  const body = await page.locator("main").textContent();
  check(body.includes("<script>alert('pwn')</script>") && dialogs === 0, "a job named <script> renders as text and runs nothing");
  await page.screenshot({ path: join(shots, "pipeline.png"), fullPage: true });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: join(shots, "pipeline-dark.png"), fullPage: true });
  await page.emulateMedia({ colorScheme: "light" });

  // Job, actor and ledger pages.
  await page.goto(base + "/ui/jobs/gitlab/1004");
  check((await page.locator("main").textContent()).includes("job.retried"), "the job page lists the job's events");
  await page.screenshot({ path: join(shots, "job.png") });
  await page.goto(base + "/ui/actors/alice");
  check((await page.locator("#events tbody tr").count()) > 0, "the actor page lists what alice did");
  await page.goto(base + "/ui/ledger");
  check((await page.locator("#ledger-size").textContent()).trim() !== "", "the ledger page shows the size");
  await page.screenshot({ path: join(shots, "ledger.png") });

  // Findings: what the rules raised; a filter narrows them; a row leads to its pipeline,
  // whose page carries the banner; bob's page too.
  await page.goto(base + "/ui/findings");
  const raised = await page.locator("#findings tbody tr[data-rule]").count();
  check(raised >= 2, `the findings page lists the findings (${raised} rows)`);
  await page.screenshot({ path: join(shots, "findings.png") });
  await page.selectOption("select[name=severity]", "high");
  await page.fill("input[name=actor]", "bob");
  await Promise.all([page.waitForURL(/severity=high.*actor=bob|actor=bob.*severity=high/), page.click("form.filters button[type=submit]")]);
  const high = await page.locator("#findings tbody tr[data-rule]").allTextContents();
  check(
    high.length === 1 && high[0].includes("deleted_after_acting") && high[0].includes("@bob deleted pipeline 351 after they played job deploy"),
    `filtering by severity and actor leaves bob deleting the pipeline whose deployment he played (${raised} → ${high.length})`
  );
  await Promise.all([
    page.waitForURL(/\/ui\/pipelines\/gitlab\/351/),
    page.locator("#findings a[href='/ui/pipelines/gitlab/351']").first().click(),
  ]);
  check(await page.locator("#findings-banner").isVisible(), "the pipeline page shows the finding's banner");
  check((await page.locator("#findings-banner").textContent()).includes("deployed to production"), "the banner says why it weighs");
  await page.goto(base + "/ui/actors/bob");
  check(await page.locator("#findings-banner").isVisible(), "bob's page shows the finding about him");

  // Live mode: a new delivery appears without reloading.
  await page.goto(base + "/ui?live=1");
  const before = await page.locator("#events tbody tr").count();
  const res = await fetch(base + "/hooks/gitlab", {
    method: "POST",
    headers: { "X-Gitlab-Token": secret, "X-Gitlab-Event": "Pipeline Hook", "Content-Type": "application/json" },
    body: readFileSync(hookFile),
  });
  check(res.status === 200, "a new webhook is recorded while the page is open");
  await page.waitForSelector("#events tbody tr.new", { timeout: 15000 });
  const after = await page.locator("#events tbody tr").count();
  check(after > before, `live mode shows new events at the top (${before} → ${after})`);
  check(errors.length === 0, "no script errors: " + errors.join("; "));
} finally {
  await browser.close();
}

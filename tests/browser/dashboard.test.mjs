// The dashboard in a real browser against a real coordinator and twelve real agent runtimes:
// sign-in, the fleet, a machine, a rollout started from the page and followed live, steering,
// the release diff, what a readonly key sees, forged requests, sign-out, keyboard and axe-core.
// Screenshots of every page land in build/browser/ (FAILED-… for the page a failing step was on).
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import { after, before, describe, test } from "node:test";
import path from "node:path";
import { Fleet, PATH_A, PATH_B, PATH_C, artifacts, chromiumPath, launch, screenshot, waitFor } from "./harness.mjs";

const require = createRequire(import.meta.url);
const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const HOSTS = 12;

let fleet, browser, page;

async function step(name, fn) {
  try {
    await fn();
  } catch (e) {
    if (page) await screenshot(page, `FAILED-${name}`).catch(() => {});
    throw e;
  }
}

async function signIn(key) {
  await page.goto(`${fleet.ui}/ui/`, { waitUntil: "domcontentloaded" });
  await page.waitForSelector("#key");
  await page.type("#key", key);
  await Promise.all([page.waitForSelector("#fleet-table"), page.click("button[type=submit]")]);
}

const text = (sel) => page.$eval(sel, (el) => el.textContent);

describe("the dashboard", { timeout: 300000, skip: chromiumPath() ? false : "no chromium (apt install chromium)" }, () => {
  before(async () => {
    fleet = new Fleet();
    await fleet.start();
    const entries = (p) => Object.fromEntries(Array.from({ length: HOSTS }, (_, i) => [`host-${String(i).padStart(4, "0")}`, p]));
    fleet.release("r1", entries(PATH_A));
    fleet.release("r2", entries(PATH_B));
    fleet.release("r3", { ...entries(PATH_B), "host-0003": PATH_C });
    await fleet.agents(HOSTS, 500);
    fleet.cli("deploy", "--release", "r1", "--hosts", "host-*", "--waves", "100%", "--soak", "0", "--wait");
    browser = await launch();
    page = await browser.newPage();
  });
  after(async () => {
    if (browser) await browser.close();
    if (fleet) await fleet.stop();
  });

  test("sign in with a deploy key: the fleet page lists every host", () => step("fleet", async () => {
    await page.goto(`${fleet.ui}/ui/`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#key");
    await screenshot(page, "sign-in");
    await signIn(fleet.keys.deploy);
    assert.match(await text("#who"), /bob \(deploy\)/);
    await waitFor("every host listed", async () =>
      (await page.$$eval("#fleet-table tbody tr", (rows) => rows.map((r) => r.dataset.host))).length === HOSTS);
    const hosts = await page.$$eval("#fleet-table tbody tr", (rows) => rows.map((r) => r.dataset.host));
    assert.deepEqual(hosts, fleet.hosts);
    assert.equal(await text("#fleet-total"), String(HOSTS));
    // Every host runs r1's path: in sync.
    const syncs = await page.$$eval("#fleet-table tbody tr td:nth-child(2)", (c) => c.map((x) => x.textContent));
    assert.deepEqual([...new Set(syncs)], ["in sync"]);
    // The filter goes to the server: one host by name.
    await page.type("#f-q", "host-0007");
    await Promise.all([page.waitForFunction(() => document.querySelectorAll("#fleet-table tbody tr").length === 1), page.keyboard.press("Enter")]);
    assert.match(page.url(), /q=host-0007/);
    await screenshot(page, "fleet");
  }));

  test("a machine's page shows what it runs and its timeline", () => step("machine", async () => {
    await Promise.all([page.waitForSelector("#timeline"), page.click('#fleet-table a[href="/ui/machines/host-0007"]')]);
    const facts = await text("dl.facts");
    assert.ok(facts.includes(PATH_A), facts);
    assert.ok((await page.$$("#timeline tbody tr")).length > 0);
    const kinds = await page.$$eval("#timeline tbody tr td:nth-child(2)", (c) => c.map((x) => x.textContent));
    assert.ok(kinds.every((k) => k.length > 0), kinds.join(","));
    await screenshot(page, "machine");
  }));

  let rolloutId;
  test("a rollout started from the page updates within 1 s of each confirmation, without reload", () => step("rollout", async () => {
    await page.goto(`${fleet.ui}/ui/rollouts/new`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#n-release");
    await page.select("#n-release", "r2");
    await page.select("#n-kind", "hosts");
    await page.type("#n-target", fleet.hosts.join(", "));
    await page.$eval("#n-waves", (el) => { el.value = ""; });
    await page.type("#n-waves", "1, 100%");
    await page.$eval("#n-soak", (el) => { el.value = ""; });
    await page.type("#n-soak", "2");
    await page.click("button[type=submit]");
    await page.waitForSelector("#rollout-hosts");
    rolloutId = page.url().split("/").pop();
    assert.match(rolloutId, /^ro-/);
    // From here on the page must not reload: a marker on the window would be lost.
    await page.evaluate(() => {
      window.__sameDocument = true;
      window.__confirmedSeen = {};
      const note = () => {
        for (const row of document.querySelectorAll("#rollout-hosts tbody tr"))
          if ((row.dataset.state === "confirmed" || row.dataset.state === "soaked") && !window.__confirmedSeen[row.dataset.host])
            window.__confirmedSeen[row.dataset.host] = Date.now();
      };
      new MutationObserver(note).observe(document.getElementById("main"), { childList: true, subtree: true });
      note();
    });
    await page.waitForFunction((n) => Object.keys(window.__confirmedSeen).length === n, { timeout: 60000 }, HOSTS);
    await page.waitForFunction(() => document.querySelector("#rollout-status").textContent.includes("completed"), { timeout: 60000 });
    assert.equal(await page.evaluate(() => window.__sameDocument), true);
    const seen = await page.evaluate(() => window.__confirmedSeen);
    const r = await fleet.apiGet(`/api/v1/rollouts/${rolloutId}`);
    const confirmedAt = Object.fromEntries(r.events.filter((e) => e.kind === "host_confirmed").map((e) => [e.hostname, Date.parse(e.at)]));
    const lags = fleet.hosts.map((h) => seen[h] - confirmedAt[h]);
    console.log(`rollout page: confirmation → shown, ms: ${lags.join(" ")}`);
    for (const [i, lag] of lags.entries()) assert.ok(lag <= 1000, `${fleet.hosts[i]} shown ${lag} ms after it confirmed`);
    const waves = await page.$$eval(".wave", (w) => w.map((x) => x.textContent));
    assert.equal(waves.length, 2);
    assert.ok(waves[1].includes(`${HOSTS - 1}/${HOSTS - 1} confirmed`), waves[1]);
    await screenshot(page, "rollout");
    await screenshot(page, "rollout-viewport", { fullPage: false });  // the README's picture
  }));

  test("roll a host back from its page", () => step("rollback", async () => {
    await page.goto(`${fleet.ui}/ui/machines/host-0005`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#timeline");
    const history = await page.$$eval("#history li", (l) => l.length);
    assert.ok(history >= 2, `confirmed generations: ${history}`);
    page.once("dialog", (d) => d.accept());
    await page.click("button.danger");
    await waitFor("the rollback", async () => (await fleet.apiGet("/api/v1/machines/host-0005")).desired_path === PATH_A);
    const audit = await fleet.apiGet("/api/v1/audit?target=host-0005");
    assert.ok(audit.some((e) => e.actor === "bob" && e.action.includes("rollback")), JSON.stringify(audit.map((e) => e.action)));
    await screenshot(page, "machine-rolled-back");
  }));

  test("a rollback's forensics are on the machine's page, as text", () => step("forensics", async () => {
    // A host's rolled_back report with what it saw (agent routes are open on this plain-HTTP
    // coordinator); its journal carries markup, which must stay text.
    const report = {
      seq: 1, at: new Date().toISOString(), kind: "rolled_back", store_path: PATH_B, current_path: PATH_A,
      message: "health gate failed: required probe api failed 2 consecutive checks: unexpected status 500",
      agent_version: "browser", uptime_s: 5,
      forensics: {
        target: PATH_B, previous: PATH_A,
        probes: [{ probe: "api", type: "http", status: "fail", message: "unexpected status 500", output: "HTTP 500\ndatabase connection refused" }],
        failed_units: ["api.service"],
        journal: "api[1]: <img src=x onerror=\"window.pwned=1\"> cannot reach the database\n",
        switch_output: "starting the following units: api.service\n",
        closure_diff: ["api: 1.4.0 → 1.5.0, +2.3 KiB"], closure_changes: 1,
      },
    };
    const r = await fetch(`${fleet.api}/api/v1/machines/host-9999/reports`, {
      method: "POST", headers: { "Content-Type": "application/json", "X-Nixfleet-Protocol": "1" },
      body: JSON.stringify({ reports: [report] }),
    });
    assert.equal(r.status, 200, await r.text());
    await page.goto(`${fleet.ui}/ui/machines/host-9999`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#rollbacks details.forensics");
    await page.click("#rollbacks details.forensics summary");
    const shown = await text("#rollbacks details.forensics");
    for (const part of ["HTTP 500", "database connection refused", "Failed units: api.service", "starting the following units: api.service",
      "api: 1.4.0 → 1.5.0", "Went back to", "<img src=x"])
      assert.ok(shown.includes(part), `${part} in ${shown}`);
    assert.equal(await page.$$eval("#rollbacks img", (l) => l.length), 0);
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    await screenshot(page, "machine-forensics");
  }));

  test("pause, resume and cancel a rollout from its page", () => step("steer", async () => {
    fleet.cli("deploy", "--release", "r1", "--hosts", "host-*", "--waves", "1,100%", "--soak", "600");
    const list = await fleet.apiGet("/api/v1/rollouts?status=running");
    const id = list[0].id;
    await page.goto(`${fleet.ui}/ui/rollouts/${id}`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#pause");
    await page.click("#pause");
    await page.waitForSelector("#resume");
    assert.equal((await fleet.apiGet(`/api/v1/rollouts/${id}`)).status, "paused");
    await page.click("#resume");
    await page.waitForSelector("#pause");
    assert.equal((await fleet.apiGet(`/api/v1/rollouts/${id}`)).status, "running");
    page.once("dialog", (d) => d.accept());
    await page.click("#cancel");
    await page.waitForFunction(() => document.querySelector("#rollout-status").textContent.includes("cancelled"));
    assert.equal((await fleet.apiGet(`/api/v1/rollouts/${id}`)).status, "cancelled");
    const audit = await fleet.apiGet("/api/v1/audit?action=rollout.rollout_paused");
    assert.equal(audit.at(-1).actor, "bob");  // the session acts as its key, in the audit trail
  }));

  test("the diff page shows the one changed host", () => step("diff", async () => {
    await page.goto(`${fleet.ui}/ui/releases`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#diff-a");
    await page.select("#diff-a", "r2");
    await page.select("#diff-b", "r3");
    await screenshot(page, "releases");
    await Promise.all([page.waitForSelector("#changed"), page.click("form.filters button[type=submit]")]);
    const changed = await page.$$eval("#changed tbody tr", (rows) => rows.map((r) => [r.dataset.host, r.cells[1].textContent, r.cells[2].textContent]));
    assert.deepEqual(changed, [["host-0003", PATH_B, PATH_C]]);
    assert.match(await text("#unchanged h2"), /Unchanged \(11\)/);
    await screenshot(page, "diff");
    await page.goto(`${fleet.ui}/ui/audit`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#audit-verify");
    assert.match(await text("#audit-verify"), /chain verified/);
    await screenshot(page, "audit");
  }));

  test("a forged POST without the CSRF token is refused, from the page and from another site", () => step("csrf", async () => {
    fleet.cli("deploy", "--release", "r2", "--hosts", "host-*", "--waves", "1,100%", "--soak", "600");
    const id = (await fleet.apiGet("/api/v1/rollouts?status=running"))[0].id;
    await page.goto(`${fleet.ui}/ui/rollouts/${id}`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#pause");
    // Same page, session cookie sent, no token: refused.
    const forged = await page.evaluate(async (target) => {
      const r = await fetch(target, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: "{}" });
      return { status: r.status, body: await r.json() };
    }, `/ui/api/v1/rollouts/${id}/pause`);
    assert.equal(forged.status, 403);
    assert.equal(forged.body.error, "csrf");
    // Another site's form posting to the dashboard: the cookie stays home (SameSite=Strict) and
    // there is no token; the rollout keeps running.
    const evil = http.createServer((req, res) => {
      res.setHeader("Content-Type", "text/html");
      res.end(`<form method="POST" action="${fleet.ui}/ui/api/v1/rollouts/${id}/pause"><button id="go">win a prize</button></form>`);
    });
    await new Promise((r) => evil.listen(0, "127.0.0.1", r));
    const other = await browser.newPage();
    await other.goto(`http://127.0.0.1:${evil.address().port}/`);
    await Promise.all([other.waitForNavigation(), other.click("#go")]);
    const answer = await other.evaluate(() => document.body.textContent);
    assert.match(answer, /"error":"(unauthenticated|csrf)"/);
    await other.close();
    evil.close();
    assert.equal((await fleet.apiGet(`/api/v1/rollouts/${id}`)).status, "running");
  }));

  test("a readonly key sees no action and its requests to act are refused", () => step("readonly", async () => {
    const id = (await fleet.apiGet("/api/v1/rollouts?status=running"))[0].id;
    await page.click("#signout");
    await page.waitForSelector("#key");
    await signIn(fleet.keys.readonly);
    assert.match(await text("#who"), /carol \(readonly\)/);
    await page.goto(`${fleet.ui}/ui/rollouts/${id}`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#rollout-hosts");
    for (const sel of ["#pause", "#resume", "#cancel"]) assert.equal(await page.$(sel), null, sel);
    await page.goto(`${fleet.ui}/ui/rollouts`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#rollouts");
    assert.equal(await page.$('a[href="/ui/rollouts/new"]'), null);
    await page.goto(`${fleet.ui}/ui/machines/host-0001`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#timeline");
    assert.equal(await page.$("button.danger"), null);
    // With the token, the role still decides.
    const tried = await page.evaluate(async (target) => {
      const s = await (await fetch("/ui/api/session")).json();
      const r = await fetch(target, { method: "POST", headers: { "X-CSRF-Token": s.csrf, "Content-Type": "application/json" }, body: "{}" });
      return r.status;
    }, `/ui/api/v1/rollouts/${id}/pause`);
    assert.equal(tried, 403);
    assert.equal((await fleet.apiGet(`/api/v1/rollouts/${id}`)).status, "running");
  }));

  test("sign-out ends the session on the server", () => step("signout", async () => {
    const cookie = (await page.cookies()).find((c) => c.name === "__Host-nixfleet-session");
    assert.ok(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === "Strict");
    assert.equal(await page.evaluate(() => document.cookie.includes("nixfleet-session")), false);  // HttpOnly
    await page.click("#signout");
    await page.waitForSelector("#key");
    assert.equal(await page.evaluate(async () => (await fetch("/ui/api/session")).status), 401);
    // The old cookie, replayed, is no session either.
    const again = await page.evaluate(async () => (await fetch("/ui/api/v1/machines")).status);
    assert.equal(again, 401);
    await page.setCookie({ name: cookie.name, value: cookie.value, url: `${fleet.ui}/`, path: "/", secure: true, httpOnly: true, sameSite: "Strict" });
    assert.equal(await page.evaluate(async () => (await fetch("/ui/api/v1/machines")).status), 401);
  }));

  test("keyboard: skip link, the main navigation and focus on the new page", () => step("keyboard", async () => {
    await signIn(fleet.keys.deploy);
    await page.goto(`${fleet.ui}/ui/`, { waitUntil: "domcontentloaded" });
    await page.waitForSelector("#fleet-table");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
    const order = [];
    for (let i = 0; i < 5; ++i) {
      await page.keyboard.press("Tab");
      order.push(await page.evaluate(() => document.activeElement.textContent));
    }
    assert.deepEqual(order, ["nixfleet", "Fleet", "Rollouts", "Releases", "Audit"]);
    await page.keyboard.down("Shift");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Tab");
    await page.keyboard.up("Shift");
    await page.keyboard.press("Enter");  // on "Rollouts"
    await page.waitForSelector("#rollouts");
    assert.match(page.url(), /\/ui\/rollouts$/);
    assert.equal(await page.evaluate(() => document.activeElement.id), "main");
    // The focused element is visibly outlined.
    await page.keyboard.press("Tab");
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.notEqual(outline, "none");
  }));

  test("axe-core finds no WCAG 2 A/AA violation (contrast included) on any page", () => step("axe", async () => {
    // axe is injected, which the dashboard's CSP forbids: this page alone bypasses it.
    const a11y = await browser.newPage();
    await a11y.setBypassCSP(true);
    const cookies = await page.cookies();
    await a11y.setCookie(...cookies);
    const rollouts = await fleet.apiGet("/api/v1/rollouts");
    const pages = ["/ui/", "/ui/machines/host-0003", "/ui/rollouts", `/ui/rollouts/${rollouts[0].id}`, "/ui/rollouts/new",
      "/ui/releases", "/ui/releases/r3", "/ui/releases/r2/diff/r3", "/ui/audit"];
    const report = [];
    for (const p of pages) {
      await a11y.goto(`${fleet.ui}${p}`, { waitUntil: "networkidle2" });
      await a11y.waitForFunction(() => !document.querySelector("main p.muted")?.textContent.startsWith("Loading"));
      await a11y.evaluate(axeSource);
      const result = await a11y.evaluate(async () => {
        const r = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
        return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
      });
      report.push({ page: p, violations: result });
    }
    // And the sign-in form, signed out.
    const fresh = await browser.createBrowserContext();
    const signin = await fresh.newPage();
    await signin.setBypassCSP(true);
    await signin.goto(`${fleet.ui}/ui/`, { waitUntil: "networkidle2" });
    await signin.waitForSelector("#key");
    await signin.evaluate(axeSource);
    report.push({ page: "sign-in", violations: await signin.evaluate(async () => (await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa"] } })).violations.map((v) => ({ id: v.id, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }))) });
    await fresh.close();
    await a11y.close();
    fs.mkdirSync(artifacts, { recursive: true });
    fs.writeFileSync(path.join(artifacts, "axe.json"), JSON.stringify(report, null, 2));
    const bad = report.filter((r) => r.violations.length);
    assert.deepEqual(bad, []);
  }));
});

// What the browser tests stand on: a real coordinator (its dashboard over TLS from a fleet-CA
// certificate), the real CLI, real agent runtimes (bench_fleet: the agent's runtime, HTTP client
// and state directories, with fake Nix and activation), and Debian's chromium driven headless by
// puppeteer-core. Binaries come from $NIXFLEET_BUILD (default build/dev).
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, "../..");
export const build = path.resolve(repo, process.env.NIXFLEET_BUILD || "build/dev");
const bin = (name) => path.join(build, "bin", name);
export const artifacts = path.join(build, "browser");

export const PATH_A = "/nix/store/0c2a6q4lbjxkfz3vbq6ggc6hl4g0sn4v-nixos-system-fleet-a";
export const PATH_B = "/nix/store/1m9ggc7cy1rl4vxzx5zqn0dsj8dsyd2q-nixos-system-fleet-b";
export const PATH_C = "/nix/store/2p4hh8dz3sm0y6l4w1rr5aqhlr2ssv3g-nixos-system-fleet-c";

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, fn, { timeout = 20000, every = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

export class Fleet {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "nixfleet-browser-"));
    this.db = path.join(this.dir, "db");
    this.procs = [];
  }

  run(name, args, env = {}) {
    return execFileSync(bin(name), args, {
      encoding: "utf8",
      env: { ...process.env, ...this.cliEnv, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
  }
  cli(...args) {
    return this.run("nixfleet", args);
  }

  // The coordinator: API in plain HTTP on loopback for the simulated agents, the dashboard on its
  // own listener with TLS.
  async start({ pollHint = 1, extra = [] } = {}) {
    this.keys = {};
    for (const [name, role] of [["alice", "admin"], ["bob", "deploy"], ["carol", "readonly"]])
      this.keys[role] = this.run("nixfleet-coordinator", ["keys", "create", "--db", this.db, "--name", name, "--role", role]);
    const ca = path.join(this.dir, "ca");
    this.run("nixfleet-coordinator", ["ca", "init", "--dir", ca]);
    this.run("nixfleet-coordinator", ["ca", "server-cert", "--dir", ca, "--name", "127.0.0.1", "--name", "localhost",
      "--cert-out", path.join(this.dir, "ui.crt"), "--key-out", path.join(this.dir, "ui.key")]);
    this.apiPort = await freePort();
    this.uiPort = await freePort();
    this.api = `http://127.0.0.1:${this.apiPort}`;
    this.ui = `https://127.0.0.1:${this.uiPort}`;
    await this.serve(pollHint, extra);
    this.cliEnv = { NIXFLEET_COORDINATOR: this.api, NIXFLEET_API_KEY: this.keys.admin, NIXFLEET_CONFIG: path.join(this.dir, "cli.json") };
    fs.writeFileSync(this.cliEnv.NIXFLEET_CONFIG, "{}");
    execFileSync("nix-store", ["--generate-binary-cache-key", "browser-1", path.join(this.dir, "op.sec"), path.join(this.dir, "op.pub")]);
    fs.chmodSync(path.join(this.dir, "op.sec"), 0o600);
  }

  async serve(pollHint, extra) {
    const log = fs.openSync(path.join(this.dir, "coordinator.log"), "a");
    this.coordinator = spawn(bin("nixfleet-coordinator"), ["serve", "--db", this.db, "--listen", `127.0.0.1:${this.apiPort}`,
      "--insecure-http", "--ui-listen", `127.0.0.1:${this.uiPort}`, "--ui-tls-cert", path.join(this.dir, "ui.crt"),
      "--ui-tls-key", path.join(this.dir, "ui.key"), "--poll-hint", String(pollHint), "--log-level", "warn",
      "--report-budget", "0", ...extra], { stdio: ["ignore", "ignore", log] });
    this.procs.push(this.coordinator);
    await waitFor("the coordinator", async () => (await fetch(`${this.api}/healthz`)).ok);
  }

  // Releases signed by the operator key: `entries` maps host → store path.
  release(id, entries) {
    const args = ["release", "create", "--id", id, "--sign-key", path.join(this.dir, "op.sec"), "--cache-url", "https://cache.example.org"];
    for (const [h, p] of Object.entries(entries)) args.push("--entry", `${h}=${p}`);
    this.cli(...args);
  }

  // `count` agent runtimes named host-0000…, polling every `pollMs`, running PATH_A.
  async agents(count, pollMs = 1000) {
    this.hosts = Array.from({ length: count }, (_, i) => `host-${String(i).padStart(4, "0")}`);
    const state = fs.mkdtempSync(path.join(os.tmpdir(), "nixfleet-browser-agents-"));
    this.agentState = state;
    const pub = fs.readFileSync(path.join(this.dir, "op.pub"), "utf8").trim();
    const log = fs.openSync(path.join(this.dir, "fleet.log"), "a");
    const p = spawn(path.join(build, "bench", "bench_fleet"), [this.api, String(count), "host-", state, PATH_A, String(pollMs), pub],
      { stdio: ["ignore", "ignore", log] });
    this.procs.push(p);
    await waitFor("every agent's first report", async () => {
      const r = await this.apiGet("/api/v1/machines");
      return r.length === count && r.every((m) => m.last_seen);
    });
  }

  async apiGet(target, key = this.keys.admin) {
    const r = await fetch(`${this.api}${target}`, { headers: { Authorization: `Bearer ${key}` } });
    if (!r.ok) throw new Error(`${target}: ${r.status}`);
    return r.json();
  }

  async stop() {
    for (const p of this.procs.reverse()) {
      if (p.exitCode !== null) continue;
      const gone = new Promise((r) => p.once("exit", r));
      p.kill("SIGTERM");
      await Promise.race([gone, sleep(5000)]);
      if (p.exitCode === null) p.kill("SIGKILL");
    }
    if (process.env.NIXFLEET_KEEP) return;
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (this.agentState) fs.rmSync(this.agentState, { recursive: true, force: true });
  }
}

export function chromiumPath() {
  for (const p of [process.env.CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser"])
    if (p && fs.existsSync(p)) return p;
  return null;
}

export async function launch() {
  return puppeteer.launch({
    executablePath: chromiumPath(),
    headless: true,
    acceptInsecureCerts: true,  // the dashboard's certificate is the test fleet CA's
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
    defaultViewport: { width: 1280, height: 900 },
  });
}

export async function screenshot(page, name, { fullPage = true } = {}) {
  fs.mkdirSync(artifacts, { recursive: true });
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  return file;
}

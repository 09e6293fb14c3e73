// Open dashboards, as the fleet page behaves: each signs in (its own session), holds the live
// stream, and on every change event fetches its page of the fleet again (at most once per 2 s, as
// the page does). Beside them, a steady change load: heartbeat reports to the API at a fixed rate
// (the same with or without dashboards, so that a comparison isolates the dashboards).
// Usage: node dashboards.mjs API_URL UI_URL KEY DASHBOARDS SECONDS REPORTS_PER_S MACHINES CURRENT_PATH
// Prints one line: dashboards, events, page fetches, their p99 (ms), reports sent, errors.
const [api, ui, key, dashboards, seconds, rate, machines, current] = process.argv.slice(2);
const N = Number(dashboards), S = Number(seconds), R = Number(rate), M = Number(machines);
const deadline = Date.now() + S * 1000;
let events = 0, fetches = 0, errors = 0, reports = 0;
const fetchMs = [];

async function dashboard() {
  const r = await fetch(`${ui}/ui/api/session`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ key }) });
  if (!r.ok) throw new Error(`sign-in: ${r.status}`);
  const cookie = r.headers.get("set-cookie").split(";")[0];
  const headers = { Cookie: cookie };
  let last = 0, pending = null;
  const load = async () => {
    const t = performance.now();
    const page = await fetch(`${ui}/ui/api/fleet?limit=50`, { headers });
    await page.arrayBuffer();
    if (!page.ok) ++errors;
    fetchMs.push(performance.now() - t);
    ++fetches;
  };
  await load();
  const ac = new AbortController();
  setTimeout(() => ac.abort(), deadline - Date.now());
  try {
    const stream = await fetch(`${ui}/ui/api/events`, { headers, signal: ac.signal });
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of stream.body) {
      buf += decoder.decode(chunk, { stream: true });
      let at;
      while ((at = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, at);
        buf = buf.slice(at + 2);
        if (!ev.includes("event: change")) continue;
        ++events;
        if (pending) continue;
        pending = setTimeout(async () => {
          pending = null;
          last = Date.now();
          await load().catch(() => ++errors);
        }, Math.max(0, last + 2000 - Date.now()));
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") ++errors;
  }
  if (pending) clearTimeout(pending);
}

async function changes() {
  const now = new Date().toISOString();
  const seq = new Map();
  const start = Date.now();
  for (let i = 0; Date.now() < deadline; ++i) {
    const due = start + (i * 1000) / R;
    if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
    const id = `m${String(i % M).padStart(6, "0")}`;
    const n = (seq.get(id) || 1000000) + 1;
    seq.set(id, n);
    const body = JSON.stringify({ reports: [{ seq: n, at: now, kind: "heartbeat", current_path: current, booted_path: current, agent_version: "bench", uptime_s: n }] });
    fetch(`${api}/api/v1/machines/${id}/reports`, { method: "POST", headers: { "Content-Type": "application/json" }, body })
      .then((r) => { r.arrayBuffer(); if (!r.ok) ++errors; else ++reports; })
      .catch(() => ++errors);
  }
}

await Promise.all([changes(), ...Array.from({ length: N }, () => dashboard().catch(() => ++errors))]);
fetchMs.sort((a, b) => a - b);
const p99 = fetchMs.length ? fetchMs[Math.min(fetchMs.length - 1, Math.floor(fetchMs.length * 0.99))] : 0;
console.log(`dashboards ${N} events ${events} page_fetches ${fetches} page_p99_ms ${p99.toFixed(2)} reports ${reports} errors ${errors}`);

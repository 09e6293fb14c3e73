// The nixfleet dashboard: a page shell routed here, data from the coordinator's /ui/api/, live
// updates from one server-sent event stream. No framework and no build step: the DOM is built with
// h(), which only ever sets text (never HTML), so nothing a host or an operator wrote can run here.

const state = { session: null, page: null, live: null, counters: null };

// ---------------------------------------------------------------------------------------------
// DOM and formatting helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Replaces an element's children, leaving out the absent ones (null, undefined, false).
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
}

const link = (href, text, attrs = {}) => h("a", { href, "data-nav": true, ...attrs }, text);
const badge = (s, label = s) => h("span", { class: `badge s-${s}` }, label.replaceAll("_", " "));
const main = () => document.getElementById("main");

function shortPath(p) {
  if (!p) return "–";
  const m = /^\/nix\/store\/([a-z0-9]{32})-(.*)$/.exec(p);
  return m ? `${m[1].slice(0, 7)}…-${m[2]}` : p;
}
const pathCell = (p) => h("td", { class: "mono", title: p || "" }, shortPath(p));

function ago(t) {
  if (!t) return "never";
  const s = Math.round((Date.now() - Date.parse(t)) / 1000);
  if (s < 5) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
const when = (t) => (t ? h("time", { datetime: t, title: t }, ago(t)) : "–");

function say(text) {
  const live = document.getElementById("live");
  live.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// The API: the session's cookie goes by itself; the CSRF token goes with every change.

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = state.session ? state.session.csrf : "";
    if (body !== undefined) headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data && data.code, (data && data.message) || `HTTP ${res.status}`);
    if (res.status === 401 && path !== "/ui/api/session") signedOut();
    throw err;
  }
  return data;
}

const v1 = (path, opts) => api(`/ui/api/v1${path}`, opts);
const can = (role) => {
  const order = { readonly: 0, deploy: 1, admin: 2 };
  return state.session && order[state.session.role] >= order[role];
};

function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e instanceof ApiError ? `${e.message} (${e.status})` : String(e));
}

// Runs an operator action from a button: disabled while it runs, its outcome said aloud.
async function act(button, what, fn) {
  button.disabled = true;
  try {
    await fn();
    say(`${what}: done`);
    await refresh(true);
  } catch (e) {
    button.after(errorBox(e));
    say(`${what}: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Sign-in, sign-out, the live stream

function showChrome(on) {
  document.getElementById("nav").hidden = !on;
  document.getElementById("signout").hidden = !on;
  document.getElementById("who").textContent = on ? `${state.session.name} (${state.session.role})` : "";
}

function signedOut() {
  state.session = null;
  if (state.live) state.live.close();
  state.live = null;
  showChrome(false);
  renderSignIn();
}

function renderSignIn(message) {
  const input = h("input", { id: "key", name: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const out = h("div");
  const form = h(
    "form",
    {
      class: "stack",
      onsubmit: async (ev) => {
        ev.preventDefault();
        fill(out);
        try {
          state.session = await api("/ui/api/session", { method: "POST", body: { key: input.value.trim() } });
          input.value = "";
          await start();
        } catch (e) {
          fill(out, errorBox(e));
        }
      },
    },
    h("label", { for: "key" }, "API key", input),
    h("button", { class: "primary", type: "submit" }, "Sign in"),
  );
  fill(main(),
    h("section", { class: "signin", "aria-labelledby": "signin-title" },
      h("h1", { id: "signin-title" }, "Sign in to nixfleet"),
      h("p", { class: "muted" }, "With an operator API key (", h("code", {}, "nixfleet-coordinator keys create"),
        "). The key stays on the coordinator; this browser keeps only a session cookie."),
      message ? h("p", { class: "notice" }, message) : null,
      form, out),
  );
  input.focus();
}

function connectLive() {
  if (state.live) state.live.close();
  const es = new EventSource("/ui/api/events");
  es.addEventListener("change", (ev) => {
    const c = JSON.parse(ev.data);
    const before = state.counters;
    state.counters = c;
    if (before && state.page && state.page.onChange) state.page.onChange(before, c);
  });
  es.addEventListener("signed_out", () => signedOut());
  state.live = es;
}

async function start() {
  showChrome(true);
  connectLive();
  await render();
}

// ---------------------------------------------------------------------------------------------
// Routing: /ui/PAGE… in the address bar, links marked data-nav handled here.

const routes = [
  [/^\/ui\/?$/, fleetPage, "fleet"],
  [/^\/ui\/machines\/([^/]+)$/, machinePage, "fleet"],
  [/^\/ui\/rollouts\/?$/, rolloutsPage, "rollouts"],
  [/^\/ui\/rollouts\/new$/, newRolloutPage, "rollouts"],
  [/^\/ui\/rollouts\/([^/]+)$/, rolloutPage, "rollouts"],
  [/^\/ui\/releases\/?$/, releasesPage, "releases"],
  [/^\/ui\/releases\/([^/]+)\/diff\/([^/]+)$/, diffPage, "releases"],
  [/^\/ui\/releases\/([^/]+)$/, releasePage, "releases"],
  [/^\/ui\/audit\/?$/, auditPage, "audit"],
];

function navigate(href) {
  history.pushState(null, "", href);
  render();
}

async function render() {
  if (!state.session) return renderSignIn();
  const path = location.pathname;
  for (const [re, page, section] of routes) {
    const m = re.exec(path);
    if (!m) continue;
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.dataset.section === section) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const args = m.slice(1).map(decodeURIComponent);
    state.page = { onChange: null, refresh: null };
    try {
      await page(...args);
    } catch (e) {
      fill(main(), errorBox(e));
    }
    return;
  }
  fill(main(), h("h1", {}, "Not found"), h("p", {}, link("/ui/", "To the fleet")));
}

async function refresh(now) {
  if (state.page && state.page.refresh) await state.page.refresh(now);
}

// Calls `fn` on changes, at most once per `gap` ms (the last change is never dropped).
function throttled(fn, gap) {
  let last = 0, timer = null;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + gap - Date.now());
    timer = setTimeout(async () => {
      timer = null;
      last = Date.now();
      try {
        await fn();
      } catch (e) {
        /* the next change or a reload tries again */
      }
    }, wait);
  };
}

function setPage(title, ...content) {
  document.title = `${title} · nixfleet`;
  fill(main(), ...content);
}

// ---------------------------------------------------------------------------------------------
// Fleet

const SYNC = ["in_sync", "behind", "failing", "unmanaged", "unknown"];
const HEALTH = ["passing", "failing", "unknown"];
const LIFECYCLE = ["active", "maintenance", "decommissioned"];

function select(name, label, options, value) {
  return h("label", { for: `f-${name}` }, label,
    h("select", { id: `f-${name}`, name }, h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: o === value }, o.replaceAll("_", " ")))));
}

async function fleetPage() {
  const params = new URLSearchParams(location.search);
  const filter = Object.fromEntries(["q", "tag", "sync", "health", "state", "stale", "offset"].map((k) => [k, params.get(k) || ""]));
  const limit = 50;
  const cards = h("div", { class: "cards" });
  const table = h("div");
  const form = h(
    "form",
    { class: "filters", role: "search", onsubmit: (ev) => { ev.preventDefault(); apply(0); } },
    h("label", { for: "f-q" }, "Search", h("input", { id: "f-q", name: "q", type: "search", value: filter.q, placeholder: "host, tag or path" })),
    h("label", { for: "f-tag" }, "Tag", h("input", { id: "f-tag", name: "tag", value: filter.tag, size: 10 })),
    select("sync", "Sync", SYNC, filter.sync),
    select("health", "Health", HEALTH, filter.health),
    select("state", "Lifecycle", LIFECYCLE, filter.state),
    h("label", { class: "inline", for: "f-stale" }, h("input", { id: "f-stale", name: "stale", type: "checkbox", checked: filter.stale === "1" }), "stale only"),
    h("button", { class: "primary", type: "submit" }, "Filter"),
  );

  function apply(offset) {
    const q = new URLSearchParams();
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.type === "checkbox") { if (el.checked) q.set(el.name, "1"); }
      else if (el.value) q.set(el.name, el.value);
    }
    if (offset) q.set("offset", String(offset));
    history.replaceState(null, "", `/ui/${q.toString() ? "?" + q : ""}`);
    filter.offset = String(offset || "");
    load();
  }
  function quick(name, value) {
    for (const el of form.elements) {
      if (el.type === "checkbox") el.checked = name === "stale";
      else if (el.name !== "q" && el.name !== "tag") el.value = el.name === name ? value : "";
    }
    apply(0);
  }

  async function load() {
    const q = new URLSearchParams(location.search);
    q.set("limit", String(limit));
    const page = await api(`/ui/api/fleet?${q}`);
    const countCard = (title, name, counts, order) =>
      h("section", { class: "card", "aria-label": title }, h("h2", {}, title),
        h("ul", {}, order.filter((k) => counts[k]).map((k) =>
          h("li", {}, h("button", { type: "button", onclick: () => quick(name, k) }, k.replaceAll("_", " ")), h("strong", {}, counts[k])))));
    fill(cards,
      h("section", { class: "card", "aria-label": "Machines" }, h("h2", {}, "Machines"),
        h("ul", {}, h("li", {}, "total", h("strong", { id: "fleet-total" }, page.total)),
          h("li", {}, h("button", { type: "button", onclick: () => quick("stale", "1") }, "stale"), h("strong", {}, page.stale)))),
      countCard("Sync", "sync", page.sync, SYNC),
      countCard("Health", "health", page.health, HEALTH),
      countCard("Lifecycle", "state", page.lifecycle, LIFECYCLE),
    );
    const rows = page.items.map((m) =>
      h("tr", { class: m.stale ? "stale" : "", "data-host": m.id },
        h("th", { scope: "row" }, link(`/ui/machines/${encodeURIComponent(m.id)}`, m.id)),
        h("td", {}, badge(m.sync)),
        h("td", {}, badge(m.health)),
        h("td", {}, m.lifecycle === "active" ? "active" : badge(m.lifecycle)),
        pathCell(m.current_path),
        pathCell(m.desired_path),
        h("td", {}, m.last_seen ? when(m.last_seen) : "never", m.stale ? h("span", { class: "sr-only" }, " (stale)") : null),
        h("td", {}, m.rollout_id ? link(`/ui/rollouts/${encodeURIComponent(m.rollout_id)}`, m.rollout_id) : "–"),
        h("td", {}, m.tags.join(", "))));
    const from = page.matched ? page.offset + 1 : 0, to = page.offset + page.items.length;
    const prev = h("button", { class: "action", type: "button", disabled: page.offset === 0, onclick: () => apply(Math.max(0, page.offset - limit)) }, "← Previous");
    const next = h("button", { class: "action", type: "button", disabled: to >= page.matched, onclick: () => apply(page.offset + limit) }, "Next →");
    fill(table,
      h("table", { id: "fleet-table" },
        h("caption", {}, `${from}–${to} of ${page.matched} matching (${page.total} in the fleet)`),
        h("thead", {}, h("tr", {}, ["Host", "Sync", "Health", "Lifecycle", "Running", "Desired", "Last seen", "Rollout", "Tags"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows)),
      h("nav", { class: "pager", "aria-label": "Pages" }, prev, h("span", {}, `${from}–${to} of ${page.matched}`), next),
    );
    // The first time the table is on screen (the frame after it was drawn): the browser tests time it.
    if (!performance.getEntriesByName("fleet-rendered").length)
      requestAnimationFrame(() => setTimeout(() => performance.mark("fleet-rendered"), 0));
  }

  setPage("Fleet", h("h1", {}, "Fleet"), cards, form, table);
  await load();
  const again = throttled(load, 2000);
  state.page.refresh = load;
  state.page.onChange = (a, b) => { if (a.machines !== b.machines || a.rollouts !== b.rollouts) again(); };
}

// ---------------------------------------------------------------------------------------------
// A machine

// What a host saw when a target failed on it (the report's forensics), folded under the failure.
function forensicsView(f) {
  const block = (title, text) => (text ? [h("h4", {}, title), h("pre", {}, text)] : null);
  return h("details", { class: "forensics" }, h("summary", {}, "What the host saw"),
    f.previous ? h("p", {}, "Went back to ", h("span", { class: "mono" }, f.previous)) : null,
    f.probes && f.probes.length
      ? [h("h4", {}, "Probes"), h("ul", { class: "probes" }, f.probes.map((p) => h("li", {}, h("strong", {}, p.probe), ` (${p.type}) `,
        badge(p.status), p.message ? ` ${p.message}` : "", p.output ? h("pre", {}, p.output) : null)))]
      : null,
    h("p", { class: "failed-units" }, "Failed units: ", f.failed_units && f.failed_units.length ? f.failed_units.join(", ") : "none"),
    block("Switch output (end)", f.switch_output),
    block("Journal", f.journal),
    f.closure_changes
      ? [h("h4", {}, `Closure difference (${f.closure_diff.length} of ${f.closure_changes} changes)`),
        h("ul", { class: "closure mono" }, f.closure_diff.map((l) => h("li", {}, l)))]
      : null,
    f.notes && f.notes.length ? [h("h4", {}, "Not collected"), h("ul", {}, f.notes.map((n) => h("li", {}, n)))] : null);
}

async function machinePage(id) {
  const box = h("div");
  async function load() {
    const [m, reports, failures] = await Promise.all([
      v1(`/machines/${encodeURIComponent(id)}`),
      v1(`/machines/${encodeURIComponent(id)}/reports?limit=50`),
      v1(`/machines/${encodeURIComponent(id)}/reports?kind=rolled_back,rollback_failed,activation_failed&limit=5`),
    ]);
    const synced = m.desired_path && m.current_path === m.desired_path;
    const facts = h("dl", { class: "facts" },
      h("dt", {}, "Lifecycle"), h("dd", {}, badge(m.lifecycle)),
      h("dt", {}, "Tags"), h("dd", {}, m.tags.join(", ") || "–"),
      h("dt", {}, "Running"), h("dd", { class: "mono" }, m.current_path || "–"),
      h("dt", {}, "Desired"), h("dd", { class: "mono" }, m.desired_path || "– (nothing assigned)", " ",
        m.desired_path ? badge(synced ? "in_sync" : "behind") : null),
      h("dt", {}, "Booted"), h("dd", { class: "mono" }, m.booted_path || "–"),
      h("dt", {}, "Rollout"), h("dd", {}, m.rollout_id ? link(`/ui/rollouts/${encodeURIComponent(m.rollout_id)}`, m.rollout_id) : "–"),
      h("dt", {}, "Last seen"), h("dd", {}, when(m.last_seen)),
      m.certificate_expires_at ? [h("dt", {}, "Certificate until"), h("dd", {}, m.certificate_expires_at)] : null,
      m.revoked_at ? [h("dt", {}, "Revoked"), h("dd", {}, badge("failed", `revoked ${m.revoked_at}`))] : null,
    );
    const health = m.health
      ? h("table", { id: "health" }, h("caption", {}, m.health.passed ? "Passing" : "FAILING"),
        h("thead", {}, h("tr", {}, ["Probe", "Type", "Status", "Took", "Message"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, m.health.results.map((p) =>
          h("tr", {}, h("th", { scope: "row" }, p.probe), h("td", {}, p.type), h("td", {}, badge(p.status)),
            h("td", {}, `${p.duration_ms} ms`), h("td", {}, p.message || "")))))
      : h("p", { class: "muted" }, "No health report yet.");
    const history = m.history.length
      ? h("ol", { id: "history" }, m.history.map((g) => h("li", {}, h("span", { class: "mono" }, g.store_path), " — confirmed ", when(g.confirmed_at))))
      : h("p", { class: "muted" }, "No confirmed generation yet.");
    const rollbackList = failures.length
      ? h("ul", { id: "rollbacks" }, failures.map((r) => h("li", {}, when(r.at), " ", badge(r.kind), " from ",
        h("span", { class: "mono" }, shortPath(r.store_path)), ": ", r.message || "(no reason given)",
        r.forensics ? forensicsView(r.forensics) : null)))
      : h("p", { class: "muted" }, "No rollback among the kept reports.");
    const timeline = h("table", { id: "timeline" },
      h("caption", {}, `The last ${reports.length} reports, newest first`),
      h("thead", {}, h("tr", {}, ["At", "Kind", "Store path", "Release", "Message"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, reports.map((r) => h("tr", {}, h("td", {}, when(r.at)), h("td", {}, badge(r.kind)),
        pathCell(r.store_path), h("td", {}, r.release_id || "–"), h("td", {}, r.message || "")))));
    const actions = [];
    if (can("deploy") && m.history.length > 1) {
      const b = h("button", { class: "action danger", type: "button" }, "Roll back to the previous generation");
      b.addEventListener("click", () => {
        if (!confirm(`Roll ${id} back to its previous confirmed generation?`)) return;
        act(b, "Rollback", () => v1(`/machines/${encodeURIComponent(id)}/rollback`, { method: "POST", body: {} }));
      });
      actions.push(b);
    }
    fill(box,
      facts,
      actions.length ? h("div", { class: "actions" }, actions) : null,
      h("h2", {}, "Health"), health,
      h("h2", {}, "Rollbacks"), rollbackList,
      h("h2", {}, "Confirmed generations"), history,
      h("h2", {}, "Timeline"), timeline,
    );
  }
  setPage(id, h("p", {}, link("/ui/", "← Fleet")), h("h1", {}, id), box);
  await load();
  const again = throttled(load, 1000);
  state.page.refresh = load;
  state.page.onChange = (a, b) => { if (a.machines !== b.machines) again(); };
}

// ---------------------------------------------------------------------------------------------
// Rollouts

function waveProgress(w, hosts) {
  const mine = hosts.filter((x) => x.wave === w.index);
  const done = mine.filter((x) => x.state === "confirmed" || x.state === "soaked").length;
  const failed = mine.filter((x) => x.state === "failed").length;
  return h("div", { class: "wave", "data-wave": w.index },
    h("div", {}, h("strong", {}, `Wave ${w.index}`), " ", badge(w.status)),
    h("div", { class: "hosts", role: "img", "aria-label": `wave ${w.index}: ${done} of ${mine.length} confirmed, ${failed} failed` },
      mine.map((x) => h("span", { class: `host s-${x.state}`, title: `${x.hostname}: ${x.state}` }))),
    h("div", {}, h("progress", { max: mine.length || 1, value: done, "aria-label": `wave ${w.index} progress` }),
      `${done}/${mine.length} confirmed${failed ? `, ${failed} failed` : ""}`,
      w.soak_until && w.status === "soaking" ? [" · soak until ", when(w.soak_until)] : null));
}

async function rolloutsPage() {
  const list = await v1("/rollouts");
  list.sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  const rows = list.map((r) => h("tr", {},
    h("th", { scope: "row" }, link(`/ui/rollouts/${encodeURIComponent(r.id)}`, r.id)),
    h("td", {}, link(`/ui/releases/${encodeURIComponent(r.spec.release_id)}`, r.spec.release_id)),
    h("td", {}, badge(r.status)),
    h("td", {}, `${r.current_wave}/${r.waves.length}`),
    h("td", {}, r.spec.target.tags.length ? `tags ${r.spec.target.tags.join(", ")}` : `hosts ${r.spec.target.hosts.join(", ")}`),
    h("td", {}, when(r.created_at), ` by ${r.created_by}`)));
  setPage("Rollouts", h("h1", {}, "Rollouts"),
    can("deploy") ? h("div", { class: "actions" }, link("/ui/rollouts/new", "Start a rollout…", { class: "primary-link" })) : null,
    list.length ? h("table", { id: "rollouts" },
      h("thead", {}, h("tr", {}, ["Rollout", "Release", "Status", "Wave", "Target", "Created"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, "No rollout yet."));
  state.page.refresh = () => render();
  const again = throttled(() => render(), 1000);
  state.page.onChange = (a, b) => { if (a.rollouts !== b.rollouts) again(); };
}

async function rolloutPage(id) {
  const box = h("div");
  async function load() {
    const r = await v1(`/rollouts/${encodeURIComponent(id)}`);
    const actions = [];
    if (can("deploy")) {
      const post = (verb, body) => v1(`/rollouts/${encodeURIComponent(id)}/${verb}`, { method: "POST", body });
      if (r.status === "running") {
        const b = h("button", { class: "action", type: "button", id: "pause" }, "Pause");
        b.addEventListener("click", () => act(b, "Pause", () => post("pause", {})));
        actions.push(b);
      }
      if (r.status === "paused") {
        const retry = h("input", { type: "checkbox", id: "retry-failed" });
        const b = h("button", { class: "action", type: "button", id: "resume" }, "Resume");
        b.addEventListener("click", () => act(b, "Resume", () => post("resume", { retry_failed: retry.checked })));
        actions.push(b, h("label", { class: "inline", for: "retry-failed" }, retry, "retry failed hosts"));
      }
      if (r.status === "running" || r.status === "paused") {
        const b = h("button", { class: "action danger", type: "button", id: "cancel" }, "Cancel");
        b.addEventListener("click", () => { if (confirm(`Cancel rollout ${id}?`)) act(b, "Cancel", () => post("cancel", {})); });
        actions.push(b);
      }
    }
    const hostRows = r.hosts.map((x) => h("tr", { "data-host": x.hostname, "data-state": x.state },
      h("th", { scope: "row" }, link(`/ui/machines/${encodeURIComponent(x.hostname)}`, x.hostname)),
      h("td", {}, x.wave), h("td", { class: "state" }, badge(x.state)),
      pathCell(x.target_path), h("td", {}, x.message || ""), h("td", {}, when(x.updated_at))));
    const events = [...r.events].reverse().map((e) => h("tr", {},
      h("td", {}, when(e.at)), h("td", {}, e.kind), h("td", {}, e.wave || "–"), h("td", {}, e.hostname || "–"), h("td", {}, e.message)));
    fill(box,
      h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", { id: "rollout-status" }, badge(r.status)),
        h("dt", {}, "Release"), h("dd", {}, link(`/ui/releases/${encodeURIComponent(r.spec.release_id)}`, r.spec.release_id)),
        h("dt", {}, "Waves"), h("dd", {}, r.spec.waves.join(", "), ` · soak ${r.spec.soak_s} s · on failure ${r.spec.on_failure} · threshold ${r.spec.failure_threshold}`),
        h("dt", {}, "Created"), h("dd", {}, when(r.created_at), ` by ${r.created_by}`)),
      actions.length ? h("div", { class: "actions" }, actions) : null,
      h("h2", {}, "Waves"),
      h("div", { class: "legend", "aria-hidden": "true" }, h("span", { class: "l-pending" }, "pending"),
        h("span", { class: "l-dispatched" }, "dispatched"), h("span", { class: "l-confirmed" }, "confirmed"), h("span", { class: "l-failed" }, "failed")),
      h("div", { class: "waves" }, r.waves.map((w) => waveProgress(w, r.hosts))),
      h("h2", {}, "Hosts"),
      h("table", { id: "rollout-hosts" },
        h("thead", {}, h("tr", {}, ["Host", "Wave", "State", "Target", "Message", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, hostRows)),
      h("h2", {}, "Timeline"),
      h("table", { id: "rollout-events" },
        h("thead", {}, h("tr", {}, ["At", "Event", "Wave", "Host", "Message"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, events)));
  }
  setPage(id, h("p", {}, link("/ui/rollouts", "← Rollouts")), h("h1", {}, `Rollout ${id}`), box);
  await load();
  state.page.refresh = load;
  // A host's confirmation is a machine change and a rollout change: shown within the stream's
  // quarter second, without a reload.
  state.page.onChange = (a, b) => {
    if (a.rollouts !== b.rollouts || a.machines !== b.machines) load().catch(() => {});
  };
}

async function newRolloutPage() {
  const releases = await v1("/releases");
  const out = h("div");
  const field = (id, label, input) => h("label", { for: id }, label, input);
  const release = h("select", { id: "n-release", required: true }, releases.map((r) => h("option", { value: r.id }, `${r.id} (${r.entries.length} hosts)`)));
  const kind = h("select", { id: "n-kind" }, h("option", { value: "tags" }, "tags"), h("option", { value: "hosts" }, "hosts"));
  const target = h("input", { id: "n-target", required: true, placeholder: "web, eu-west  or  web-01, web-02" });
  const waves = h("input", { id: "n-waves", value: "1, 10%, 100%" });
  const soak = h("input", { id: "n-soak", type: "number", min: 0, value: 300 });
  const threshold = h("input", { id: "n-threshold", value: "0" });
  const onFailure = h("select", { id: "n-onfailure" }, ["pause", "revert", "halt"].map((x) => h("option", { value: x }, x)));
  const submit = h("button", { class: "primary", type: "submit" }, "Start the rollout");
  const form = h("form", {
    class: "stack",
    onsubmit: async (ev) => {
      ev.preventDefault();
      fill(out);
      const list = target.value.split(",").map((s) => s.trim()).filter(Boolean);
      const body = {
        release_id: release.value,
        target: { tags: kind.value === "tags" ? list : [], hosts: kind.value === "hosts" ? list : [] },
        waves: waves.value.split(",").map((s) => s.trim()).filter(Boolean),
        soak_s: Number(soak.value),
        failure_threshold: threshold.value.trim(),
        on_failure: onFailure.value,
      };
      submit.disabled = true;
      try {
        const r = await v1("/rollouts", { method: "POST", body });
        navigate(`/ui/rollouts/${encodeURIComponent(r.id)}`);
      } catch (e) {
        fill(out, errorBox(e));
      } finally {
        submit.disabled = false;
      }
    },
  },
    field("n-release", "Release", release),
    field("n-kind", "Target by", kind),
    field("n-target", "Tags or hosts (comma-separated)", target),
    field("n-waves", "Waves (counts or percentages)", waves),
    field("n-soak", "Soak per wave (seconds)", soak),
    field("n-threshold", "Failures tolerated per wave (count or %)", threshold),
    field("n-onfailure", "On failure", onFailure),
    submit);
  setPage("New rollout", h("p", {}, link("/ui/rollouts", "← Rollouts")), h("h1", {}, "Start a rollout"),
    releases.length ? form : h("p", { class: "muted" }, "No release to roll out yet (nixfleet release create)."), out);
}

// ---------------------------------------------------------------------------------------------
// Releases

async function releasesPage() {
  const list = await v1("/releases");
  const a = h("select", { id: "diff-a" }, list.map((r, i) => h("option", { value: r.id, selected: i === 1 }, r.id)));
  const b = h("select", { id: "diff-b" }, list.map((r, i) => h("option", { value: r.id, selected: i === 0 }, r.id)));
  const compare = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    navigate(`/ui/releases/${encodeURIComponent(a.value)}/diff/${encodeURIComponent(b.value)}`);
  } }, h("label", { for: "diff-a" }, "From", a), h("label", { for: "diff-b" }, "To", b),
  h("button", { class: "primary", type: "submit" }, "Compare"));
  setPage("Releases", h("h1", {}, "Releases"),
    list.length > 1 ? compare : null,
    list.length ? h("table", { id: "releases" },
      h("thead", {}, h("tr", {}, ["Release", "Sequence", "Hosts", "Activation", "Flake", "Created"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, list.map((r) => h("tr", {},
        h("th", { scope: "row" }, link(`/ui/releases/${encodeURIComponent(r.id)}`, r.id)),
        h("td", {}, r.sequence), h("td", {}, r.entries.length), h("td", {}, r.activation),
        h("td", { class: "mono" }, [r.flake_ref, r.flake_rev].filter(Boolean).join(" @ ") || "–"),
        h("td", {}, when(r.created_at), ` by ${r.created_by}`)))))
      : h("p", { class: "muted" }, "No release yet."));
}

async function releasePage(id) {
  const r = await v1(`/releases/${encodeURIComponent(id)}`);
  setPage(id, h("p", {}, link("/ui/releases", "← Releases")), h("h1", {}, `Release ${id}`),
    h("dl", { class: "facts" },
      h("dt", {}, "Sequence"), h("dd", {}, r.sequence),
      h("dt", {}, "Activation"), h("dd", {}, r.activation),
      h("dt", {}, "Flake"), h("dd", { class: "mono" }, [r.flake_ref, r.flake_rev].filter(Boolean).join(" @ ") || "–"),
      h("dt", {}, "Caches"), h("dd", { class: "mono" }, r.cache_urls.join(" ") || "–"),
      h("dt", {}, "Created"), h("dd", {}, r.created_at, ` by ${r.created_by}`)),
    h("h2", {}, `${r.entries.length} hosts`),
    h("table", { id: "entries" },
      h("thead", {}, h("tr", {}, ["Host", "Store path", "Tags", "Signed"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, r.entries.map((e) => h("tr", {},
        h("th", { scope: "row" }, link(`/ui/machines/${encodeURIComponent(e.hostname)}`, e.hostname)),
        h("td", { class: "mono" }, e.store_path), h("td", {}, e.tags.join(", ")), h("td", {}, e.signature ? "yes" : "no"))))));
}

async function diffPage(a, b) {
  const d = await v1(`/releases/${encodeURIComponent(a)}/diff/${encodeURIComponent(b)}`);
  const names = (list, title, id) => h("section", { id }, h("h2", {}, `${title} (${list.length})`),
    list.length ? h("p", {}, list.join(", ")) : h("p", { class: "muted" }, "none"));
  setPage(`${a} → ${b}`, h("p", {}, link("/ui/releases", "← Releases")), h("h1", {}, `${a} → ${b}`),
    h("section", { id: "changed" }, h("h2", {}, `Changed (${d.changed.length})`),
      d.changed.length ? h("table", {},
        h("thead", {}, h("tr", {}, ["Host", "From", "To"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, d.changed.map((c) => h("tr", { "data-host": c.hostname },
          h("th", { scope: "row" }, link(`/ui/machines/${encodeURIComponent(c.hostname)}`, c.hostname)),
          h("td", { class: "mono diff-old" }, c.old), h("td", { class: "mono diff-new" }, c.new)))))
        : h("p", { class: "muted" }, "none")),
    names(d.added, "Added", "added"), names(d.removed, "Removed", "removed"), names(d.unchanged, "Unchanged", "unchanged"));
}

// ---------------------------------------------------------------------------------------------
// Audit

async function auditPage() {
  const params = new URLSearchParams(location.search);
  const input = (name, label) => h("label", { for: `a-${name}` }, label, h("input", { id: `a-${name}`, name, value: params.get(name) || "" }));
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value);
    history.replaceState(null, "", `/ui/audit${q.toString() ? "?" + q : ""}`);
    render();
  } }, input("actor", "Actor"), input("action", "Action"), input("target", "Target"),
  h("button", { class: "primary", type: "submit" }, "Filter"));
  const q = new URLSearchParams();
  for (const k of ["actor", "action", "target"]) if (params.get(k)) q.set(k, params.get(k));
  // The newest first: the log is read forward from `after` and its rows are numbered 1…N (the
  // verification checks it), so the newest 1,000 start after N − 1,000.
  q.set("limit", "1000");
  const verify = await v1("/audit/verify");
  const filtered = ["actor", "action", "target"].some((k) => q.has(k));
  if (!filtered && verify.ok && verify.rows > 1000) q.set("after", String(verify.rows - 1000));
  const rows = await v1(`/audit?${q}`);
  const verdict = verify.ok
    ? badge("completed", `chain verified: ${verify.rows} rows${verify.checkpoints ? `, ${verify.checkpoints} signed checkpoints` : ", not anchored"}`)
    : badge("failed", `chain BROKEN at ${verify.bad_seq}: ${verify.reason}`);
  setPage("Audit", h("h1", {}, "Audit"),
    h("p", { id: "audit-verify" }, verdict),
    h("p", {}, "Export: ", h("a", { href: "/ui/api/v1/audit/export?format=jsonl", download: "audit.jsonl" }, "JSON lines (verifiable)"),
      " · ", h("a", { href: "/ui/api/v1/audit/export?format=csv", download: "audit.csv" }, "CSV")),
    form,
    h("table", { id: "audit" },
      h("caption", {}, rows.length < 1000 ? `${rows.length} entries, newest first`
        : filtered ? "the first 1,000 matching entries (narrow the filter), newest first"
        : `the newest 1,000 of ${verify.rows} entries`),
      h("thead", {}, h("tr", {}, ["#", "At", "Actor", "Action", "Target", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, [...rows].reverse().map((e) => h("tr", {},
        h("td", {}, e.seq), h("td", {}, when(e.at)), h("td", {}, e.actor), h("td", {}, e.action), h("td", {}, e.target),
        h("td", { class: "mono" }, JSON.stringify(e.detail)))))));
}

// ---------------------------------------------------------------------------------------------

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[data-nav]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  ev.preventDefault();
  navigate(a.getAttribute("href"));
  main().focus();
});
window.addEventListener("popstate", () => render());
document.getElementById("signout").addEventListener("click", async () => {
  try {
    await api("/ui/api/signout", { method: "POST" });
  } catch (e) {
    /* the session is gone either way */
  }
  signedOut();
  renderSignIn("Signed out.");
});

(async () => {
  try {
    state.session = await api("/ui/api/session");
    await start();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) renderSignIn();
    else fill(main(), errorBox(e));
  }
})();

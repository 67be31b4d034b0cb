// The ccm cloud dashboard: plain DOM, no framework, no CDN. Talks to /api (same origin, cookie auth)
// and listens to /api/events (Server-Sent Events) so presence, OTA and shadows update without reload.
"use strict";

const $main = document.getElementById("main");
const state = { devices: new Map(), view: null, source: null, timers: [] };

// -- small helpers -----------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    const detail = body && (body.detail || (body.error && `${body.error.message} (${body.error.code})`));
    super(typeof detail === "string" ? detail : JSON.stringify(detail || body));
    this.status = status;
    this.body = body;
  }
}

function csrfToken() {  // the double-submit value the login set beside its HttpOnly cookie (cloud/auth.py)
  const m = document.cookie.match(/(?:^|; )ccm_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function api(method, path, body, raw) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = csrfToken();
  if (raw) opts.body = raw;
  else if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch("/api" + path, opts);
  if (r.status === 401 && path !== "/login") {
    showLogin();
    throw new ApiError(401, { detail: "log in first" });
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

function ago(ts) {
  if (!ts) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function agoSpan(ts) { return h("span", { class: "ago", "data-ts": ts || "" }, ago(ts)); }
setInterval(() => document.querySelectorAll(".ago").forEach((el) => {
  el.textContent = ago(Number(el.dataset.ts) || null);
}), 1000);

const OTA_STATES = ["idle", "updating", "error", "success"];
function otaText(ota) {
  if (!ota) return "";
  const s = OTA_STATES[ota.state] || ota.state;
  return ota.state === 1 ? `${s} ${ota.progress || 0}% ${ota.message || ""}` : `${s}${ota.message ? ": " + ota.message : ""}`;
}

// JSON rendered with keys that are in the delta highlighted
function jsonView(value, delta) {
  const pre = h("pre", { class: "json" });
  const walk = (v, d, indent) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      const keys = Object.keys(v);
      if (!keys.length) return ["{}"];
      const out = ["{\n"];
      keys.forEach((k, i) => {
        const inDelta = d && typeof d === "object" && k in d;
        const sub = inDelta && d[k] && typeof d[k] === "object" && !Array.isArray(d[k]) ? d[k] : null;
        const line = [indent + "  ", h("span", { class: "k" }, JSON.stringify(k)), ": ",
          ...walk(v[k], sub, indent + "  ")];
        out.push(inDelta && !sub ? h("span", { class: "delta", "data-key": k }, ...line) : h("span", {}, ...line));
        out.push(i < keys.length - 1 ? ",\n" : "\n");
      });
      out.push(indent + "}");
      return out;
    }
    const cls = typeof v === "string" ? "s" : typeof v === "number" ? "n" : "b";
    return [h("span", { class: cls }, JSON.stringify(v, null, 2))];
  };
  pre.append(...walk(value === undefined ? null : value, delta, ""));
  return pre;
}

// {a:{b:1}} -> [["a.b", 1]]
function leaves(obj, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(obj || {})) {
    const p = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...leaves(v, p));
    else out.push([p, v]);
  }
  return out;
}

function nest(path, value) {
  const parts = path.split(".");
  const root = {};
  let o = root;
  parts.slice(0, -1).forEach((p) => { o = o[p] = {}; });
  o[parts[parts.length - 1]] = value;
  return root;
}

// what changed from `a` to `b`, as a patch: changed leaves, and null for keys that went away
function diff(a, b) {
  const out = {};
  for (const [k, v] of Object.entries(b || {})) {
    const old = (a || {})[k];
    if (v && typeof v === "object" && !Array.isArray(v) && old && typeof old === "object" && !Array.isArray(old)) {
      const d = diff(old, v);
      if (Object.keys(d).length) out[k] = d;
    } else if (JSON.stringify(v) !== JSON.stringify(old)) out[k] = v;
  }
  for (const k of Object.keys(a || {})) if (!(k in (b || {}))) out[k] = null;
  return out;
}

function clear() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  $main.replaceChildren();
}

// -- live events --------------------------------------------------------------------------------
function listen(device) {
  if (state.source) state.source.close();
  const live = document.getElementById("live");
  const src = new EventSource("/api/events" + (device ? "?device=" + encodeURIComponent(device) : ""));
  src.onopen = () => live.classList.add("on");
  src.onerror = () => live.classList.remove("on");
  src.addEventListener("device", (e) => {
    const d = JSON.parse(e.data).device;
    state.devices.set(d.id, d);
    if (state.view && state.view.onDevice) state.view.onDevice(d);
  });
  src.addEventListener("shadow", (e) => {
    const ev = JSON.parse(e.data);
    if (state.view && state.view.onShadow) state.view.onShadow(ev);
  });
  state.source = src;
}

// -- login ------------------------------------------------------------------------------------------
function showLogin(message) {
  clear();
  if (state.source) { state.source.close(); state.source = null; }
  document.getElementById("logout").hidden = true;
  const input = h("input", { type: "password", id: "token", class: "grow", placeholder: "token", autocomplete: "current-password" });
  const err = h("p", { class: "error", id: "login-error" }, message || "");
  const submit = async (e) => {
    e.preventDefault();
    try {
      await api("POST", "/login", { token: input.value.trim() });
      route();
    } catch (x) { err.textContent = x.message; }
  };
  $main.append(h("form", { class: "card login", onsubmit: submit },
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "Paste the token `ccm cloud` printed (or open the link it printed)."),
    h("div", { class: "row" }, input, h("button", { class: "primary", type: "submit" }, "Log in")), err));
  input.focus();
}

document.getElementById("logout").addEventListener("click", async () => {
  await api("POST", "/logout");
  showLogin();
});

// -- the device list ------------------------------------------------------------------------------
async function showDevices() {
  clear();
  const body = h("tbody", { id: "devices" });
  const count = h("span", { class: "muted" });
  $main.append(h("h1", {}, "Devices ", count),
    h("table", {}, h("thead", {}, h("tr", {}, ["", "Device", "State", "Last seen", "CCM firmware", "Host firmware", "OTA"]
      .map((t) => h("th", {}, t)))), body));
  const row = (d) => h("tr", { "data-device": d.id, class: d.online ? "online" : "offline" },
    h("td", {}, h("span", { class: "dot" + (d.online ? " online" : "") })),
    h("td", {}, h("a", { href: "#/device/" + encodeURIComponent(d.id) }, d.id)),
    h("td", {}, h("span", { class: "badge state " + (d.online ? "online" : "offline") }, d.online ? "online" : "offline")),
    h("td", {}, d.online ? "now" : agoSpan(d.last_seen)),
    h("td", { class: "fw" }, d.fw_version || "–"),
    h("td", { class: "host" }, d.host_version || "–"),
    h("td", { class: "ota" }, otaText(d.ota)));
  const render = () => {
    const list = [...state.devices.values()].sort((a, b) => a.id.localeCompare(b.id));
    body.replaceChildren(...list.map(row));
    if (!list.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" },
      "No device yet. Start one: ccm sim ccm --mqtt HOST:PORT (the broker `ccm cloud` printed).")));
    count.textContent = `(${list.filter((d) => d.online).length} online of ${list.length})`;
  };
  state.view = { onDevice: render };
  listen(null);
  for (const d of await api("GET", "/devices")) state.devices.set(d.id, d);
  render();
}

// -- one device ----------------------------------------------------------------------------------
async function showDevice(id) {
  clear();
  let device = await api("GET", "/devices/" + encodeURIComponent(id)).catch((e) => {
    $main.append(h("p", { class: "error" }, e.message));
    return null;
  });
  if (!device) return;
  const enc = encodeURIComponent(id);
  const summary = h("dl", { class: "kv", id: "summary" });
  const shadowBox = h("div", { class: "shadow", id: "shadow" });
  const toggles = h("div", { class: "toggles row", id: "toggles" });
  const editor = h("textarea", { id: "desired-editor", spellcheck: "false" });
  const shadowMsg = h("span", { id: "shadow-msg" });
  const plots = h("div", { class: "plots", id: "plots" });
  let shadow = null;

  const renderSummary = () => {
    const d = device;
    const info = d.info || {};
    summary.replaceChildren(
      h("dt", {}, "State"), h("dd", {}, h("span", { class: "badge state " + (d.online ? "online" : "offline"), id: "state" },
        d.online ? "online" : "offline"), " since ", agoSpan(d.since)),
      h("dt", {}, "Last seen"), h("dd", {}, agoSpan(d.last_seen)),
      h("dt", {}, "CCM firmware"), h("dd", { id: "fw-version" }, d.fw_version || "–"),
      h("dt", {}, "Host firmware"), h("dd", { id: "host-version" }, d.host_version || "–", d.host_app ? ` (${d.host_app})` : ""),
      h("dt", {}, "Uptime"), h("dd", {}, info.uptime != null ? `${info.uptime} s` : "–"),
      h("dt", {}, "Free heap"), h("dd", {}, info.heap_free != null ? `${info.heap_free} B` : "–"),
      d.info_error ? [h("dt", {}, "Info"), h("dd", { class: "error" }, d.info_error)] : []);
  };

  const renderShadow = () => {
    if (!shadow) {
      shadowBox.replaceChildren(h("p", { class: "muted" }, "No shadow yet."));
      return;
    }
    const st = shadow.state || {};
    shadowBox.replaceChildren(
      h("div", { id: "shadow-desired" }, h("h3", {}, "desired"), jsonView(st.desired || {}, st.delta)),
      h("div", { id: "shadow-reported" }, h("h3", {}, "reported"), jsonView(st.reported || {}, st.delta)),
      h("div", { id: "shadow-delta" }, h("h3", {}, "delta"), jsonView(st.delta || {}, st.delta)));
    if (document.activeElement !== editor) editor.value = JSON.stringify(st.desired || {}, null, 2);
    const bools = new Map();
    for (const [k, v] of leaves(st.reported)) if (typeof v === "boolean" && !k.startsWith("ota.")) bools.set(k, v);
    for (const [k, v] of leaves(st.desired)) if (typeof v === "boolean" && !k.startsWith("ota.")) bools.set(k, v);
    toggles.replaceChildren(...[...bools.keys()].sort().map((k) => {
      const want = leaves(st.desired).find(([p]) => p === k);
      const box = h("input", { type: "checkbox", "data-key": k, checked: want ? want[1] : bools.get(k) });
      box.addEventListener("change", () => patchDesired(nest(k, box.checked)));
      return h("label", {}, box, " ", k);
    }));
    shadowMsg.textContent = `version ${shadow.version}`;
  };

  const loadShadow = async () => {
    let doc = null;
    try { doc = await api("GET", `/devices/${enc}/shadow`); } catch (e) { if (e.status !== 404) throw e; }
    // answers to overlapping loads can arrive out of order: never show an older version over a newer one
    if (doc && shadow && doc.version < shadow.version) return;
    shadow = doc;
    renderShadow();
  };

  const patchDesired = async (patch) => {
    try {
      await api("PATCH", `/devices/${enc}/shadow`, { desired: patch });
      await loadShadow();
    } catch (e) { shadowMsg.textContent = e.message; shadowMsg.className = "error"; }
  };

  const saveEditor = async () => {
    let want;
    try { want = JSON.parse(editor.value); } catch (e) {
      shadowMsg.textContent = "not JSON: " + e.message; shadowMsg.className = "error"; return;
    }
    shadowMsg.className = "";
    const patch = diff((shadow && shadow.state && shadow.state.desired) || {}, want);
    if (!Object.keys(patch).length) { shadowMsg.textContent = "nothing changed"; return; }
    editor.blur();
    await patchDesired(patch);
  };

  // RPC console
  const method = h("input", { type: "text", id: "rpc-method", class: "grow", value: "Sys.GetInfo", list: "rpc-methods" });
  const params = h("textarea", { id: "rpc-params", placeholder: "params as JSON, e.g. [2, 3]", spellcheck: "false" });
  const methods = h("datalist", { id: "rpc-methods" });
  const out = h("pre", { id: "rpc-output", class: "console" });
  const callRpc = async (e) => {
    e.preventDefault();
    let p;
    if (params.value.trim()) {
      try { p = JSON.parse(params.value); } catch (x) { out.prepend(h("div", { class: "error" }, "params: not JSON\n")); return; }
    }
    const m = method.value.trim();
    const line = h("div", {}, `→ ${m} ${p === undefined ? "" : JSON.stringify(p)}\n`);
    out.prepend(line);
    try {
      const r = await api("POST", `/devices/${enc}/rpc/${encodeURIComponent(m)}`, p === undefined ? undefined : p);
      line.after(h("div", { class: "ok rpc-result" }, "← " + JSON.stringify(r.result) + "\n"));
    } catch (x) { line.after(h("div", { class: "error rpc-result" }, "← " + x.message + "\n")); }
  };

  // config
  const config = h("textarea", { id: "config-editor", spellcheck: "false", placeholder: "Load the config first" });
  const configMsg = h("span", { id: "config-msg" });
  let loadedConfig = null;
  const loadConfig = async () => {
    try {
      loadedConfig = (await api("GET", `/devices/${enc}/config`)).result;
      config.value = JSON.stringify(loadedConfig, null, 2);
      configMsg.textContent = ""; configMsg.className = "";
    } catch (e) { configMsg.textContent = e.message; configMsg.className = "error"; }
  };
  const saveConfig = async () => {
    let want;
    try { want = JSON.parse(config.value); } catch (e) { configMsg.textContent = "not JSON"; configMsg.className = "error"; return; }
    const patch = diff(loadedConfig || {}, want);
    for (const [k, v] of leaves(patch)) if (v === null) delete patch[k];
    if (!Object.keys(patch).length) { configMsg.textContent = "nothing changed"; return; }
    try {
      await api("PATCH", `/devices/${enc}/config`, { config: patch, save: true });
      configMsg.textContent = "saved"; configMsg.className = "ok";
      await loadConfig();
    } catch (e) { configMsg.textContent = e.message; configMsg.className = "error"; }
  };

  // OTA
  const bundleSelect = h("select", { id: "ota-bundle", class: "grow" });
  const fileInput = h("input", { type: "file", id: "ota-file", accept: ".zip" });
  const otaMsg = h("div", { id: "ota-msg" });
  const bar = h("div", {});
  const progress = h("div", { class: "progress", id: "ota-progress" }, bar);
  const loadBundles = async (select) => {
    const list = await api("GET", "/bundles");
    bundleSelect.replaceChildren(...list.map((b) => h("option", { value: b.name, selected: b.name === select },
      `${b.name} — ${b.platform} ${b.version}`)));
  };
  const upload = async () => {
    if (!fileInput.files.length) return;
    const form = new FormData();
    form.append("file", fileInput.files[0]);
    try {
      const b = await api("POST", "/bundles", undefined, form);
      await loadBundles(b.name);  // selected before the message says it is there
      otaMsg.textContent = `uploaded ${b.name} (${b.platform} ${b.version})`; otaMsg.className = "ok";
    } catch (e) { otaMsg.textContent = "upload refused: " + e.message; otaMsg.className = "error"; }
    fileInput.value = "";
  };
  fileInput.addEventListener("change", upload);
  const startOta = async () => {
    if (!bundleSelect.value) { otaMsg.textContent = "pick or upload a bundle first"; otaMsg.className = "error"; return; }
    try {
      const r = await api("POST", "/ota", { bundle: bundleSelect.value, devices: [id] });
      otaMsg.textContent = `updating to ${r.version}…`; otaMsg.className = "";
    } catch (e) { otaMsg.textContent = e.message; otaMsg.className = "error"; }
  };
  const renderOta = () => {
    const o = device.ota;
    progress.className = "progress" + (o && o.state === 2 ? " error" : o && (o.state === 3 || (o.state === 0 && o.version)) ? " success" : "");
    bar.style.width = `${o ? (o.state === 1 ? o.progress || 0 : o.state === 2 ? o.progress || 0 : 100) : 0}%`;
    progress.dataset.state = o ? o.state : "";
    const status = document.getElementById("ota-status");
    if (status) status.textContent = o ? `${otaText(o)}${o.version ? " — installed " + o.version : ""}` : "no update yet";
    if (o && o.state !== 1 && otaMsg.textContent.startsWith("updating")) otaMsg.textContent = "";
  };

  // plots
  const renderPlots = async () => {
    const hist = await api("GET", `/devices/${enc}/history`);
    plots.replaceChildren(...Object.entries(hist).filter(([, pts]) => pts.length).map(([name, pts]) => plot(name, pts)));
    if (!plots.children.length) plots.append(h("p", { class: "muted" }, "Numbers the device reports, and its heap and uptime, are plotted here."));
  };

  $main.append(
    h("h1", {}, h("a", { href: "#/" }, "Devices"), " / ", id),
    h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Device"), summary),
      h("section", { class: "card", id: "ota" }, h("h2", {}, "Firmware update"),
        h("div", { class: "row" }, bundleSelect, h("button", { class: "primary", id: "ota-start", onclick: startOta }, "Update")),
        h("div", { class: "row" }, h("span", { class: "muted" }, "or upload a bundle:"), fileInput),
        progress, h("div", { class: "row" }, h("span", { id: "ota-status" })), otaMsg),
      h("section", { class: "card wide" }, h("h2", {}, "Shadow ", h("small", { class: "muted" }, shadowMsg)), shadowBox,
        h("h3", {}, "Toggle"), toggles,
        h("h3", {}, "Edit desired"), editor,
        h("div", { class: "row" }, h("button", { class: "primary", id: "desired-save", onclick: saveEditor }, "Update desired"),
          h("span", { class: "muted" }, "keys you remove are deleted (set to null)"))),
      h("section", { class: "card wide" }, h("h2", {}, "History"), plots),
      h("section", { class: "card" }, h("h2", {}, "RPC console"),
        h("form", { onsubmit: callRpc }, h("div", { class: "row" }, method, methods,
          h("button", { class: "primary", id: "rpc-call", type: "submit" }, "Call")), params), out),
      h("section", { class: "card" }, h("h2", {}, "Config"),
        h("div", { class: "row" }, h("button", { id: "config-load", onclick: loadConfig }, "Load"),
          h("button", { class: "primary", id: "config-save", onclick: saveConfig }, "Save changes"), configMsg), config)));

  renderSummary();
  renderOta();
  let plotDue = false;
  state.view = {
    onDevice: (d) => {
      if (d.id !== id) return;
      device = { ...device, ...d };
      renderSummary();
      renderOta();
    },
    onShadow: () => { loadShadow(); plotDue = true; },
  };
  listen(id);
  await Promise.all([loadShadow(), loadBundles(), renderPlots()]);
  api("POST", `/devices/${enc}/rpc/RPC.List`).then((r) => {
    methods.replaceChildren(...(r.result || []).map((m) => h("option", { value: m })));
  }).catch(() => {});
  const refresh = async () => {
    try { device = await api("GET", `/devices/${enc}?refresh=${device.online}`); renderSummary(); renderOta(); plotDue = true; }
    catch (e) { /* shown on the next refresh */ }
  };
  state.timers.push(setInterval(refresh, 10000));
  state.timers.push(setInterval(() => { if (plotDue) { plotDue = false; renderPlots().catch(() => {}); } }, 2000));
  refresh();
}

function plot(name, pts) {
  const W = 300, H = 70;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => (x1 > x0 ? ((x - x0) / (x1 - x0)) * W : W / 2);
  const sy = (y) => (y1 > y0 ? H - 4 - ((y - y0) / (y1 - y0)) * (H - 8) : H / 2);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "));
  svg.append(line);
  const last = ys[ys.length - 1];
  return h("div", { class: "plot", "data-series": name },
    h("div", { class: "name" }, h("span", {}, name), h("b", {}, String(last))), svg,
    h("div", { class: "name" }, h("span", {}, `min ${y0}`), h("span", {}, `max ${y1}`), h("span", {}, `${pts.length} pts`)));
}

// -- bundles and fleet OTA --------------------------------------------------------------------------
async function showOta() {
  clear();
  const bundles = h("tbody", { id: "bundles" });
  const rollouts = h("div", { id: "rollouts" });
  const pick = h("div", { class: "row", id: "ota-devices" });
  const msg = h("div", { id: "fleet-ota-msg" });
  const select = h("select", { id: "fleet-bundle", class: "grow" });
  const file = h("input", { type: "file", accept: ".zip", id: "fleet-file" });
  const load = async () => {
    const list = await api("GET", "/bundles");
    bundles.replaceChildren(...list.map((b) => h("tr", {}, h("td", {}, b.name), h("td", {}, b.platform), h("td", {}, b.version),
      h("td", {}, (b.parts || []).join(", ")), h("td", {}, `${Math.round(b.size / 1024)} KiB`))));
    select.replaceChildren(...list.map((b) => h("option", { value: b.name }, `${b.name} — ${b.version}`)));
    const devs = await api("GET", "/devices");
    pick.replaceChildren(...devs.map((d) => h("label", {}, h("input", { type: "checkbox", value: d.id, checked: d.online }), " ", d.id)));
  };
  const renderRollouts = async () => {
    const list = await api("GET", "/ota");
    rollouts.replaceChildren(...list.map((r) => h("div", { class: "card" },
      h("h2", {}, `#${r.id} ${r.bundle} → ${r.version} `, h("small", { class: "muted" }, `via ${r.via}, ${r.succeeded} ok, ${r.failed} failed`)),
      h("table", {}, h("tbody", {}, Object.entries(r.devices).map(([dev, s]) => h("tr", {},
        h("td", {}, dev),
        h("td", { style: "width:40%" }, h("div", { class: `progress ${s.state}` }, h("div", { style: `width:${s.progress}%` }))),
        h("td", {}, `${s.state} ${s.message || ""}`))))))));
    if (!list.length) rollouts.append(h("p", { class: "muted" }, "No update started yet."));
  };
  file.addEventListener("change", async () => {
    const form = new FormData();
    form.append("file", file.files[0]);
    try {
      const b = await api("POST", "/bundles", undefined, form);
      msg.textContent = `uploaded ${b.name}`; msg.className = "ok";
    } catch (e) { msg.textContent = "upload refused: " + e.message; msg.className = "error"; }
    file.value = "";
    await load();
  });
  const start = async () => {
    const devices = [...pick.querySelectorAll("input:checked")].map((i) => i.value);
    try {
      await api("POST", "/ota", { bundle: select.value, devices });
      msg.textContent = ""; await renderRollouts();
    } catch (e) { msg.textContent = e.message; msg.className = "error"; }
  };
  $main.append(h("h1", {}, "Bundles & OTA"),
    h("section", { class: "card" }, h("h2", {}, "Bundles"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Platform", "Version", "Parts", "Size"].map((t) => h("th", {}, t)))), bundles),
      h("div", { class: "row" }, h("span", { class: "muted" }, "Upload:"), file)),
    h("section", { class: "card" }, h("h2", {}, "Update devices"), h("div", { class: "row" }, select,
      h("button", { class: "primary", onclick: start }, "Start")), pick, msg),
    h("h2", {}, "Rollouts"), rollouts);
  state.view = { onDevice: () => {} };
  listen(null);
  await load();
  await renderRollouts();
  state.timers.push(setInterval(() => renderRollouts().catch(() => {}), 1000));
}

// -- routing ---------------------------------------------------------------------------------------
async function route() {
  document.getElementById("logout").hidden = false;
  const hash = location.hash || "#/";
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active",
    (a.dataset.nav === "ota") === hash.startsWith("#/ota")));
  try {
    if (hash.startsWith("#/device/")) await showDevice(decodeURIComponent(hash.slice(9)));
    else if (hash.startsWith("#/ota")) await showOta();
    else await showDevices();
  } catch (e) {
    if (e.status !== 401) $main.append(h("p", { class: "error" }, e.message));
  }
}

window.addEventListener("hashchange", route);
route();

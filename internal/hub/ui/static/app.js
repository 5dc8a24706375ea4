// The iothub dashboard. It reads devices, modules and twins and invokes
// methods through the hub's own service API with a short-lived SAS token
// from /ui/token; only the call log and recent telemetry come from the
// read-only /ui/feed. Data is written with textContent, never as HTML.
"use strict";

const API = "api-version=2021-04-12";
const REFRESH_MS = 1500;
let token = null; // {authorization, expires (ms)}
let selected = null; // {device, module} whose twin is shown

function $(id) { return document.getElementById(id); }

function setStatus(text, bad) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", !!bad);
}

// authorization returns a SAS token for the service API, fetching a new one
// a minute before the current one expires.
async function authorization() {
  if (token && Date.now() < token.expires - 60000) return token.authorization;
  const r = await fetch("/ui/token", { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) { location.href = "/ui/login"; throw new Error("not logged in"); }
  if (!r.ok) throw new Error("token: HTTP " + r.status);
  const t = await r.json();
  token = { authorization: t.authorization, expires: Date.parse(t.expiresOn) };
  return token.authorization;
}

// service calls the hub's service API and returns {status, body}.
async function service(method, path, body) {
  const headers = { "Authorization": await authorization() };
  if (body !== undefined) headers["Content-Type"] = "application/json; charset=utf-8";
  const sep = path.includes("?") ? "&" : "?";
  const r = await fetch(path + sep + API, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  const text = await r.text();
  let parsed = text;
  try { parsed = text ? JSON.parse(text) : null; } catch (e) { /* not JSON: keep the text */ }
  return { status: r.status, body: parsed, text };
}

// query runs a registry query, following continuation tokens.
async function query(sql) {
  let out = [];
  let cont = null;
  for (let i = 0; i < 20; i++) {
    const headers = { "Authorization": await authorization(), "Content-Type": "application/json; charset=utf-8" };
    if (cont) headers["x-ms-continuation"] = cont;
    const r = await fetch("/devices/query?" + API, { method: "POST", headers, body: JSON.stringify({ query: sql }), cache: "no-store" });
    if (!r.ok) throw new Error("query: HTTP " + r.status + " " + (await r.text()));
    out = out.concat(await r.json());
    cont = r.headers.get("x-ms-continuation");
    if (!cont) break;
  }
  return out;
}

function seg(s) { return encodeURIComponent(s); }

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fill(tbody, rows, cols, empty) {
  const frag = document.createDocumentFragment();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell(tr, empty);
    td.colSpan = cols;
    frag.appendChild(tr);
  }
  rows.forEach(r => frag.appendChild(r));
  tbody.replaceChildren(frag);
}

function shortTime(s) {
  if (!s || s.startsWith("0001-")) return "";
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleTimeString();
}

async function refreshDevices() {
  const [devices, modules] = await Promise.all([
    query("SELECT * FROM devices"),
    query("SELECT * FROM devices.modules"),
  ]);
  const byDevice = new Map();
  modules.forEach(m => {
    if (!byDevice.has(m.deviceId)) byDevice.set(m.deviceId, []);
    byDevice.get(m.deviceId).push(m);
  });
  devices.sort((a, b) => a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0);
  const rows = [];
  const row = (t, moduleId) => {
    const tr = document.createElement("tr");
    tr.dataset.device = t.deviceId;
    tr.dataset.module = moduleId || "";
    tr.dataset.state = t.connectionState || "";
    cell(tr, moduleId ? "" : t.deviceId);
    cell(tr, moduleId || "");
    cell(tr, t.status);
    cell(tr, t.connectionState, "state-" + (t.connectionState || ""));
    cell(tr, shortTime(t.lastActivityTime));
    if (selected && selected.device === t.deviceId && selected.module === (moduleId || "")) tr.classList.add("selected");
    tr.addEventListener("click", () => showTwin(t.deviceId, moduleId || ""));
    rows.push(tr);
  };
  devices.forEach(d => {
    row(d, "");
    (byDevice.get(d.deviceId) || []).forEach(m => row(m, m.moduleId));
  });
  fill($("devices"), rows, 5, "No devices yet.");
}

async function showTwin(device, module) {
  selected = { device, module };
  document.querySelectorAll("#devices tr").forEach(tr =>
    tr.classList.toggle("selected", tr.dataset.device === device && tr.dataset.module === module));
  $("method-device").value = device;
  $("method-module").value = module;
  await refreshTwin();
}

async function refreshTwin() {
  if (!selected) return;
  const { device, module } = selected;
  const path = "/twins/" + seg(device) + (module ? "/modules/" + seg(module) : "");
  const r = await service("GET", path);
  $("twin-id").textContent = module ? device + "/" + module : device;
  const text = typeof r.body === "string" ? "HTTP " + r.status + "\n" + r.body : JSON.stringify(r.body, null, 2);
  if ($("twin").textContent !== text) $("twin").textContent = text; // keep the scroll position
}

async function refreshFeed() {
  const r = await fetch("/ui/feed", { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) { location.href = "/ui/login"; return; }
  if (!r.ok) throw new Error("feed: HTTP " + r.status);
  const f = await r.json();
  fill($("calls"), f.calls.map(c => {
    const tr = document.createElement("tr");
    tr.dataset.device = c.deviceId;
    tr.dataset.method = c.method;
    tr.dataset.status = c.status;
    cell(tr, shortTime(c.start));
    cell(tr, c.moduleId ? c.deviceId + "/" + c.moduleId : c.deviceId);
    cell(tr, c.method);
    cell(tr, c.errorCode ? "error " + c.errorCode : c.status, c.errorCode || c.status >= 400 ? "fail" : "ok");
    cell(tr, c.latencyMs.toFixed(1) + " ms");
    cell(tr, c.protocol);
    return tr;
  }), 6, "No calls yet.");
  fill($("events"), f.events.map(e => {
    const tr = document.createElement("tr");
    tr.dataset.device = e.deviceId;
    cell(tr, shortTime(e.enqueuedTime));
    cell(tr, e.moduleId ? e.deviceId + "/" + e.moduleId : e.deviceId);
    cell(tr, e.protocol);
    cell(tr, (e.binary ? "base64: " : "") + e.body, "body");
    return tr;
  }), 4, "No messages yet.");
  $("event-count").textContent = "(" + f.eventCount + " received)";
}

async function refresh() {
  try {
    await Promise.all([refreshDevices(), refreshFeed(), refreshTwin()]);
    setStatus("live · " + new Date().toLocaleTimeString(), false);
  } catch (e) {
    setStatus(String(e.message || e), true);
  }
  setTimeout(refresh, REFRESH_MS);
}

async function invoke(ev) {
  ev.preventDefault();
  const out = $("method-result");
  const device = $("method-device").value.trim();
  const module = $("method-module").value.trim();
  let payload = null;
  const raw = $("method-payload").value.trim();
  out.className = "result";
  delete out.dataset.status;
  if (raw !== "") {
    try { payload = JSON.parse(raw); } catch (e) {
      out.dataset.status = "invalid";
      out.classList.add("fail");
      out.textContent = "The payload is not JSON: " + e.message;
      return;
    }
  }
  const timeout = parseInt($("method-timeout").value, 10) || 30;
  const path = "/twins/" + seg(device) + (module ? "/modules/" + seg(module) : "") + "/methods";
  out.textContent = "Invoking " + $("method-name").value + "…";
  $("method-submit").disabled = true;
  try {
    const r = await service("POST", path, { methodName: $("method-name").value, payload, responseTimeoutInSeconds: timeout });
    if (r.status === 200 && r.body && typeof r.body === "object") {
      out.dataset.status = String(r.body.status);
      out.classList.add(r.body.status < 400 ? "ok" : "fail");
      out.textContent = "Device answered " + r.body.status + "\n" + JSON.stringify(r.body.payload, null, 2);
    } else {
      out.dataset.status = "http-" + r.status;
      out.classList.add("fail");
      out.textContent = "Hub answered HTTP " + r.status + "\n" + (typeof r.body === "string" ? r.body : JSON.stringify(r.body, null, 2));
    }
  } catch (e) {
    out.dataset.status = "error";
    out.classList.add("fail");
    out.textContent = "The call failed: " + (e.message || e);
  } finally {
    $("method-submit").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("method-form").addEventListener("submit", invoke);
  refresh();
});

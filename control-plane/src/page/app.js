// The ward dashboard: polls /api/mesh and draws it. Every text is set with textContent
// (never markup), so what proxies report — paths of denied requests included — stays text.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const EVERY_MS = 2000;
let whoCanCall = "";
let denialFilter = "";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function replaceRows(table, rows) {
  const body = document.querySelector(`#${table} tbody`);
  body.replaceChildren(...rows);
}

function short(id) {
  return id === "external" ? "external" : id.split("/").pop();
}

function duration(seconds) {
  if (seconds <= 0) return "expired";
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

function percent(x) {
  return x === null || x === undefined ? "–" : `${(x * 100).toFixed(x === 1 ? 0 : 1)}%`;
}

function drawGraph(view) {
  const graph = document.getElementById("graph");
  const names = new Set(view.workloads.map((w) => w.spiffe_id));
  for (const e of view.edges) { names.add(e.source); names.add(e.destination); }
  const ids = [...names].sort((a, b) => (a === "external") - (b === "external") || a.localeCompare(b));
  const recent = new Set(view.anomalies.filter((a) => view.time_ms - a.time_ms < 300000).map((a) => a.reported_by));
  const gone = new Set(view.workloads.filter((w) => !w.reporting).map((w) => w.spiffe_id));
  const at = new Map();
  ids.forEach((id, i) => {
    const angle = (2 * Math.PI * i) / ids.length - Math.PI / 2;
    at.set(id, { x: 400 + 300 * Math.cos(angle), y: 210 + 160 * Math.sin(angle) });
  });
  const parts = [svg("defs", {})];
  parts[0].append(Object.assign(svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" })));
  parts[0].firstChild.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#57606a" }));
  for (const e of view.edges) {
    const a = at.get(e.source), b = at.get(e.destination);
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const r = 34, ux = dx / len, uy = dy / len;
    const failing = e.success !== null && e.success < 0.99 ? " failing" : "";
    const g = svg("g", { class: `edge ${e.security}${failing}`, "data-source": e.source, "data-destination": e.destination, "data-security": e.security });
    g.append(svg("line", { x1: a.x + ux * r, y1: a.y + uy * r, x2: b.x - ux * r, y2: b.y - uy * r, "marker-end": "url(#arrow)" }));
    const rate = e.rate === null ? "…" : `${e.rate.toFixed(1)}/s`;
    const denied = e.denied ? ` · ${percent(e.denied)} denied` : "";
    const label = `${rate} · ${percent(e.success)} ok${denied} · ${e.security === "mtls" ? "mTLS" : e.security === "tls" ? "TLS" : "plaintext"}`;
    g.append(svg("text", { x: (a.x + b.x) / 2 + uy * 12, y: (a.y + b.y) / 2 - ux * 12 }, label));
    g.append(svg("title", {}, `${e.source} → ${e.destination}: ${e.requests} requests, ${e.server_errors} 5xx, ${e.client_errors} 4xx`));
    parts.push(g);
  }
  for (const id of ids) {
    const p = at.get(id);
    const kind = id === "external" ? " external" : "";
    const g = svg("g", { class: `node${kind}${recent.has(id) ? " anomaly" : ""}${gone.has(id) ? " gone" : ""}`, "data-id": id });
    g.append(svg("circle", { cx: p.x, cy: p.y, r: 32 }));
    g.append(svg("text", { x: p.x, y: p.y + 4 }, short(id)));
    g.append(svg("title", {}, id));
    parts.push(g);
  }
  graph.replaceChildren(...parts);
}

function timeline(w, now) {
  const track = el("div", { class: "timeline" });
  if (!w.svids.length) return track;
  const start = Math.min(...w.svids.map((s) => s.not_before));
  const end = Math.max(...w.svids.map((s) => s.not_after));
  const span = Math.max(end - start, 1);
  w.svids.forEach((s, i) => {
    const bar = el("span", { class: i === w.svids.length - 1 ? "current" : "", title: `serial ${s.serial}` });
    bar.style.left = `${((s.not_before - start) / span) * 100}%`;
    bar.style.width = `${Math.max(((s.not_after - s.not_before) / span) * 100, 1)}%`;
    track.append(bar);
  });
  const mark = el("i", { title: "now" });
  mark.style.left = `${Math.min(Math.max(((now - start) / span) * 100, 0), 100)}%`;
  track.append(mark);
  return track;
}

function render(view) {
  const cp = view.control_plane;
  const now = view.time_ms / 1000;
  document.getElementById("summary").textContent =
    `trust domain ${cp.trust_domain} · policy v${cp.policy_version} (${cp.policies} policies, default ${cp.mesh_default}) · ` +
    `bundle v${cp.bundle_version} · signing CA expires in ${duration(cp.ca_not_after - now)} · updated ${clock(view.time_ms)}`;
  drawGraph(view);
  replaceRows("workloads", view.workloads.map((w) => el("tr", { "data-id": w.spiffe_id, "data-serial": w.serial || "" },
    el("td", {}, w.name + (w.reporting ? "" : " (not reporting)")),
    el("td", { class: "mono" }, w.spiffe_id),
    el("td", {}, w.role),
    el("td", { class: "mono serial" }, w.serial || "–"),
    el("td", {}, w.not_after ? duration(w.not_after - now) : "–"),
    el("td", { class: `state-${w.rotation}` }, w.rotation),
    el("td", {}, w.rotations),
    el("td", {}, timeline(w, now)))));
  if (denialFilter) {
    fetch(`/api/denials/${encodeURIComponent(denialFilter)}`)
      .then((r) => r.json())
      .then(showDenials)
      .catch(() => showDenials([]));
  } else {
    showDenials(view.denials);
  }
  replaceRows("anomalies", view.anomalies.map((a) => el("tr", {},
    el("td", {}, clock(a.time_ms)),
    el("td", {}, a.kind.replace("_", " ")),
    el("td", { class: "mono" }, a.source),
    el("td", { class: "mono" }, a.destination),
    el("td", {}, a.kind === "denial_spike" ? a.denials_this_minute : "–"),
    el("td", {}, a.kind === "denial_spike" ? a.baseline_per_minute.toFixed(1) : "–"))));
  const select = document.getElementById("whocan");
  const known = [...select.options].map((o) => o.value);
  for (const w of view.workloads) {
    if (!known.includes(w.spiffe_id)) select.append(el("option", { value: w.spiffe_id }, w.name));
  }
  if (whoCanCall) showReach(whoCanCall);
}

function showDenials(denials) {
  replaceRows("denials", denials.map((d) => el("tr", {},
    el("td", {}, clock(d.time_ms)),
    el("td", { class: "mono" }, d.source || "(no SVID)"),
    el("td", { class: "mono" }, d.destination),
    el("td", { class: "mono request" }, `${d.method || d.protocol} ${d.path || ""}`.trim()),
    el("td", { class: "mono policy" }, d.policy),
    el("td", {}, d.rule === null || d.rule === undefined ? "–" : `rule ${d.rule}`),
    el("td", { class: "mono" }, d.request_id || "–"))));
}

function showReach(id) {
  fetch(`/api/who-can-call/${encodeURIComponent(id)}`)
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`${r.status}`))))
    .then((answer) => {
      const reach = answer.reach;
      replaceRows("reach", reach.callers.map((c) => el("tr", { "data-caller": c.principal },
        el("td", { class: "mono" }, c.principal),
        el("td", { class: `allowed-${c.allowed}` }, c.allowed),
        el("td", { class: "mono" }, c.by))));
      const rules = reach.rules.map((r) => {
        const { policy, action, rule, ...text } = r;
        return el("div", {}, el("h3", {}, `${action} ${policy} rule ${rule}`), el("pre", {}, JSON.stringify(text, null, 2)));
      });
      const head = el("p", {}, reach.allow_policies
        ? "ALLOW policies apply: only what they allow is allowed."
        : `No ALLOW policy applies: the mesh default (${reach.mesh_default}) decides.`);
      document.getElementById("rules").replaceChildren(head, ...rules);
    })
    .catch(() => replaceRows("reach", [el("tr", {}, el("td", { colspan: 3 }, "unknown workload"))]));
}

function refresh() {
  fetch("/api/mesh")
    .then((r) => r.json())
    .then(render)
    .catch(() => { document.getElementById("summary").textContent = "the control plane does not answer"; });
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("denial-filter").addEventListener("input", (e) => {
    denialFilter = e.target.value.trim();
    refresh();
  });
  document.getElementById("whocan").addEventListener("change", (e) => {
    whoCanCall = e.target.value;
    if (whoCanCall) showReach(whoCanCall);
  });
  refresh();
  setInterval(refresh, EVERY_MS);
});

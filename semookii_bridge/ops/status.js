"use strict";
// Read-only: polls /status.json each second and writes text only (never HTML from the data).
const $ = (id) => document.getElementById(id);
const COLORS = { control: "#1f4fa8", management: "#7a5200", polling: "#7b8496" };

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(tableId, rows, columns, key) {
  const body = $(tableId).querySelector("tbody");
  const fresh = rows.map((row) => {
    const tr = document.createElement("tr");
    if (key) tr.dataset.key = row[key];
    for (const [field, cls] of columns) tr.appendChild(cell(row[field], cls ? cls(row) : ""));
    return tr;
  });
  body.replaceChildren(...fresh);
}

const statusClass = (row) => "s-" + row.status;

function pairs(tableId, entries) {
  fill(tableId, entries.map(([k, v, cls]) => ({ k, v, cls })), [["k"], ["v", (r) => r.cls || ""]]);
}

function showHealth(h) {
  const yes = (ok) => (ok ? "ok" : "bad");
  pairs("health", [
    ["MQTT broker", h.mqtt.connected ? "connected" : "disconnected", yes(h.mqtt.connected)],
    ["Cloud API", h.api.reachable ? "reachable" : "unreachable", yes(h.api.reachable)],
    ["API token", h.api.token + (h.api.token_refused ? ": " + h.api.token_refused : ""), h.api.token === "unauthorized" ? "bad" : (h.api.token === "authorized" ? "ok" : "warn")],
    ["API ban", h.api.banned_for > 0 ? h.api.banned_for + " s left" : "none", yes(h.api.banned_for <= 0)],
    ["Journal", h.journal.writable ? "writable" : "not writable", yes(h.journal.writable)],
    ["Quota", h.quota.ok ? "ok" : h.quota.reason, yes(h.quota.ok)],
    ["Event loop", "worst lag " + h.loop.worst_lag_recent + " s (30 s)", yes(h.loop.ok)],
  ]);
}

function showBudget(b) {
  if (!b) { pairs("budget", [["budget", "not started"]]); return; }
  const last = b.calls_last_minute || {};
  pairs("budget", [
    ["used today", b.used + (b.quota ? " of " + b.quota : "") + " (day " + b.day + ")"],
    ["remaining", b.remaining === null ? "no daily quota" : b.remaining + " (reserve " + b.reserve + ")"],
    ["calls last minute", "control " + (last.control || 0) + ", management " + (last.management || 0) + ", polling " + (last.polling || 0)],
    ["rate limit", b.rate > 0 ? b.rate + " calls/s, burst " + b.burst : "unlimited"],
    ["runs out", b.exhausts_at || "not at this rate"],
    ["paused until", b.paused_until || "not paused"],
    ["plans, next hour", (b.planned_next_hour || 0) + " calls"],
  ]);
}

function showBurn(points) {
  const svg = $("burn");
  const ns = "http://www.w3.org/2000/svg";
  const top = Math.max(1, ...points.map((p) => (p.control || 0) + (p.management || 0) + (p.polling || 0)));
  const width = 600 / 60;
  const bars = [];
  points.slice(-60).forEach((p, i) => {
    let y = 90;
    for (const kind of ["control", "management", "polling"]) {
      const h = ((p[kind] || 0) / top) * 86;
      if (h <= 0) continue;
      y -= h;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", String(i * width));
      rect.setAttribute("y", String(y));
      rect.setAttribute("width", String(width - 1));
      rect.setAttribute("height", String(h));
      rect.setAttribute("fill", COLORS[kind]);
      bars.push(rect);
    }
  });
  svg.replaceChildren(...bars);
}

function show(s) {
  $("role").textContent = s.bridge.role + (s.bridge.instance ? " (" + s.bridge.instance + ")" : "");
  $("versions").textContent = "v" + s.bridge.version + ", interface " + s.bridge.interface + ", prefix " + s.bridge.prefix + (s.bridge.dry_run ? ", DRY RUN" : "");
  const ready = $("ready");
  ready.textContent = s.ready ? "ready" : "not ready: " + s.health.failing.join(", ");
  ready.className = "badge " + (s.ready ? "ok" : "bad");
  showHealth(s.health);
  showBudget(s.budget);
  showBurn(s.burn || []);
  $("counts").textContent = "(" + s.counts.queued + " queued, " + s.counts.in_flight + " on the wire, " + s.counts.tracking + " tracked)";
  fill("in-flight", s.in_flight, [["target"], ["request_id"], ["status", statusClass], ["ts"]], "target");
  fill("targets", s.targets, [["target"], ["request_id"], ["status", statusClass], ["code"], ["ts"]], "target");
  const plans = (s.plans || []).map((p) => ({ ...p, warned: p.warning ? p.warning.message : "" }));
  fill("plans", plans, [["target"], ["plan_id"], ["interval"], ["next_start"], ["sent"], ["missed"], ["warned"]], "target");
  fill("problems", s.problems, [["ts"], ["target"], ["request_id"], ["status", statusClass], ["code"], ["message"]]);
}

async function poll() {
  try {
    const r = await fetch("status.json", { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    show(await r.json());
    $("stale").className = "badge bad";
  } catch (e) {
    $("stale").className = "badge bad on";
  }
  setTimeout(poll, 1000);
}
poll();

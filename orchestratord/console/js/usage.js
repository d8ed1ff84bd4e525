// Usage: token and task totals from GET /v2/usage (ORCH-327), grouped by tenant, model, key or
// hour. A client key sees its own tenant's rows only; the admin every tenant's.

import { api, el, fmt, when } from "./api.js";

const $ = (id) => document.getElementById(id);
let asked = 0; // answers to an older question (or an older identity) are dropped

export function init() {
  $("usage-filters").addEventListener("input", () => refresh());
}

// Forget the rows, the totals and the filters (ORCH-228).
export function reset() {
  asked += 1;
  $("usage-filters").reset();
  $("usage-rows").replaceChildren();
  $("usage-head").replaceChildren();
  $("usage-note").textContent = "";
}

export function show() { refresh(); }

function filters() {
  const f = new FormData($("usage-filters"));
  return { since: f.get("since") || "24h", by: f.get("by") || "tenant" };
}

export async function refresh() {
  const f = filters();
  const n = ++asked;
  let body;
  try {
    body = await api(`/v2/usage?${new URLSearchParams(f)}`);
  } catch (e) {
    if (n !== asked) return;
    $("usage-rows").replaceChildren();
    $("usage-note").textContent = `Usage could not be loaded (${e.message}).`;
    return;
  }
  if (n !== asked) return;
  render(body);
}

function label(by, row) {
  if (by === "hour") return when(row.hour_ms);
  const v = row[by];
  return v === null || v === undefined ? "–" : String(v);
}

function render(body) {
  const by = body.by;
  $("usage-head").replaceChildren(el("tr", {},
    el("th", {}, by[0].toUpperCase() + by.slice(1)), el("th", { class: "num" }, "Tasks"),
    el("th", { class: "num" }, "Errors"), el("th", { class: "num" }, "Prompt"),
    el("th", { class: "num wide" }, "Cached"), el("th", { class: "num" }, "Completion"),
    el("th", { class: "num" }, "Total")));
  const rows = body.usage.map((r) => el("tr", { "data-testid": `usage-${label(by, r)}` },
    el("td", { class: "mono" }, label(by, r)), el("td", { class: "num" }, fmt(r.tasks)),
    el("td", { class: "num" }, fmt(r.errors)), el("td", { class: "num" }, fmt(r.prompt_tokens)),
    el("td", { class: "num wide" }, fmt(r.cached_tokens)),
    el("td", { class: "num" }, fmt(r.completion_tokens)),
    el("td", { class: "num", "data-testid": "usage-total" }, fmt(r.total_tokens))));
  $("usage-rows").replaceChildren(...rows);
  $("usage-note").textContent = rows.length ? "" : "No usage in this period.";
}

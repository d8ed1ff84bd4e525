// Fleet: workers grouped by pool host, the queue, latency percentiles, the policy, and charts,
// all from the 1-second `metrics` snapshots of GET /v2/events.

import { age, badge, el, fmt } from "./api.js";
import { LineChart } from "./charts.js";

const $ = (id) => document.getElementById(id);
let last = null;
let ttftChart, tpsChart;
const recent = [];

export function init() {
  ttftChart = new LineChart($("chart-ttft"), ["p50", "p90"]);
  tpsChart = new LineChart($("chart-tps"), ["tok/s"]);
}

function visible() { return !$("page-fleet").hidden; }

export function latest() { return last; }

// Forget the snapshot, the charts' history and the event log (ORCH-228).
export function reset() {
  last = null;
  recent.length = 0;
  ttftChart.clear();
  tpsChart.clear();
  for (const id of ["fleet-cards", "pools", "fleet-log"]) $(id).replaceChildren();
}

export function onMetrics(snap) {
  last = snap;
  ttftChart.push(snap.now_ms, [snap.ttft_ms?.p50 ?? null, snap.ttft_ms?.p90 ?? null]);
  tpsChart.push(snap.now_ms, [snap.tokens_per_s ?? 0]);
  document.dispatchEvent(new CustomEvent("llorch:metrics", { detail: snap }));
  if (visible()) render();
}

export function onWorker(ev) {
  recent.unshift(`${new Date().toLocaleTimeString()} worker ${ev.id} (${ev.pool}) ${ev.change}: ${ev.state}`);
  recent.length = Math.min(recent.length, 50);
  if (visible()) renderLog();
}

export function show() { render(); }

function stat(key, value, sub, testid) {
  return el("div", { class: "stat", "data-testid": testid }, el("div", { class: "k" }, key),
    el("div", { class: "v" }, value), el("div", { class: "s" }, sub ?? ""));
}

function render() {
  ttftChart.draw();
  tpsChart.draw();
  renderLog();
  if (!last) {
    $("fleet-cards").replaceChildren(el("p", { class: "muted" }, "Waiting for the first snapshot…"));
    return;
  }
  const s = last;
  const ready = s.workers.filter((w) => w.state === "ready").length;
  const lane = (n) => s.lanes?.[n] ?? { depth: 0, oldest_wait_ms: null };
  const p = s.policy ?? {};
  $("fleet-cards").replaceChildren(
    stat("Workers ready", `${ready} / ${s.workers.length}`, `${new Set(s.workers.map((w) => w.pool)).size} pool(s)`, "card-workers"),
    stat("Fleet tok/s", fmt(s.tokens_per_s, 1), "tokens relayed, last second", "card-tps"),
    stat("Queue interactive", fmt(lane("interactive").depth), `oldest ${age(lane("interactive").oldest_wait_ms)}`, "card-q-interactive"),
    stat("Queue batch", fmt(lane("batch").depth), `oldest ${age(lane("batch").oldest_wait_ms)}`, "card-q-batch"),
    stat("TTFT p50 / p90 / p99", `${fmt(s.ttft_ms?.p50)} / ${fmt(s.ttft_ms?.p90)} / ${fmt(s.ttft_ms?.p99)}`, `ms, ${fmt(s.ttft_ms?.count)} tasks`, "card-ttft"),
    stat("Queue time p50 / p90", `${fmt(s.queue_ms?.p50)} / ${fmt(s.queue_ms?.p90)}`, `ms, ${fmt(s.queue_ms?.count)} tasks`, "card-queue-time"),
    stat("Policy", p.name ?? "–", `fallbacks ${fmt(p.fallbacks ?? 0)}${p.sha256 ? " · " + p.sha256.slice(0, 8) : ""}`, "card-policy"),
  );
  const pools = new Map();
  for (const w of s.workers) {
    if (!pools.has(w.pool)) pools.set(w.pool, []);
    pools.get(w.pool).push(w);
  }
  const blocks = [];
  for (const [pool, ws] of pools) {
    const rows = ws.map((w) => {
      const pct = w.slots_total ? Math.round((100 * w.slots_busy) / w.slots_total) : 0;
      const bar = el("span", { class: "slots" }, el("i"));
      bar.firstChild.style.width = `${pct}%`;
      return el("tr", { "data-testid": `worker-${w.id}`, "data-state": w.state },
        el("td", { class: "mono" }, w.id), el("td", { class: "wide" }, w.model), el("td", { class: "wide" }, w.backend ?? "–"),
        el("td", {}, badge(w.state)), el("td", {}, bar, `${w.slots_busy ?? "?"}/${w.slots_total ?? "?"}`),
        el("td", { class: "num" }, age(w.heartbeat_age_ms)), el("td", { class: "num" }, fmt(w.tokens_per_s, 1)),
        el("td", { class: "num wide" }, fmt(w.decode_tokens_per_s, 1)),
        el("td", { class: "num wide" }, w.cache_use === null || w.cache_use === undefined ? "–" : `${fmt(100 * w.cache_use)}%`));
    });
    blocks.push(el("div", { class: "pool", "data-testid": `pool-${pool}` },
      el("h3", {}, `${pool} `, el("span", { class: "muted" }, `${ws.length} worker(s)`)),
      el("div", { class: "scroll" }, el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, ["Worker", "Model", "Backend", "State", "Slots", "Heartbeat", "tok/s", "decode tok/s", "Cache"]
          .map((h, i) => el("th", { class: [i >= 5 ? "num" : "", [1, 2, 7, 8].includes(i) ? "wide" : ""].join(" ").trim() || null }, h)))),
        el("tbody", {}, rows)))));
  }
  $("pools").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "muted" }, "No workers registered.")]));
}

function renderLog() {
  $("fleet-log").replaceChildren(...recent.map((t) => el("li", {}, t)));
}

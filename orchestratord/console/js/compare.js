// Compare: one job on two or more workers or pools at once (POST /v2/compare), their streams
// side by side with live TTFT, tok/s and total time, and the saved runs (GET /v2/compare).

import { ApiError, api, el, fmt, sse, when } from "./api.js";
import { latest } from "./fleet.js";

const $ = (id) => document.getElementById(id);
let current = null; // { abort }

export function init() {
  $("compare-form").addEventListener("submit", (ev) => { ev.preventDefault(); run(); });
  $("cmp-model").addEventListener("change", () => renderTargets());
  document.addEventListener("llorch:metrics", () => { if (!$("page-compare").hidden) renderChoices(); });
}

export function show() { renderChoices(); loadHistory(); }

// Forget the run shown, the form, the choices and the history (ORCH-228).
export function reset() {
  current?.abort.abort();
  current = null;
  $("compare-form").reset();
  $("compare-form").querySelector("button[type=submit]").disabled = false;
  $("cmp-model").replaceChildren();
  $("cmp-targets").replaceChildren();
  $("cmp-error").textContent = "";
  $("cmp-lanes").replaceChildren();
  delete $("cmp-lanes").dataset.run;
  $("cmp-rows").replaceChildren();
}

function renderChoices() {
  const snap = latest();
  const workers = snap ? snap.workers : [];
  const models = [...new Set(workers.map((w) => w.model))].sort();
  const sel = $("cmp-model");
  const chosen = sel.value;
  const have = [...sel.options].map((o) => o.value).join("\n");
  if (have !== models.join("\n")) {
    sel.replaceChildren(...models.map((m) => el("option", { value: m }, m)));
    if (models.includes(chosen)) sel.value = chosen;
  }
  renderTargets();
}

function renderTargets() {
  const snap = latest();
  const model = $("cmp-model").value;
  const ws = (snap ? snap.workers : []).filter((w) => w.model === model);
  const checked = new Set([...document.querySelectorAll("#cmp-targets input:checked")].map((i) => i.value));
  const pools = [...new Set(ws.map((w) => w.pool))].sort();
  // Only a ready worker can take a job now; the others are listed, greyed out.
  const options = [
    ...ws.map((w) => [`worker:${w.id}`, `${w.id} (${w.pool}, ${w.state})`, w.state !== "ready"]),
    ...(pools.length > 1 ? pools.map((p) => [`pool:${p}`, `any worker in pool ${p}`,
      !ws.some((w) => w.pool === p && w.state === "ready")]) : []),
  ];
  const have = [...document.querySelectorAll("#cmp-targets input")].map((i) => `${i.value} ${i.disabled}`).join("\n");
  if (have === options.map((o) => `${o[0]} ${o[2]}`).join("\n")) return;
  $("cmp-targets").replaceChildren(...(options.length ? options.map(([v, label, off]) =>
    el("label", {}, el("input", { type: "checkbox", name: "target", value: v, checked: checked.has(v) && !off, disabled: off }), label))
    : [el("span", { class: "muted" }, "No worker serves this model.")]));
}

function job() {
  const f = new FormData($("compare-form"));
  const text = String(f.get("prompt") || "");
  const body = {
    model: f.get("model"),
    max_tokens: Number(f.get("max_tokens") || 64),
    temperature: Number(f.get("temperature") || 0),
    targets: f.getAll("target"),
  };
  if (f.get("seed") !== "") body.seed = Number(f.get("seed"));
  if (f.get("label")) body.label = String(f.get("label"));
  if (f.get("mode") === "chat") body.messages = [{ role: "user", content: text }];
  else body.prompt = text;
  return body;
}

function lane(target) {
  const figs = {
    ttft: el("b", { "data-testid": "ttft" }, "–"), tps: el("b", { "data-testid": "tps" }, "–"),
    total: el("b", { "data-testid": "total" }, "–"), tokens: el("b", { "data-testid": "tokens" }, "0"),
  };
  const status = el("span", { class: "badge st-queued", "data-testid": "lane-status" }, "queued");
  const text = el("pre", { class: "stream" });
  const root = el("div", { class: "card lane", "data-target": target, "data-testid": "lane" },
    el("h3", {}, el("span", { class: "mono" }, target), status),
    el("div", { class: "figs" }, el("span", {}, "TTFT ", figs.ttft, " ms"), el("span", {}, figs.tps, " tok/s"),
      el("span", {}, "total ", figs.total, " ms"), el("span", {}, figs.tokens, " tokens")),
    text);
  const setStatus = (s) => { status.className = `badge st-${s}`; status.textContent = s; };
  return { root, figs, text, setStatus };
}

async function follow(taskId, view, t0, signal) {
  let first = null, tokens = 0, timer = null;
  const tick = () => {
    const now = performance.now();
    view.figs.total.textContent = fmt(now - t0);
    if (first !== null && tokens > 1) view.figs.tps.textContent = fmt(((tokens - 1) * 1000) / Math.max(1, now - first), 1);
  };
  timer = setInterval(tick, 200);
  // An ended identity leaves sse() unsettled (api.js): the timer must not outlive the run.
  signal.addEventListener("abort", () => clearInterval(timer));
  try {
    await sse(`/v2/tasks/${encodeURIComponent(taskId)}/events`, (name, data) => {
      if (name === "started") view.setStatus("running");
      else if (name === "token") {
        if (first === null) { first = performance.now(); view.figs.ttft.textContent = fmt(first - t0); }
        tokens += 1;
        view.figs.tokens.textContent = String(tokens);
        view.text.append(data.t ?? "");
      } else if (name === "end" || name === "error") {
        tick();
        view.setStatus(name === "end" ? (data.stop_reason === "CANCELLED" ? "cancelled" : "done") : "failed");
        if (name === "error") view.text.append(`\n[${data.code}] ${data.message}`);
      }
    }, { signal });
  } finally {
    clearInterval(timer);
  }
}

// The server's figures replace the browser's once the run is saved (one clock for all lanes).
function applyResults(views, record) {
  for (const r of record.results) {
    const v = views.get(r.target);
    if (!v) continue;
    v.figs.ttft.textContent = fmt(r.ttft_ms);
    v.figs.tps.textContent = fmt(r.tokens_per_s, 1);
    v.figs.total.textContent = fmt(r.total_ms);
    v.figs.tokens.textContent = String(r.tokens_out);
    v.root.dataset.done = "1";
  }
}

async function run() {
  $("cmp-error").textContent = "";
  const body = job();
  if (body.targets.length < 2) { $("cmp-error").textContent = "Choose two or more workers or pools."; return; }
  current?.abort.abort();
  const abort = new AbortController();
  current = { abort };
  const btn = $("compare-form").querySelector("button[type=submit]");
  btn.disabled = true;
  try {
    const t0 = performance.now();
    const record = await api("/v2/compare", { method: "POST", body });
    const views = new Map();
    $("cmp-lanes").replaceChildren();
    $("cmp-lanes").dataset.run = record.id;
    for (const r of record.runs) {
      const v = lane(r.target);
      views.set(r.target, v);
      $("cmp-lanes").append(v.root);
    }
    await Promise.allSettled(record.runs.map((r) => follow(r.task_id, views.get(r.target), t0, abort.signal)));
    if (abort.signal.aborted) return;
    let saved = record;
    for (let i = 0; i < 50 && saved.status !== "done"; i++) {
      await new Promise((r) => setTimeout(r, 200));
      saved = await api(`/v2/compare/${encodeURIComponent(record.id)}`);
    }
    if (saved.status === "done") applyResults(views, saved);
    await loadHistory();
  } catch (e) {
    $("cmp-error").textContent = e instanceof ApiError ? e.message : String(e);
  } finally {
    btn.disabled = false;
  }
}

function summary(run) {
  if (run.status !== "done") return "running…";
  return run.results.map((r) => `${r.target}: ${r.status === "succeeded" ? `${fmt(r.tokens_per_s, 1)} tok/s, TTFT ${fmt(r.ttft_ms)} ms` : r.status}`).join(" · ");
}

function download(run) {
  const blob = new Blob([JSON.stringify(run, null, 2)], { type: "application/json" });
  const a = el("a", { href: URL.createObjectURL(blob), download: `llorch-compare-${run.id}.json` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function loadHistory() {
  let runs = [];
  try { runs = (await api("/v2/compare?limit=50")).runs; } catch (e) {
    $("cmp-rows").replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "error" }, e.message)));
    return;
  }
  $("cmp-rows").replaceChildren(...runs.map((r) => el("tr", { "data-testid": `run-${r.id}`, "data-status": r.status },
    el("td", { class: "mono" }, r.id.slice(0, 10)), el("td", { class: "wide" }, when(r.created_ms)), el("td", { class: "wide" }, r.model),
    el("td", { class: "wide" }, r.label ?? ""), el("td", { class: "results" }, summary(r)),
    el("td", {}, el("button", { type: "button", class: "ghost", onclick: () => download(r) }, "Export JSON")))));
}

// Tasks: a live list (GET /v2/tasks, then `task` events), and one task's token stream
// (GET /v2/tasks/{id}/events), which also replays a finished task from its retained events.

import { ApiError, api, badge, el, fmt, sse, when } from "./api.js";

const $ = (id) => document.getElementById(id);
const known = new Map();
const MAX_ROWS = 200;
let listNote = "";
let watching = null; // { id, abort, events }

export function init() {
  $("task-filters").addEventListener("input", () => refresh());
  $("replay").addEventListener("click", () => replay());
}

export function onHello() { refresh(); }

// Forget the list, the filters and the task shown (ORCH-228).
export function reset() {
  leaveTask();
  known.clear();
  listNote = "";
  $("task-filters").reset();
  $("task-rows").replaceChildren();
  $("tasks-note").textContent = "";
  clearTask();
}

function clearTask() {
  $("task-cards").replaceChildren();
  $("task-text").textContent = "";
  delete $("task-text").dataset.done;
  $("task-state").textContent = "";
  $("replay").hidden = true;
  $("replay").disabled = false;
}

function filters() {
  const f = new FormData($("task-filters"));
  return { status: f.get("status") || "", model: (f.get("model") || "").trim(), tenant: (f.get("tenant") || "").trim() };
}

function matches(t, f) {
  return (!f.status || t.status === f.status) && (!f.model || t.model === f.model)
    && (!f.tenant || t.tenant === f.tenant);
}

export async function refresh() {
  const f = filters();
  const q = new URLSearchParams({ limit: "100" });
  for (const k of ["status", "model", "tenant"]) if (f[k]) q.set(k, f[k]);
  try {
    const body = await api(`/v2/tasks?${q}`);
    for (const t of body.tasks) known.set(t.id, t);
    listNote = "";
  } catch (e) {
    listNote = e instanceof ApiError && (e.status === 404 || e.status === 405)
      ? "This orchestratord keeps no task list; showing the tasks seen live since sign-in."
      : `The task list could not be loaded (${e.message}); showing tasks seen live.`;
  }
  if (!$("page-tasks").hidden) renderList();
}

export function onTask(t) {
  known.set(t.id, { ...known.get(t.id), ...t });
  if (known.size > 5 * MAX_ROWS) {
    const oldest = [...known.values()].sort((a, b) => a.created_ms - b.created_ms).slice(0, known.size - MAX_ROWS);
    for (const o of oldest) known.delete(o.id);
  }
  if (!$("page-tasks").hidden) renderList();
  if (watching && watching.id === t.id) renderCards(known.get(t.id));
}

export function showList() { renderList(); }

function renderList() {
  const f = filters();
  const rows = [...known.values()].filter((t) => matches(t, f))
    .sort((a, b) => b.created_ms - a.created_ms).slice(0, MAX_ROWS)
    .map((t) => el("tr", { class: "click", "data-testid": `task-${t.id}`, onclick: () => { location.hash = `#/task/${encodeURIComponent(t.id)}`; } },
      el("td", { class: "mono" }, t.id.slice(0, 12)), el("td", {}, badge(t.status)), el("td", { class: "wide" }, t.model),
      el("td", { class: "wide" }, t.tenant ?? "–"), el("td", { class: "mono" }, t.worker_id ?? "–"),
      el("td", { class: "num" }, fmt(t.tokens_out)), el("td", { class: "num" }, fmt(t.ttft_ms, 1)),
      el("td", { class: "wide" }, when(t.created_ms))));
  $("task-rows").replaceChildren(...rows);
  $("tasks-note").textContent = listNote || (rows.length ? "" : "No tasks match.");
}

function stat(k, v, testid) {
  return el("div", { class: "stat", "data-testid": testid }, el("div", { class: "k" }, k), el("div", { class: "v" }, v));
}

function renderCards(t, live = {}) {
  if (!t) return;
  $("task-cards").replaceChildren(
    stat("Task", t.id.slice(0, 16), "tc-id"), stat("Status", t.status, "tc-status"),
    stat("Model", t.model, "tc-model"), stat("Worker", t.worker_id ?? "–", "tc-worker"),
    stat("Tokens", fmt(live.tokens ?? t.tokens_out), "tc-tokens"),
    stat("TTFT ms", fmt(live.ttft ?? t.ttft_ms, 1), "tc-ttft"),
    stat("tok/s", fmt(live.tps, 1), "tc-tps"),
    // ORCH-404: the prompt tokens the cache index expected the worker to hold, and what it reused.
    stat("Cached predicted / actual", `${fmt(live.cache?.predicted)} / ${fmt(live.cache?.actual)}`, "tc-cached"));
}

export function leaveTask() {
  if (watching) watching.abort.abort();
  watching = null;
}

export async function showTask(id) {
  if (watching && watching.id === id) return;
  leaveTask();
  const abort = new AbortController();
  const w = { id, abort, events: [], replaying: false, cache: {} };
  watching = w;
  clearTask(); // the cards, text and done flag belong to the task shown before
  $("task-state").textContent = "loading…";
  try {
    const rec = await api(`/v2/tasks/${encodeURIComponent(id)}`, { signal: abort.signal });
    known.set(id, rec);
    renderCards(rec);
  } catch (e) {
    if (abort.signal.aborted) return;
    $("task-state").textContent = e instanceof ApiError && e.status === 404 ? "No such task (or not yours)." : e.message;
    return;
  }
  const t0 = performance.now();
  let first = null, tokens = 0;
  const figures = () => {
    const now = performance.now();
    return { tokens, cache: w.cache, ttft: first === null ? null : first - t0, tps: first !== null && tokens > 1 ? ((tokens - 1) * 1000) / Math.max(1, now - first) : null };
  };
  $("task-state").textContent = "streaming…";
  try {
    await sse(`/v2/tasks/${encodeURIComponent(id)}/events`, (name, data) => {
      w.events.push([name, data]);
      if (name === "token") {
        if (first === null) first = performance.now();
        tokens += 1;
        appendToken(data);
        if (tokens % 8 === 1) renderCards(known.get(id), figures());
      } else if (name === "started") {
        $("task-state").textContent = `running on ${data.worker_id}`;
        w.cache.predicted = data.cached_tokens_predicted;
        renderCards(known.get(id), figures());
      } else if (name === "end") {
        $("task-state").textContent = `ended: ${data.stop_reason}, ${data.tokens_out} tokens`;
        w.cache = { predicted: data.cached_tokens_predicted ?? w.cache.predicted, actual: data.prompt_tokens_cached };
      } else if (name === "error") {
        $("task-state").textContent = `failed: ${data.code}: ${data.message}`;
      }
    }, { signal: abort.signal });
  } catch (e) {
    if (abort.signal.aborted) return;
    $("task-state").textContent = e instanceof ApiError && e.status === 404 ? "Its events are no longer retained; the record above has its outcome." : `stream lost: ${e.message}`;
  }
  if (abort.signal.aborted) return;
  try { const rec = await api(`/v2/tasks/${encodeURIComponent(id)}`); known.set(id, rec); renderCards(rec, { cache: w.cache }); } catch { /* keep what we have */ }
  $("task-text").dataset.done = "1";
  $("replay").hidden = !w.events.some(([n]) => n === "token");
}

// A token's text into the task's page. The tokens of a task of n > 1 choices name their choice
// (`index`, ORCH-270): each choice gets a block of its own, in index order (ORCH-272); its label
// is drawn by CSS so that a block's text is the choice's text alone.
function appendToken(data) {
  const box = $("task-text");
  if (typeof data.index !== "number") { box.append(data.t ?? ""); return; }
  let block = box.querySelector(`[data-choice="${data.index}"]`);
  if (!block) {
    block = el("span", { class: "choice", "data-choice": String(data.index), "data-testid": `choice-${data.index}` });
    const after = [...box.querySelectorAll("[data-choice]")].find((b) => Number(b.dataset.choice) > data.index);
    box.insertBefore(block, after ?? null);
  }
  block.append(data.t ?? "");
}

// Replays the retained events at a steady pace (the log keeps order, not arrival times).
async function replay() {
  const w = watching;
  if (!w || w.replaying) return;
  w.replaying = true;
  $("replay").disabled = true;
  $("task-text").textContent = "";
  for (const [name, data] of w.events) {
    if (w !== watching) return;
    if (name === "token") {
      appendToken(data);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  w.replaying = false;
  $("replay").disabled = false;
}

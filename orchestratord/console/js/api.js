// The console's one door to orchestratord: the bearer token (session storage only, never a
// URL), JSON requests, and SSE read through fetch (EventSource cannot send a header).

const KEY = "llorch.token";

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(t) { sessionStorage.setItem(KEY, t); }
export function clearToken() { sessionStorage.removeItem(KEY); }

// Every request and stream belongs to the identity signed in when it started. Ending that
// identity (sign-out, another sign-in, a refused key) aborts them all, and whatever of theirs is
// still on its way goes nowhere: api() and sse() then never settle, so no caller, however it
// handles errors, can paint the previous user's data on the next user's pages (ORCH-228).
let identity = new AbortController();

export function endIdentity() {
  identity.abort();
  identity = new AbortController();
}

const nowhere = () => new Promise(() => {});

function signals(own, signal) {
  return signal ? AbortSignal.any([signal, own]) : own;
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function headers(extra) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const own = identity.signal;
  const init = { method, signal: signals(own, signal), headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let r, text;
  try {
    r = await fetch(path, init);
    text = await r.text();
  } catch (e) {
    if (own.aborted) return nowhere();
    throw e;
  }
  if (own.aborted) return nowhere();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text.slice(0, 200) }; }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// Read an SSE response: calls onEvent(name, data, id) per event; resolves when the stream ends.
export async function sse(path, onEvent, { signal, lastEventId } = {}) {
  const own = identity.signal;
  const extra = { Accept: "text/event-stream" };
  if (lastEventId !== undefined && lastEventId !== null) extra["Last-Event-ID"] = String(lastEventId);
  let r;
  try {
    r = await fetch(path, { headers: headers(extra), signal: signals(own, signal), cache: "no-store" });
  } catch (e) {
    if (own.aborted) return nowhere();
    throw e;
  }
  if (!r.ok) {
    let body = null;
    try { body = await r.json(); } catch { /* not JSON */ }
    if (own.aborted) return nowhere();
    throw new ApiError(r.status, body);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (own.aborted) return nowhere();
      throw e;
    }
    if (own.aborted) return nowhere();
    const { value, done } = chunk;
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + (buf[cut] === "\r" ? 4 : 2));
      let name = "message", data = "", id = null;
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") name = val;
        else if (field === "data") data += (data ? "\n" : "") + val;
        else if (field === "id") id = val;
      }
      if (own.aborted) return nowhere(); // an earlier event of this read ended the identity
      if (data) onEvent(name, JSON.parse(data), id);
    }
  }
}

// Small DOM helper: el("td", {class: "num"}, "text", child...). Text is always textContent.
export function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

export function badge(state) { return el("span", { class: `badge st-${state}` }, state); }

export function fmt(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function age(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "–";
}

// The console's shell: sign-in, the router (#/fleet, #/tasks, #/task/ID, #/compare, #/usage), the theme,
// and the one live connection to GET /v2/events that feeds every page.

import { ApiError, clearToken, endIdentity, setToken, sse, token } from "./api.js";
import * as compare from "./compare.js";
import * as fleet from "./fleet.js";
import * as tasks from "./tasks.js";
import * as usage from "./usage.js";

const $ = (id) => document.getElementById(id);
const session = { role: null, tenant: null, who: null, abort: null, retry: 1000 };
// Each view forgets, in its reset(), all it shows: rows, cards, lanes, charts, form fields.
const views = [fleet, tasks, compare, usage];

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("llorch.theme", theme); // a preference, not a secret
}

function initialTheme() {
  const saved = localStorage.getItem("llorch.theme");
  if (saved === "light" || saved === "dark") return saved;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function live(on, text) {
  const e = $("live");
  e.className = `live ${on ? "on" : "off"}`;
  e.textContent = text;
}

function showSignin(message) {
  for (const p of document.querySelectorAll(".page")) p.hidden = true;
  $("signin").hidden = false;
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("signin-error").textContent = message || "";
  live(false, "offline");
}

function route() {
  if (!session.role) return;
  const hash = location.hash || "#/fleet";
  const [, page, arg] = hash.split("/");
  const name = ["fleet", "tasks", "task", "compare", "usage"].includes(page) ? page : "fleet";
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== `page-${name}`;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("on", a.dataset.page === (name === "task" ? "tasks" : name));
  }
  if (name === "fleet") fleet.show();
  else if (name === "tasks") tasks.showList();
  else if (name === "task") tasks.showTask(decodeURIComponent(arg || ""));
  else if (name === "usage") usage.show();
  else compare.show();
  if (name !== "task") tasks.leaveTask();
}

// The signed-in identity ends (sign-out, another sign-in, a refused key): its requests and
// streams stop, late answers go nowhere, and every view is emptied, so nothing of one user's
// session is left for the next one in this tab (ORCH-228).
function signedOut() {
  endIdentity();
  session.abort?.abort();
  session.abort = null;
  session.role = null;
  session.tenant = null;
  session.who = null;
  session.retry = 1000;
  forget();
}

function forget() {
  for (const v of views) v.reset();
  document.body.classList.remove("admin");
  $("who").textContent = "";
}

function onEvent(name, data) {
  if (name === "hello") {
    // A reconnect with the same token may find it mapped to another role or tenant.
    const who = `${data.role}/${data.tenant}`;
    const changed = session.who !== null && session.who !== who;
    if (changed) forget();
    const first = session.role === null || changed;
    session.who = who;
    session.role = data.role;
    session.tenant = data.tenant;
    document.body.classList.toggle("admin", data.role === "admin");
    $("who").textContent = data.role === "admin" ? "admin" : `tenant ${data.tenant ?? "(none)"}`;
    $("signin").hidden = true;
    $("nav").hidden = false;
    $("signout").hidden = false;
    session.retry = 1000;
    live(true, "live");
    if (data.snapshot) fleet.onMetrics(data.snapshot);
    tasks.onHello(data);
    if (first) route();
    return;
  }
  if (name === "metrics") fleet.onMetrics(data);
  else if (name === "worker") fleet.onWorker(data);
  else if (name === "task") tasks.onTask(data);
  else if (name === "lagged") tasks.refresh();
}

async function connect() {
  session.abort?.abort();
  const abort = new AbortController();
  session.abort = abort;
  try {
    await sse("/v2/events", onEvent, { signal: abort.signal });
    if (abort.signal.aborted) return;
    live(false, "reconnecting");
  } catch (e) {
    if (abort.signal.aborted) return;
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      clearToken();
      signedOut();
      showSignin(e.status === 401 ? "That token or key was refused." : e.message);
      return;
    }
    live(false, "reconnecting");
  }
  setTimeout(() => { if (session.abort === abort) connect(); }, session.retry);
  session.retry = Math.min(session.retry * 2, 10000);
}

function signOut() {
  clearToken();
  signedOut();
  showSignin("");
}

export function role() { return session.role; }
export function tenant() { return session.tenant; }

function start() {
  setTheme(initialTheme());
  $("theme").addEventListener("click", () =>
    setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"));
  $("signout").addEventListener("click", signOut);
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signedOut(); // whatever was shown belongs to the identity before this one
    // Empty is allowed: an orchestratord run without tokens (loopback only) is open.
    setToken($("token").value.trim());
    $("token").value = "";
    $("signin-error").textContent = "";
    live(false, "connecting");
    connect();
  });
  addEventListener("hashchange", route);
  fleet.init();
  tasks.init();
  compare.init();
  usage.init();
  if (token() !== null) { live(false, "connecting"); connect(); } else showSignin("");
}

start();

// The console's shell: sign-in, the router (#/fleet, #/tasks, #/task/ID, #/compare), the theme,
// and the one live connection to GET /v2/events that feeds every page.

import { ApiError, clearToken, setToken, sse, token } from "./api.js";
import * as compare from "./compare.js";
import * as fleet from "./fleet.js";
import * as tasks from "./tasks.js";

const $ = (id) => document.getElementById(id);
const session = { role: null, tenant: null, abort: null, retry: 1000 };

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
  const name = ["fleet", "tasks", "task", "compare"].includes(page) ? page : "fleet";
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== `page-${name}`;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("on", a.dataset.page === (name === "task" ? "tasks" : name));
  }
  if (name === "fleet") fleet.show();
  else if (name === "tasks") tasks.showList();
  else if (name === "task") tasks.showTask(decodeURIComponent(arg || ""));
  else compare.show();
  if (name !== "task") tasks.leaveTask();
}

function onEvent(name, data) {
  if (name === "hello") {
    const first = session.role === null;
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
      session.role = null;
      showSignin(e.status === 401 ? "That token or key was refused." : e.message);
      return;
    }
    live(false, "reconnecting");
  }
  setTimeout(() => { if (session.abort === abort) connect(); }, session.retry);
  session.retry = Math.min(session.retry * 2, 10000);
}

function signOut() {
  session.abort?.abort();
  session.abort = null;
  session.role = null;
  clearToken();
  tasks.leaveTask();
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
  if (token() !== null) { live(false, "connecting"); connect(); } else showSignin("");
}

start();

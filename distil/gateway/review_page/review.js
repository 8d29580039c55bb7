// The review page of one job: lists the job's pending review items, shows one (prompt,
// highlighted response, verifier results, feedback so far) and submits a review.
// Plain JavaScript, no build step, no third-party code. Everything that comes from the
// model or the task is inserted as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "distil-review-token";
const REFRESH_MS = 4000;
const $ = (id) => document.getElementById(id);
const job = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop());

const state = { items: [], current: null, detail: null, busy: false };

// ------------------------------------------------------------------ API

class Refused extends Error {}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new Refused("sign in with the gateway's API token");
  const headers = { Authorization: `Bearer ${token}`, ...(options.headers || {}) };
  const reply = await fetch(path, { ...options, headers, cache: "no-store" });
  let body = null;
  try { body = await reply.json(); } catch (_) { body = null; }
  if (reply.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw new Refused(`the gateway refused this token (401: ${(body && body.detail) || "unauthorized"})`);
  }
  if (!reply.ok) {
    const detail = body && body.detail;
    const text = Array.isArray(detail)
      ? detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ")
      : detail || reply.statusText;
    const err = new Error(`${reply.status}: ${text}`);
    err.status = reply.status;
    throw err;
  }
  return body;
}

const base = () => `/v1/jobs/${encodeURIComponent(job)}/reviews`;

// ------------------------------------------------------------------ views

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function showLogin(message) {
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("stats").textContent = "";
  $("login-error").textContent = message || "";
  $("token").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
}

function fail(err) {
  if (err instanceof Refused) {
    showLogin(err.message);
    return;
  }
  banner(err.message);
}

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text || "";
  s.className = kind || "";
}

function left(seconds) {
  if (seconds <= 0) return "expired";
  if (seconds < 90) return `${Math.round(seconds)} s left`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min left`;
  return `${(seconds / 3600).toFixed(1)} h left`;
}

function renderStats(stats) {
  const s = stats || {};
  $("stats").textContent =
    `${s.pending_items || 0} pending · ${s.items_reviewed || 0} reviewed · ` +
    `${s.items_expired || 0} expired (${s.groups_expired || 0} groups went on without review)`;
}

function renderQueue() {
  const list = $("items");
  list.replaceChildren();
  $("count").textContent = `(${state.items.length})`;
  $("queue-empty").hidden = state.items.length > 0;
  for (const it of state.items) {
    const li = el("li");
    li.dataset.item = it.item;
    if (it.item === state.current) li.classList.add("current");
    li.append(el("span", "task", it.task_id || it.group_id));
    const outcome = it.success === null ? "" : it.success ? "passed · " : "failed · ";
    li.append(el("span", "sub", `response ${it.index + 1} · ${outcome}${left(it.seconds_left)}`));
    li.addEventListener("click", () => select(it.item));
    list.append(li);
  }
}

// A small highlighter for code blocks: Python keywords, builtins, strings, comments,
// numbers and function names. Tokens become spans whose text is set with textContent.
const KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif " +
  "else except finally for from global if import in is lambda nonlocal not or pass raise return try " +
  "while with yield match case").split(" "));
const BUILTINS = new Set(("abs all any bool dict enumerate filter float input int isinstance len list map " +
  "max min next open print range reversed round set sorted str sum tuple type zip self").split(" "));
const TOKEN = new RegExp([
  /(#[^\n]*)/.source,                                                    // 1 comment
  /([rbfuRBFU]{0,2}(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?))/.source, // 2 string
  /(\b(?:0[xob][\da-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?j?)\b)/.source, // 3 number
  /([A-Za-z_]\w*)/.source,                                               // 4 name
  /([-+*\/%=<>!&|^~:]+)/.source,                                         // 5 operator
].join("|"), "g");

function highlight(code) {
  const frag = document.createDocumentFragment();
  let last = 0;
  let afterDef = false;
  for (const m of code.matchAll(TOKEN)) {
    if (m.index > last) frag.append(code.slice(last, m.index));
    let cls = null;
    if (m[1] !== undefined) cls = "tok-com";
    else if (m[2] !== undefined) cls = "tok-str";
    else if (m[3] !== undefined) cls = "tok-num";
    else if (m[4] !== undefined) {
      cls = afterDef ? "tok-fn" : KEYWORDS.has(m[4]) ? "tok-kw" : BUILTINS.has(m[4]) ? "tok-bi" : null;
      afterDef = m[4] === "def" || m[4] === "class";
    } else if (m[5] !== undefined) cls = "tok-op";
    if (m[4] === undefined) afterDef = false;
    frag.append(cls ? el("span", cls, m[0]) : m[0]);
    last = m.index + m[0].length;
  }
  if (last < code.length) frag.append(code.slice(last));
  return frag;
}

// Text with ``` fences: prose as text, fenced blocks highlighted (an unclosed fence runs to the end).
function renderRich(target, text) {
  target.replaceChildren();
  const fence = /```([\w+.-]*)[^\n]*\n?([\s\S]*?)(?:```|$)/g;
  let last = 0;
  for (const m of text.matchAll(fence)) {
    if (m.index > last) target.append(el("div", "prose", text.slice(last, m.index)));
    const pre = el("pre");
    const code = el("code");
    if (m[1]) code.dataset.lang = m[1];
    code.append(highlight(m[2]));
    pre.append(code);
    target.append(pre);
    last = m.index + m[0].length;
    if (m[0].length === 0) break;
  }
  if (last < text.length) target.append(el("div", "prose", text.slice(last)));
  if (!text) target.append(el("div", "prose muted", "(empty)"));
}

function renderDetail(d) {
  state.detail = d;
  $("empty").hidden = true;
  $("detail").hidden = false;
  $("title").textContent = d.task_id || d.group_id;
  const outcome = d.success === null ? "not graded" : d.success ? "passed" : "failed";
  $("meta").textContent =
    `response ${d.index + 1} of ${d.group_size} · group ${d.group_id} · ${d.state}` +
    (d.state === "pending" ? ` · ${left(d.seconds_left)}` : "");
  renderRich($("prompt"), d.prompt);
  renderRich($("response"), d.response);
  $("verdict-auto").textContent =
    `${d.verifier || "verifier"}: ${outcome}, reward ${d.reward === null ? "–" : d.reward}` +
    (d.finish_reason === "length" ? " · cut off at the length limit" : "");
  const body = $("tests").querySelector("tbody");
  body.replaceChildren();
  for (const t of d.tests) {
    const tr = el("tr");
    tr.append(el("td", "", t.name));
    const td = el("td");
    td.append(el("span", `badge ${t.status}`, t.status));
    tr.append(td, el("td", "msg", t.message));
    body.append(tr);
  }
  if (!d.tests.length) {
    const td = el("td", "muted", "no test results");
    td.colSpan = 3;
    body.append(el("tr"));
    body.lastChild.append(td);
  }
  const existing = $("existing");
  existing.replaceChildren();
  if (d.feedback) {
    existing.append(el("div", "meta", "environment / critic feedback"));
    existing.append(el("pre", "plain", d.feedback));
  }
  if (d.solution) {
    existing.append(el("div", "meta", "demonstration (a successful sibling or the reference)"));
    const box = el("div", "rich");
    renderRich(box, d.solution);
    existing.append(box);
  }
  if (!d.feedback && !d.solution) existing.append(el("p", "muted", "none"));
  const form = $("review-form");
  form.reset();
  const open = d.state === "pending";
  for (const node of form.querySelectorAll("input, textarea, button")) node.disabled = !open;
  if (d.review) {
    $("feedback").value = d.review.feedback || "";
    $("solution").value = d.review.solution || "";
    const radio = $(d.review.verdict);
    if (radio) radio.checked = true;
  }
  setStatus(open ? "" : `This item is ${d.state}.`, open ? "" : "bad");
}

// ------------------------------------------------------------------ actions

async function refresh() {
  const data = await api(base());
  showApp();
  banner("");
  state.items = data.items;
  renderStats(data.stats);
  if (!state.current && state.items.length) await select(state.items[0].item);
  else renderQueue();
}

async function select(item) {
  state.current = item;
  renderQueue();
  try {
    renderDetail(await api(`${base()}/${encodeURIComponent(item)}`));
  } catch (err) {
    fail(err);
  }
}

function move(step) {
  if (!state.items.length) return;
  const i = state.items.findIndex((it) => it.item === state.current);
  const next = i < 0 ? 0 : Math.min(Math.max(i + step, 0), state.items.length - 1);
  select(state.items[next].item);
}

function verdict(value) {
  const radio = $(value);
  if (!radio || radio.disabled) return;
  radio.checked = true;
  $("feedback").focus();
}

async function submit() {
  const d = state.detail;
  if (!d || state.busy || d.state !== "pending") return;
  const chosen = document.querySelector('input[name="verdict"]:checked');
  if (!chosen) {
    setStatus("Choose accept (a) or reject (r) first.", "bad");
    return;
  }
  const body = { verdict: chosen.value, feedback: $("feedback").value };
  if ($("solution").value.trim()) body.solution = $("solution").value;
  state.busy = true;
  $("submit").disabled = true;
  try {
    const res = await api(`${base()}/${encodeURIComponent(d.item)}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const index = state.items.findIndex((it) => it.item === d.item);
    state.items = state.items.filter((it) => it.item !== d.item);
    state.current = null;
    const next = state.items[Math.min(Math.max(index, 0), state.items.length - 1)];
    if (next) await select(next.item);
    else {
      renderQueue();
      $("detail").hidden = true;
      $("empty").hidden = false;
      $("empty").textContent = "All caught up: nothing waits for review.";
    }
    setStatus(
      res.group_complete ? "Submitted; the group goes on to the teacher." : "Submitted.", "ok");
    refresh().catch(fail);
  } catch (err) {
    if (err instanceof Refused) fail(err);
    else setStatus(err.message, "bad");
    if (err.status === 409 || err.status === 410 || err.status === 404) refresh().catch(fail);
  } finally {
    state.busy = false;
    $("submit").disabled = false;
  }
}

// ------------------------------------------------------------------ wiring

function typing(target) {
  return target instanceof HTMLTextAreaElement || (target instanceof HTMLInputElement && target.type !== "radio");
}

document.addEventListener("keydown", (e) => {
  if (!$("app").hidden && (e.ctrlKey || e.metaKey) && e.key === "Enter") {
    e.preventDefault();
    submit();
    return;
  }
  if (e.key === "Escape" && typing(e.target)) {
    e.target.blur();
    return;
  }
  if ($("app").hidden || typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
  const keys = {
    j: () => move(1),
    k: () => move(-1),
    a: () => verdict("accept"),
    r: () => verdict("reject"),
    f: () => $("feedback").focus(),
    s: () => $("solution").focus(),
  };
  if (keys[e.key]) {
    e.preventDefault();
    keys[e.key]();
  }
});

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  refresh().catch(fail);
});

$("review-form").addEventListener("submit", (e) => {
  e.preventDefault();
  submit();
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("Signed out.");
});

$("job").textContent = job;
document.title = `distil review · ${job}`;
if (sessionStorage.getItem(TOKEN_KEY)) refresh().catch(fail);
else showLogin("");
setInterval(() => {
  if (!$("app").hidden && !document.hidden) refresh().catch(fail);
}, REFRESH_MS);

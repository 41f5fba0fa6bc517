// The approval page. Every call sends the approver's token from sessionStorage (this tab only,
// gone when it closes); all text from the server is set with textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "phigate.approverToken";
const $ = (id) => document.getElementById(id);
let countdowns = [];

let csrf = null; // set when the page sits behind phigate's single sign-on

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = "Bearer " + token();
  else if (csrf && options.method && options.method !== "GET") headers[csrf.header] = csrf.csrf_token;
  const response = await fetch(path, {
    ...options,
    headers,
    cache: "no-store",
    // The SSO session cookie (HttpOnly, SameSite=Strict) is only ever sent to this origin.
    credentials: "same-origin",
  });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON: reported below */ }
  if (!response.ok) {
    const error = (body && body.error) || { message: "HTTP " + response.status, code: "http_error" };
    const failure = new Error(error.message + " (" + error.code + ")");
    failure.status = response.status;
    throw failure;
  }
  return body;
}

function show(id, text) {
  $(id).textContent = text;
  $(id).hidden = !text;
}

function fail(error) {
  show("status", "");
  show("error", error.message);
  if (error.status === 401) signOut(false);
}

function signOut(clearMessages = true) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("who").hidden = true;
  $("queue").hidden = true;
  $("signin").hidden = false;
  $("approvals").replaceChildren();
  if (clearMessages) { show("error", ""); show("status", ""); }
}

async function signIn() {
  const value = $("token").value.trim();
  $("token").value = "";
  if (!value) { show("error", "Paste a token first."); return; }
  sessionStorage.setItem(TOKEN_KEY, value);
  show("error", "");
  await start();
}

async function start() {
  try {
    const me = await api("/api/me");
    show("who", "Signed in as " + me.sub + " (" + me.iss + "), groups: " + (me.groups.join(", ") || "none"));
    $("signin").hidden = true;
    $("queue").hidden = false;
    await refresh();
  } catch (error) { fail(error); }
}

async function refresh() {
  const state = $("state-filter").value;
  const list = await api("/api/approvals?state=" + encodeURIComponent(state));
  const selected = location.hash.slice(1);
  const items = list.data;
  if (selected && !items.some((a) => a.id === selected)) {
    try {
      items.unshift(await api("/api/approvals/" + encodeURIComponent(selected)));
    } catch (error) { fail(error); }
  }
  render(items, selected);
}

function render(items, selected) {
  countdowns = [];
  $("approvals").replaceChildren(...items.map((a) => card(a, a.id === selected)));
  $("empty").hidden = items.length > 0;
  tick();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function card(a, selected) {
  const s = a.summary;
  const entities = Object.entries(s.entities).map(([k, v]) => k + " ×" + v).join(", ");
  const approvals = a.decisions.filter((d) => d.decision === "approve").length;
  const left = el("dd", { class: "time-left" });
  if (a.state === "pending") countdowns.push({ node: left, until: Date.now() + a.expires_in * 1000 });
  else left.textContent = "–";
  const rows = [
    ["Requester", a.requester.sub + " (" + a.requester.iss + ")"],
    ["Endpoint", s.endpoint],
    ["Model", s.model || "–"],
    ["Max tokens", s.max_tokens === null ? "–" : String(s.max_tokens)],
    ["Tools", s.tools.join(", ") || "none"],
    ["Masked entities", entities || "none"],
    ["Approvals", approvals + " of " + a.approvals_required + " from " + a.approver_groups.join(", ")],
    ["Created", new Date(a.created_at * 1000).toLocaleString()],
  ];
  const details = el("dl");
  for (const [name, value] of rows) details.append(el("dt", {}, name), el("dd", {}, value));
  details.append(el("dt", {}, "Time left"), left);
  const node = el("li", { class: "approval" + (selected ? " selected" : ""), "data-approval": a.id },
    el("h2", {}, a.rule, el("span", { class: "state" }, a.state)),
    el("p", { class: "id" }, a.id),
    details);
  if (s.excerpt) node.append(el("blockquote", { class: "excerpt" }, s.excerpt));
  if (a.decisions.length) {
    node.append(el("ul", { class: "decisions" }, ...a.decisions.map((d) =>
      el("li", {}, d.decision + " by " + d.sub + " (" + d.iss + ") at " +
        new Date(d.time * 1000).toLocaleString() + (d.reason ? ": " + d.reason : "")))));
  }
  if (a.can_decide) node.append(decideForm(a));
  return node;
}

function decideForm(a) {
  const reason = el("input", { type: "text", class: "reason", maxlength: "1000",
    placeholder: "Reason (required to deny)", "aria-label": "Reason for " + a.id });
  const approve = el("button", { type: "button", class: "approve" }, "Approve");
  const deny = el("button", { type: "button", class: "deny" }, "Deny");
  const decide = async (action) => {
    approve.disabled = deny.disabled = true;
    try {
      const decided = await api("/api/approvals/" + encodeURIComponent(a.id) + "/" + action, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reason: reason.value }),
      });
      show("error", "");
      show("status", (action === "approve" ? "Approval" : "Denial") + " of " + decided.id + " recorded; it is now " + decided.state + ".");
      await refresh();
    } catch (error) {
      approve.disabled = deny.disabled = false;
      fail(error);
    }
  };
  approve.addEventListener("click", () => decide("approve"));
  deny.addEventListener("click", () => decide("deny"));
  return el("div", { class: "decide" }, reason, approve, deny);
}

function tick() {
  for (const { node, until } of countdowns) {
    const seconds = Math.max(0, Math.round((until - Date.now()) / 1000));
    node.textContent = seconds > 0 ? Math.floor(seconds / 60) + " min " + (seconds % 60) + " s" : "expired";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("use-token").addEventListener("click", signIn);
  $("forget-token").addEventListener("click", () => signOut());
  $("refresh").addEventListener("click", () => refresh().catch(fail));
  $("state-filter").addEventListener("change", () => refresh().catch(fail));
  window.addEventListener("hashchange", () => refresh().catch(fail));
  setInterval(tick, 1000);
  if (token()) { start(); return; }
  // Behind single sign-on, /api/csrf answers 200 (signed in) or 401 (not yet); without it, 404.
  fetch("/api/csrf", { credentials: "same-origin", cache: "no-store" })
    .then(async (r) => {
      if (r.status === 401) $("sso").hidden = false;
      if (!r.ok) return;
      csrf = await r.json();
      await start();
    })
    .catch(() => {});
});

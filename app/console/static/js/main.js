// Operator console: sign in with the admin token, tenants, one tenant's credits and ledger,
// the audit status; keys and usage live in keys.js and usage.js.

import { AdminError, admin, session } from "./api.js";
import { loadCatalog, renderKeys, setupKeys } from "./keys.js";
import { A, announce, busy, clear, enc, failed, state, wholeNumber, whenUnauthorized } from "./ui.js";
import { loadUsage, setUsageKeys, setupUsage } from "./usage.js";
import { $, formatDate, h, setText, show, signed } from "/dashboard/static/js/dom.js";

// --- sign in ---------------------------------------------------------------

function signOut(message = "") {
  session.clear();
  state.tenant = null;
  show($("console"), false);
  show($("account"), false);
  show($("signin"));
  setText($("signin-error"), message);
  $("admin-token").value = "";
  $("admin-token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("admin-token").value.trim();
  if (!token) {
    setText($("signin-error"), "Enter the admin token.");
    return;
  }
  await busy($("signin-submit"), async () => {
    try {
      await admin(`${A}/tenants?limit=1`, { token });
    } catch (error) {
      setText($("signin-error"), error.message);
      return;
    }
    session.save(token);
    await start();
  });
}

async function start() {
  clear($("signin-error"), $("error"));
  show($("signin"), false);
  show($("account"));
  show($("console"));
  const fromHash = decodeURIComponent(location.hash.replace(/^#tenant=/, ""));
  await Promise.all([refreshTenants(), refreshAudit(), loadCatalog().catch((e) => failed(e))]);
  if (fromHash && location.hash.startsWith("#tenant=")) await selectTenant(fromHash, false);
  else await loadUsage().catch((e) => failed(e, $("usage-error")));
}

// --- tenants ---------------------------------------------------------------

function daysAgo(days) {
  const day = new Date(Date.now() - days * 86_400_000);
  return day.toISOString().slice(0, 10);
}

async function refreshTenants() {
  try {
    const [list, usage] = await Promise.all([
      admin(`${A}/tenants?limit=1000`),
      admin(`${A}/usage?from=${daysAgo(29)}`),
    ]);
    const activity = new Map();
    for (const row of usage.rows) {
      const seen = activity.get(row.tenant) ?? { credits: 0, last: "" };
      seen.credits += row.creditsCharged;
      if (row.day > seen.last) seen.last = row.day;
      activity.set(row.tenant, seen);
    }
    $("tenant-rows").replaceChildren(...list.tenants.map((tenant) => tenantRow(tenant, activity.get(tenant.name))));
    const count = list.total === 1 ? "1 tenant" : `${list.total} tenants`;
    $("tenants-count").textContent = list.tenants.length < list.total ? `first ${list.tenants.length} of ${count}` : count;
    show($("tenants-empty"), list.tenants.length === 0);
    show($("tenants"), list.tenants.length > 0);
  } catch (error) {
    failed(error);
  }
}

function tenantRow(tenant, activity) {
  const current = tenant.name === state.tenant;
  return h(
    "tr",
    { class: current ? "current" : "" },
    h(
      "th",
      { scope: "row" },
      h("button", { type: "button", class: "linklike", "aria-current": current ? "true" : false, onclick: () => selectTenant(tenant.name) }, tenant.name),
    ),
    h("td", { class: "num", "data-label": "Balance" }, tenant.balance),
    h("td", { class: "num", "data-label": "Keys" }, tenant.activeKeys),
    h("td", { class: "num", "data-label": "Spent, 30 days" }, activity ? activity.credits : 0),
    h("td", { "data-label": "Last active" }, activity ? activity.last : "–"),
  );
}

async function createTenant(event) {
  event.preventDefault();
  const box = $("tenant-error");
  clear(box);
  const name = $("tenant-name").value.trim();
  if (!name) {
    setText(box, "Enter a name for the new tenant.");
    $("tenant-name").focus();
    return;
  }
  await busy($("tenant-create"), async () => {
    try {
      await admin(`${A}/tenants`, { method: "POST", body: { name } });
    } catch (error) {
      failed(error, box);
      return;
    }
    $("tenant-name").value = "";
    announce(`Tenant ${name} created.`);
    await selectTenant(name);
  });
}

async function selectTenant(name, focus = true) {
  if (state.tenant !== name) setUsageKeys([]);
  state.tenant = name;
  history.replaceState(null, "", `#tenant=${enc(name)}`);
  show($("tenant"));
  show($("created"), false);
  $("tenant-title").textContent = name;
  await Promise.all([refreshTenant(), refreshTenants(), loadUsage().catch((e) => failed(e, $("usage-error")))]);
  if (focus) $("tenant-title").focus();
}

// Balance, keys and ledger of the selected tenant.
async function refreshTenant() {
  const name = state.tenant;
  if (!name) return;
  try {
    const [tenant, keys] = await Promise.all([
      admin(`${A}/tenants/${enc(name)}`),
      admin(`${A}/tenants/${enc(name)}/keys`),
    ]);
    $("tenant-balance").textContent = String(tenant.balance);
    renderKeys(keys.keys);
    setUsageKeys(keys.keys);
  } catch (error) {
    if (error instanceof AdminError && error.status === 404) {
      state.tenant = null;
      show($("tenant"), false);
      history.replaceState(null, "", location.pathname);
    }
    failed(error);
    return;
  }
  await refreshLedger(name);
}

async function refreshLedger(name) {
  const box = $("ledger-error");
  clear(box);
  try {
    const ledger = await admin(`${A}/tenants/${enc(name)}/ledger?limit=50`);
    $("ledger").replaceChildren(...ledger.entries.map(ledgerEntry));
    if (!ledger.entries.length) $("ledger").append(h("li", { class: "muted" }, "No entries yet."));
  } catch (error) {
    $("ledger").replaceChildren();
    failed(error, box);
  }
}

function ledgerEntry(entry) {
  const detail = [entry.note, entry.apiKeyPrefix ? `key ${entry.apiKeyPrefix}` : null].filter(Boolean).join(" · ");
  return h(
    "li",
    { class: `entry ${entry.kind}` },
    h("span", { class: "entry-kind" }, entry.kind),
    h("span", { class: "entry-note" }, detail),
    h("span", { class: "entry-amount" }, signed(entry.amount)),
    h("time", { datetime: entry.createdAt, class: "entry-time" }, formatDate(entry.createdAt)),
  );
}

function deselect() {
  state.tenant = null;
  setUsageKeys([]);
  history.replaceState(null, "", location.pathname);
  show($("tenant"), false);
  refreshTenants();
  loadUsage().catch((e) => failed(e, $("usage-error")));
  $("tenants-title").focus();
}

// --- credits ---------------------------------------------------------------

async function grant(event) {
  event.preventDefault();
  const box = $("grant-error");
  clear(box);
  const amount = wholeNumber($("grant-amount").value, 1);
  if (amount === null) {
    setText(box, "The amount must be a whole number of credits, 1 or more (for example 100).");
    $("grant-amount").focus();
    return;
  }
  const note = $("grant-note").value.trim();
  const body = { amount, ...(note ? { note } : {}) };
  await busy($("grant-submit"), async () => {
    let result;
    try {
      result = await admin(`${A}/tenants/${enc(state.tenant)}/credits`, { method: "POST", body });
    } catch (error) {
      failed(error, box);
      return;
    }
    $("grant-amount").value = "";
    $("grant-note").value = "";
    announce(`Granted ${result.granted} credits to ${result.tenant}; the balance is ${result.balance}.`);
    await Promise.all([refreshTenant(), refreshTenants()]);
  });
}

// --- audit -----------------------------------------------------------------

async function refreshAudit() {
  const button = $("audit-status");
  button.className = "audit-status";
  let report;
  try {
    report = await admin(`${A}/audit`);
  } catch (error) {
    if (error instanceof AdminError && error.status === 401) return failed(error);
    button.textContent = "Audit unavailable";
    button.classList.add("unknown");
    $("audit-detail").textContent = `The ledger audit could not be read: ${error.message}`;
    $("audit-problems").replaceChildren();
    return;
  }
  const count = report.problems.length;
  button.textContent = report.ok ? "Audit OK" : `Audit: ${count} problem${count === 1 ? "" : "s"}`;
  button.classList.add(report.ok ? "ok" : "bad");
  $("audit-detail").textContent = report.ok
    ? `Every balance and key spend matches the ledger (checked ${formatDate(report.checkedAt)}).`
    : `The ledger does not add up (checked ${formatDate(report.checkedAt)}). Run imagegate credits audit for details.`;
  $("audit-problems").replaceChildren(...report.problems.map((problem) => h("li", {}, problem)));
}

function toggleAudit() {
  const panel = $("audit-panel");
  show(panel, panel.hidden);
  $("audit-status").setAttribute("aria-expanded", String(!panel.hidden));
  if (!panel.hidden) $("audit-title").focus();
}

// --- wiring ----------------------------------------------------------------

function setup() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("tenant-form").addEventListener("submit", createTenant);
  $("grant-form").addEventListener("submit", grant);
  $("tenant-close").addEventListener("click", deselect);
  $("tenants-title").setAttribute("tabindex", "-1");
  $("audit-status").setAttribute("aria-expanded", "false");
  $("audit-status").addEventListener("click", toggleAudit);
  $("audit-run").addEventListener("click", () => busy($("audit-run"), refreshAudit));
  $("audit-title").setAttribute("tabindex", "-1");
  whenUnauthorized(signOut);
  const usage = () => loadUsage().catch((e) => failed(e, $("usage-error")));
  setupKeys({ changed: () => Promise.all([refreshTenant(), refreshTenants(), usage()]) });
  setupUsage();
  if (session.token) {
    start().catch((error) => failed(error));
  } else {
    show($("signin"));
    $("admin-token").focus();
  }
}

setup();

// A tenant's API keys: their policies, spend and last use; create, edit, rotate, revoke.

import { admin } from "./api.js";
import { A, announce, busy, clear, enc, failed, state, wholeNumber } from "./ui.js";
import { $, formatDate, h, setText, show } from "/dashboard/static/js/dom.js";

const PERIODS = { total: "in total", day: "per UTC day", month: "per UTC month" };
let catalog = [];
let changed = async () => {};
let editing = null; // the key being edited, or null when creating one
let confirmAction = null;
let opener = null;

export async function loadCatalog() {
  const listing = await admin("/admin/console/models");
  catalog = listing.models.map((model) => model.id);
  $("key-models").replaceChildren(
    ...catalog.map((id, index) =>
      h(
        "div",
        { class: "check" },
        h("input", { type: "checkbox", id: `key-model-${index}`, value: id, class: "key-model" }),
        h("label", { for: `key-model-${index}` }, id),
      ),
    ),
  );
  syncModelChoices();
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function limitText(key) {
  if (key.creditLimit === undefined) return null; // a gateway without key limits
  if (key.creditLimit === null) return `No limit · ${plural(key.spent ?? 0, "credit")} spent`;
  const period = PERIODS[key.limitPeriod] ?? key.limitPeriod;
  return `${key.spent} of ${plural(key.creditLimit, "credit")} ${period} spent · ${key.remaining} left`;
}

// Expiry in UTC, as the form takes it.
function utc(iso) {
  return `${new Date(iso).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function status(key) {
  if (key.revokedAt && new Date(key.revokedAt) <= new Date()) return ["revoked", "Revoked"];
  if (key.revokedAt) return ["ending", `Ends ${formatDate(key.revokedAt)}`];
  if (key.expiresAt && new Date(key.expiresAt) <= new Date()) return ["expired", "Expired"];
  return ["active", "Active"];
}

export function renderKeys(keys) {
  $("keys").replaceChildren(...keys.map(keyItem));
  show($("keys-empty"), keys.length === 0);
}

function fact(term, value) {
  return value === null || value === undefined ? null : [h("dt", {}, term), h("dd", {}, value)];
}

function keyItem(key) {
  const [kind, label] = status(key);
  const open = kind === "active" || kind === "ending";
  const models = key.models === undefined ? null : key.models === null ? "All models" : key.models.join(", ") || "None";
  const expires = key.expiresAt === undefined ? null : key.expiresAt ? utc(key.expiresAt) : "Never";
  const name = key.label ?? "No label";
  const actions = open
    ? h(
        "div",
        { class: "key-actions" },
        key.creditLimit !== undefined
          ? h("button", { type: "button", class: "button small", onclick: (e) => openEditor(key, e.currentTarget) }, "Edit", h("span", { class: "visually-hidden" }, ` key ${key.prefix}`))
          : null,
        key.creditLimit !== undefined
          ? h("button", { type: "button", class: "button small", onclick: (e) => askRotate(key, e.currentTarget) }, "Rotate", h("span", { class: "visually-hidden" }, ` key ${key.prefix}`))
          : null,
        h("button", { type: "button", class: "button small danger-ghost", onclick: (e) => askRevoke(key, e.currentTarget) }, "Revoke", h("span", { class: "visually-hidden" }, ` key ${key.prefix}`)),
      )
    : null;
  return h(
    "li",
    { class: `key ${kind}`, dataset: { prefix: key.prefix } },
    h(
      "div",
      { class: "key-head" },
      h("strong", { class: "key-label" }, name),
      h("code", {}, key.prefix),
      h("span", { class: `pill ${kind}` }, label),
    ),
    h(
      "dl",
      { class: "facts" },
      fact("Credits", limitText(key)),
      fact("Models", models),
      fact("Expires", expires),
      fact("Last used", key.lastUsedAt ? formatDate(key.lastUsedAt) : "Never"),
      fact("Created", formatDate(key.createdAt)),
      fact("Rotated from", key.rotatedFrom ?? null),
    ),
    actions,
  );
}

// --- the key form (create and edit) ----------------------------------------

function syncModelChoices() {
  const all = $("key-all-models").checked;
  for (const box of document.querySelectorAll(".key-model")) box.disabled = all;
}

function openDialog(dialog, from) {
  opener = from;
  dialog.showModal();
}

// Focus back where it was; a re-rendered key list has new buttons, so then its heading.
function closed() {
  if (opener?.isConnected) opener.focus();
  else if (opener) $("keys-title").focus();
  opener = null;
}

function openEditor(key, from) {
  editing = key;
  clear($("key-error"));
  $("key-dialog-title").textContent = key ? `Edit key ${key.prefix}` : "New key";
  $("key-save").textContent = key ? "Save changes" : "Create key";
  $("key-label").value = key?.label ?? "";
  $("key-limit").value = key?.creditLimit == null ? "" : String(key.creditLimit);
  $("key-period").value = key?.limitPeriod ?? "total";
  const models = key?.models ?? null;
  $("key-all-models").checked = models === null;
  for (const box of document.querySelectorAll(".key-model")) box.checked = models !== null && models.includes(box.value);
  syncModelChoices();
  // The datetime-local field holds UTC, as the hint says.
  $("key-expires").value = key?.expiresAt ? new Date(key.expiresAt).toISOString().slice(0, 16) : "";
  openDialog($("key-dialog"), from);
  $("key-label").focus();
}

// The form as the admin API's fields, or a sentence saying what to fix.
function readForm() {
  const label = $("key-label").value.trim();
  const rawLimit = $("key-limit").value.trim();
  const creditLimit = rawLimit === "" || rawLimit.toLowerCase() === "none" ? null : wholeNumber(rawLimit);
  if (rawLimit !== "" && rawLimit.toLowerCase() !== "none" && creditLimit === null) {
    return { problem: "The credit limit must be a whole number of credits (for example 50), or empty for no limit.", field: "key-limit" };
  }
  let models = null;
  if (!$("key-all-models").checked) {
    models = [...document.querySelectorAll(".key-model:checked")].map((box) => box.value);
    if (!models.length) return { problem: "Pick at least one model, or tick All models.", field: "key-all-models" };
  }
  const rawExpiry = $("key-expires").value;
  const expiresAt = rawExpiry ? `${rawExpiry.length === 16 ? `${rawExpiry}:00` : rawExpiry}Z` : null;
  if (expiresAt && Number.isNaN(Date.parse(expiresAt))) {
    return { problem: "The expiry is not a date and time. Pick one, or leave it empty for never.", field: "key-expires" };
  }
  return { body: { label: label || null, creditLimit, limitPeriod: $("key-period").value, models, expiresAt } };
}

async function saveKey(event) {
  event.preventDefault();
  const box = $("key-error");
  clear(box);
  const form = readForm();
  if (form.problem) {
    setText(box, form.problem);
    $(form.field).focus();
    return;
  }
  const tenant = state.tenant;
  await busy($("key-save"), async () => {
    let result;
    try {
      if (editing) {
        const body = { ...form.body };
        if (body.label === null) delete body.label; // an empty field keeps the label
        result = await admin(`${A}/keys/${enc(editing.prefix)}`, { method: "PATCH", body });
      } else {
        // Only what was set: a gateway without key policies still creates a labelled key.
        const body = Object.fromEntries(Object.entries(form.body).filter(([, value]) => value !== null));
        if (body.creditLimit === undefined) delete body.limitPeriod;
        result = await admin(`${A}/tenants/${enc(tenant)}/keys`, { method: "POST", body });
      }
    } catch (error) {
      failed(error, box);
      return;
    }
    if (editing) announce(`Key ${result.prefix} saved.`);
    else showCreated(result, "created");
    $("key-dialog").close();
    await changed();
  });
}

// The plaintext of a new key, once, with a copy button.
function showCreated(created, verb) {
  $("created-prefix").textContent = created.prefix;
  $("created-note").textContent = `Key ${verb}. This is the only time it is shown: copy it now (the gateway keeps only a hash).`;
  $("created-key").value = created.key;
  show($("created"));
  announce(`Key ${created.prefix} ${verb}. Copy it now; it is shown once.`);
  opener = $("created-copy"); // focused when the dialog has closed

}

async function copyKey() {
  const input = $("created-key");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    // No clipboard API (plain http on another host): select it for Ctrl+C instead.
    input.select();
    announce("Copying was not allowed here: the key is selected, press Ctrl+C (or ⌘C).");
    return;
  }
  announce("Key copied to the clipboard.");
}

function hideCreated() {
  $("created-key").value = "";
  show($("created"), false);
}

function forgetCreated() {
  hideCreated();
  $("key-new").focus();
}

// --- rotate and revoke -----------------------------------------------------

function ask({ title, text, yes, grace, action, from }) {
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = yes;
  $("confirm-grace").value = "0";
  show($("confirm-grace-field"), grace);
  clear($("confirm-error"));
  confirmAction = action;
  openDialog($("confirm"), from);
  (grace ? $("confirm-grace") : $("confirm-no")).focus();
}

function askRotate(key, from) {
  ask({
    title: `Rotate key ${key.prefix}?`,
    text: "A new key gets this key's label, limit, spend, models and expiry. The old one is revoked, at once or after the grace period.",
    yes: "Rotate key",
    grace: true,
    from,
    action: async () => {
      const graceSeconds = wholeNumber($("confirm-grace").value);
      if (graceSeconds === null) throw new Error("The grace period must be a whole number of seconds (0 revokes the old key at once).");
      const created = await admin(`${A}/keys/${enc(key.prefix)}/rotate`, { method: "POST", body: { graceSeconds } });
      showCreated(created, `rotated from ${key.prefix}`);
    },
  });
}

function askRevoke(key, from) {
  ask({
    title: `Revoke key ${key.prefix}?`,
    text: "Requests with this key are refused from now on. This cannot be undone.",
    yes: "Revoke key",
    grace: false,
    from,
    action: async () => {
      await admin(`${A}/keys/${enc(key.prefix)}/revoke`, { method: "POST" });
      announce(`Key ${key.prefix} revoked.`);
      if ($("created-prefix").textContent === key.prefix) hideCreated();
    },
  });
}

async function confirmed() {
  const box = $("confirm-error");
  clear(box);
  await busy($("confirm-yes"), async () => {
    try {
      await confirmAction();
    } catch (error) {
      if (error.status === undefined) setText(box, error.message);
      else failed(error, box);
      return;
    }
    $("confirm").close();
    await changed();
  });
}

export function setupKeys(hooks) {
  changed = hooks.changed;
  $("key-new").addEventListener("click", (event) => openEditor(null, event.currentTarget));
  $("key-form").addEventListener("submit", saveKey);
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("key-all-models").addEventListener("change", syncModelChoices);
  $("key-dialog").addEventListener("close", closed);
  $("confirm").addEventListener("close", closed);
  $("confirm-yes").addEventListener("click", confirmed);
  $("confirm-no").addEventListener("click", () => $("confirm").close());
  $("created-copy").addEventListener("click", copyKey);
  $("created-done").addEventListener("click", forgetCreated);
}

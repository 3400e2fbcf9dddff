// What every part of the console shares: the selected tenant, errors shown in plain words,
// busy buttons and announcements.

import { AdminError } from "./api.js";
import { $, setText, toast } from "/dashboard/static/js/dom.js";

export const A = "/admin/v1";
export const enc = encodeURIComponent;

export const state = { tenant: null };

let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

// Errors of the page as a whole (a failed refresh); forms show theirs beside them.
export function failed(error, box = $("error")) {
  if (error instanceof AdminError && error.status === 401) {
    onUnauthorized("The admin token is no longer accepted. Sign in again.");
    return;
  }
  if (!(error instanceof AdminError)) console.error(error);
  setText(box, error instanceof AdminError ? error.message : "Something went wrong in the console. Reload the page.");
}

export function clear(...boxes) {
  for (const box of boxes) setText(box, "");
}

export function announce(message) {
  $("status").textContent = message;
  toast(message);
}

// A button disabled while its request runs, so a double click does not send twice.
export async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

// A whole number typed by the operator, or null when it is not one.
export function wholeNumber(raw, minimum = 0) {
  const text = raw.trim();
  if (!/^[0-9]{1,15}$/.test(text)) return null;
  const value = Number(text);
  return value >= minimum ? value : null;
}

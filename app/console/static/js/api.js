// Talking to the admin API: the token from this tab's sessionStorage, errors in plain words.

const TOKEN_STORAGE = "imagegate.adminToken";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_STORAGE);
  },
  save(token) {
    sessionStorage.setItem(TOKEN_STORAGE, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_STORAGE);
  },
};

export class AdminError extends Error {
  constructor(status, code, message, body = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

const NETWORK = "Could not reach the gateway: the network is down or the gateway is not running. Check your connection and try again.";

async function send(path, { method = "GET", body, token = session.token, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    return await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new AdminError(0, "network", NETWORK);
  }
}

async function failure(response) {
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return new AdminError(response.status, data?.code ?? "http_error", plainWords(response.status, data), data);
}

// JSON from /admin/v1 (or the console's own model list).
export async function admin(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await failure(response);
  try {
    return await response.json();
  } catch {
    throw new AdminError(response.status, "bad_body", "The gateway sent an answer the console could not read. Reload the page and retry.");
  }
}

// A file from the admin API (CSV), as a Blob.
export async function adminFile(path) {
  const response = await send(path, { accept: "text/csv" });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

// The admin API's own message where it has one (it names the field that was wrong).
export function plainWords(status, data) {
  const message = typeof data?.error === "string" ? data.error : null;
  if (status === 401) {
    return "The admin token was not accepted: it may be mistyped, or the gateway was restarted with another IMAGEGATE_ADMIN_TOKEN.";
  }
  // FastAPI's own 404 for a path it does not serve: an admin API older than the console.
  if (status === 404 && (!message || message === "Not Found")) {
    return "This gateway does not offer this yet (HTTP 404): its admin API is older than the console.";
  }
  if (status === 429) return "Too many requests right now. Wait a moment and retry.";
  if (status >= 500) {
    const detail = message ? ` (${message})` : "";
    return `The gateway failed (HTTP ${status})${detail}. Retry shortly; the gateway's log says more.`;
  }
  return message ?? `The gateway refused this (HTTP ${status}).`;
}

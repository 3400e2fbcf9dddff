// Talking to the gateway: the key from this tab's sessionStorage, errors in plain words.

const KEY_STORAGE = "imagegate.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_STORAGE);
  },
  save(key) {
    sessionStorage.setItem(KEY_STORAGE, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_STORAGE);
  },
};

export class ApiError extends Error {
  constructor(status, code, message, body = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

// Listeners told when a response says the providers are emulated.
const emulatedListeners = [];
export function onEmulated(listener) {
  emulatedListeners.push(listener);
}

export async function api(path, { method = "GET", body, key = session.key } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "Could not reach the gateway. Check your connection and try again.");
  }
  if (response.headers.get("x-imagegate-emulated") === "true") {
    emulatedListeners.forEach((listener) => listener());
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.code ?? "http_error", plainWords(response, data), data);
  }
  return data;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

// What went wrong, said so that someone who never read the API docs understands it.
export function plainWords(response, data) {
  const status = response.status;
  const message = typeof data?.error === "string" ? data.error : null;
  switch (status) {
    case 401:
      return "This API key was not accepted: it may be mistyped or revoked.";
    case 402: {
      const required = Number(data?.required);
      const available = Number(data?.available);
      if (Number.isFinite(required) && Number.isFinite(available)) {
        return `Not enough credits: this needs ${plural(required, "credit")}, you have ${available}. Nothing was charged.`;
      }
      return message ?? "Not enough credits for this request. Nothing was charged.";
    }
    case 429: {
      const seconds = Number.parseInt(response.headers.get("retry-after") ?? "", 10);
      if (Number.isFinite(seconds)) {
        return `Too many requests right now. Retry in ${plural(Math.max(seconds, 1), "second")}.`;
      }
      return "Too many requests right now. Wait a moment and retry.";
    }
    case 413:
      return message ?? "That request is too large. Try a smaller source image.";
    case 500:
      return message ?? "Generation failed and nothing was charged. Retry or pick another model.";
    case 503:
      return message ?? "The gateway is unavailable right now. Retry shortly.";
    default:
      return message ?? `The gateway answered with an error (HTTP ${status}).`;
  }
}

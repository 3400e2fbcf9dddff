// Small DOM and formatting helpers (no framework, no inline HTML strings).

export const $ = (id) => document.getElementById(id);

// h("button", { class: "x", type: "button", onclick: fn }, "text", child...)
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function show(element, visible = true) {
  element.hidden = !visible;
}

export function setText(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

// Present the natural shape before the pixels arrive.
export function setShape(element, width, height) {
  element.style.setProperty("--w", String(width));
  element.style.setProperty("--h", String(height));
  element.style.setProperty("--r", String(width / height));
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export function formatDate(iso) {
  return dateFormat.format(new Date(iso));
}

export function signed(amount) {
  return amount > 0 ? `+${amount}` : amount < 0 ? `−${Math.abs(amount)}` : "0";
}

// "google/gemini-3-pro-image" -> "gemini-3-pro-image"
export function modelName(id) {
  return id.split("/").slice(1).join("/") || id;
}

const PROVIDER_NAMES = { google: "Google", openai: "OpenAI", bfl: "Black Forest Labs" };
export function providerName(provider) {
  return PROVIDER_NAMES[provider] ?? provider;
}

let toastTimer = 0;
export function toast(message) {
  const element = $("toast");
  element.textContent = message;
  element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    element.hidden = true;
  }, 3500);
}

// The history: a justified gallery at true shapes, a large view, download and delete.

import { api } from "./api.js";
import { $, formatBytes, formatDate, h, modelName, setShape, setText, show, toast } from "./dom.js";

const PAGE_SIZE = 24;
const EMPTY_TEXT = "No images yet. Write a prompt and press Generate: your images appear here.";

const state = {
  items: new Map(), // id -> item
  nextCursor: null,
  model: "",
  current: null, // the item in the viewer
  opener: null, // the element focus returns to
  hooks: null,
  loading: 0,
};

export function setupGallery(hooks) {
  state.hooks = hooks;
  $("load-more").addEventListener("click", () => loadPage(false));
  $("gallery-filter").addEventListener("change", (event) => {
    state.model = event.target.value;
    reloadGallery();
  });
  const viewer = $("viewer");
  $("viewer-close").addEventListener("click", () => viewer.close());
  // A click on the backdrop (the dialog itself, outside its body) closes it too.
  viewer.addEventListener("click", (event) => {
    if (event.target === viewer) viewer.close();
  });
  viewer.addEventListener("close", () => {
    state.current = null;
    $("viewer-img").removeAttribute("src");
    const opener = state.opener;
    state.opener = null;
    if (opener?.isConnected) opener.focus();
    else $("gallery-title").focus();
  });
  $("viewer-delete").addEventListener("click", () => {
    show($("viewer-actions"), false);
    show($("viewer-confirm"));
    $("cancel-delete").focus();
  });
  $("cancel-delete").addEventListener("click", () => {
    resetConfirm();
    $("viewer-delete").focus();
  });
  $("confirm-delete").addEventListener("click", deleteCurrent);
}

export function setModels(models) {
  const select = $("gallery-filter");
  select.replaceChildren(
    h("option", { value: "" }, "All models"),
    ...models.map((model) => h("option", { value: model.id }, modelName(model.id))),
  );
  select.value = state.model;
}

export function reloadGallery() {
  state.items.clear();
  state.nextCursor = null;
  $("gallery").replaceChildren();
  return loadPage(true);
}

export function findItem(generationId, index) {
  for (const item of state.items.values()) {
    if (item.generationId === generationId && item.index === index) return item;
  }
  return null;
}

async function loadPage(first) {
  const ticket = ++state.loading;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (!first && state.nextCursor) params.set("cursor", state.nextCursor);
  if (state.model) params.set("model", state.model);
  const gallery = $("gallery");
  gallery.setAttribute("aria-busy", "true");
  $("load-more").disabled = true;
  try {
    const page = await api(`/api/v1/images?${params}`);
    if (ticket !== state.loading) return; // a newer load (another filter) won
    for (const item of page.items) {
      state.items.set(item.id, item);
      gallery.append(tile(item));
    }
    state.nextCursor = page.nextCursor;
    show($("load-more"), page.hasMore);
    showEmpty();
  } catch (error) {
    state.hooks.onFailed(error);
  } finally {
    gallery.setAttribute("aria-busy", "false");
    $("load-more").disabled = false;
  }
}

function tile(item) {
  const image = h("img", {
    src: item.url,
    alt: "",
    width: item.width,
    height: item.height,
    loading: "lazy",
    decoding: "async",
  });
  const button = h(
    "button",
    {
      type: "button",
      class: "tile",
      "aria-label": `Open image: ${item.prompt}`,
      dataset: { id: item.id },
      onclick: (event) => openViewer(item, event.currentTarget),
    },
    image,
    h(
      "span",
      { class: "tile-caption", "aria-hidden": "true" },
      h("span", { class: "tile-prompt" }, item.prompt),
      h("span", { class: "tile-meta" }, `${modelName(item.model)} · ${item.aspectRatio}`),
    ),
  );
  setShape(button, item.width, item.height);
  return button;
}

export function openViewer(item, opener) {
  state.current = item;
  state.opener = opener ?? null;
  resetConfirm();
  setText($("viewer-error"), "");
  const image = $("viewer-img");
  image.src = item.url;
  image.alt = item.prompt;
  image.width = item.width;
  image.height = item.height;
  $("viewer-title").textContent = modelName(item.model);
  $("viewer-prompt").textContent = item.prompt;
  const rows = [
    ["Size", `${item.width} × ${item.height}`],
    ["Aspect ratio", item.aspectRatio],
    ["Style", item.stylePreset],
    ["File", `WebP · ${formatBytes(item.fileSize)}`],
    ["Created", formatDate(item.createdAt)],
  ];
  if (item.imageToImage) rows.push(["Source", "image-to-image"]);
  $("viewer-meta").replaceChildren(
    ...rows.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
  const download = $("viewer-download");
  download.href = item.url;
  download.download = `imagegate-${item.id}.webp`;
  const viewer = $("viewer");
  if (!viewer.open) viewer.showModal();
  $("viewer-close").focus();
}

function resetConfirm() {
  show($("viewer-actions"));
  show($("viewer-confirm"), false);
}

async function deleteCurrent() {
  const item = state.current;
  if (!item) return;
  const button = $("confirm-delete");
  button.disabled = true;
  try {
    await api(`/api/v1/images/${encodeURIComponent(item.id)}`, { method: "DELETE" });
  } catch (error) {
    // Already gone (another tab deleted it): drop it here as well.
    if (error.status !== 404) {
      setText($("viewer-error"), error.message);
      button.disabled = false;
      return;
    }
  }
  button.disabled = false;
  removeItem(item);
  state.hooks.onDeleted(item);
  $("viewer").close();
  toast("Image deleted");
}

function removeItem(item) {
  state.items.delete(item.id);
  const gallery = $("gallery");
  const element = gallery.querySelector(`[data-id="${CSS.escape(item.id)}"]`);
  if (element) {
    // Hand focus to a neighbour, so keyboard users keep their place.
    state.opener = element.nextElementSibling ?? element.previousElementSibling ?? null;
    element.remove();
  }
  showEmpty();
}

function showEmpty() {
  const empty = $("gallery-empty");
  if (state.model) empty.textContent = `No images made with ${modelName(state.model)}.`;
  else empty.replaceChildren(EMPTY_TEXT);
  show(empty, state.items.size === 0);
}

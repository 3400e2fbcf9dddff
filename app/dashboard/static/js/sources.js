// Source images for image-to-image: picked or dropped, one or several (up to the chosen
// model's maxReferenceImages from /api/v1/models), each shown as a thumbnail with its own
// Remove button. Sent as `sourceImage` (one) or `sourceImages` (several).

import { $, formatBytes, h, modelName, setText, show } from "./dom.js";

const MAX_SOURCE_BYTES = 10 * 1024 * 1024;
const SOURCE_TYPES = ["image/png", "image/jpeg", "image/webp"];

const state = {
  sources: [], // [{ dataUrl, name, size }] in the order they are sent
  limit: 1, // what the chosen model takes (1 when it takes none: the zone is marked unsupported)
  model: null,
};

export function setupSources() {
  const input = $("source-file");
  const zone = $("dropzone");
  input.addEventListener("change", () => {
    addFiles([...(input.files ?? [])]);
    input.value = ""; // picking the same file again still fires "change"
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles([...(event.dataTransfer?.files ?? [])]);
  });
}

// The chosen model changed: how many images it takes, and what the zone says.
export function setSourceModel(model) {
  state.model = model;
  state.limit = Math.max(1, model?.maxReferenceImages ?? 1);
  const several = state.limit > 1;
  $("source-file").multiple = several;
  $("source-title").textContent = several ? "Source images" : "Source image";
  $("source-choose").textContent = several ? "Choose images" : "Choose an image";
  $("source-hint").textContent = several
    ? `PNG, JPEG or WebP up to 10 MB each; ${modelName(model.id)} takes up to ${state.limit}`
    : "PNG, JPEG or WebP up to 10 MB, for image-to-image";
  render();
}

// The data URLs to send, in order.
export function sourceImages() {
  return state.sources.filter((source) => source.dataUrl !== null).map((source) => source.dataUrl);
}

// Why the chosen model cannot take the images chosen, or null.
export function sourceProblem(model) {
  const count = state.sources.length;
  if (!count) return null;
  if (!model.imageToImage) {
    return `${modelName(model.id)} cannot start from a source image. Remove it or pick another model.`;
  }
  const limit = model.maxReferenceImages ?? 1;
  if (count > limit) {
    return `${modelName(model.id)} takes at most ${limit} source image${limit === 1 ? "" : "s"}; you chose ${count}. Remove some or pick another model.`;
  }
  return null;
}

function addFiles(files) {
  const error = $("source-error");
  setText(error, "");
  if (!files.length) return;
  if (state.limit === 1) {
    files = files.slice(0, 1);
    state.sources = []; // one image: a new one replaces it
  }
  const room = state.limit - state.sources.length;
  if (files.length > room) {
    setText(
      error,
      `${modelName(state.model?.id ?? "")} takes at most ${state.limit} source images; ${files.length - Math.max(room, 0)} not added.`,
    );
    files = files.slice(0, Math.max(room, 0));
  }
  for (const file of files) {
    if (!SOURCE_TYPES.includes(file.type)) {
      setText(error, `${file.name}: a source image must be a PNG, JPEG or WebP file.`);
      continue;
    }
    if (file.size > MAX_SOURCE_BYTES) {
      setText(error, `${file.name} is ${formatBytes(file.size)}; the limit is 10 MB.`);
      continue;
    }
    // A slot now, filled when the file is read, so the order is the order chosen.
    const source = { dataUrl: null, name: file.name, size: file.size };
    state.sources.push(source);
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      source.dataUrl = String(reader.result);
      render();
    });
    reader.addEventListener("error", () => {
      remove(source);
      setText(error, `${file.name} could not be read.`);
    });
    reader.readAsDataURL(file);
  }
}

function remove(source) {
  state.sources = state.sources.filter((item) => item !== source);
  render();
}

function render() {
  const ready = state.sources.filter((source) => source.dataUrl !== null);
  const list = $("source-preview");
  list.replaceChildren(
    ...ready.map((source, index) =>
      h(
        "li",
        { class: "source-item" },
        h("img", { src: source.dataUrl, alt: `Source image ${index + 1}: ${source.name}` }),
        h(
          "div",
          { class: "source-info" },
          h("span", { class: "source-name" }, source.name),
          h("span", { class: "hint" }, formatBytes(source.size)),
          h(
            "button",
            {
              type: "button",
              class: "button small ghost",
              "aria-label": `Remove ${source.name}`,
              onclick: () => {
                remove(source);
                $("source-file").focus();
              },
            },
            "Remove",
          ),
        ),
      ),
    ),
  );
  show(list, ready.length > 0);
  // Room for more: the zone still takes a pick or a drop.
  show($("dropzone-label"), state.sources.length < state.limit);
  $("source-count").textContent = state.limit > 1 && ready.length ? `${ready.length} of ${state.limit}` : "";
}

// The generate form: prompt, model, image size, aspect ratio, preset, count, source images;
// progress.

import { api } from "./api.js";
import { $, h, modelName, providerName, setShape, setText, show } from "./dom.js";
import { setSourceModel, setupSources, sourceImages, sourceProblem } from "./sources.js";

export const RATIOS = [
  ["1:1", "Square"],
  ["16:9", "Wide"],
  ["9:16", "Tall"],
  ["4:3", "Landscape"],
  ["3:4", "Portrait"],
  ["21:9", "Ultra-wide"],
  ["9:21", "Ultra-tall"],
];
const MAX_PROMPT = 4000;

const state = {
  models: new Map(),
  presets: new Map(),
  balance: null,
  busy: false,
  hooks: null,
};

export function setupComposer(hooks) {
  state.hooks = hooks;
  renderRatios();
  renderCounts();
  const prompt = $("prompt");
  prompt.addEventListener("input", () => {
    $("prompt-count").textContent = `${prompt.value.length} / ${MAX_PROMPT}`;
  });
  // Ctrl/Cmd+Enter generates from anywhere in the form.
  $("generate-form").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.metaKey || event.ctrlKey)) {
      event.preventDefault();
      $("generate-form").requestSubmit();
    }
  });
  $("model").addEventListener("change", () => {
    describeModel();
    updateCost();
  });
  $("image-size").addEventListener("change", () => {
    describeSize();
    updateCost();
  });
  $("preset").addEventListener("change", describePreset);
  $("counts").addEventListener("change", updateCost);
  setupSources();
  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
}

export function setCatalog({ models, defaultModel }, { presets, defaultPreset }) {
  state.models = new Map(models.map((model) => [model.id, model]));
  const select = $("model");
  select.replaceChildren();
  const byProvider = new Map();
  for (const model of models) {
    if (!byProvider.has(model.provider)) byProvider.set(model.provider, []);
    byProvider.get(model.provider).push(model);
  }
  for (const [provider, group] of byProvider) {
    select.append(
      h(
        "optgroup",
        { label: providerName(provider) },
        group.map((model) =>
          h(
            "option",
            { value: model.id, disabled: !model.configured },
            `${modelName(model.id)} · ${priceRange(model)} credits${model.configured ? "" : " · not configured"}`,
          ),
        ),
      ),
    );
  }
  const usable = models.find((model) => model.id === defaultModel && model.configured)
    ?? models.find((model) => model.configured);
  if (usable) select.value = usable.id;
  describeModel();

  state.presets = new Map(presets.map((preset) => [preset.id, preset]));
  $("preset").replaceChildren(
    ...presets.map((preset) => h("option", { value: preset.id }, preset.id)),
  );
  $("preset").value = defaultPreset;
  describePreset();
  updateCost();
}

export function setBalance(balance) {
  state.balance = balance;
  updateCost();
}

function selectedModel() {
  return state.models.get($("model").value) ?? null;
}

function selectedSize() {
  return $("image-size").value || "1K";
}

// The credits one image costs at `size` (the catalog prices each size the model offers).
function sizePrice(model, size) {
  return model.prices?.[size] ?? model.price;
}

function priceRange(model) {
  const prices = Object.values(model.prices ?? { "1K": model.price });
  const low = Math.min(...prices);
  const high = Math.max(...prices);
  return low === high ? `${low}` : `${low}–${high}`;
}

function selectedCount() {
  return Number($("counts").querySelector("input:checked")?.value ?? 1);
}

function selectedRatio() {
  return $("ratios").querySelector("input:checked")?.value ?? "1:1";
}

function renderRatios() {
  const container = $("ratios");
  for (const [ratio, label] of RATIOS) {
    const [width, height] = ratio.split(":").map(Number);
    const id = `ratio-${ratio.replace(":", "-")}`;
    const shape = h("span", { class: "shape", "aria-hidden": "true" });
    // Fit the shape in a 34 px square, true to the ratio.
    const scale = 34 / Math.max(width, height);
    shape.style.width = `${Math.round(width * scale)}px`;
    shape.style.height = `${Math.round(height * scale)}px`;
    container.append(
      h("input", {
        type: "radio",
        name: "aspectRatio",
        id,
        value: ratio,
        class: "visually-hidden",
        checked: ratio === "1:1",
      }),
      h(
        "label",
        { for: id, class: "ratio" },
        h("span", { class: "shape-box" }, shape),
        h("span", { class: "ratio-name" }, ratio),
        h("span", { class: "ratio-label" }, label),
      ),
    );
  }
}

function renderCounts() {
  const container = $("counts");
  for (const count of [1, 2, 3, 4]) {
    const id = `count-${count}`;
    container.append(
      h("input", {
        type: "radio",
        name: "numImages",
        id,
        value: count,
        class: "visually-hidden",
        checked: count === 1,
      }),
      h("label", { for: id }, String(count)),
    );
  }
}

function describeModel() {
  const model = selectedModel();
  if (!model) {
    setText($("model-hint"), "No model is configured on this gateway.");
    $("image-size").replaceChildren();
    return;
  }
  renderSizes(model);
  describeSize(model);
  setSourceModel(model);
}

// The hint under the model: its description and the price at the chosen size.
function describeSize(model = selectedModel()) {
  if (!model) return;
  const size = selectedSize();
  const price = `${sizePrice(model, size)} credits per image${model.sizes?.length > 1 ? ` at ${size}` : ""}`;
  const parts = [model.description, price];
  if (model.imageToImage) {
    const limit = model.maxReferenceImages ?? 1;
    parts.push(limit > 1 ? `image-to-image, up to ${limit} source images` : "image-to-image");
  }
  $("model-hint").textContent = parts.filter(Boolean).join(" · ");
  $("dropzone").classList.toggle("unsupported", !model.imageToImage);
}

// The sizes the chosen model offers, each with its price; keeps the size chosen before
// where the new model has it, else 1K.
function renderSizes(model) {
  const select = $("image-size");
  const previous = select.value;
  const sizes = model.sizes?.length ? model.sizes : ["1K"];
  select.replaceChildren(
    ...sizes.map((size) => h("option", { value: size }, `${size} · ${sizePrice(model, size)} credits`)),
  );
  select.value = sizes.includes(previous) ? previous : "1K";
  select.disabled = sizes.length === 1;
}

function describePreset() {
  const preset = state.presets.get($("preset").value);
  $("preset-hint").textContent = preset?.description ?? "";
}

function updateCost() {
  const model = selectedModel();
  const cost = $("cost");
  if (!model) {
    cost.replaceChildren();
    return;
  }
  const count = selectedCount();
  const price = sizePrice(model, selectedSize());
  const total = price * count;
  const short = state.balance !== null && total > state.balance;
  cost.classList.toggle("short", short);
  cost.replaceChildren(
    h("span", {}, count > 1 ? `${count} × ${price} = ` : "Costs ", h("strong", {}, `${total} credits`)),
    state.balance === null
      ? null
      : h("span", { class: "muted" }, short ? `You have ${state.balance}, not enough` : `You have ${state.balance}`),
  );
}

async function generate() {
  if (state.busy) return;
  const { hooks } = state;
  const prompt = $("prompt").value.trim();
  const model = selectedModel();
  hooks.clearError();
  if (!prompt) {
    hooks.showError("Write a prompt first: describe the image you want.");
    $("prompt").focus();
    return;
  }
  if (!model) {
    hooks.showError("No model is configured on this gateway.");
    return;
  }
  const problem = sourceProblem(model);
  if (problem) {
    hooks.showError(problem);
    return;
  }
  const body = {
    prompt,
    model: model.id,
    aspectRatio: selectedRatio(),
    imageSize: selectedSize(),
    numImages: selectedCount(),
    stylePreset: $("preset").value,
  };
  const sources = sourceImages();
  if (sources.length === 1) body.sourceImage = sources[0];
  else if (sources.length > 1) body.sourceImages = sources;

  setBusy(true, body);
  let result;
  try {
    result = await api("/api/v1/generate-image", { method: "POST", body });
  } catch (error) {
    setBusy(false);
    hooks.onFailed(error, body);
    return;
  }
  setBusy(false);
  hooks.onGenerated(result, body);
}

let ticker = 0;
function setBusy(busy, body) {
  state.busy = busy;
  $("compose-fields").disabled = busy;
  const button = $("generate");
  button.disabled = busy;
  button.classList.toggle("busy", busy);
  button.querySelector(".button-text").textContent = busy ? "Generating…" : "Generate";
  show($("progress"), busy);
  clearInterval(ticker);
  if (!busy) return;
  const count = body.numImages;
  $("progress-title").textContent = `Generating ${count} image${count === 1 ? "" : "s"} with ${modelName(body.model)} · ${body.aspectRatio} · ${body.imageSize}${body.stylePreset === "none" ? "" : ` · ${body.stylePreset}`}`;
  const started = Date.now();
  const elapsed = $("progress-elapsed");
  elapsed.textContent = "0 s";
  ticker = setInterval(() => {
    elapsed.textContent = `${Math.round((Date.now() - started) / 1000)} s`;
  }, 1000);
  state.hooks.onStarted(body);
}

// Placeholders at the requested shape while the images are made.
export function placeholders(body) {
  const [width, height] = body.aspectRatio.split(":").map(Number);
  return Array.from({ length: body.numImages }, () => {
    const box = h("div", { class: "result placeholder", "aria-hidden": "true" });
    setShape(box, width, height);
    return box;
  });
}

// Dashboard → Images: sign in, credits, and wiring the form to the gallery.

import { api, onEmulated, session } from "./api.js";
import { placeholders, setBalance, setCatalog, setupComposer } from "./compose.js";
import { $, formatDate, h, setShape, setText, show, signed, toast } from "./dom.js";
import { findItem, openViewer, reloadGallery, setModels, setupGallery } from "./gallery.js";

function showError(message) {
  const box = $("error");
  box.replaceChildren(h("span", {}, message));
  show(box);
}

function clearError() {
  show($("error"), false);
}

function failed(error) {
  if (error.status === 401) {
    signOut("Your API key is no longer accepted. Sign in again.");
    return;
  }
  showError(error.message);
}

// --- credits ---------------------------------------------------------------

async function refreshCredits() {
  const credits = await api("/api/v1/credits?limit=12");
  renderBalance(credits.balance);
  $("ledger").replaceChildren(
    ...credits.entries.map((entry) =>
      h(
        "li",
        { class: `entry ${entry.kind}` },
        h("span", { class: "entry-kind" }, entry.kind),
        h("span", { class: "entry-note" }, entry.note ?? ""),
        h("span", { class: "entry-amount" }, signed(entry.amount)),
        h("time", { datetime: entry.createdAt, class: "entry-time" }, formatDate(entry.createdAt)),
      ),
    ),
  );
  if (!credits.entries.length) $("ledger").append(h("li", { class: "muted" }, "No activity yet."));
  return credits;
}

function renderBalance(balance) {
  $("balance").textContent = String(balance);
  $("credits").classList.toggle("low", balance === 0);
  setBalance(balance);
}

// --- results ---------------------------------------------------------------

function onStarted(body) {
  clearError();
  const grid = $("latest-grid");
  grid.replaceChildren(...placeholders(body));
  grid.dataset.count = String(body.numImages);
  setText($("latest-note"), "");
  show($("latest"));
  setText($("status"), "Generating…");
  revealOnNarrowScreens($("progress"));
}

// When the form and the results are stacked (phones), bring the results into view.
function revealOnNarrowScreens(element) {
  if (window.matchMedia("(max-width: 900px)").matches) {
    element.scrollIntoView({ behavior: "smooth", block: "start" });
  }
}

async function onGenerated(result, body) {
  const grid = $("latest-grid");
  grid.dataset.count = String(result.images.length);
  grid.replaceChildren(...result.images.map((image) => resultFigure(image, result.id, body)));
  const notes = [`${result.creditsCharged} credits charged`];
  if (result.failures?.length) {
    notes.push(`${result.failures.length} of ${body.numImages} failed and were not charged: ${result.failures[0].error}`);
  }
  setText($("latest-note"), notes.join(" · "));
  renderBalance(result.creditsRemaining);
  const count = result.images.length;
  setText($("status"), `${count} image${count === 1 ? "" : "s"} ready.`);
  toast(`${count} image${count === 1 ? "" : "s"} ready · ${result.creditsCharged} credits`);
  revealOnNarrowScreens($("latest"));
  await Promise.allSettled([refreshCredits(), reloadGallery()]);
}

function resultFigure(image, generationId, body) {
  const img = h("img", {
    src: image.url,
    alt: body.prompt,
    width: image.width,
    height: image.height,
  });
  const open = h(
    "button",
    {
      type: "button",
      class: "result",
      "aria-label": `Open image ${image.index + 1}: ${body.prompt}`,
      dataset: { generationId, index: String(image.index) },
      onclick: (event) => {
        const item = findItem(generationId, image.index);
        if (item) openViewer(item, event.currentTarget);
      },
    },
    img,
    h("span", { class: "result-size" }, `${image.width} × ${image.height}`),
  );
  setShape(open, image.width, image.height);
  return open;
}

function onFailed(error, body) {
  if (body) {
    $("latest-grid").replaceChildren();
    show($("latest"), false);
    setText($("status"), "");
  }
  failed(error);
  revealOnNarrowScreens($("error"));
  // A 402 or a refund changes nothing, but the balance may have moved elsewhere.
  if (error.status !== 401) refreshCredits().catch(() => {});
}

function onDeleted(item) {
  const grid = $("latest-grid");
  // Signed URLs differ per answer, so match the image by its generation and index.
  for (const figure of grid.querySelectorAll(".result")) {
    const { generationId, index } = figure.dataset;
    if (generationId === item.generationId && Number(index) === item.index) figure.remove();
  }
  if (!grid.children.length) show($("latest"), false);
}

// --- sign in and out -------------------------------------------------------

async function enter() {
  show($("signin"), false);
  show($("workspace"));
  show($("account"));
  const [models, presets] = await Promise.all([api("/api/v1/models"), api("/api/v1/presets")]);
  setCatalog(models, presets);
  setModels(models.models);
  await Promise.all([refreshCredits(), reloadGallery()]);
}

function signOut(message = "") {
  session.clear();
  show($("workspace"), false);
  show($("account"), false);
  $("credits").open = false;
  show($("signin"));
  setText($("signin-error"), message);
  $("api-key").value = "";
  $("api-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  const error = $("signin-error");
  if (!key) {
    setText(error, "Paste your API key to sign in.");
    return;
  }
  const button = $("signin-submit");
  button.disabled = true;
  try {
    await api("/api/v1/credits?limit=1", { key });
    session.save(key);
    $("api-key").value = "";
    setText(error, "");
    await enter();
    $("prompt").focus();
  } catch (failure) {
    setText(error, failure.message);
  } finally {
    button.disabled = false;
  }
}

async function start() {
  setupComposer({ onStarted, onGenerated, onFailed, showError, clearError });
  setupGallery({ onFailed: failed, onDeleted });
  onEmulated(() => show($("emulated-badge")));
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && $("credits").open) {
      $("credits").open = false;
      $("credits").querySelector("summary").focus();
    }
  });
  if (!session.key) {
    signOut();
    return;
  }
  try {
    await enter();
  } catch (error) {
    if (error.status === 401) signOut("Your API key is no longer accepted. Sign in again.");
    else showError(error.message);
  }
}

start();

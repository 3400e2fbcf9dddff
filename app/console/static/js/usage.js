// Usage per UTC day and per model, for one tenant or all: a stacked bar chart drawn as SVG
// in the page, a table by model, and the admin API's CSV for the same filter.

import { adminFile, admin } from "./api.js";
import { A, busy, clear, enc, failed, state } from "./ui.js";
import { $, h, modelName } from "/dashboard/static/js/dom.js";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = 8; // .series-0 … .series-7 in console.css
const MEASURES = { creditsCharged: "credits", images: "images", generations: "generations" };
let last = { rows: [], days: [] };

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  element.append(...children);
  return element;
}

function range() {
  const days = Number($("usage-days").value);
  const to = new Date();
  const from = new Date(to.getTime() - (days - 1) * 86_400_000);
  const list = [];
  for (let t = from.getTime(); list.length < days; t += 86_400_000) list.push(new Date(t).toISOString().slice(0, 10));
  return { from: list[0], to: list[list.length - 1], days: list };
}

function query(extra = "") {
  const { from, to } = range();
  const tenant = state.tenant ? `&tenant=${enc(state.tenant)}` : "";
  const key = state.tenant && $("usage-key").value ? `&apiKey=${enc($("usage-key").value)}` : "";
  return `${A}/usage?from=${from}&to=${to}${tenant}${key}${extra}`;
}

// The selected tenant's keys as a usage filter (none selected: the field is hidden).
export function setUsageKeys(keys) {
  const select = $("usage-key");
  const chosen = select.value;
  select.replaceChildren(
    h("option", { value: "" }, "All keys"),
    ...keys.map((key) => h("option", { value: key.prefix }, key.label ? `${key.prefix} · ${key.label}` : key.prefix)),
  );
  select.value = keys.some((key) => key.prefix === chosen) ? chosen : "";
  $("usage-key-field").hidden = keys.length === 0;
}

export async function loadUsage() {
  clear($("usage-error"));
  const key = state.tenant ? $("usage-key").value : "";
  $("usage-scope").textContent = state.tenant ? `Tenant ${state.tenant}${key ? ` · key ${key}` : ""}` : "All tenants";
  const usage = await admin(query());
  last = { rows: usage.rows, days: range().days };
  draw();
}

function draw() {
  const measure = $("usage-measure").value;
  const { rows, days } = last;
  const models = [...new Set(rows.map((row) => row.model))].sort();
  const byDay = new Map(days.map((day) => [day, new Map()]));
  for (const row of rows) {
    const day = byDay.get(row.day);
    if (day) day.set(row.model, (day.get(row.model) ?? 0) + row[measure]);
  }
  drawChart(days, models, byDay, measure);
  drawTable(models, rows);
}

// A round top for the axis and at most about four whole-number steps up to it.
function scale(highest) {
  const raw = Math.max(1, highest / 4);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= raw);
  return { step, max: Math.max(step, Math.ceil(highest / step) * step) };
}

function drawChart(days, models, byDay, measure) {
  // Drawn at the size it is shown, so the axis text stays readable on a phone.
  const width = Math.max(280, Math.round($("chart").clientWidth || 720));
  const height = width < 500 ? 200 : 240;
  const pad = { left: 44, right: 8, top: 10, bottom: 26 };
  const totals = days.map((day) => [...byDay.get(day).values()].reduce((a, b) => a + b, 0));
  const { max, step: tick } = scale(Math.max(...totals, 0));
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const step = plotW / days.length;
  const barW = Math.max(1, step * 0.72);
  const sum = totals.reduce((a, b) => a + b, 0);
  const unit = MEASURES[measure];
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "bars",
    role: "img",
    "aria-label": `${sum} ${unit} from ${days[0]} to ${days[days.length - 1]}, ${models.length} model${models.length === 1 ? "" : "s"}; the table below has the numbers.`,
  });
  for (let value = 0; value <= max; value += tick) {
    const y = pad.top + plotH * (1 - value / max);
    chart.append(
      svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }),
      svg("text", { x: pad.left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, String(value)),
    );
  }
  days.forEach((day, index) => {
    const x = pad.left + index * step + (step - barW) / 2;
    let y = pad.top + plotH;
    for (const [series, model] of models.entries()) {
      const value = byDay.get(day).get(model) ?? 0;
      if (!value) continue;
      const barH = (value / max) * plotH;
      y -= barH;
      chart.append(
        svg("rect", { x, y, width: barW, height: barH, class: `series-${series % COLOURS}` }, svg("title", {}, `${day} · ${model}: ${value} ${unit}`)),
      );
    }
    const every = Math.ceil(days.length / (width < 500 ? 4 : 7));
    if (index % every === 0) {
      chart.append(svg("text", { x: x + barW / 2, y: height - 8, class: "axis", "text-anchor": "middle" }, day.slice(5)));
    }
  });
  $("chart").replaceChildren(chart);
  $("legend").replaceChildren(
    ...(models.length
      ? models.map((model, series) => h("span", { class: "key-swatch" }, h("span", { class: `swatch series-${series % COLOURS}`, "aria-hidden": "true" }), modelName(model)))
      : [h("span", { class: "muted" }, "No generations in this period.")]),
  );
}

function drawTable(models, rows) {
  const sums = new Map(models.map((model) => [model, { generations: 0, failed: 0, images: 0, creditsCharged: 0 }]));
  for (const row of rows) {
    const sum = sums.get(row.model);
    for (const field of Object.keys(sum)) sum[field] += row[field];
  }
  $("model-rows").replaceChildren(
    ...models.map((model) => {
      const sum = sums.get(model);
      return h(
        "tr",
        {},
        h("th", { scope: "row" }, model),
        h("td", { class: "num", "data-label": "Generations" }, sum.generations),
        h("td", { class: "num", "data-label": "Failed" }, sum.failed),
        h("td", { class: "num", "data-label": "Images" }, sum.images),
        h("td", { class: "num", "data-label": "Credits" }, sum.creditsCharged),
      );
    }),
  );
  if (!models.length) $("model-rows").append(h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No generations in this period.")));
}

async function exportCsv() {
  const box = $("usage-error");
  clear(box);
  await busy($("usage-csv"), async () => {
    let blob;
    try {
      blob = await adminFile(query("&format=csv"));
    } catch (error) {
      failed(error, box);
      return;
    }
    const { from, to } = range();
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: `imagegate-usage-${[state.tenant ?? "all", state.tenant && $("usage-key").value].filter(Boolean).join("-")}-${from}-${to}.csv`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });
}

export function setupUsage() {
  $("usage-days").addEventListener("change", () => loadUsage().catch((e) => failed(e, $("usage-error"))));
  $("usage-measure").addEventListener("change", draw);
  $("usage-key").addEventListener("change", () => loadUsage().catch((e) => failed(e, $("usage-error"))));
  $("usage-refresh").addEventListener("click", () => busy($("usage-refresh"), () => loadUsage().catch((e) => failed(e, $("usage-error")))));
  $("usage-csv").addEventListener("click", exportCsv);
  let resized = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(draw, 150);
  });
}

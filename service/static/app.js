// The sda-serve page: one form -> POST /classify?thumbnails=true -> rendered results.
// Plain DOM code, no framework and no build step. Server text is only ever set with textContent.
"use strict";

const $ = (id) => document.getElementById(id);

const form = $("classify-form");
const fileInput = $("file");
const dropZone = $("drop-zone");
const modelSelect = $("model");
const button = $("classify-button");
const statusLine = $("status");
const errorBox = $("error");
const results = $("results");

let models = []; // GET /models -> models[]

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

const percent = (x) => `${(100 * x).toFixed(1)} %`;
const ms = (x) => `${x.toFixed(1)} ms`;

// ------------------------------------------------------------------------------------------ models
async function loadModels() {
  const info = $("model-info");
  let response;
  try {
    response = await fetch("/models", { headers: authHeaders() });
  } catch (error) {
    info.textContent = "Could not reach the service to list its models.";
    return;
  }
  if (response.status === 401) {
    info.textContent = "This service needs an API key: enter it under “API key”, then classify.";
    return;
  }
  if (!response.ok) {
    info.textContent = `Models not available yet (HTTP ${response.status}); reload the page in a moment.`;
    return;
  }
  const body = await response.json();
  models = body.models;
  modelSelect.replaceChildren();
  for (const m of models) {
    const option = el("option", { value: m.name }, `${m.name} (version ${m.version})`);
    if (m.default) option.selected = true;
    modelSelect.append(option);
  }
  showModel();
}

function currentModel() {
  return models.find((m) => m.name === modelSelect.value) || null;
}

function showModel() {
  const m = currentModel();
  if (!m) return;
  const frames = m.graphs.map((g) => g.frames);
  // A model opens at its own default frame count: the one its accuracy was measured at.
  for (const radio of form.elements.frames) {
    radio.disabled = !frames.includes(Number(radio.value));
    radio.checked = Number(radio.value) === m.default_frames;
  }
  const providers = [...new Set(m.graphs.map((g) => g.provider))].join(", ");
  const sda = m.blocks.length ? `${m.blocks.length} SDA blocks × ${m.branches.length} branches` : "no SDA blocks";
  $("model-info").textContent =
    `Model ${m.name} version ${m.version}: ${m.num_classes} classes, ${sda}, ` +
    `${frames.join(" or ")} frames, running on ${providers}.`;
}

modelSelect.addEventListener("change", showModel);

// ----------------------------------------------------------------------------------- file picking
fileInput.addEventListener("change", () => {
  const file = fileInput.files[0];
  statusLine.textContent = file ? `Selected ${file.name} (${formatBytes(file.size)}).` : "";
});

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

for (const type of ["dragenter", "dragover"]) {
  dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
}
for (const type of ["dragleave", "drop"]) {
  dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"));
}
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  if (event.dataTransfer && event.dataTransfer.files.length) {
    fileInput.files = event.dataTransfer.files;
    fileInput.dispatchEvent(new Event("change"));
  }
});

// ---------------------------------------------------------------------------------------- errors
// What the service's status codes mean to a person; the service's own sentence follows.
function describeError(status, detail, retryAfter) {
  switch (status) {
    case 401:
      return "This service needs an API key (or the one given is wrong): enter it under “API key”.";
    case 404:
      return `Unknown model or version. ${detail}`;
    case 413:
      return `The file is too large for this service. ${detail}`;
    case 415:
      return `This file is not a video the service can read (a still image, audio only, or not a media file). ${detail}`;
    case 422:
      return `The video could not be used. ${detail}`;
    case 503: {
      const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again in a moment.";
      return `The service is busy (overloaded) and did not take the video.${wait} ${detail}`;
    }
    default:
      return `The service answered HTTP ${status}. ${detail}`;
  }
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  statusLine.textContent = "";
}

function clearError() {
  errorBox.textContent = "";
  errorBox.hidden = true;
}

// ------------------------------------------------------------------------------------- classify
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const file = fileInput.files[0];
  if (!file) {
    showError("Choose a video file first.");
    fileInput.focus();
    return;
  }
  const params = new URLSearchParams({
    frames: form.elements.frames.value,
    clips: $("clips").value,
    crops: $("crops").value,
    thumbnails: "true",
  });
  if (modelSelect.value) params.set("model", modelSelect.value);
  const data = new FormData();
  data.append("file", file, file.name);

  button.disabled = true;
  results.setAttribute("aria-busy", "true");
  statusLine.textContent = `Classifying ${file.name}…`;
  const started = performance.now();
  try {
    let response;
    try {
      response = await fetch(`/classify?${params}`, { method: "POST", body: data, headers: authHeaders() });
    } catch (error) {
      showError(`Could not reach the service (${error.message}). Is it still running?`);
      return;
    }
    const roundTrip = performance.now() - started;
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : "";
      showError(`Error ${response.status}: ${describeError(response.status, detail, response.headers.get("Retry-After"))}`);
      results.hidden = true;
      return;
    }
    render(body, roundTrip, file.name);
  } finally {
    button.disabled = false;
    results.removeAttribute("aria-busy");
  }
});

// -------------------------------------------------------------------------------------- results
function render(body, roundTrip, fileName) {
  const top = body.predictions[0];
  $("summary").textContent =
    `${fileName}: ${top.label} (${percent(top.score)}), ` +
    `${body.model.name} version ${body.model.version}, ${body.model.frames} frames on ${body.model.provider}.`;
  statusLine.textContent = `Done: top-1 is ${top.label} (${percent(top.score)}).`;
  renderThumbnails(body);
  renderBars(body.predictions);
  const deps = body.dependency_weights;
  const hasWeights = deps.blocks.length > 0;
  $("no-weights").hidden = hasWeights;
  $("heatmap").hidden = !hasWeights;
  $("stages").closest("section").hidden = !hasWeights;
  $("cell-readout").textContent = "";
  if (hasWeights) {
    renderHeatmap($("heatmap"), deps.branches, deps.blocks.map((b) => [b.block, b.weights]), "Block", true);
    renderHeatmap($("stages"), deps.branches, deps.stages.map((s) => [s.stage, s.weights]), "Stage", false);
  }
  renderPairs($("timings"), [
    ...Object.entries(body.timings_ms).map(([k, v]) => [k === "total" ? "total (server)" : k, ms(v)]),
    ["round trip (this page)", ms(roundTrip)],
    ...(body.thumbnails ? [["thumbnails (not in total)", ms(body.thumbnails.encode_ms)]] : []),
  ]);
  const v = body.video;
  renderPairs($("video"), [
    ["container / codec", `${v.container} / ${v.codec}`],
    ["size", `${v.width} × ${v.height}${v.rotation ? `, rotated ${v.rotation}°` : ""}`],
    ["frames", `${v.frames}${v.fps ? ` at ${v.fps.toFixed(2)} fps` : ""}`],
    ["duration", v.duration_s === null ? "unknown" : `${v.duration_s.toFixed(2)} s`],
  ]);
  results.hidden = false;
}

function renderThumbnails(body) {
  const box = $("thumbnails");
  box.replaceChildren();
  const thumbs = body.thumbnails;
  if (!thumbs) return;
  const clips = thumbs.clips;
  clips.forEach((frames, c) => {
    const group = el("figure", { class: "clip" });
    if (clips.length > 1) group.append(el("figcaption", {}, `Clip ${c + 1}`));
    const strip = el("ol", { class: "strip" });
    frames.forEach((jpeg, i) => {
      const index = body.sampled.indices[c][i];
      const t = body.sampled.timestamps_s[c][i];
      const item = el("li");
      const img = el("img", {
        src: `data:image/jpeg;base64,${jpeg}`,
        width: thumbs.width,
        height: thumbs.height,
        alt: `Clip ${c + 1}, frame ${index} at ${t.toFixed(2)} s`,
      });
      item.append(img, el("span", { class: "time", "aria-hidden": "true" }, `${t.toFixed(2)} s`));
      strip.append(item);
    });
    group.append(strip);
    box.append(group);
  });
}

function renderBars(predictions) {
  const list = $("top5");
  list.replaceChildren();
  for (const p of predictions) {
    const item = el("li", { class: "bar-row" });
    const label = el("span", { class: "bar-label" }, p.label);
    const track = el("span", { class: "bar-track", "aria-hidden": "true" });
    const bar = el("span", { class: "bar" });
    bar.style.width = `${Math.max(0, Math.min(1, p.score)) * 100}%`;
    track.append(bar);
    const score = el("span", { class: "bar-score" }, percent(p.score));
    item.append(label, track, score);
    list.append(item);
  }
}

// Sequential colour scale on the weight itself (0..1), so tables of different requests compare.
function cellColour(value) {
  const v = Math.max(0, Math.min(1, value));
  const lightness = 97 - 72 * Math.sqrt(v); // sqrt: spread the usual 0.05..0.7 range
  return { background: `hsl(215 70% ${lightness}%)`, dark: lightness < 55 };
}

function renderHeatmap(table, branches, rows, rowName, navigable) {
  table.replaceChildren();
  const head = el("thead");
  const headRow = el("tr");
  headRow.append(el("th", { scope: "col" }, rowName));
  for (const b of branches) headRow.append(el("th", { scope: "col" }, b));
  head.append(headRow);
  const bodyRows = el("tbody");
  rows.forEach(([name, weights], r) => {
    const tr = el("tr");
    tr.append(el("th", { scope: "row" }, name));
    const values = branches.map((b) => weights[b]);
    const best = Math.max(...values);
    branches.forEach((b, c) => {
      const value = weights[b];
      const text = `${name}, ${b}: ${value.toFixed(3)}${value === best ? " (highest in this row)" : ""}`;
      const td = el("td", { class: "cell", title: text, "aria-label": text }, value.toFixed(2));
      const colour = cellColour(value);
      td.style.backgroundColor = colour.background;
      if (colour.dark) td.classList.add("dark");
      if (value === best) td.classList.add("best");
      if (navigable) {
        td.dataset.row = String(r);
        td.dataset.col = String(c);
        td.tabIndex = r === 0 && c === 0 ? 0 : -1;
      }
      tr.append(td);
    });
    bodyRows.append(tr);
  });
  table.append(head, bodyRows);
}

// Roving focus over the heatmap: one tab stop, arrow keys (and Home/End) move between cells.
const heatmap = $("heatmap");
heatmap.addEventListener("keydown", (event) => {
  const cell = event.target.closest("td.cell");
  if (!cell) return;
  let row = Number(cell.dataset.row);
  let col = Number(cell.dataset.col);
  const rows = heatmap.tBodies[0].rows.length;
  const cols = heatmap.tBodies[0].rows[0].cells.length;
  switch (event.key) {
    case "ArrowUp": row = Math.max(0, row - 1); break;
    case "ArrowDown": row = Math.min(rows - 1, row + 1); break;
    case "ArrowLeft": col = Math.max(0, col - 1); break;
    case "ArrowRight": col = Math.min(cols - 1, col + 1); break;
    case "Home": col = 0; break;
    case "End": col = cols - 1; break;
    default: return;
  }
  event.preventDefault();
  const next = heatmap.querySelector(`td[data-row="${row}"][data-col="${col}"]`);
  if (next) {
    cell.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  }
});
heatmap.addEventListener("focusin", (event) => {
  const cell = event.target.closest("td.cell");
  if (cell) $("cell-readout").textContent = cell.title;
});
heatmap.addEventListener("mouseover", (event) => {
  const cell = event.target.closest("td.cell");
  if (cell) $("cell-readout").textContent = cell.title;
});

function renderPairs(list, pairs) {
  list.replaceChildren();
  for (const [name, value] of pairs) list.append(el("dt", {}, name), el("dd", {}, value));
}

$("api-key").addEventListener("change", loadModels);
loadModels();

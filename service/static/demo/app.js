// The demo page uses only the public API: GET /v1/models, POST /v1/models/{name}/encode|decode|sample.
"use strict";

const $ = (id) => document.getElementById(id);
// codes: one h×w grid, or for a residual model [k][h][w] (its first k stages); view: the stage shown.
const state = { model: null, info: null, codes: null, original: null, edited: new Set(), view: 0 };

// -- API ------------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem("vqvae-api-key");
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) $("key-label").hidden = false;
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function staged() { return (state.info.quantizer?.stages ?? 1) > 1; }

async function encodeImage(blob, format = "json") {
  const stages = staged() ? `&stages=${$("stages").value}` : "";
  const url = `/v1/models/${state.model}/encode?resize=native${format === "json" ? "" : `&format=${format}`}${stages}`;
  return api(url, { method: "POST", body: blob, headers: { "Content-Type": blob.type || "image/png" } });
}

async function decodeToBlob(grid) {
  const response = await api(`/v1/models/${state.model}/decode`, {
    method: "POST", body: JSON.stringify({ codes: grid }),
    headers: { "Content-Type": "application/json", Accept: "image/png" },
  });
  return response.blob();
}

function say(text) { $("status").textContent = text; }

// -- models ---------------------------------------------------------------------------------------

async function loadModels() {
  const listing = await (await api("/v1/models")).json();
  const ready = listing.models.filter((m) => m.state === "ready");
  $("model").replaceChildren(...ready.map((m) => new Option(`${m.name} ${m.version}`, m.name)));
  $("model").value = ready.some((m) => m.name === listing.default) ? listing.default : ready[0].name;
  await selectModel();
}

async function selectModel() {
  state.model = $("model").value;
  state.info = await (await api(`/v1/models/${state.model}`)).json();
  const m = state.info;
  $("model-info").textContent = `${m.input.width}×${m.input.height} → ${m.grid.width}×${m.grid.height} codes of ` +
    `${m.codebook_size}; test PSNR ${m.metrics.psnr_dataset.toFixed(1)} dB; ${m.provider}`;
  setUpSampling();
  setUpStages();
  if (state.original) await encodeAndShow(state.original);
  await showBatch();
}

// -- one image: encode, show the grid, decode ----------------------------------------------------

function colour(code) { return `hsl(${(code * 137.508) % 360}, 62%, 42%)`; }

function setUpStages() {
  const total = state.info.quantizer?.stages ?? 1;
  $("stage-controls").hidden = total === 1;
  const options = (n) => Array.from({ length: n }, (_, i) => new Option(String(i + 1), String(i + 1)));
  $("stages").replaceChildren(...options(total));
  $("stages").value = String(total);
  $("stage-view").replaceChildren(...options(total));
  state.view = 0;
}

function shownGrid() { return staged() ? state.codes[state.view] : state.codes; }

function renderGrid() {
  const rows = shownGrid().map((row, r) => {
    const tr = document.createElement("tr");
    row.forEach((code, c) => {
      const td = document.createElement("td");
      td.textContent = code;
      td.style.background = colour(code);
      td.dataset.row = r; td.dataset.col = c;
      if (state.edited.has(`${state.view},${r},${c}`)) td.classList.add("edited");
      td.addEventListener("click", () => editCell(td));
      tr.appendChild(td);
    });
    return tr;
  });
  $("grid").replaceChildren(...rows);
}

function editCell(td) {
  if (td.querySelector("input")) return;
  const input = Object.assign(document.createElement("input"),
    { type: "number", min: 0, max: state.info.codebook_size - 1, value: td.textContent });
  td.replaceChildren(input);
  input.focus(); input.select();
  const commit = async () => {
    const value = Number(input.value);
    const r = Number(td.dataset.row), c = Number(td.dataset.col), grid = shownGrid();
    if (Number.isInteger(value) && value >= 0 && value < state.info.codebook_size && value !== grid[r][c]) {
      grid[r][c] = value;
      state.edited.add(`${state.view},${r},${c}`);
      renderGrid();
      await showReconstruction();
    } else {
      renderGrid();
    }
  };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") input.blur(); });
  input.addEventListener("blur", commit, { once: true });
}

function showPair() { $("pair").hidden = false; $("empty").hidden = true; }

async function showReconstruction() {
  const blob = await decodeToBlob(state.codes);
  showPair();
  const old = $("recon").src;
  $("recon").src = URL.createObjectURL(blob);
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  $("recon").dataset.version = String(Number($("recon").dataset.version || 0) + 1);
}

async function encodeAndShow(blob) {
  try {
    say("");
    state.original = blob;
    $("original").src = URL.createObjectURL(blob);
    showPair();
    const model = state.model;
    const encoded = await (await encodeImage(blob)).json();
    if (model !== state.model) return;  // another model was chosen meanwhile: it encodes the image again
    state.codes = encoded.codes[0];
    state.edited.clear();
    renderGrid();
    await showReconstruction();
    const formats = ["packed", "entropy", ...(state.info.prior ? ["prior"] : [])];
    const [packed, entropy, prior] = await Promise.all(
      formats.map(async (f) => (await (await encodeImage(blob, f)).arrayBuffer()).byteLength));
    const json = JSON.stringify(encoded.codes[0]).length;
    const withPrior = prior ? `${prior} bytes coded with the prior, ` : "";
    $("sizes").textContent = `This image as codes: ${withPrior}${entropy} bytes entropy-coded, ${packed} bytes ` +
      `packed, ${json} bytes as JSON (each stream includes its header and checksum).`;
  } catch (error) {
    say(`Could not encode: ${error.message}`);
  }
}

// -- input: drawing and upload -------------------------------------------------------------------

function setUpDrawing() {
  const canvas = $("draw"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const point = (e) => { const b = canvas.getBoundingClientRect();
    return [(e.clientX - b.left) * canvas.width / b.width, (e.clientY - b.top) * canvas.height / b.height]; };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; canvas.setPointerCapture(e.pointerId);
    ctx.beginPath(); ctx.moveTo(...point(e)); });
  canvas.addEventListener("pointermove", (e) => { if (!drawing) return;
    Object.assign(ctx, { strokeStyle: "#fff", lineWidth: 22, lineCap: "round", lineJoin: "round" });
    ctx.lineTo(...point(e)); ctx.stroke(); });
  canvas.addEventListener("pointerup", () => { drawing = false; canvas.toBlob((b) => encodeAndShow(b), "image/png"); });
  $("clear").addEventListener("click", clear);
  $("file").addEventListener("change", () => { if ($("file").files[0]) encodeAndShow($("file").files[0]); });
}

// -- sampling: new grids drawn from the model's prior, decoded --------------------------------------

function setUpSampling() {
  const prior = state.info.prior;
  $("sample").disabled = !prior;
  $("samples").replaceChildren();
  $("sample-note").textContent = prior ? "Click a sample to edit its codes above." :
    "This model ships no prior to sample from.";
  const names = prior ? prior.class_names : [];
  $("sample-class").replaceChildren(new Option("any", ""), ...names.map((n, i) => new Option(n, String(i))));
  if (prior) {  // the model's own defaults, chosen by measurement, preselected
    $("temperature").value = String(prior.sampling.temperature);
    $("guidance").value = String(prior.sampling.guidance);
  }
}

async function showSamples() {
  const chosen = $("sample-class").value;
  const request = { count: 8, temperature: Number($("temperature").value), guidance: Number($("guidance").value) };
  if (chosen !== "") request.class = Number(chosen);
  const drawn = await (await api(`/v1/models/${state.model}/sample`, {
    method: "POST", body: JSON.stringify(request), headers: { "Content-Type": "application/json" } })).json();
  $("samples").replaceChildren(...drawn.images.map((png, i) => {
    const img = Object.assign(document.createElement("img"),
      { src: `data:image/png;base64,${png}`, alt: `sample ${i + 1}`, title: "edit these codes" });
    img.addEventListener("click", async () => {
      state.codes = drawn.codes[i]; state.edited.clear(); state.original = null;
      $("original").src = img.src;  // the sample itself stands as the original
      renderGrid(); await showReconstruction();
    });
    return img;
  }));
  $("samples").dataset.seed = String(drawn.seed);
}

// -- batch view: random test images from the model's sample strip --------------------------------

async function loadSamples() {
  const image = new Image();
  // Grey models have their data set's strip; every colour model here takes the Tiny ImageNet photos.
  image.src = `/demo/samples-${state.info.input.channels === 3 ? "tiny-imagenet" : state.model}.png`;
  try { await image.decode(); } catch (_) { return null; }
  return image;
}

function tile(image, index, size) {
  const canvas = Object.assign(document.createElement("canvas"), { width: size, height: size });
  canvas.getContext("2d").drawImage(image, index * size, 0, size, size, 0, 0, size, size);
  return canvas;
}

async function showBatch() {
  const image = await loadSamples();
  if (!image) { $("batch").replaceChildren(); return; }
  const size = state.info.input.height, count = image.width / size;
  const picks = Array.from({ length: 8 }, () => Math.floor(Math.random() * count));
  const form = new FormData();
  const tiles = picks.map((i) => tile(image, i, size));
  const blobs = await Promise.all(tiles.map((t) => new Promise((ok) => t.toBlob(ok, "image/png"))));
  blobs.forEach((b, i) => form.append("images", b, `${i}.png`));
  const model = state.model;  // codes go back to the model that made them, whatever is chosen meanwhile
  const codes = (await (await api(`/v1/models/${model}/encode`, { method: "POST", body: form })).json()).codes;
  const decoded = await (await api(`/v1/models/${model}/decode`, {
    method: "POST", body: JSON.stringify({ codes }), headers: { "Content-Type": "application/json" } })).json();
  if (model !== state.model) return;  // the newly chosen model shows its own batch
  $("batch").replaceChildren(...tiles.map((t, i) => {
    const figure = document.createElement("figure");
    const original = Object.assign(document.createElement("img"), { src: t.toDataURL(), alt: "test image" });
    const recon = Object.assign(document.createElement("img"),
      { src: `data:image/png;base64,${decoded.images[i]}`, alt: "reconstruction" });
    figure.append(original, recon);
    return figure;
  }));
}

// -- start ----------------------------------------------------------------------------------------

$("stages").addEventListener("change", () => {  // fewer stages: a coarser picture from fewer codes
  const views = Number($("stages").value);
  $("stage-view").replaceChildren(...Array.from({ length: views }, (_, i) => new Option(String(i + 1), String(i + 1))));
  state.view = 0;
  if (state.original) encodeAndShow(state.original);
});
$("stage-view").addEventListener("change", () => { state.view = Number($("stage-view").value) - 1; renderGrid(); });
$("api-key").addEventListener("change", (e) => { sessionStorage.setItem("vqvae-api-key", e.target.value); loadModels(); });
$("model").addEventListener("change", () => selectModel().catch((e) => say(e.message)));
$("shuffle").addEventListener("click", () => showBatch().catch((e) => say(e.message)));
$("sample").addEventListener("click", () => showSamples().catch((e) => say(`Could not sample: ${e.message}`)));
setUpDrawing();
loadModels().catch((error) => say(`Could not load the models: ${error.message}`));

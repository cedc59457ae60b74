// The page at `/`: describe an image (labels as bars, and a caption) and search the served
// indexes. Plain browser JavaScript, no build step, nothing fetched from elsewhere.
"use strict";

const $ = (selector) => document.querySelector(selector);
let token = localStorage.getItem("skyscribe-token") || "";
let image = null; // the chosen File

function say(message) {
  $("#status").textContent = message || "";
}

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

// Calls the API; an error answer's message is thrown, a 401 asks for the token.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  if (response.status === 401) {
    $("#token-bar").hidden = false;
    throw new Error("this server needs its token");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

function labelQuery() {
  const q = new URLSearchParams();
  const labels = $("#labels-spec").value.trim();
  const template = $("#template").value.trim();
  if (labels) q.set("labels", labels);
  if (template) q.set("template", template);
  q.set("top_k", $("#top-k").value || "5");
  return q.toString();
}

function showLabels(labels) {
  const list = $("#labels");
  list.replaceChildren();
  for (const { label, score } of labels) {
    const row = document.createElement("li");
    row.className = "label-row";
    const name = document.createElement("span");
    name.className = "label-name";
    name.textContent = label;
    name.title = label;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "score";
    value.textContent = score.toFixed(3);
    row.append(name, bar, value);
    list.append(row);
  }
}

async function describe() {
  if (!image) return;
  say("");
  $("#labels").replaceChildren();
  $("#caption").textContent = "…";
  $("#relabel").disabled = true;
  try {
    // A learned classifier, when one is chosen, answers instead of the label set (no caption).
    const learned = $("#classifier").value;
    const url = learned
      ? `/v1/classify?${new URLSearchParams({ classifier: learned, top_k: $("#top-k").value || "5" })}`
      : `/v1/describe?${labelQuery()}`;
    const answer = await api(url, {
      method: "POST",
      headers: { "Content-Type": image.type || "application/octet-stream" },
      body: image,
    });
    showLabels(answer.labels);
    $("#caption").textContent = answer.caption ? answer.caption.trim() : "";
  } catch (e) {
    $("#caption").textContent = "";
    say(e.message);
  } finally {
    $("#relabel").disabled = false;
  }
}

function choose(file) {
  if (!file) return;
  image = file;
  const preview = $("#preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("#drop-text").textContent = file.name;
  describe();
}

async function thumbnailSrc(id) {
  const url = `/v1/thumbnails/${encodeURIComponent(id)}`;
  if (!token) return url;
  const response = await fetch(url, { headers: authHeaders() });
  return response.ok ? URL.createObjectURL(await response.blob()) : "";
}

async function search(event) {
  event.preventDefault();
  const text = $("#query").value.trim();
  if (!text) return;
  say("");
  $("#results").replaceChildren();
  $("#search-note").textContent = "searching…";
  try {
    const answer = await api(`/v1/search?${new URLSearchParams({ text, top_k: "24" })}`);
    $("#search-note").textContent = `${answer.results.length} best matches for “${text}”`;
    for (const hit of answer.results) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.alt = hit.id;
      img.loading = "lazy";
      const caption = document.createElement("figcaption");
      const score = document.createElement("b");
      score.textContent = `${hit.rank}. ${hit.score.toFixed(3)}`;
      caption.append(score, ` ${hit.id}`);
      figure.append(img, caption);
      $("#results").append(figure);
      thumbnailSrc(hit.id).then((src) => { img.src = src; });
    }
  } catch (e) {
    $("#search-note").textContent = "";
    say(e.message);
  }
}

async function start() {
  try {
    const models = await api("/v1/models");
    const parts = [`CLIP: ${models.clip.model}`];
    parts.push(models.captioner ? "with captions" : "no captioner");
    const items = models.indexes.reduce((n, i) => n + i.items, 0);
    if (models.indexes.length) parts.push(`${items} indexed images`);
    $("#model").textContent = parts.join(" · ");
    $("#search-panel").hidden = models.indexes.length === 0;
    for (const c of models.classifiers) {
      const option = document.createElement("option");
      option.value = c.name;
      option.textContent = `${c.name} (${c.classes.length} classes, ${c.method})`;
      $("#classifier").append(option);
    }
    $("#classifier-row").hidden = models.classifiers.length === 0;
    $("#labels-spec").placeholder = `the model's vocabulary (${models.describe_labels}); or a preset (eurosat, rsicd, xview) or a,b,c`;
  } catch (e) {
    $("#model").textContent = "";
    say(e.message);
  }
}

$("#file").addEventListener("change", (e) => choose(e.target.files[0]));
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  choose(e.dataTransfer.files[0]);
});
$("#relabel").addEventListener("click", describe);
$("#classifier").addEventListener("change", describe);
$("#search-form").addEventListener("submit", search);
$("#token-save").addEventListener("click", () => {
  token = $("#token").value.trim();
  localStorage.setItem("skyscribe-token", token);
  $("#token-bar").hidden = true;
  say("");
  start();
});
start();

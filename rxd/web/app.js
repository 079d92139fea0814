// The operators' page: search with filters kept in the URL, thumbnails and clips on demand, a live view.
// Data from the server is only ever put in the page as text (textContent, option labels), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const TOP_K = 20;
const AUTO_THUMBS = 5; // thumbnails loaded without asking, when the setting is on
const MAX_ARRIVALS = 20;
const PRESETS_S = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };
// Least probability that a hit satisfies every asked attribute: precision for recall.
const MIN_PROBABILITIES = ["0.5", "0.7", "0.9"];
const state = { schema: null, slots: [], clipBytes: 0, thumbBytes: 0, stats: null, sites: undefined };

const fmtTime = (s) => new Date(s * 1000).toLocaleString();
const kib = (n) => `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
const pct = (p) => `${Math.round(p * 100)} %`;
const bits = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} Mbit` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kbit` : `${n} bit`);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node[k] = v;
  }
  node.append(...children);
  return node;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(path, body) {
  const res = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

// -- the search form <-> the URL --------------------------------------------------------------------------

function slotSelect(field) {
  const select = el("select", { id: `slot-${field.name}`, name: field.name });
  select.append(el("option", { value: "", text: "any" }));
  for (const v of field.searchable || field.values) {
    select.append(el("option", { value: v, text: v === "unknown" ? "unknown (not seen)" : v }));
  }
  return el("label", { text: field.label || field.name }, select);
}

function minProbabilitySelect() {
  const select = el("select", { id: "f-minp", name: "minp" });
  select.append(el("option", { value: "", text: "any" }));
  for (const v of MIN_PROBABILITIES) select.append(el("option", { value: v, text: `at least ${pct(Number(v))}` }));
  return el("label", { text: "Sure " }, select);
}

function formToParams() {
  const p = new URLSearchParams();
  const put = (k, v) => { if (v) p.set(k, v); };
  put("q", $("q").value.trim());
  put("site", $("f-site").value);
  put("stream", $("f-stream").value);
  put("location", $("f-location").value);
  put("time", $("f-time").value);
  if ($("f-time").value === "custom") { put("from", $("f-from").value); put("to", $("f-to").value); }
  put("minp", $("f-minp").value);
  for (const f of state.slots) put(f.name, $(`slot-${f.name}`).value);
  return p;
}

function ensureOption(select, value) {
  if (value && ![...select.options].some((o) => o.value === value)) select.append(el("option", { value, text: value }));
}

function paramsToForm(p) {
  $("q").value = p.get("q") || "";
  ensureOption($("f-site"), p.get("site"));
  $("f-site").value = p.get("site") || "";
  ensureOption($("f-stream"), p.get("stream"));
  $("f-stream").value = p.get("stream") || "";
  ensureOption($("f-location"), p.get("location"));
  $("f-location").value = p.get("location") || "";
  $("f-time").value = p.get("time") || "";
  $("f-from").value = p.get("from") || "";
  $("f-to").value = p.get("to") || "";
  ensureOption($("f-minp"), p.get("minp"));
  $("f-minp").value = p.get("minp") || "";
  for (const f of state.slots) $(`slot-${f.name}`).value = p.get(f.name) || "";
  showCustomTime();
}

function showCustomTime() {
  const custom = $("f-time").value === "custom";
  for (const node of document.querySelectorAll(".custom-time")) node.hidden = !custom;
}

function queryBody(p) {
  const body = { text: p.get("q") || "", top_k: TOP_K, filters: {} };
  if (p.get("site")) body.site_id = p.get("site");
  if (p.get("stream")) body.stream_id = p.get("stream");
  if (p.get("location")) body.location_ids = [Number(p.get("location"))];
  if (p.get("minp")) body.min_probability = Number(p.get("minp"));
  const preset = PRESETS_S[p.get("time")];
  if (preset) body.t0_s = Date.now() / 1000 - preset;
  if (p.get("time") === "custom") {
    if (p.get("from")) body.t0_s = new Date(p.get("from")).getTime() / 1000;
    if (p.get("to")) body.t1_s = new Date(p.get("to")).getTime() / 1000;
  }
  for (const f of state.slots) if (p.get(f.name)) body.filters[f.name] = p.get(f.name);
  return body;
}

// -- hits -------------------------------------------------------------------------------------------------

function metaLine(hit) {
  const r = hit.record;
  const parts = [fmtTime(r.time_s), `location ${r.location_id}`, `${r.stream_id} track ${r.track_id}`,
    `p ${pct(hit.probability)}`, `score ${hit.score.toFixed(3)}`];
  const meta = el("div", { class: "meta", text: parts.join(" · ") + " · " });
  const notes = [
    ["matched", hit.matched_slots, "matched "],
    ["unknown", hit.unknown_slots, "not seen: "],
    ["differs", hit.contradicted_slots, "differs: "],
  ].filter(([, slots]) => slots.length);
  notes.forEach(([cls, slots, label], i) => {
    if (i) meta.append(" · ");
    meta.append(el("span", { class: cls, text: label + slots.join(", ") }));
  });
  return meta;
}

// Each field as sent, with its confidence where the transmitter stated one, then why the hit scored p.
function confidenceLine(hit) {
  const conf = hit.record.confidence || {};
  const fields = Object.entries(hit.record.fields).filter(([, v]) => v !== "unknown")
    .map(([k, v]) => (k in conf ? `${k} ${v} (${pct(conf[k])})` : `${k} ${v}`));
  const why = (hit.slot_scores || []).map((s) => {
    const basis = s.value === "unknown" ? "not seen, prior" : s.confidence === null ? `sent ${s.value}` : `sent ${s.value} at ${pct(s.confidence)}`;
    return `${s.name}: ${basis} → ${pct(s.probability)}`;
  });
  const line = el("div", { class: "confidence", text: fields.join(", ") || "nothing seen" });
  if (why.length) line.append(el("span", { class: "why", text: ` · why p ${pct(hit.probability)}: ${why.join("; ")}` }));
  return line;
}

function renderHit(hit) {
  const li = $("hit-template").content.firstElementChild.cloneNode(true);
  const r = hit.record;
  li.dataset.streamId = r.stream_id;
  li.dataset.recordId = String(r.record_id);
  li.querySelector(".desc").textContent = hit.description || Object.entries(r.fields).map(([k, v]) => `${k}=${v}`).join(", ");
  li.querySelector(".meta").replaceWith(metaLine(hit));
  li.querySelector(".meta").after(confidenceLine(hit));
  li.setAttribute("aria-label", `${li.querySelector(".desc").textContent}, ${fmtTime(r.time_s)}`);
  const show = li.querySelector(".show-thumb");
  show.setAttribute("aria-label", `Show the keyframe of record ${r.record_id}`);
  show.onclick = () => showThumb(li, r);
  const btn = li.querySelector("button.fetch");
  btn.onclick = () => fetchClip(li, hit, btn);
  return li;
}

async function showThumb(li, r) {
  const box = li.querySelector(".thumb");
  box.replaceChildren(el("span", { text: "loading…" }));
  try {
    const url = `/api/keyframe?stream_id=${encodeURIComponent(r.stream_id)}&record_id=${r.record_id}`;
    const res = await fetch(url);
    if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || res.statusText);
    const blob = await res.blob();
    state.thumbBytes += blob.size;
    const img = el("img", { alt: `keyframe of ${r.stream_id} record ${r.record_id}`, src: URL.createObjectURL(blob) });
    img.title = `${kib(blob.size)} over the backward channel`;
    box.replaceChildren(img);
    refreshStats();
  } catch (err) {
    box.replaceChildren(el("span", { class: "nothumb", text: /no keyframe/.test(err.message) ? "no keyframe" : "thumbnail failed" }));
    box.title = err.message;
  }
}

async function fetchClip(li, hit, btn) {
  const clip = hit.clip;
  btn.disabled = true;
  btn.textContent = "Fetching…";
  const url = `/api/clip?stream_id=${encodeURIComponent(clip.stream_id)}&t0_s=${clip.t0_s}&t1_s=${clip.t1_s}`;
  try {
    const res = await fetch(url);
    if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || res.statusText);
    const blob = await res.blob();
    state.clipBytes += blob.size;
    playClip(li, hit, URL.createObjectURL(blob));
    btn.textContent = `Clip: ${(blob.size / 1024).toFixed(0)} KiB over the backward channel`;
    refreshStats();
  } catch (err) {
    btn.disabled = false;
    btn.textContent = `Clip failed: ${err.message}`;
  }
}

function playClip(li, hit, src) {
  const offset = Math.max(0, hit.record.time_s - hit.clip.t0_s); // the hit's time within the clip
  const video = el("video", { controls: true, muted: true, autoplay: true, src, preload: "auto" });
  video.setAttribute("aria-label", `clip around ${fmtTime(hit.record.time_s)}`);
  const marker = el("div", { class: "marker", title: "the hit" });
  const timeline = el("div", { class: "timeline", title: `the hit is ${offset.toFixed(1)} s into the clip` }, marker);
  video.addEventListener("loadedmetadata", () => {
    const d = Number.isFinite(video.duration) && video.duration > 0 ? video.duration : hit.clip.t1_s - hit.clip.t0_s;
    marker.style.left = `${Math.min(100, (100 * offset) / d)}%`; // CSSOM, which the CSP allows
  });
  const jump = el("button", { type: "button", class: "secondary jump", text: `Jump to the hit (${offset.toFixed(1)} s)` });
  jump.onclick = () => { video.currentTime = offset; video.play().catch(() => {}); };
  const name = `${hit.clip.stream_id}-${Math.round(hit.clip.t0_s)}.mp4`;
  const download = el("a", { href: src, download: name, text: "Download clip", class: "download" });
  li.querySelector(".player").replaceChildren(video, timeline, el("div", { class: "actions" }, jump, download));
}

async function runSearch(p) {
  const body = queryBody(p);
  setStatus("Searching…");
  $("hits").replaceChildren();
  $("slots").replaceChildren();
  try {
    const data = await api("/api/query", body);
    for (const [k, v] of Object.entries(data.slots)) {
      // A slot lists the values it accepts: "upper_color: red or blue".
      $("slots").append(el("span", { text: `${k}: ${[].concat(v).join(" or ")}` }));
    }
    const items = data.hits.map(renderHit);
    $("hits").append(...items);
    setStatus(`${data.hits.length} hits` + (data.note ? ` — ${data.note}` : ""));
    if ($("auto-thumbs").checked) items.slice(0, AUTO_THUMBS).forEach((li, i) => showThumb(li, data.hits[i].record));
  } catch (err) {
    setStatus(err.message, true);
  }
  refreshStats();
}

function search(push) {
  const p = formToParams();
  const url = p.toString() ? `?${p}` : location.pathname;
  if (push && url !== location.search) history.pushState(null, "", url);
  return runSearch(p);
}

// Arrow keys move between hits; Enter on a hit fetches its clip, "t" shows its thumbnail.
function onHitsKey(e) {
  const li = e.target.closest && e.target.closest("li.hit");
  if (!li || e.target !== li) return;
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    const next = e.key === "ArrowDown" ? li.nextElementSibling : li.previousElementSibling;
    if (next) { next.focus(); e.preventDefault(); }
  } else if (e.key === "Enter") {
    li.querySelector("button.fetch").click();
  } else if (e.key === "t") {
    const b = li.querySelector(".show-thumb");
    if (b) b.click();
  }
}

// -- stats, link and live view ----------------------------------------------------------------------------

function fillChoices(stats) {
  const streams = stats.streams || [];
  for (const s of streams) ensureOption($("f-stream"), s.stream_id);
  for (const site of Object.keys(stats.site_streams || {}).sort()) ensureOption($("f-site"), site);
  const locations = [...new Set(streams.flatMap((s) => s.location_ids))].sort((a, b) => a - b);
  for (const loc of locations) ensureOption($("f-location"), String(loc));
}

function renderStats(s) {
  // /api/stats leaves txd's side out (it costs a call over the backward channel): keep the last one seen.
  if (s.sites) state.sites = s.sites;
  else s.sites = state.sites;
  state.stats = s;
  fillChoices(s);
  $("stats").textContent = `${s.records_indexed} records indexed · ${s.records_failed} in failed bursts · `
    + `${s.clip_bytes_fetched} clip bytes and ${s.keyframe_bytes_fetched} thumbnail bytes fetched`;
  renderMeter(s);
}

function renderMeter(s) {
  const semantic = s.semantic_bits_indexed;
  const video = (s.sites || []).filter((site) => site.reachable).reduce((a, site) => a + site.video_bytes * 8, 0);
  const clips = s.clip_bytes_fetched * 8;
  const thumbs = s.keyframe_bytes_fetched * 8;
  const rows = [
    ["semantic link", semantic, `${bits(semantic)} (${s.records_indexed} records × ${s.record_bits} bits)`],
    ["clips", clips, `${bits(clips)} over the backward channel`],
    ["thumbnails", thumbs, `${bits(thumbs)} over the backward channel`],
  ];
  if (video) rows.push(["the video itself", video, `${bits(video)}, ${Math.round(video / Math.max(semantic, 1)).toLocaleString()}× the semantic bits`]);
  const top = Math.max(...rows.map((r) => r[1]), 1);
  const nodes = rows.map(([label, n, text]) => {
    const fill = el("div");
    fill.style.width = `${Math.max(0.5, (100 * Math.log1p(n)) / Math.log1p(top))}%`;
    return el("div", { class: "meter-row" }, el("div", { text: `${label}: ${text}` }), el("div", { class: "bar", title: "log scale" }, fill));
  });
  $("meter").replaceChildren(...nodes);
}

// One line per camera site: its link as rxd sees it (up while its txd holds the link open), what txd says
// of its side when its backhaul (or transmitter.address) answers, and the counts rxd keeps across restarts.
function renderSites(s) {
  const nodes = (s.sites || []).map((site) => {
    const name = site.site_id ? `site ${site.site_id}` : `unnamed site${site.address ? ` at ${site.address}` : ""}`;
    const up = site.link_up || site.txd_link_up;
    const rx = (s.streams || []).filter((st) => (site.streams || []).includes(st.stream_id)).map((st) => st.link).filter(Boolean);
    const snr = rx.map((l) => l.snr_db).filter((v) => v !== null).pop();
    const es = snr !== undefined ? snr : site.snr_db;
    const lost = site.reachable ? `${site.records_lost} records lost` : `${site.records_failed || 0} records in failed bursts`;
    const last = site.last_record_at_s ? fmtTime(site.last_record_at_s) : "none yet";
    const node = el("div", { class: "site" },
      el("span", { class: `pill ${up ? "up" : "down"}`, text: up ? "link up" : "link down" }),
      ` ${name}`,
      el("div", { text: site.reachable ? `Es/N0 ${Number.isFinite(es) ? es.toFixed(1) + " dB" : "not measured yet"} · MCS ${site.mcs}` : `txd not reachable (${site.error || "no backhaul open"})` }),
      el("div", { text: `${bits(site.info_bits || 0)} received · ${site.bursts_failed || 0} bursts lost · ${lost} · last record ${last}` }));
    node.dataset.siteId = site.site_id || "";
    return node;
  });
  $("sites").replaceChildren(...nodes);
}

async function refreshStats() {
  try { renderStats(await api("/api/stats")); } catch (err) { /* the footer is informational */ }
}

function addArrival(r) {
  const li = el("li", {}, el("div", { text: r.description }),
    el("div", { class: "when", text: `${fmtTime(r.time_s)} · ${r.stream_id} #${r.record_id} · location ${r.location_id}` }));
  li.dataset.recordId = String(r.record_id);
  $("arrivals").prepend(li);
  ensureOption($("f-stream"), r.stream_id);
  ensureOption($("f-location"), String(r.location_id));
  while ($("arrivals").children.length > MAX_ARRIVALS) $("arrivals").lastElementChild.remove();
  if (state.stats) {
    state.stats.records_indexed += 1;
    renderStats(state.stats);
  }
}

function connectLive() {
  if (!window.EventSource) { $("live-state").textContent = "not supported"; return; }
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => { $("live-state").textContent = "live"; $("live-state").className = "pill up"; });
  source.addEventListener("error", () => { $("live-state").textContent = "reconnecting…"; $("live-state").className = "pill down"; });
  source.addEventListener("stats", (e) => { const s = JSON.parse(e.data); renderStats(s); renderSites(s); });
  source.addEventListener("record", (e) => addArrival(JSON.parse(e.data)));
}

// -- start ------------------------------------------------------------------------------------------------

async function start() {
  document.querySelector("#filters .grid").append(minProbabilitySelect());
  $("auto-thumbs").checked = localStorage.getItem("semcom.autoThumbs") === "1";
  $("auto-thumbs").onchange = () => localStorage.setItem("semcom.autoThumbs", $("auto-thumbs").checked ? "1" : "0");
  $("f-time").onchange = showCustomTime;
  $("search").onsubmit = (e) => { e.preventDefault(); search(true); };
  $("clear").onclick = () => { paramsToForm(new URLSearchParams({ q: $("q").value })); };
  $("hits").addEventListener("keydown", onHitsKey);
  window.addEventListener("popstate", () => {
    const p = new URLSearchParams(location.search);
    paramsToForm(p);
    if ([...p.keys()].length) runSearch(p);
    else { $("hits").replaceChildren(); $("slots").replaceChildren(); setStatus(""); }
  });
  try {
    state.schema = await api("/api/schema");
    state.slots = state.schema.fields;
    $("slot-filters").append(...state.slots.map(slotSelect));
  } catch (err) { setStatus(`could not load the schema: ${err.message}`, true); }
  await refreshStats();
  const params = new URLSearchParams(location.search);
  paramsToForm(params);
  if ([...params.keys()].length) runSearch(params);
  connectLive();
  document.body.dataset.ready = "1";
}

start();

// examples/multicam/page.cpp - the page served at "/": a grid with a tile per camera, each showing
// its newest frame at the UI rate with its boxes (drawn into the JPEG by the UI stage), the fps
// the browser receives for it, its status (online; reconnecting or offline since ...; paused),
// its detector share and input age; then the overall figures and the pipeline's tables.
//
// The websocket and the stage and channel tables are the examples' shared client code (/app.js:
// framepipePage.connect, showTables). Each frame's text message names its camera
// ({"type": "frame", "camera", "seq", "boxes", ...}); the state message (about once a second)
// lists the cameras with their figures (summary.hpp), which also adds and removes tiles.
// window.framepipe exposes, for the browser tests: framesDrawn, metricsUpdates, errors, and per
// camera tiles[name] = {frames, fps, status, lastMeta}.
#include "page.hpp"

namespace framepipe_examples::multicam {

const char* const page_html = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>framepipe-multicam</title>
<link rel="stylesheet" href="/app.css">
<style>
  #grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 10px;
          margin-bottom: 12px; }
  .tile { background: #1b1b1b; border: 1px solid #333; padding: 4px; }
  .tile canvas { width: 100%; display: block; }
  .tile .head { display: flex; justify-content: space-between; font-size: 13px; }
  .tile .facts { font-size: 12px; color: #aaa; }
  .tile .marker { font-size: 13px; color: #fbb; background: #2a1212; padding: 6px; min-height: 60px; }
  .tile .marker[hidden] { display: none; }
  .online { color: #7f7; } .reconnecting { color: #fc6; } .offline { color: #f77; } .paused { color: #99f; }
</style>
</head>
<body>
<h1>framepipe-multicam <span id="status">connecting</span></h1>
<div id="overall">cameras <span id="count">-</span> (active <span id="active">-</span>, paused
  <span id="paused">-</span>); detector: <span id="detector">-</span>, <span id="det-fps">-</span>
  frames/s, mean batch <span id="batch">-</span>; input age p50 <span id="age-p50">-</span> ms,
  p99 <span id="age-p99">-</span> ms; Jain's index <span id="jain">-</span></div>
<div id="grid"></div>
<div id="metrics">
  <table id="stages"><thead><tr><th>stage</th><th>fps</th><th>service p50 ms</th><th>busy</th></tr></thead><tbody></tbody></table>
  <table id="channels"><thead><tr><th>channel</th><th>pushed</th><th>dropped</th><th>by reason</th></tr></thead><tbody></tbody></table>
  <div>metrics updates: <span id="metrics-updates">0</span></div>
</div>
<script src="/app.js"></script>
<script>
"use strict";
const { $, fmt, connect, showTables } = framepipePage;
const fp = window.framepipe = { framesDrawn: 0, metricsUpdates: 0, errors: 0, tiles: {} };
const tiles = new Map();   // name -> { el, canvas, ctx, arrivals, drawing, queued, ... }

function tile(name) {
  let t = tiles.get(name);
  if (t) return t;
  const el = document.createElement("div");
  el.className = "tile";
  el.dataset.camera = name;
  el.innerHTML = `<div class="head"><b></b><span class="status"></span></div>
    <div class="marker" hidden></div><canvas width="320" height="240"></canvas>
    <div class="facts"></div>`;
  el.querySelector("b").textContent = name;
  $("grid").appendChild(el);
  const canvas = el.querySelector("canvas");
  t = { el, canvas, ctx: canvas.getContext("2d"), arrivals: [], drawing: false, queued: null,
        info: { frames: 0, fps: 0, status: "", lastMeta: null } };
  fp.tiles[name] = t.info;
  tiles.set(name, t);
  return t;
}

async function draw(t, blob, meta) {
  t.drawing = true;
  try {
    const bitmap = await createImageBitmap(blob);
    if (t.canvas.width !== bitmap.width || t.canvas.height !== bitmap.height) {
      t.canvas.width = bitmap.width; t.canvas.height = bitmap.height;
    }
    t.ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    fp.framesDrawn++;
    t.info.frames++;
    t.info.lastMeta = meta;
    t.arrivals.push(performance.now());
  } catch (e) {
    fp.errors++;
  } finally {
    t.drawing = false;
    if (t.queued) { const q = t.queued; t.queued = null; draw(t, q.blob, q.meta); }
  }
}

setInterval(() => {
  const now = performance.now();
  for (const t of tiles.values()) {
    while (t.arrivals.length && now - t.arrivals[0] > 2000) t.arrivals.shift();
    const span = t.arrivals.length > 1 ? Math.max(now - t.arrivals[0], 1000) : 2000;
    t.info.fps = t.arrivals.length > 1 ? (t.arrivals.length - 1) * 1000 / span : 0;
  }
}, 250);

function showCamera(c) {
  const t = tile(c.name);
  t.info.status = c.status;
  const status = t.el.querySelector(".status");
  status.className = `status ${c.status}`;
  status.textContent = c.status;
  const marker = t.el.querySelector(".marker");
  const down = c.status !== "online";
  if (down) {
    const since = c.offline_since_ms ? new Date(c.offline_since_ms).toLocaleTimeString() : "start";
    let text = c.status === "paused" ? `paused since ${since} (--max-active)`
                                     : `${c.status} since ${since} (${fmt(c.offline_for_s, 0)} s)`;
    if (c.last_error && c.status !== "paused") text += `: ${c.last_error}`;
    marker.textContent = text;
  }
  marker.hidden = !down;
  t.canvas.style.display = down ? "none" : "";
  t.el.querySelector(".facts").textContent =
    `${fmt(t.info.fps)} fps shown, camera ${fmt(c.fps)} fps; detector share ` +
    `${fmt(100 * c.detector_share)} %, input age p50 ${fmt(c.age_p50_ms)} ms, ` +
    `p99 ${fmt(c.age_p99_ms)} ms; weight ${c.weight}`;
}

connect(fp, {
  text(m) {
    if (m.type === "frame") { fp.pendingMeta = m; return; }
    if (m.type !== "state") return;
    fp.metricsUpdates++;
    $("metrics-updates").textContent = fp.metricsUpdates;
    const names = new Set((m.cameras || []).map(c => c.name));
    for (const [name, t] of tiles) {
      if (!names.has(name)) { t.el.remove(); tiles.delete(name); delete fp.tiles[name]; }
    }
    (m.cameras || []).forEach(showCamera);
    $("count").textContent = m.camera_count;
    $("active").textContent = m.active;
    $("paused").textContent = m.paused;
    $("detector").textContent = m.detector;
    $("det-fps").textContent = fmt(m.detector_fps);
    $("batch").textContent = fmt(m.mean_batch_size, 2);
    $("age-p50").textContent = fmt(m.age_p50_ms);
    $("age-p99").textContent = fmt(m.age_p99_ms);
    $("jain").textContent = fmt(m.jain_index, 3);
    showTables(m);
  },
  frame(blob) {
    const meta = fp.pendingMeta; fp.pendingMeta = null;
    if (!meta || !meta.camera) return;
    const t = tile(meta.camera);
    // The newest frame per tile; while one draws, only the latest waits.
    if (t.drawing) t.queued = { blob, meta }; else draw(t, blob, meta);
  },
});
</script>
</body>
</html>
)page";

} // namespace framepipe_examples::multicam

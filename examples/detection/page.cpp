// examples/detection/page.cpp - the page served at "/": live video on a canvas, the fps the
// browser receives, the detections, and the pipeline's metrics.
//
// Protocol (web_server.hpp): per frame a text message {"type":"frame", ...} then the JPEG as a
// binary message; about once a second {"type":"state", ...}. The boxes are drawn into the JPEG
// by the UI stage (so /video.mjpg shows them too); the page lists them and their age.
// window.framepipe exposes the page's counters to the browser tests.
#include "page.hpp"

namespace framepipe_examples::detection {

const char* const page_html = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>framepipe-detect</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 16px; background: #111; color: #ddd; }
  h1 { font-size: 18px; margin: 0 0 8px; }
  #wrap { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
  canvas { background: #000; max-width: 100%; border: 1px solid #333; }
  .big { font-size: 22px; color: #7f7; }
  table { border-collapse: collapse; margin-bottom: 10px; }
  td, th { padding: 2px 8px; text-align: right; border-bottom: 1px solid #333; }
  td:first-child, th:first-child { text-align: left; }
  #status.bad { color: #f77; }
  #boxes { max-height: 160px; overflow: auto; }
</style>
</head>
<body>
<h1>framepipe-detect <span id="mode"></span> <span id="status">connecting</span></h1>
<div id="wrap">
  <div>
    <canvas id="video" width="768" height="576"></canvas>
    <div>received <span id="fps" class="big">0.0</span> fps
      &nbsp; frame <span id="seq">-</span>
      &nbsp; result age <span id="age">-</span> ms (<span id="behind">-</span> frames behind)</div>
    <div>boxes: <span id="box-count">0</span> <div id="boxes"></div></div>
  </div>
  <div id="metrics">
    <div>detector: <span id="detector">-</span></div>
    <div>input age p50 <span id="det-age-p50">-</span> ms, p99 <span id="det-age-p99">-</span> ms;
      inference p50 <span id="inf-p50">-</span> ms, last <span id="inf-last">-</span> ms</div>
    <table id="stages"><thead><tr><th>stage</th><th>fps</th><th>service p50 ms</th><th>busy</th></tr></thead><tbody></tbody></table>
    <table id="channels"><thead><tr><th>channel</th><th>pushed</th><th>dropped</th><th>by reason</th></tr></thead><tbody></tbody></table>
    <div>metrics updates: <span id="metrics-updates">0</span></div>
  </div>
</div>
<script>
"use strict";
const fp = window.framepipe = { framesDrawn: 0, fps: 0, boxesDrawn: 0, lastBoxes: [],
                                metricsUpdates: 0, lastFrame: null, errors: 0 };
const canvas = document.getElementById("video");
const ctx = canvas.getContext("2d");
const $ = (id) => document.getElementById(id);
const arrivals = [];
let pendingMeta = null;
let drawing = false;
let queued = null;

function fmt(v, d = 1) { return (typeof v === "number" && isFinite(v)) ? v.toFixed(d) : "-"; }

async function draw(blob, meta) {
  drawing = true;
  try {
    const bitmap = await createImageBitmap(blob);
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width; canvas.height = bitmap.height;
    }
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    fp.framesDrawn++;
    const now = performance.now();
    arrivals.push(now);
    while (arrivals.length && now - arrivals[0] > 2000) arrivals.shift();
    if (meta) {
      fp.lastFrame = meta;
      const boxes = meta.boxes || [];
      fp.lastBoxes = boxes;
      fp.boxesDrawn += boxes.length;
      $("seq").textContent = meta.seq;
      $("age").textContent = meta.result_seq === null ? "-" : fmt(meta.result_age_ms);
      $("behind").textContent = meta.result_seq === null ? "-" : (meta.seq - meta.result_seq);
      $("box-count").textContent = boxes.length;
      $("boxes").textContent = boxes.map(b => `${b.label} ${fmt(b.score, 2)}`).join(", ");
    }
  } catch (e) {
    fp.errors++;
  } finally {
    drawing = false;
    if (queued) { const q = queued; queued = null; draw(q.blob, q.meta); }
  }
}

setInterval(() => {
  const now = performance.now();
  while (arrivals.length && now - arrivals[0] > 2000) arrivals.shift();
  // Frames over the last two seconds (or since the first frame, if sooner).
  const span = arrivals.length > 1 ? Math.max(now - arrivals[0], 1000) : 2000;
  fp.fps = arrivals.length > 1 ? (arrivals.length - 1) * 1000 / span : 0;
  $("fps").textContent = fmt(fp.fps);
}, 250);

function showState(s) {
  fp.metricsUpdates++;
  $("metrics-updates").textContent = fp.metricsUpdates;
  $("mode").textContent = `(${s.mode})`;
  $("detector").textContent = s.detector;
  $("det-age-p50").textContent = fmt(s.detect_age_p50_ms);
  $("det-age-p99").textContent = fmt(s.detect_age_p99_ms);
  $("inf-p50").textContent = fmt(s.inference_ms_p50);
  $("inf-last").textContent = fmt(s.inference_ms_last);
  const st = $("stages").tBodies[0];
  st.replaceChildren(...(s.stages || []).map(x => {
    const tr = document.createElement("tr");
    for (const v of [x.name, fmt(x.fps), fmt(x.service_p50_ms), fmt(100 * x.busy_ratio, 0) + "%"]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    return tr;
  }));
  const ch = $("channels").tBodies[0];
  ch.replaceChildren(...(s.channels || []).map(x => {
    const tr = document.createElement("tr");
    const reasons = Object.entries(x.dropped_by_reason || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    for (const v of [x.name, x.pushed, x.dropped, reasons]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    return tr;
  }));
}

function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.binaryType = "blob";
  ws.onopen = () => { $("status").textContent = "live"; $("status").className = ""; };
  ws.onclose = () => {
    $("status").textContent = "disconnected, retrying"; $("status").className = "bad";
    setTimeout(connect, 1000);
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { fp.errors++; return; }
      if (m.type === "frame") pendingMeta = m;
      else if (m.type === "state") showState(m);
      return;
    }
    const meta = pendingMeta; pendingMeta = null;
    // Draw the newest frame; if a draw is under way, keep only the latest one waiting.
    if (drawing) queued = { blob: ev.data, meta }; else draw(ev.data, meta);
  };
}
connect();
</script>
</body>
</html>
)page";

} // namespace framepipe_examples::detection

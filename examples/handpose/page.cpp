// examples/handpose/page.cpp - the page served at "/": the frames with the skeleton drawn, the
// current gesture and its confidence, how old the classified window is, and the pipeline's live
// metrics.
//
// Protocol (common/web_server.hpp): per frame a text message {"type":"frame", "seq", "points"
// (the 21 drawn joints in pixels), "gesture", "confidence", "window_age_ms", "result_age_ms",
// "result_seq", "joints_found"} then the JPEG
// (skeleton and caption already drawn in) as a binary message; about once a second
// {"type":"state", ...} with the program's summary so far and its stages and channels.
// window.framepipe exposes the page's counters to the browser test.
#include "page.hpp"

namespace handpose {

const char* const page_html = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>framepipe-handpose</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 16px; background: #111; color: #ddd; }
  h1 { font-size: 18px; margin: 0 0 8px; }
  #wrap { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
  canvas { background: #000; max-width: 100%; border: 1px solid #333; }
  #gesture { font-size: 28px; color: #7f7; }
  .big { font-size: 20px; color: #7f7; }
  table { border-collapse: collapse; margin-bottom: 10px; }
  td, th { padding: 2px 8px; text-align: right; border-bottom: 1px solid #333; }
  td:first-child, th:first-child { text-align: left; }
  #status.bad { color: #f77; }
</style>
</head>
<body>
<h1>framepipe-handpose <span id="mode"></span> <span id="status">connecting</span></h1>
<div id="wrap">
  <div>
    <canvas id="video" width="640" height="480"></canvas>
    <div>gesture <span id="gesture">-</span> confidence <span id="confidence" class="big">-</span></div>
    <div>window age when classified <span id="window-age">-</span> ms;
      classified window is <span id="result-age">-</span> ms older than this frame</div>
    <div>received <span id="fps" class="big">0.0</span> fps &nbsp; frame <span id="seq">-</span>
      &nbsp; joints found <span id="joints">-</span>/21</div>
  </div>
  <div id="metrics">
    <div>classifier <span id="classifier">-</span> (+<span id="extra">-</span> ms),
      accuracy <span id="accuracy">-</span> over <span id="accuracy-windows">-</span> windows</div>
    <div>display <span id="display-fps">-</span> fps, estimator <span id="estimate-fps">-</span> fps,
      classifications <span id="classify-per-s">-</span>/s</div>
    <div>window age p50 <span id="age-p50">-</span> ms, p99 <span id="age-p99">-</span> ms;
      windows dropped <span id="windows-dropped">-</span> of <span id="windows-ready">-</span></div>
    <table id="stages"><thead><tr><th>stage</th><th>fps</th><th>service p50 ms</th><th>busy</th></tr></thead><tbody></tbody></table>
    <table id="channels"><thead><tr><th>channel</th><th>pushed</th><th>dropped</th><th>by reason</th></tr></thead><tbody></tbody></table>
    <div>metrics updates: <span id="metrics-updates">0</span></div>
  </div>
</div>
<script>
"use strict";
const fp = window.framepipe = { framesDrawn: 0, fps: 0, gesture: null, confidence: null,
                                labelsShown: 0, metricsUpdates: 0, lastFrame: null, errors: 0 };
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
      $("seq").textContent = meta.seq;
      $("joints").textContent = meta.joints_found;
      if (meta.gesture !== null) {
        fp.gesture = meta.gesture;
        fp.confidence = meta.confidence;
        fp.labelsShown++;
        $("gesture").textContent = meta.gesture.replace("_", " ");
        $("confidence").textContent = fmt(100 * meta.confidence, 0) + "%";
        $("window-age").textContent = fmt(meta.window_age_ms);
        $("result-age").textContent = fmt(meta.result_age_ms, 0);
      }
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
  const span = arrivals.length > 1 ? Math.max(now - arrivals[0], 1000) : 2000;
  fp.fps = arrivals.length > 1 ? (arrivals.length - 1) * 1000 / span : 0;
  $("fps").textContent = fmt(fp.fps);
}, 250);

function row(values) {
  const tr = document.createElement("tr");
  for (const v of values) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); }
  return tr;
}

function showState(s) {
  fp.metricsUpdates++;
  $("metrics-updates").textContent = fp.metricsUpdates;
  $("mode").textContent = `(${s.mode}, ${s.input})`;
  $("classifier").textContent = s.classifier;
  $("extra").textContent = s.classifier_extra_ms;
  $("accuracy").textContent = s.accuracy === null ? "-" : fmt(100 * s.accuracy, 0) + "%";
  $("accuracy-windows").textContent = s.accuracy_windows;
  $("display-fps").textContent = fmt(s.display_fps);
  $("estimate-fps").textContent = fmt(s.estimate_fps);
  $("classify-per-s").textContent = fmt(s.classify_per_s, 2);
  $("age-p50").textContent = fmt(s.window_age_p50_ms);
  $("age-p99").textContent = fmt(s.window_age_p99_ms);
  $("windows-dropped").textContent = s.windows_dropped;
  $("windows-ready").textContent = s.windows_ready;
  $("stages").tBodies[0].replaceChildren(...(s.stages || []).map(x =>
    row([x.name, fmt(x.fps), fmt(x.service_p50_ms), fmt(100 * x.busy_ratio, 0) + "%"])));
  $("channels").tBodies[0].replaceChildren(...(s.channels || []).map(x =>
    row([x.name, x.pushed, x.dropped,
         Object.entries(x.dropped_by_reason || {}).map(([k, v]) => `${k} ${v}`).join(", ")])));
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

} // namespace handpose

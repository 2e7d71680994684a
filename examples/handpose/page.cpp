// examples/handpose/page.cpp - the page served at "/": the frames with the skeleton drawn, the
// current gesture and its confidence, how old the classified window is, and the pipeline's live
// metrics.
//
// The websocket, the canvas, the fps counter and the stage and channel tables are the examples'
// shared client code (/app.js, common/page_assets.cpp); this page adds what it shows of a frame
// ({"type":"frame", "seq", "points" (the 21 drawn joints in pixels), "gesture", "confidence",
// "window_age_ms", "result_age_ms", "result_seq", "joints_found"}, whose JPEG has the skeleton
// and caption drawn in) and of a state message (the program's summary so far).
// window.framepipe also keeps gesture, confidence and labelsShown for the browser test.
#include "page.hpp"

namespace handpose {

const char* const page_html = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>framepipe-handpose</title>
<link rel="stylesheet" href="/app.css">
<style>
  #gesture { font-size: 28px; color: #7f7; }
  .big { font-size: 20px; color: #7f7; }
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
<script src="/app.js"></script>
<script>
"use strict";
const { $, fmt } = framepipePage;
framepipePage.start({
  counters: { gesture: null, confidence: null, labelsShown: 0 },
  onFrame(meta, fp) {
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
  },
  onState(s) {
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
  },
});
</script>
</body>
</html>
)page";

} // namespace handpose

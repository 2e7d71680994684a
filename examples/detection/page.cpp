// examples/detection/page.cpp - the page served at "/": live video on a canvas, the fps the
// browser receives, the detections, and the pipeline's metrics.
//
// The websocket, the canvas, the fps counter and the stage and channel tables are the examples'
// shared client code (/app.js, common/page_assets.cpp); this page adds what it shows of a frame
// ({"type":"frame", "seq", "boxes", "result_seq", "result_age_ms"}: the boxes are drawn into the
// JPEG by the UI stage, so /video.mjpg shows them too; the page lists them and their age) and of
// a state message. window.framepipe also counts boxesDrawn and keeps lastBoxes for the tests.
#include "page.hpp"

namespace framepipe_examples::detection {

const char* const page_html = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>framepipe-detect</title>
<link rel="stylesheet" href="/app.css">
<style>
  .big { font-size: 22px; color: #7f7; }
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
<script src="/app.js"></script>
<script>
"use strict";
const { $, fmt } = framepipePage;
framepipePage.start({
  counters: { boxesDrawn: 0, lastBoxes: [] },
  onFrame(meta, fp) {
    const boxes = meta.boxes || [];
    fp.lastBoxes = boxes;
    fp.boxesDrawn += boxes.length;
    $("age").textContent = meta.result_seq === null ? "-" : fmt(meta.result_age_ms);
    $("behind").textContent = meta.result_seq === null ? "-" : (meta.seq - meta.result_seq);
    $("box-count").textContent = boxes.length;
    $("boxes").textContent = boxes.map(b => `${b.label} ${fmt(b.score, 2)}`).join(", ");
  },
  onState(s) {
    $("mode").textContent = `(${s.mode})`;
    $("detector").textContent = s.detector;
    $("det-age-p50").textContent = fmt(s.detect_age_p50_ms);
    $("det-age-p99").textContent = fmt(s.detect_age_p99_ms);
    $("inf-p50").textContent = fmt(s.inference_ms_p50);
    $("inf-last").textContent = fmt(s.inference_ms_last);
  },
});
</script>
</body>
</html>
)page";

} // namespace framepipe_examples::detection

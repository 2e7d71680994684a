// examples/common/page_assets.cpp - the client code both example pages load from /app.js: the
// websocket, drawing each JPEG on the canvas, the received fps, and the metrics panel's stage and
// channel tables. Each page keeps only its own HTML and what it shows of a frame or a state.
//
//   <link rel="stylesheet" href="/app.css">
//   ... <canvas id="video"> #fps #seq #status #metrics-updates, tables #stages and #channels ...
//   <script src="/app.js"></script>
//   <script>
//   const { $, fmt } = framepipePage;
//   framepipePage.start({
//     counters: { boxesDrawn: 0 },     // the page's own fields of window.framepipe
//     onFrame(meta, fp) { ... },        // a frame's description, once its JPEG is on the canvas
//     onState(state, fp) { ... },       // about once a second, after the shared tables
//   });
//   </script>
//
// Protocol (web_server.hpp): per frame a text message {"type":"frame", "seq", ...} then the JPEG
// as a binary message; about once a second {"type":"state", ...} with the program's summary,
// its "stages" and "channels" (program.hpp's snapshot_json). The newest frame is drawn; while a
// draw is under way only the latest frame waits. window.framepipe exposes the page's counters
// (framesDrawn, fps, metricsUpdates, lastFrame, errors and the page's own) to the browser tests.
//
// A page with a layout of its own (framepipe-multicam's grid) uses the parts: connect(fp, {text,
// frame}) for the websocket and showTables(state) for the stage and channel tables.
//
// Live inputs: a state's "sources" (common/live_input.hpp) show as a status per source in the
// heading (#sources: "camera: online"), and while one is not online the canvas is hidden behind
// an explicit marker (#offline: "camera offline since 14:02:11 (12 s), reconnecting, ...")
// instead of showing a frozen last frame. The server sends the state alone while no frame comes,
// so the marker appears within about a second. window.framepipe.sources and .offlineShown
// expose it to the tests.
#include "common/page_assets.hpp"

namespace framepipe_examples {

const char* const page_script = R"js("use strict";
window.framepipePage = (() => {
  const $ = (id) => document.getElementById(id);
  function fmt(v, d = 1) { return (typeof v === "number" && isFinite(v)) ? v.toFixed(d) : "-"; }
  function row(values) {
    const tr = document.createElement("tr");
    for (const v of values) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); }
    return tr;
  }

  function start(page) {
    const fp = window.framepipe = Object.assign(
      { framesDrawn: 0, fps: 0, metricsUpdates: 0, lastFrame: null, errors: 0, sources: [],
        offlineShown: false }, page.counters || {});
    const canvas = $("video");
    const marker = document.createElement("div");
    marker.id = "offline";
    marker.hidden = true;
    canvas.parentNode.insertBefore(marker, canvas);
    const pills = document.createElement("span");
    pills.id = "sources";
    (document.querySelector("h1") || document.body).appendChild(pills);
    const ctx = canvas.getContext("2d");
    const arrivals = [];
    let pendingMeta = null;
    let drawing = false;
    let queued = null;

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
          if (page.onFrame) page.onFrame(meta, fp);
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

    // The live sources' status; the marker instead of a frozen frame while one is not online.
    function showSources(sources) {
      fp.sources = sources;
      pills.replaceChildren(...sources.map((x) => {
        const el = document.createElement("span");
        el.className = `source ${x.status}`;
        el.textContent = `${x.name}: ${x.status}`;
        el.title = x.input;
        return el;
      }));
      const down = sources.find((x) => x.status !== "online");
      if (down) {
        const since = down.offline_since_ms ? new Date(down.offline_since_ms).toLocaleTimeString() : "start";
        let text = `${down.name} offline since ${since} (${fmt(down.offline_for_s, 0)} s)`;
        if (down.status === "reconnecting") text += ", reconnecting";
        if (down.attempt > 0) {
          text += `, ${down.attempt} failed attempt${down.attempt > 1 ? "s" : ""} in a row` +
                  (down.state === "backoff" ? `, next in ${fmt(down.backoff_s)} s` : "");
        }
        if (down.last_error) text += `: ${down.last_error}`;
        marker.textContent = text;
      }
      marker.hidden = !down;
      canvas.style.display = down ? "none" : "";
      fp.offlineShown = !!down;
    }

    function showState(s) {
      fp.metricsUpdates++;
      showSources(s.sources || []);
      $("metrics-updates").textContent = fp.metricsUpdates;
      showTables(s);
      if (page.onState) page.onState(s, fp);
    }

    connect(fp, {
      frame(blob) {
        const meta = pendingMeta; pendingMeta = null;
        // Draw the newest frame; if a draw is under way, keep only the latest one waiting.
        if (drawing) queued = { blob, meta }; else draw(blob, meta);
      },
      text(m) {
        if (m.type === "frame") pendingMeta = m;
        else if (m.type === "state") showState(m);
      },
    });
    return fp;
  }

  // The websocket, reconnected every second while it is down: on.text(message) for each JSON
  // text message, on.frame(blob) for each JPEG; #status says whether it is live.
  function connect(fp, on) {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    ws.binaryType = "blob";
    ws.onopen = () => { $("status").textContent = "live"; $("status").className = ""; };
    ws.onclose = () => {
      $("status").textContent = "disconnected, retrying"; $("status").className = "bad";
      setTimeout(() => connect(fp, on), 1000);
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        let m;
        try { m = JSON.parse(ev.data); } catch (e) { fp.errors++; return; }
        on.text(m);
        return;
      }
      on.frame(ev.data);
    };
  }

  // The pipeline's stage and channel tables (#stages, #channels) from a state message.
  function showTables(s) {
    $("stages").tBodies[0].replaceChildren(...(s.stages || []).map(x =>
      row([x.name, fmt(x.fps), fmt(x.service_p50_ms), fmt(100 * x.busy_ratio, 0) + "%"])));
    $("channels").tBodies[0].replaceChildren(...(s.channels || []).map(x =>
      row([x.name, x.pushed, x.dropped,
           Object.entries(x.dropped_by_reason || {}).map(([k, v]) => `${k} ${v}`).join(", ")])));
  }

  return { $, fmt, row, start, connect, showTables };
})();
)js";

const char* const page_style = R"css(body { font: 14px system-ui, sans-serif; margin: 16px; background: #111; color: #ddd; }
h1 { font-size: 18px; margin: 0 0 8px; }
#wrap { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
canvas { background: #000; max-width: 100%; border: 1px solid #333; }
table { border-collapse: collapse; margin-bottom: 10px; }
td, th { padding: 2px 8px; text-align: right; border-bottom: 1px solid #333; }
td:first-child, th:first-child { text-align: left; }
#status.bad { color: #f77; }
#sources .source { margin-left: 10px; font-size: 14px; }
.source.online { color: #7f7; }
.source.reconnecting { color: #fc6; }
.source.offline { color: #f77; }
#offline { box-sizing: border-box; width: 768px; max-width: 100%; min-height: 240px; padding: 24px;
           background: #2a1212; border: 1px solid #733; color: #fbb; font-size: 20px; }
#offline[hidden] { display: none; }
)css";

} // namespace framepipe_examples

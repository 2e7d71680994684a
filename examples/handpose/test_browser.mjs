// framepipe-handpose's page in a real browser (headless Debian chromium, playwright-core),
// through the shared harness (examples/common/browser/harness.mjs).
//
//   node test_browser.mjs --exe build/dev/examples/handpose/framepipe-handpose --artifacts DIR
//
// Against the program on 127.0.0.1 (any free port), synthetic hand, pipelined mode:
// - the canvas draws frames (a picture, not a flat colour) at >= 12 fps (15 sent);
// - the skeleton is drawn: green bone pixels on the canvas along a bone the frame describes;
// - the gesture label is shown (one of the vocabulary), with its confidence and window age;
// - the metrics panel updates, listing the estimator and classifier stages and the window.
// Saves DIR/handpose.png.
import { test, get, checkPrometheus } from "../common/browser/harness.mjs";

const gestures = ["idle", "swipe left", "swipe right", "wave", "circle", "grab"];

await test("framepipe-handpose in chromium", async (t) => {
  const app = await t.start(t.opts.exe, ["--port", "0", "--duration", "600"]);
  const page = await t.page(app.url);

  await t.waitFor(page, () => window.framepipe.framesDrawn >= 20, "the canvas draws frames (20)");
  const lit = await page.evaluate(() => {
    const c = document.getElementById("video");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let sum = 0, sum2 = 0, n = 0;
    for (let i = 0; i < d.length; i += 4 * 97) { const v = d[i + 1]; sum += v; sum2 += v * v; n++; }
    const mean = sum / n;
    return { width: c.width, height: c.height, variance: sum2 / n - mean * mean };
  });
  t.check(lit.width === 640 && lit.height === 480, `the canvas has the frame's size (${lit.width}x${lit.height})`);
  t.check(lit.variance > 50, `the canvas shows a picture, not a flat colour (variance ${lit.variance.toFixed(0)})`);

  // The skeleton: the display draws the bones in pure green; look along the wrist -> middle
  // knuckle bone... of the frame on the canvas (draws and descriptions arrive together).
  const bone = await page.evaluate(() => {
    const f = window.framepipe.lastFrame;
    const c = document.getElementById("video");
    const ctx = c.getContext("2d");
    // Bones 0-5 (wrist to index knuckle) and 0-17 (wrist to pinky knuckle): sample their middles.
    let green = 0, looked = 0;
    for (const [a, b] of [[0, 5], [0, 17], [5, 6], [9, 10], [13, 14]]) {
      const x = Math.round((f.points[a][0] + f.points[b][0]) / 2);
      const y = Math.round((f.points[a][1] + f.points[b][1]) / 2);
      const d = ctx.getImageData(Math.max(0, x - 2), Math.max(0, y - 2), 5, 5).data;
      let hit = false;
      for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 170 && d[i] < 110 && d[i + 2] < 110) hit = true;
      looked++;
      if (hit) green++;
    }
    return { green, looked, seq: f.seq };
  });
  t.check(bone.green >= 3, `the skeleton is drawn on the canvas (${bone.green} of ${bone.looked} bones found, frame ${bone.seq})`);

  await t.waitFor(page, () => window.framepipe.fps >= 12, "the page's fps counter reads >= 12");

  // The label: the first window is ready after 2 s (30 estimates at 15 fps).
  await t.waitFor(page, () => window.framepipe.labelsShown > 0, "a gesture label arrives");
  const label = await page.evaluate(() => ({
    gesture: document.getElementById("gesture").textContent,
    confidence: document.getElementById("confidence").textContent,
    windowAge: document.getElementById("window-age").textContent,
    resultAge: document.getElementById("result-age").textContent,
  }));
  t.check(gestures.includes(label.gesture), `the gesture label is shown (${label.gesture})`);
  t.check(/^\d+%$/.test(label.confidence), `its confidence is shown (${label.confidence})`);
  t.check(/^\d+(\.\d+)?$/.test(label.windowAge), `the window's age is shown (${label.windowAge} ms)`);
  t.check(/^-?\d+$/.test(label.resultAge), `the classified window's lag is shown (${label.resultAge} ms)`);

  // Live metrics.
  await t.waitFor(page, () => window.framepipe.metricsUpdates >= 2, "the metrics panel updates");
  const panel = await page.evaluate(() => ({
    stages: document.getElementById("stages").textContent,
    channels: document.getElementById("channels").textContent,
    estimateFps: document.getElementById("estimate-fps").textContent,
  }));
  for (const stage of ["camera", "estimator", "display", "windower", "classifier"]) {
    t.check(panel.stages.includes(stage), `the stages table lists ${stage}`);
  }
  t.check(panel.channels.includes("hands"), "the channels table lists the sliding window");
  t.check(Number(panel.estimateFps) > 0, `the estimator's rate is shown (${panel.estimateFps})`);

  const metrics = await get(new URL("/metrics", app.url).href);
  t.check(metrics.status === 200, "/metrics answers");
  let samples = 0;
  try { samples = checkPrometheus(metrics.body.toString()); } catch (e) { t.check(false, e.message); }
  t.check(samples > 0, `/metrics is Prometheus text (${samples} samples)`);
  const stats = JSON.parse((await get(new URL("/stats.json", app.url).href)).body.toString());
  t.check(stats.mode === "pipelined" && typeof stats.display_fps === "number", "/stats.json has the summary");

  await t.screenshot(page, "handpose.png");
});

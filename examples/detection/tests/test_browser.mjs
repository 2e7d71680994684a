// framepipe-detect's page in a real browser (headless Debian chromium, playwright-core).
//
//   node test_browser.mjs --exe build/dev/examples/detection/framepipe-detect --artifacts DIR
//
// Against the program on 127.0.0.1 (any free port), HOG on vtest.avi:
// - the canvas draws frames, the page's fps counter reads >= 12 (15 fps sent);
// - boxes are listed and drawn (the box outline's green is on the canvas where the frame's
//   description says a box is), and the metrics panel updates;
// - two pages at once both get frames;
// - /video.mjpg delivers multipart JPEG frames; /metrics parses as Prometheus text.
// Saves DIR/detection.png.
import { test, get, multipartParts, checkPrometheus } from "../../common/browser/harness.mjs";

await test("framepipe-detect in chromium", async (t) => {
  const app = await t.start(t.opts.exe, ["--port", "0", "--duration", "600"]);
  const page = await t.page(app.url);

  await t.waitFor(page, () => window.framepipe.framesDrawn >= 30, "the canvas draws frames (30)");
  const lit = await page.evaluate(() => {
    const c = document.getElementById("video");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let sum = 0, sum2 = 0, n = 0;
    for (let i = 0; i < d.length; i += 4 * 97) { const v = d[i + 1]; sum += v; sum2 += v * v; n++; }
    const mean = sum / n;
    return { width: c.width, height: c.height, mean, variance: sum2 / n - mean * mean };
  });
  t.check(lit.width === 768 && lit.height === 576, `the canvas has the video's size (${lit.width}x${lit.height})`);
  t.check(lit.variance > 100, `the canvas shows a picture, not a flat colour (variance ${lit.variance.toFixed(0)})`);

  await t.waitFor(page, () => window.framepipe.fps >= 12, "the page's fps counter reads >= 12");
  const shown = Number(await page.textContent("#fps"));
  t.check(shown >= 12, `the fps shown on the page is >= 12 (${shown})`);

  // Boxes: wait for a frame with people, then look for the outline on the canvas.
  await t.waitFor(page, () => window.framepipe.lastBoxes.length > 0 && window.framepipe.boxesDrawn > 0,
                  "the page receives detection boxes");
  const box = await page.evaluate(() => {
    const boxes = window.framepipe.lastBoxes;
    const b = boxes.reduce((a, c) => (c.w * c.h > a.w * a.h ? c : a), boxes[0]);
    const c = document.getElementById("video");
    const ctx = c.getContext("2d");
    // The left edge of the box, half-way down: the 2-px green outline drawn by the UI stage.
    const y = Math.round(b.y + b.h / 2);
    const x0 = Math.max(0, Math.round(b.x) - 3);
    const d = ctx.getImageData(x0, y, 7, 1).data;
    let green = false;
    for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 150 && d[i] < 120 && d[i + 2] < 120) green = true;
    return { green, label: b.label, listed: document.getElementById("boxes").textContent,
             count: Number(document.getElementById("box-count").textContent) };
  });
  t.check(box.green, "the box outline is drawn on the canvas where the frame says a box is");
  t.check(box.label === "person" && box.listed.includes("person"), `boxes are labelled (${box.listed})`);
  t.check(box.count > 0, `the box count is shown (${box.count})`);
  await t.waitFor(page, () => /^\d+(\.\d+)?$/.test(document.getElementById("age").textContent),
                  "the result's age is shown");

  // The metrics panel: it updates about once a second, with the pipeline's stages and drops.
  await t.waitFor(page, () => window.framepipe.metricsUpdates >= 2, "the metrics panel updates");
  const first = await page.evaluate(() => ({ n: window.framepipe.metricsUpdates,
                                             text: document.getElementById("channels").textContent }));
  await t.waitFor(page, (n) => window.framepipe.metricsUpdates > n + 1, "the metrics panel keeps updating", first.n);
  const panel = await page.evaluate(() => ({
    stages: [...document.querySelectorAll("#stages tbody tr td:first-child")].map((td) => td.textContent),
    channels: document.getElementById("channels").textContent,
    inference: Number(document.getElementById("inf-p50").textContent),
    age: Number(document.getElementById("det-age-p99").textContent),
  }));
  for (const s of ["camera", "detector", "ui"]) t.check(panel.stages.includes(s), `the stage table lists ${s}`);
  t.check(panel.channels !== first.text, "the channel counters changed between updates");
  t.check(panel.channels.includes("rate_limited"), "drops are shown by reason");
  t.check(panel.inference > 0, `the inference time is shown (${panel.inference} ms)`);
  t.check(panel.age >= 0, `the detector's input age is shown (${panel.age} ms)`);

  await t.screenshot(page, "detection.png");

  // Two pages at once: both get frames.
  const second = await t.page(app.url);
  const before = await page.evaluate(() => window.framepipe.framesDrawn);
  await t.waitFor(second, () => window.framepipe.framesDrawn >= 20, "a second page draws frames too");
  await t.waitFor(page, (n) => window.framepipe.framesDrawn >= n + 20,
                  "the first page keeps drawing while the second one runs", before);

  // /video.mjpg and /metrics.
  const parts = await multipartParts(`${app.url}video.mjpg`, 3);
  t.check(parts.length === 3, "/video.mjpg delivers 3 parts");
  for (const p of parts) {
    t.check(/Content-Type: image\/jpeg/i.test(p.headers), "each part is image/jpeg");
    t.check(p.body[0] === 0xff && p.body[1] === 0xd8 && p.body.at(-2) === 0xff && p.body.at(-1) === 0xd9,
            `each part is a whole JPEG (${p.body.length} bytes)`);
  }
  const metrics = await get(`${app.url}metrics`);
  t.check(metrics.status === 200, "/metrics answers 200");
  let samples = 0;
  try { samples = checkPrometheus(metrics.body.toString()); } catch (e) { t.check(false, e.message); }
  t.check(samples > 10, `/metrics parses as Prometheus text (${samples} samples)`);
  let threw = false;
  try { checkPrometheus("framepipe_x{a=1} 2\n"); } catch { threw = true; }
  t.check(threw, "the Prometheus check rejects a malformed exposition");
});

// framepipe-detect's page on a live input whose server goes away and comes back (headless Debian
// chromium, playwright-core, the test RTSP server):
//
//   node test_browser_live.mjs --exe framepipe-detect --artifacts DIR --rtsp-server rtsp_server.py
//
// - while the camera streams: frames are drawn, the heading says "camera: online", no marker;
// - the server is killed: the canvas is replaced by an explicit "camera offline since ..."
//   marker (not a frozen last frame), the heading says the camera is reconnecting, and the
//   page keeps getting state messages although no frame comes;
// - the server is restarted on its port: the marker goes, frames are drawn again.
// Saves DIR/detection-offline.png.
import { test } from "../../common/browser/harness.mjs";

await test("framepipe-detect live page in chromium", async (t) => {
  let server = await t.rtspServer();
  const app = await t.start(t.opts.exe, ["--video", server.url, "--port", "0", "--duration", "600",
                                         "--reconnect-initial", "0.2", "--reconnect-max", "0.5"]);
  const page = await t.page(app.url);

  await t.waitFor(page, () => window.framepipe.framesDrawn >= 20, "the canvas draws the live frames");
  await t.waitFor(page, () => window.framepipe.sources.length === 1 &&
                              window.framepipe.sources[0].status === "online",
                  "the state says the camera is online");
  const live = await page.evaluate(() => ({
    heading: document.getElementById("sources").textContent,
    marker: !document.getElementById("offline").hidden,
    canvas: getComputedStyle(document.getElementById("video")).display,
  }));
  t.check(live.heading.includes("camera: online"), `the heading shows the status (${live.heading})`);
  t.check(!live.marker && live.canvas !== "none", "no offline marker while online; the canvas shows");

  await server.kill();
  await t.waitFor(page, () => window.framepipe.offlineShown, "the page shows the offline marker");
  const down = await page.evaluate(() => ({
    text: document.getElementById("offline").textContent,
    visible: getComputedStyle(document.getElementById("offline")).display !== "none",
    canvas: getComputedStyle(document.getElementById("video")).display,
    heading: document.getElementById("sources").textContent,
    updates: window.framepipe.metricsUpdates,
    drawn: window.framepipe.framesDrawn,
  }));
  t.check(/^camera offline since \d{1,2}:\d{2}:\d{2}/.test(down.text), `the marker says since when (${down.text})`);
  t.check(down.visible, "the marker is visible");
  t.check(down.canvas === "none", "the frozen last frame is not shown");
  t.check(/camera: (reconnecting|offline)/.test(down.heading), `the heading says so (${down.heading})`);
  // No frames now, yet the state keeps coming: the marker's time is live.
  await t.waitFor(page, (n) => window.framepipe.metricsUpdates >= n + 2,
                  "state messages keep coming while no frame does", down.updates);
  const still = await page.evaluate(() => window.framepipe.framesDrawn);
  t.check(still - down.drawn <= 1, `no new frames while the server is down (${still - down.drawn})`);
  await t.screenshot(page, "detection-offline.png");

  server = await t.rtspServer(server.port);
  await t.waitFor(page, () => !window.framepipe.offlineShown, "the marker goes when the camera is back");
  await t.waitFor(page, (n) => window.framepipe.framesDrawn >= n + 20,
                  "frames are drawn again", still);
  const back = await page.evaluate(() => ({
    canvas: getComputedStyle(document.getElementById("video")).display,
    heading: document.getElementById("sources").textContent,
  }));
  t.check(back.canvas !== "none", "the canvas shows again");
  t.check(back.heading.includes("camera: online"), `the heading says online (${back.heading})`);
});

// examples/common/browser/harness.mjs - browser tests of the examples' web UIs.
//
//   import { test } from "../../common/browser/harness.mjs";
//   await test("framepipe-detect page", async (t) => {
//     const app = await t.start(exe, ["--port", "0"]);         // waits for "serving ... at http://h:p/"
//     const page = await t.page(app.url);                       // headless Debian chromium
//     await t.waitFor(page, () => window.framepipe.fps >= 12, "fps >= 12");
//     t.check(cond, "what was expected");                       // records a failure, goes on
//     await t.screenshot(page, "detection.png");                // into --artifacts DIR
//   });
//
// Command line of a test script: --exe PATH (the program), --artifacts DIR (screenshots),
// --chromium PATH (default: $CHROMIUM or /usr/bin/chromium), and for live inputs
// --rtsp-server PATH (common/testing/rtsp_server.py) with --python PATH (default /usr/bin/python3,
// Debian's, which has the GStreamer bindings): t.rtspServer() starts it.
//
// The program is stopped with SIGTERM at the end and must exit 0; the browser is closed; any
// failed check, timeout or crash makes the process exit 1, after printing each failure on its
// own line. Waits are conditions polled by the browser (page.waitForFunction), never sleeps.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import http from "node:http";
import path from "node:path";

export function args() {
  const out = { exe: null, artifacts: ".", chromium: process.env.CHROMIUM || "/usr/bin/chromium",
                "rtsp-server": null, python: "/usr/bin/python3" };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) {
    const key = a[i].replace(/^--/, "");
    if (!(key in out)) throw new Error(`unknown argument ${a[i]}`);
    out[key] = a[i + 1];
  }
  if (!out.exe) throw new Error("--exe PATH is required");
  return out;
}

// Headless chromium as root in a container: no sandbox (it needs user namespaces), /tmp instead
// of a small /dev/shm, no GPU.
export const chromiumFlags = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                              "--no-first-run", "--no-default-browser-check"];

// Starts an example program; resolves once it prints where it serves.
export function startProgram(exe, argv, timeoutMs = 60000) {
  return new Promise((resolve, reject) => {
    const proc = spawn(exe, argv, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let settled = false;
    const timer = setTimeout(() => {
      if (!settled) { settled = true; proc.kill("SIGKILL"); reject(new Error(`${exe} did not start serving: ${output.slice(-2000)}`)); }
    }, timeoutMs);
    const onData = (d) => {
      output += d.toString();
      const m = output.match(/serving the live UI at (http:\/\/[0-9.]+:(\d+)\/)/);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        const exited = new Promise((res) => proc.on("exit", (code, signal) => res(signal ? 128 : code)));
        resolve({ proc, url: m[1], port: Number(m[2]), output: () => output,
                  stop: async () => { proc.kill("SIGTERM"); return exited; } });
      }
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    proc.on("exit", (code) => {
      if (!settled) { settled = true; clearTimeout(timer); reject(new Error(`${exe} exited ${code}: ${output.slice(-2000)}`)); }
    });
  });
}

// Starts the test RTSP server (port 0: any free one); resolves once it prints READY:
// { proc, url, port, kill() } (kill: SIGKILL, resolves once it has exited).
export function startRtspServer(python, script, port = 0, extra = [], timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const proc = spawn(python, [script, "--port", String(port), "--width", "384", "--height", "288", ...extra],
                       { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let settled = false;
    const exited = new Promise((res) => proc.on("exit", () => res()));
    const timer = setTimeout(() => {
      if (!settled) { settled = true; proc.kill("SIGKILL"); reject(new Error(`rtsp_server.py did not start: ${output}`)); }
    }, timeoutMs);
    const onData = (d) => {
      output += d.toString();
      const m = output.match(/READY (rtsp:\/\/[0-9.]+:(\d+)\/\S*)/);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        resolve({ proc, url: m[1], port: Number(m[2]),
                  kill: async () => { proc.kill("SIGKILL"); return exited; } });
      }
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    proc.on("exit", (code) => {
      if (!settled) { settled = true; clearTimeout(timer); reject(new Error(`rtsp_server.py exited ${code}: ${output}`)); }
    });
  });
}

// GET url: { status, headers, body (Buffer) }.
export function get(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    }).on("error", reject);
  });
}

// The first `count` parts of a multipart/x-mixed-replace stream: [{ headers, body (Buffer) }].
export function multipartParts(url, count, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      const type = res.headers["content-type"] || "";
      const m = type.match(/^multipart\/x-mixed-replace;\s*boundary=(.+)$/);
      if (res.statusCode !== 200 || !m) { req.destroy(); reject(new Error(`not multipart: ${res.statusCode} ${type}`)); return; }
      const boundary = Buffer.from(`--${m[1]}\r\n`);
      let buf = Buffer.alloc(0);
      const parts = [];
      res.on("data", (c) => {
        buf = Buffer.concat([buf, c]);
        for (;;) {
          const start = buf.indexOf(boundary);
          if (start < 0) break;
          const headEnd = buf.indexOf("\r\n\r\n", start);
          if (headEnd < 0) break;
          const head = buf.subarray(start + boundary.length, headEnd).toString();
          const len = Number((head.match(/Content-Length:\s*(\d+)/i) || [])[1]);
          if (!(len >= 0)) { req.destroy(); reject(new Error(`part without Content-Length: ${head}`)); return; }
          if (buf.length < headEnd + 4 + len) break;
          parts.push({ headers: head, body: buf.subarray(headEnd + 4, headEnd + 4 + len) });
          buf = buf.subarray(headEnd + 4 + len);
          if (parts.length === count) { clearTimeout(timer); req.destroy(); resolve(parts); return; }
        }
      });
    });
    req.on("error", (e) => { if (e.code !== "ECONNRESET") reject(e); });
    const timer = setTimeout(() => { req.destroy(); reject(new Error("multipart: timed out")); }, timeoutMs);
  });
}

// Throws unless `text` is Prometheus text exposition 0.0.4 (each sample after its # TYPE).
export function checkPrometheus(text) {
  const families = new Set();
  let samples = 0;
  const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? (-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|NaN|\+Inf|-Inf)$/;
  for (const line of text.split("\n")) {
    if (line === "") continue;
    let m;
    if ((m = line.match(/^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary|histogram|untyped)$/))) { families.add(m[1]); continue; }
    if (/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) continue;
    if (!(m = line.match(sample))) throw new Error(`not a Prometheus line: ${line}`);
    let family = m[1];
    for (const suffix of ["_sum", "_count", "_bucket"]) {
      if (!families.has(family) && family.endsWith(suffix)) family = family.slice(0, -suffix.length);
    }
    if (!families.has(family)) throw new Error(`sample before its # TYPE: ${line}`);
    samples++;
  }
  if (samples === 0) throw new Error("no samples");
  return samples;
}

// Runs one browser test. See the file comment.
export async function test(name, body) {
  const opts = args();
  mkdirSync(opts.artifacts, { recursive: true });
  const failures = [];
  const programs = [];
  const servers = [];
  let browser = null;
  const t = {
    opts,
    check(cond, what) {
      console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
      if (!cond) failures.push(what);
    },
    async start(exe, argv) { const p = await startProgram(exe, argv); programs.push(p); return p; },
    // The test RTSP server (--rtsp-server), killed at the end if it still runs.
    async rtspServer(port = 0, extra = []) {
      if (!opts["rtsp-server"]) throw new Error("--rtsp-server PATH is required");
      const s = await startRtspServer(opts.python, opts["rtsp-server"], port, extra);
      servers.push(s);
      return s;
    },
    async page(url) {
      if (!browser) browser = await chromium.launch({ executablePath: opts.chromium, headless: true, args: chromiumFlags });
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
      await page.goto(url);
      return page;
    },
    async waitFor(page, fn, what, arg, timeoutMs = 60000) {
      try {
        await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
        console.log(`ok   ${what}`);
        return true;
      } catch (e) {
        console.log(`FAIL ${what} (${e.message.split("\n")[0]})`);
        failures.push(what);
        return false;
      }
    },
    async screenshot(page, file) {
      const where = path.join(opts.artifacts, file);
      await page.screenshot({ path: where, fullPage: true });
      console.log(`screenshot: ${where}`);
      return where;
    },
  };
  try {
    await body(t);
  } catch (e) {
    failures.push(`${name}: ${e.stack || e}`);
  } finally {
    if (browser) await browser.close().catch(() => {});
    for (const p of programs) {
      const code = await p.stop();
      t.check(code === 0, `the program exits 0 after SIGTERM (got ${code})`);
    }
    for (const s of servers) await s.kill();
  }
  if (failures.length) {
    console.log(`${name}: ${failures.length} failure(s):\n  ${failures.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`${name}: all checks passed`);
}

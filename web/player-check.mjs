#!/usr/bin/env node
// player-check: play an HLS URL with hls.js in headless Chromium and print what the player did.
//
// An independent, standard client for tests and benchmarks: it is the same hls.js the player page
// ships, running in a real browser (Debian's /usr/bin/chromium), driven by playwright-core. No
// Relaycast code runs in the page.
//
// Usage:
//   node web/player-check.mjs URL [--seconds N] [--hls-config JSON] [--chromium PATH] [--trust-spki HASH]
//
//   URL            an HLS playlist (master or media); the server must send CORS headers
//                  (Relaycast nodes do), because the page is served from another loopback port.
//   --seconds N    how long to play (default 20).
//   --hls-config   JSON merged into the hls.js config, e.g. '{"startLevel":0}'.
//   --chromium     browser binary (default $CHROMIUM or /usr/bin/chromium).
//   --trust-spki H trust certificate chains holding the public key whose SHA-256 (base64) is H,
//                  e.g. a test CA's (Chromium's --ignore-certificate-errors-spki-list).
//
// Output: one JSON object per line on stdout, each with `t` (seconds since the page loaded) and
// `event`:
//   manifest   {levels:[{bitrate,width,height,codecs,url}], pathways:[…]}
//   level      {level}                      hls.js switched level (LEVEL_SWITCHED)
//   frag       {sn, level, url, duration, part}  a fragment (or, in low-latency mode, a part:
//                                         `part` is its index) was loaded (FRAG_LOADED)
//   latency    {behind, hls_latency, target_latency}  once a second while playing: how far the frame on
//                                         screen is behind the wall clock, from the playlist's
//                                         EXT-X-PROGRAM-DATE-TIME (hls.playingDate), and hls.js's
//                                         own latency estimate (seconds)
//   steering   {pathways:[…], ttl}          a content-steering manifest was loaded
//   pathway    {pathway}                    the active pathway changed
//   waiting    {currentTime}                the video element ran out of data (a stall)
//   resize     {width, height}              the decoded picture size changed (e.g. server-side ABR)
//   error      {type, details, fatal}
//   summary    {played, frags, stalls, fatal, levels_seen, pathways_seen, hosts_seen,
//               latency_p50, latency_max, protocols}   (latency over the samples after the first
//               5 s; protocols: the HTTP versions the stream's responses came over, e.g. "h2")
// Exit status: 0 when the video played (currentTime advanced) with no fatal error, 1 otherwise,
// 2 on bad usage or when the browser could not start.

import { createServer } from "node:http";
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CHROMIUM_ARGS } from "./chromium.mjs";

const here = dirname(fileURLToPath(import.meta.url));

function usage(message) {
  process.stderr.write(`player-check: ${message}\nusage: node web/player-check.mjs URL [--seconds N] [--hls-config JSON] [--chromium PATH] [--trust-spki HASH]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { url: null, seconds: 20, hlsConfig: {}, chromium: process.env.CHROMIUM || "/usr/bin/chromium", trustSpki: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--seconds") {
      args.seconds = Number(value());
      if (!(args.seconds > 0)) usage("--seconds must be a positive number");
    } else if (a === "--hls-config") {
      try {
        args.hlsConfig = JSON.parse(value());
      } catch (e) {
        usage(`--hls-config is not JSON: ${e.message}`);
      }
    } else if (a === "--chromium") {
      args.chromium = value();
    } else if (a === "--trust-spki") {
      args.trustSpki = value();
    } else if (a === "-h" || a === "--help") {
      process.stdout.write(readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").filter((l) => l.startsWith("//")).map((l) => l.slice(3)).join("\n") + "\n");
      process.exit(0);
    } else if (a.startsWith("-")) {
      usage(`unknown option ${a}`);
    } else if (args.url === null) {
      args.url = a;
    } else {
      usage(`unexpected argument ${a}`);
    }
  }
  if (!args.url) usage("missing URL");
  return args;
}

// The page: hls.js attached to a muted video; every event of interest goes to window.__report,
// which playwright exposes as a function printing a JSON line.
const PAGE = `<!doctype html><meta charset="utf-8"><title>player-check</title>
<video id="v" muted playsinline autoplay></video>
<script src="/hls.min.js"></script>
<script>
const t0 = performance.now();
const emit = (event, data) => window.__report(JSON.stringify({ t: +((performance.now() - t0) / 1000).toFixed(3), event, ...data }));
window.__start = (url, extra) => {
  const video = document.getElementById("v");
  if (!window.Hls || !Hls.isSupported()) { emit("error", { type: "setup", details: "hls.js unsupported (no MSE?)", fatal: true }); return; }
  const hls = new Hls(Object.assign({ lowLatencyMode: false }, extra));
  window.__hls = hls;
  hls.on(Hls.Events.MANIFEST_PARSED, (_e, d) => emit("manifest", {
    levels: d.levels.map((l) => ({ bitrate: l.bitrate, width: l.width, height: l.height, codecs: l.codecSet || l.attrs?.CODECS, url: l.url?.[0] ?? l.uri })),
    pathways: hls.pathways ?? [],
  }));
  hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => emit("level", { level: d.level }));
  hls.on(Hls.Events.FRAG_LOADED, (_e, d) => emit("frag", { sn: d.frag.sn, level: d.frag.level, url: d.part?.url ?? d.frag.url, duration: d.part?.duration ?? d.frag.duration, part: d.part?.index ?? null }));
  if (Hls.Events.STEERING_MANIFEST_LOADED) hls.on(Hls.Events.STEERING_MANIFEST_LOADED, (_e, d) => emit("steering", {
    pathways: d.steeringManifest?.["PATHWAY-PRIORITY"] ?? [], ttl: d.steeringManifest?.TTL,
  }));
  if (Hls.Events.LEVELS_UPDATED) hls.on(Hls.Events.LEVELS_UPDATED, () => emit("pathway", { pathway: hls.pathwayPriority?.[0] ?? null }));
  hls.on(Hls.Events.ERROR, (_e, d) => emit("error", { type: d.type, details: d.details, fatal: d.fatal, url: d.frag?.url ?? d.url }));
  video.addEventListener("waiting", () => emit("waiting", { currentTime: video.currentTime }));
  video.addEventListener("resize", () => emit("resize", { width: video.videoWidth, height: video.videoHeight }));
  hls.loadSource(url);
  hls.attachMedia(video);
  video.play().catch(() => {});
};
window.__state = () => {
  const hls = window.__hls;
  const date = hls?.playingDate;
  return {
    currentTime: document.getElementById("v").currentTime,
    behind: date ? (Date.now() - date.getTime()) / 1000 : null,
    hlsLatency: hls?.latency ?? null,
    targetLatency: hls?.targetLatency ?? null,
  };
};
</script>`;

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const hlsPath = join(here, "node_modules/hls.js/dist/hls.min.js");
  if (!existsSync(hlsPath)) usage(`hls.js is not installed (${hlsPath}); run: npm ci --prefix web`);
  if (!existsSync(args.chromium)) usage(`no browser at ${args.chromium}; install Debian's chromium or pass --chromium`);
  let playwright;
  try {
    playwright = await import("playwright-core");
  } catch {
    usage("playwright-core is not installed; run: npm ci --prefix web");
  }
  const hlsJs = readFileSync(hlsPath);

  const server = createServer((req, res) => {
    if (req.url === "/hls.min.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(hlsJs);
    } else {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(PAGE);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${server.address().port}/`;

  let browser;
  try {
    browser = await playwright.chromium.launch({
      executablePath: args.chromium,
      headless: true,
      args: [
        ...CHROMIUM_ARGS,
        "--autoplay-policy=no-user-gesture-required",
        ...(args.trustSpki ? [`--ignore-certificate-errors-spki-list=${args.trustSpki}`] : []),
      ],
    });
  } catch (e) {
    server.close();
    process.stderr.write(`player-check: could not start ${args.chromium}: ${e.message}\n`);
    process.exit(2);
  }

  const summary = { played: 0, frags: 0, stalls: 0, fatal: false, levels_seen: [], pathways_seen: [], hosts_seen: [], latency_p50: null, latency_max: null, protocols: [] };
  const behind = [];
  let lastLatency = 0;
  const seen = (list, v) => { if (v !== null && v !== undefined && !list.includes(v)) list.push(v); };
  let started = false;
  const page = await browser.newPage();
  await page.exposeFunction("__report", (line) => {
    const ev = JSON.parse(line);
    if (ev.event === "frag") {
      summary.frags += 1;
      seen(summary.levels_seen, ev.level);
      try { seen(summary.hosts_seen, new URL(ev.url).host); } catch {}
    }
    if (ev.event === "level") seen(summary.levels_seen, ev.level);
    if (ev.event === "pathway") seen(summary.pathways_seen, ev.pathway);
    // A `waiting` before the first frame is start-up, not a stall.
    if (ev.event === "waiting" && started) summary.stalls += 1;
    if (ev.event === "error" && ev.fatal) summary.fatal = true;
    process.stdout.write(line + "\n");
  });
  // The HTTP version of every response from the stream's servers (not this page's own server),
  // as the browser's network stack reports it.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.responseReceived", (e) => {
    if (!e.response.url.startsWith(origin)) seen(summary.protocols, e.response.protocol);
  });
  page.on("pageerror", (e) => process.stdout.write(JSON.stringify({ event: "error", type: "page", details: String(e), fatal: true }) + "\n"));
  await page.goto(origin);
  await page.evaluate(([url, extra]) => window.__start(url, extra), [args.url, args.hlsConfig]);

  const deadline = Date.now() + args.seconds * 1000;
  while (Date.now() < deadline && !summary.fatal) {
    await new Promise((r) => setTimeout(r, 250));
    const state = await page.evaluate(() => window.__state());
    if (state.currentTime > 0) started = true;
    summary.played = +state.currentTime.toFixed(3);
    const now = Date.now();
    if (started && state.behind !== null && now - lastLatency >= 1000) {
      lastLatency = now;
      const t = +((now - (deadline - args.seconds * 1000)) / 1000).toFixed(3);
      process.stdout.write(JSON.stringify({ t, event: "latency", behind: +state.behind.toFixed(3), hls_latency: state.hlsLatency, target_latency: state.targetLatency }) + "\n");
      if (t >= 5) behind.push(state.behind);
    }
  }
  if (behind.length > 0) {
    behind.sort((a, b) => a - b);
    summary.latency_p50 = +behind[Math.floor(behind.length / 2)].toFixed(3);
    summary.latency_max = +behind[behind.length - 1].toFixed(3);
  }
  process.stdout.write(JSON.stringify({ event: "summary", ...summary }) + "\n");
  await browser.close();
  server.close();
  process.exit(summary.played > 0 && !summary.fatal ? 0 : 1);
}

main().catch((e) => {
  process.stderr.write(`player-check: ${e.stack || e}\n`);
  process.exit(2);
});

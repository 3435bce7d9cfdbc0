#!/usr/bin/env node
// page-check: open a node's own player page (served at `/`, hls.js from /assets/hls.min.js) in
// headless Chromium and wait until its video has played SECONDS of media. Prints one JSON line:
// {"hls": whether the page had hls.js, "played": seconds, "title": the channel shown}.
//
// Usage: node web/page-check.mjs URL [--seconds N] [--timeout S] [--chromium PATH]
// Exit status: 0 when the page played N seconds, 1 otherwise, 2 when the browser could not start.

import playwright from "playwright-core";
import { launchOrExit } from "./chromium.mjs";

const argv = process.argv.slice(2);
const args = { url: argv[0], seconds: 3, timeout: 45, chromium: process.env.CHROMIUM || "/usr/bin/chromium" };
for (let i = 1; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, "");
  if (!(key in args) || i + 1 >= argv.length) {
    process.stderr.write(`page-check: bad argument ${argv[i]}\nusage: node web/page-check.mjs URL [--seconds N] [--timeout S] [--chromium PATH]\n`);
    process.exit(2);
  }
  args[key] = key === "chromium" ? argv[i + 1] : Number(argv[i + 1]);
}
if (!args.url) {
  process.stderr.write("usage: node web/page-check.mjs URL [--seconds N] [--timeout S] [--chromium PATH]\n");
  process.exit(2);
}

const browser = await launchOrExit(playwright, "page-check", args.chromium, ["--autoplay-policy=no-user-gesture-required"]);
let state = { hls: false, played: 0, title: null };
try {
  const page = await browser.newPage();
  await page.goto(args.url);
  const deadline = Date.now() + args.timeout * 1000;
  while (Date.now() < deadline && state.played < args.seconds) {
    await page.waitForTimeout(500);
    state = await page.evaluate(() => ({
      hls: typeof window.Hls === "function",
      played: document.querySelector("video")?.currentTime ?? 0,
      title: document.getElementById("title")?.textContent ?? null,
    }));
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(state) + "\n");
process.exit(state.played >= args.seconds ? 0 : 1);

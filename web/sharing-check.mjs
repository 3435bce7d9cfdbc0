#!/usr/bin/env node
// sharing-check: open the node's player page in N headless Chromium pages at once, let them
// watch for SECONDS, and report per page what it took from other viewers and from the server,
// its stalls, and the SHA-256 of every segment it played (tests compare them with the server's
// bytes). With --liar K, page K alters what it sends to its peers (the page's test hook).
// Prints one JSON object: {"pages": [{index, http, p2p, uploaded, peers, rejected, stalls,
// played: [{sn, sha256}...], note}]}.
//
// Usage: node web/sharing-check.mjs URL [--pages N] [--seconds S] [--liar K] [--p2p on|off]
//                                       [--stagger MS] [--chromium PATH]
// Exit status: 0 when every page played, 1 otherwise, 2 when the browser could not start.

import playwright from "playwright-core";
import { launchOrExit } from "./chromium.mjs";

const argv = process.argv.slice(2);
const args = { url: argv[0], pages: 4, seconds: 30, liar: -1, p2p: "on", stagger: 1500, chromium: process.env.CHROMIUM || "/usr/bin/chromium" };
const usage = "usage: node web/sharing-check.mjs URL [--pages N] [--seconds S] [--liar K] [--p2p on|off] [--stagger MS] [--chromium PATH]\n";
for (let i = 1; i < argv.length; i += 2) {
  const key = argv[i].replace(/^--/, "");
  if (!(key in args) || i + 1 >= argv.length) {
    process.stderr.write(`sharing-check: bad argument ${argv[i]}\n${usage}`);
    process.exit(2);
  }
  args[key] = ["chromium", "p2p"].includes(key) ? argv[i + 1] : Number(argv[i + 1]);
}
if (!args.url) {
  process.stderr.write(usage);
  process.exit(2);
}

// WebRTC between the pages over loopback: Chromium leaves loopback out of its candidates
// unless asked.
const browser = await launchOrExit(playwright, "sharing-check", args.chromium, [
  "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
]);

const pages = [];
try {
  for (let i = 0; i < args.pages; i++) {
    // A context per page: separate storage, like separate viewers.
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") process.stderr.write(`page ${i}: ${m.text()}\n`);
    });
    const hash = new URLSearchParams({ "test-record-played": "1" });
    if (args.p2p === "off") hash.set("p2p", "off");
    if (i === args.liar) hash.set("test-corrupt-uploads", "1");
    const base = args.url.split("#")[0];
    const channel = new URLSearchParams((args.url.split("#")[1] || "")).get("channel");
    if (channel) hash.set("channel", channel);
    await page.goto(`${base}#${hash}`);
    pages.push(page);
    await page.waitForTimeout(args.stagger);
  }
  await pages[0].waitForTimeout(args.seconds * 1000);
  const results = [];
  for (const [index, page] of pages.entries()) {
    const state = await page.evaluate(() => ({
      stats: window.relaycastSharingStats ? { ...window.relaycastSharingStats } : null,
      stalls: Number(document.getElementById("s-stalls")?.textContent || 0),
      playedSeconds: document.querySelector("video")?.currentTime ?? 0,
      played: window.relaycastPlayed || [],
      note: document.getElementById("sharing-note")?.textContent || "",
    }));
    const s = state.stats || { http: 0, p2p: 0, uploaded: 0, peers: 0, rejected: 0 };
    results.push({ index, liar: index === args.liar, ...s, stalls: state.stalls, played_seconds: state.playedSeconds, played: state.played, note: state.note });
  }
  process.stdout.write(JSON.stringify({ pages: results }) + "\n");
  process.exit(results.every((r) => r.played_seconds > 1) ? 0 : 1);
} finally {
  await browser.close();
}

#!/usr/bin/env node
// console-check: open the tracker's operator console in headless Chromium, wait until its tree
// shows the expected nodes, and print what the page shows (one JSON object on stdout). With
// --cordon NAME it types the token into the page and clicks NAME's cordon button, then waits
// until the page shows NAME cordoned. With --screenshot FILE it saves a PNG of the page.
//
// Usage:
//   node web/console-check.mjs URL --nodes N [--cordon NAME --token TOKEN] [--screenshot FILE]
//                              [--seconds S] [--chromium PATH]
//
// Output: {"nodes":[{name, role, parent, health, viewers, children}], "edges":[{name, cordoned}],
//          "cordoned": NAME|null}
// Exit status: 0 when the tree showed N answering nodes (and the cordon took), 1 otherwise,
// 2 on bad usage or when the browser could not start.

import playwright from "playwright-core";
import { launchOrExit } from "./chromium.mjs";

function usage(message) {
  process.stderr.write(`console-check: ${message}\nusage: node web/console-check.mjs URL --nodes N [--cordon NAME --token TOKEN] [--screenshot FILE] [--seconds S]\n`);
  process.exit(2);
}

const args = { url: null, nodes: 0, cordon: null, token: "", screenshot: null, seconds: 30, chromium: process.env.CHROMIUM || "/usr/bin/chromium" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
  if (a === "--nodes") args.nodes = Number(value());
  else if (a === "--cordon") args.cordon = value();
  else if (a === "--token") args.token = value();
  else if (a === "--screenshot") args.screenshot = value();
  else if (a === "--seconds") args.seconds = Number(value());
  else if (a === "--chromium") args.chromium = value();
  else if (!a.startsWith("--") && !args.url) args.url = a;
  else usage(`unknown argument ${a}`);
}
if (!args.url || !(args.nodes > 0)) usage("give the console URL and --nodes N");

const browser = await launchOrExit(playwright, "console-check", args.chromium);

const shown = (page) => page.evaluate(() => ({
  nodes: [...document.querySelectorAll("#tree g.node")].map((g) => ({
    name: g.dataset.name, role: g.dataset.role, parent: g.dataset.parent || null, health: g.dataset.health,
    viewers: g.dataset.viewers === "" ? null : Number(g.dataset.viewers),
    children: g.dataset.children === "" ? null : Number(g.dataset.children),
  })),
  edges: [...document.querySelectorAll("#edge-table tr[data-edge]")].map((r) => ({ name: r.dataset.edge, cordoned: r.classList.contains("cordoned") })),
}));

let ok = false;
let result = { nodes: [], edges: [], cordoned: null };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(args.url);
  const deadline = Date.now() + args.seconds * 1000;
  const answering = (r) => r.nodes.length >= args.nodes && r.nodes.every((n) => n.health !== "down" && n.viewers !== null);
  while (Date.now() < deadline) {
    result = await shown(page);
    if (answering(result)) break;
    await page.waitForTimeout(250);
  }
  ok = answering(result);
  if (ok && args.cordon) {
    await page.fill("#token", args.token);
    await page.dispatchEvent("#token", "change");
    await page.click(`button[data-cordon="${args.cordon}"]`);
    ok = false;
    while (Date.now() < deadline) {
      result = await shown(page);
      if (result.edges.some((e) => e.name === args.cordon && e.cordoned)) {
        ok = true;
        result.cordoned = args.cordon;
        break;
      }
      await page.waitForTimeout(250);
    }
    if (!ok) result.message = await page.textContent("#message");
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(ok ? 0 : 1);

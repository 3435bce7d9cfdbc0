#!/usr/bin/env python3
"""Browser offload: the share of segment bytes browsers take from each other, and their stalls,
with sharing on and off, for 2, 4 and 8 pages (issue 20); plus the tracker's WebSocket capacity.

An origin signs the built-in sample (channel `demo`, ~0.4 Mbit/s, 2 s segments), a tracker
with the origin's key, one edge whose viewer egress is capped (--edge-kbps, default 1000: less
than four viewers need). For each page count N, `web/sharing-check.mjs` opens N pages of the
edge's player page in headless Chromium (WebRTC over loopback) for --seconds, first with
sharing off, then on, after the playlist is full (pages join a running stream). Then
`cargo run --release --example wt_load` measures announces per tracker CPU-second.

Usage: python3 bench/browser_offload.py [--pages 2,4,8] [--seconds 40] [--edge-kbps 1000]
       [--no-build] [--no-capacity]
Binary: $RELAYCAST_BIN, else target/release/relaycast. Needs Chromium and `npm ci` in web/.
Writes bench/results/browser_offload.md and .json.
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

from common import REPO, RESULTS, TOKEN, binary, free_port, get, log, machine, playlist_seqs, run, start_node


def sharing_check(edge, pages, seconds, p2p):
    cmd = ["node", os.path.join(REPO, "web", "sharing-check.mjs"), f"http://{edge}/#channel=demo",
           "--pages", str(pages), "--seconds", str(seconds), "--p2p", p2p]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode == 2:
        raise SystemExit(f"sharing-check could not run: {out.stderr}")
    report = json.loads(out.stdout)["pages"]
    http = sum(p["http"] for p in report)
    p2p_bytes = sum(p["p2p"] for p in report)
    return {
        "pages": pages,
        "sharing": p2p,
        "offload_pct": round(100 * p2p_bytes / max(1, http + p2p_bytes), 1) if p2p == "on" else 0.0,
        "stalls": [p["stalls"] for p in report],
        "segments_played": [len(p["played"]) for p in report],
    }


def capacity(tracker_url, tracker_pid, connections):
    addr = tracker_url.replace("http://", "")
    cmd = ["cargo", "run", "--quiet", "--release", "-p", "relaycast", "--example", "wt_load", "--",
           f"ws://{addr}/announce", "--pid", str(tracker_pid), "--connections", str(connections)]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"wt_load failed: {out.stderr}")
    return out.stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", default="2,4,8")
    ap.add_argument("--seconds", type=int, default=40)
    ap.add_argument("--edge-kbps", type=int, default=1000)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-capacity", action="store_true")
    a = ap.parse_args()
    bin_path = binary(a.no_build)
    tmp = tempfile.mkdtemp(prefix="relaycast-browser-offload-")
    info = machine()
    key = os.path.join(tmp, "origin.key")
    tracker_port = free_port()
    tracker_url = f"http://127.0.0.1:{tracker_port}"
    start_node(bin_path, "origin", ["origin", "--sample", "--signing-key", key, "--tracker", tracker_url, "--region",
                                    "eu", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--token", TOKEN], tmp)  # fmt: skip
    tracker_proc, _, _ = start_node(bin_path, "tracker", ["tracker", "--http", f"127.0.0.1:{tracker_port}",
                                    "--origin-key", key + ".pub", "--token", TOKEN], tmp, want_quic=False, named=False)  # fmt: skip
    _, edge, _ = start_node(bin_path, "edge", ["relay", "--tracker", tracker_url, "--region", "eu", "--http",
                            "127.0.0.1:0", "--token", TOKEN, "--egress-kbps", str(a.edge_kbps)], tmp, want_quic=False)  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and len(playlist_seqs(get(edge, "/live/demo/src/index.m3u8")[1])) < 6:
        time.sleep(0.5)
    rows = []
    for n in [int(x) for x in a.pages.split(",")]:
        for p2p in ("off", "on"):
            row = sharing_check(edge, n, a.seconds, p2p)
            rows.append(row)
            log(f"{n} pages, sharing {p2p}: offload {row['offload_pct']} %, stalls {row['stalls']}, "
                f"segments {row['segments_played']}")  # fmt: skip
    cap = None if a.no_capacity else capacity(tracker_url, tracker_proc.pid, 1000)
    if cap:
        log(cap)
    result = {"machine": info, "seconds": a.seconds, "edge_kbps": a.edge_kbps, "rows": rows, "capacity": cap}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "browser_offload.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = ["# Browser offload: pages sharing through the tracker, behind one capped edge", "",
             f"`python3 bench/browser_offload.py --pages {a.pages} --seconds {a.seconds} --edge-kbps {a.edge_kbps}` "
             f"on {info['nproc']} cores ({info['cpu']}), load average at start {info['loadavg_at_start']}.", "",
             "| pages | sharing | bytes from peers | stalls per page | segments played per page |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['pages']} | {r['sharing']} | {r['offload_pct']} % | {r['stalls']} | {r['segments_played']} |")
    if cap:
        lines += ["", f"Tracker WebSocket capacity (`wt_load`, 1000 connections): {cap}"]
    with open(os.path.join(RESULTS, "browser_offload.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run(main)

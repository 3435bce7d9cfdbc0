#!/usr/bin/env python3
"""Viewer-to-viewer sharing (issue 8's figures: F50-F53).

All on 127.0.0.1: an origin looping the built-in sample (`--sample`, channel `demo`, 2 s
segments, ~0.4 Mbit/s) that signs its segments (--signing-key) and announces region "eu" to a
tracker (--origin-key), and relays under it.

1. Offload and stalls against viewer count. For each N in --counts, N `relaycast watch --p2p`
   viewers (region "us") behind one edge and N CDN-only viewers behind another, both edges
   capped at --cap-kbps, for --duration s at the same time. Offload = bytes played that came
   from peers / all bytes played (from each viewer's `p2p` log line), shown against the
   (N-1)/N cap (one copy of each segment must come from the edge); stall ratio = stall time /
   (stall time + play time) from the `end` lines.
2. Per-chunk delay against RTTmin for three paths, at the same time, uncapped: CDN (origin ->
   edge -> viewer), P2P (--p2p-viewers viewers behind that edge) and the bypass (a
   viewer in region "eu" whom the tracker sends to the origin directly). `relaycast report`
   draws their delay CDFs against each log's minimum RTT.

Usage: python3 bench/p2p_sharing.py [--counts 2,5,10,20,30] [--duration 30] [--no-build]
Binary: $RELAYCAST_BIN, else target/release/relaycast (built with cargo unless --no-build).
Writes bench/results/p2p_sharing.{md,json} and bench/results/p2p_sharing/ (offload.svg,
stalls.svg, the report of the path run: index.html, delay_cdf.svg, ... and its QoE logs).
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from common import PROCS, RESULTS, TOKEN, binary, free_port, get, log, machine, run, start_node

PLAYLIST = "/live/demo/index.m3u8"


def wait_playlist(addr):
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            status, body = get(addr, PLAYLIST, timeout=3)
            if status == 200 and b".ts" in body:
                return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"{addr} never served {PLAYLIST}")


def read_logs(pattern):
    """Per viewer: segments, stalls, stall/play time, edge/peer bytes, delays."""
    out = []
    for path in sorted(glob.glob(pattern)):
        v = {"segments": 0, "stall_ms": 0, "stalls": 0, "edge": 0, "peer": 0, "bytes": 0, "play_ms": 0}
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                t = r.get("type")
                if t == "segment":
                    v["segments"] += 1
                    v["bytes"] += r["bytes"]
                    v["play_ms"] += r.get("duration_ms") or 0
                elif t == "end":
                    v["stall_ms"], v["stalls"] = r["stall_ms"], r["stalls"]
                elif t == "p2p":
                    v["edge"], v["peer"] = r["edge_bytes"], r["peer_bytes"]
        out.append(v)
    return out


def ratio(logs):
    stall = sum(v["stall_ms"] for v in logs)
    play = sum(v["play_ms"] for v in logs)
    return stall / max(1, stall + play)


def svg_lines(path, title, xlabel, ylabel, series, ymax):
    """A small line chart: series = [(label, colour, [(x, y)], dashed)]."""
    w, h, l, r, t, b = 560, 340, 60, 150, 40, 50
    xs = [x for _, _, pts, _ in series for x, _ in pts]
    x0, x1 = min(xs), max(xs)
    px = lambda x: l + (x - x0) / max(1e-9, x1 - x0) * (w - l - r)  # noqa: E731
    py = lambda y: h - b - y / ymax * (h - t - b)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{l}" y1="{h - b}" x2="{w - r}" y2="{h - b}" stroke="black"/>',
           f'<line x1="{l}" y1="{t}" x2="{l}" y2="{h - b}" stroke="black"/>',
           f'<text x="{(l + w - r) / 2}" y="{h - 12}" text-anchor="middle">{xlabel}</text>',
           f'<text x="14" y="{(t + h - b) / 2}" text-anchor="middle" transform="rotate(-90 14 {(t + h - b) / 2})">{ylabel}</text>']
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{l}" y1="{py(y)}" x2="{w - r}" y2="{py(y)}" stroke="#ddd"/>')
        out.append(f'<text x="{l - 6}" y="{py(y) + 4}" text-anchor="end">{y:g}</text>')
    for x in sorted(set(xs)):
        out.append(f'<text x="{px(x)}" y="{h - b + 16}" text-anchor="middle">{x:g}</text>')
    for k, (label, colour, pts, dashed) in enumerate(series):
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        ly = t + 10 + 18 * k
        out.append(f'<line x1="{w - r + 10}" y1="{ly}" x2="{w - r + 30}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{w - r + 35}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def watch(bin_path, name, url, logpath, args, duration, logdir):
    cmd = [bin_path, "watch", "--quiet", "--duration", str(duration), "--startup", "4", "--log", logpath, *args, url]
    err = open(os.path.join(logdir, f"{name}.log"), "w")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "RUST_LOG": "warn"})
    PROCS.append((name, p))
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="2,5,10,20,30")
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--cap-kbps", type=int, default=2500)
    ap.add_argument("--p2p-viewers", type=int, default=5)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--reuse-sweep", action="store_true",
                    help="skip part 1 and reuse bench/results/p2p_sharing.sweep.json from an earlier run")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    bin_path = binary(args.no_build)
    work = tempfile.mkdtemp(prefix="relaycast-p2p-bench-")
    outdir = os.path.join(RESULTS, "p2p_sharing")
    os.makedirs(outdir, exist_ok=True)

    key = os.path.join(work, "origin.key")
    tport = free_port()
    tracker = f"http://127.0.0.1:{tport}"
    _, origin, origin_quic = start_node(bin_path, "origin", [
        "origin", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--token", TOKEN, "--sample",
        "--signing-key", key, "--tracker", tracker, "--region", "eu"], work)  # fmt: skip
    terr = open(os.path.join(work, "tracker.log"), "w")
    PROCS.append(("tracker", subprocess.Popen([bin_path, "tracker", "--http", f"127.0.0.1:{tport}", "--viewer-rate", "0", "--origin-key",
                                               key + ".pub", "--viewer-refresh-ms", "1000", "--token", TOKEN],
                                              stdout=subprocess.DEVNULL, stderr=terr)))
    relay_args = lambda parent, cap, quic: ["relay", "--parent", parent, "--http", "127.0.0.1:0", "--token", TOKEN,  # noqa: E731
                                            "--egress-kbps", str(cap), *(["--quic", "127.0.0.1:0"] if quic else [])]
    _, p2p_edge, _ = start_node(bin_path, "p2p-edge", relay_args(origin_quic, args.cap_kbps, False), work, False)
    _, cdn_edge, _ = start_node(bin_path, "cdn-edge", relay_args(origin_quic, args.cap_kbps, False), work, False)
    for e in (p2p_edge, cdn_edge):
        wait_playlist(e)

    # 1. Offload and stalls against viewer count.
    sweep_file = os.path.join(RESULTS, "p2p_sharing.sweep.json")
    rows = []
    if args.reuse_sweep:
        with open(sweep_file) as f:
            rows = json.load(f)
        counts = []
    for n in counts:
        log(f"{n} P2P viewers and {n} CDN-only viewers for {args.duration} s")
        d = os.path.join(work, f"n{n}")
        os.makedirs(d)
        many = lambda k: ["--viewers", str(k)] if k > 1 else []  # noqa: E731
        p = watch(bin_path, f"p2p{n}", f"http://{p2p_edge}{PLAYLIST}", os.path.join(d, "p2p.jsonl"),
                  ["--p2p", "--tracker", tracker, "--region", "us", *many(n)], args.duration, work)
        c = watch(bin_path, f"cdn{n}", f"http://{cdn_edge}{PLAYLIST}", os.path.join(d, "cdn.jsonl"), many(n),
                  args.duration, work)
        for proc in (p, c):
            if proc.wait(timeout=args.duration + 60) != 0:
                sys.exit(f"a viewer process failed; see {work}")
        p2p = read_logs(os.path.join(d, "p2p.jsonl*"))
        cdn = read_logs(os.path.join(d, "cdn.jsonl*"))
        edge, peer = sum(v["edge"] for v in p2p), sum(v["peer"] for v in p2p)
        row = {
            "viewers": n,
            "offload_pct": round(100 * peer / max(1, edge + peer), 1),
            "cap_pct": round(100 * (n - 1) / n, 1),
            "p2p_stalls": sum(v["stalls"] for v in p2p),
            "cdn_stalls": sum(v["stalls"] for v in cdn),
            "p2p_stall_ratio": round(ratio(p2p), 4),
            "cdn_stall_ratio": round(ratio(cdn), 4),
            "p2p_segments": sum(v["segments"] for v in p2p),
            "cdn_segments": sum(v["segments"] for v in cdn),
        }
        log(json.dumps(row))
        rows.append(row)
        with open(sweep_file, "w") as f:
            json.dump(rows, f, indent=2)
        time.sleep(3)  # let the tracker forget this swarm's viewers

    # 2. Per-chunk delay for the three paths, uncapped, at the same time.
    log("paths: CDN, P2P and bypass viewers for the delay CDFs")
    _, far_edge, _ = start_node(bin_path, "far-edge", relay_args(origin_quic, 0, False), work, False)
    wait_playlist(far_edge)
    url = f"http://{far_edge}{PLAYLIST}"
    d = os.path.join(work, "paths")
    os.makedirs(d)
    procs = [
        watch(bin_path, "cdn", url, os.path.join(d, "cdn.jsonl"), ["--label", "cdn"], args.duration, work),
        watch(bin_path, "bypass", url, os.path.join(d, "bypass.jsonl"),
              ["--tracker", tracker, "--region", "eu", "--label", "bypass"], args.duration, work),
        watch(bin_path, "p2p", url, os.path.join(d, "p2p.jsonl"),
              ["--p2p", "--tracker", tracker, "--region", "us", "--label", "p2p", "--viewers", str(args.p2p_viewers)],
              args.duration, work),
    ]
    for proc in procs:
        if proc.wait(timeout=args.duration + 60) != 0:
            sys.exit(f"a viewer process failed; see {work}")
    # The report: one P2P viewer (the first) beside the CDN and bypass viewers.
    shutil.copy(os.path.join(d, "p2p.jsonl.1"), os.path.join(d, "p2p1.jsonl"))
    logs = [os.path.join(d, f) for f in ("cdn.jsonl", "p2p1.jsonl", "bypass.jsonl")]
    subprocess.run([bin_path, "report", *logs, "-o", outdir, "--title", "Per-chunk delay: CDN, P2P, bypass"],
                   check=True, stdout=subprocess.DEVNULL)
    for f in logs:
        shutil.copy(f, outdir)

    def delays(path):
        ds, rtt = [], None
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if r.get("type") == "segment" and r.get("origin_delay_ms") is not None:
                    ds.append(r["origin_delay_ms"])
                if r.get("type") == "rtt" and r.get("rtt_ms") is not None:
                    rtt = r["rtt_ms"] if rtt is None else min(rtt, r["rtt_ms"])
        ds.sort()
        pct = lambda p: ds[min(len(ds) - 1, int(p * (len(ds) - 1)))] if ds else None  # noqa: E731
        return {"segments": len(ds), "rtt_min_ms": rtt and round(rtt, 3), "p50_ms": pct(0.5), "p90_ms": pct(0.9),
                "max_ms": ds[-1] if ds else None}

    paths = {name: delays(p) for name, p in zip(("cdn", "p2p", "bypass"), logs)}

    svg_lines(os.path.join(outdir, "offload.svg"), "Bytes from peers vs viewers", "viewers", "% of bytes from peers",
              [("P2P offload", "#1f77b4", [(r["viewers"], r["offload_pct"]) for r in rows], False),
               ("(N-1)/N cap", "#888", [(r["viewers"], r["cap_pct"]) for r in rows], True)], 100)
    ymax = max([r["cdn_stall_ratio"] for r in rows] + [r["p2p_stall_ratio"] for r in rows] + [0.01]) * 100
    svg_lines(os.path.join(outdir, "stalls.svg"), f"Stall ratio behind a {args.cap_kbps} kbit/s edge", "viewers",
              "% of session stalled",
              [("P2P", "#1f77b4", [(r["viewers"], r["p2p_stall_ratio"] * 100) for r in rows], False),
               ("CDN only", "#d62728", [(r["viewers"], r["cdn_stall_ratio"] * 100) for r in rows], False)],
              round(ymax * 1.1 + 0.5))
    result = {"machine": machine(), "args": vars(args), "binary": bin_path, "offload": rows, "paths": paths}
    with open(os.path.join(RESULTS, "p2p_sharing.json"), "w") as f:
        json.dump(result, f, indent=2)
    md = ["| viewers | offload % | (N-1)/N % | P2P stalls | CDN-only stalls | P2P stall ratio | CDN-only stall ratio |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {r['viewers']} | {r['offload_pct']} | {r['cap_pct']} | {r['p2p_stalls']} | {r['cdn_stalls']} | "
           f"{r['p2p_stall_ratio']:.4f} | {r['cdn_stall_ratio']:.4f} |" for r in rows]
    md += ["", "| path | RTTmin ms | per-chunk delay p50 ms | p90 ms | max ms | segments |", "|---|---:|---:|---:|---:|---:|"]
    md += [f"| {k} | {v['rtt_min_ms']} | {v['p50_ms']} | {v['p90_ms']} | {v['max_ms']} | {v['segments']} |"
           for k, v in paths.items()]
    with open(os.path.join(RESULTS, "p2p_sharing.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run(main, "p2p_sharing")

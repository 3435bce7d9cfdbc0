#!/usr/bin/env python3
"""Server-side ABR vs a fixed top rendition vs client-side ABR, against viewer count (F30, F31;
issue 7's figure).

An origin encodes a test clip (ffmpeg testsrc2, 480x270, 25 fps) into a ladder with its own
ffmpeg (`--ladder`, 270p/180p/90p at --kbps video kbit/s, 1 s segments, ultrafast) and three
edges carry it, all on 127.0.0.1, each capped at --cap-kbps of viewer egress. At each viewer
count N (--viewers), N `relaycast watch` viewers run on every edge at once, for --duration s:

  server ABR   the edge's /live/lad/auto.m3u8 (the edge picks each segment's rendition);
  fixed top    the top rendition's media playlist;
  client ABR   the master playlist with `watch --client-abr` (an hls.js-like throughput rule).

From the QoE logs: stall ratio = total stall time / total watch time, and mean delivered
bitrate = mean over all delivered segments of bytes × 8 / duration. One run, every count.

Usage: python3 bench/server_abr.py [--viewers 1,5,10,15,20,25,30] [--duration 30] [--no-build]
Binary: $RELAYCAST_BIN, else target/release/relaycast (built with cargo unless --no-build).
Writes bench/results/server_abr.{md,json} and bench/results/server_abr/ramp.svg (drawn by
`relaycast report --ramp`).
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time

from common import PROCS, RESULTS, TOKEN, binary, get, log, machine, run, start_node

MODES = ["server ABR", "fixed top", "client ABR"]


def make_clip(path):
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=480x270:rate=25:duration=10",
         "-f", "lavfi", "-i", "sine=frequency=330:duration=10", "-c:v", "libx264", "-preset", "ultrafast",
         "-g", "50", "-c:a", "aac", "-shortest", path],
        check=True,
    )  # fmt: skip


def wait_ladder(addr, deadline_s=60):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            status, body = get(addr, "/live/lad/index.m3u8", timeout=5)
            if status == 200 and body.count(b"CODECS=") >= 3:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the ladder did not reach {addr} within {deadline_s} s")


def summarise(logs, duration):
    stall_ms = 0.0
    bits, segs = 0.0, 0
    renditions = {}
    for path in logs:
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("type") == "segment":
                    if r.get("bitrate_bps"):
                        bits += r["bitrate_bps"]
                        segs += 1
                    name = r.get("rendition") or "?"
                    renditions[name] = renditions.get(name, 0) + 1
                elif r.get("type") == "end":
                    stall_ms += r.get("stall_ms", 0)
    watch_ms = len(logs) * duration * 1000.0
    return {
        "viewers": len(logs),
        "stall_ratio": round(stall_ms / watch_ms, 4) if watch_ms else 0.0,
        "mean_kbps": round(bits / segs / 1000.0, 1) if segs else 0.0,
        "segments": segs,
        "renditions": renditions,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", default="1,5,10,15,20,25,30", help="viewer counts, comma-separated")
    ap.add_argument("--duration", type=float, default=30, help="viewing time at each count (s)")
    ap.add_argument("--cap-kbps", type=int, default=20000, help="each edge's egress cap (kbit/s)")
    ap.add_argument("--kbps", default="1200,500,200", help="the ladder's video rates, top first (kbit/s)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (node and QoE logs)")
    args = ap.parse_args()
    counts = [int(x) for x in args.viewers.split(",")]
    bin_path = binary(args.no_build)
    work = tempfile.mkdtemp(prefix="relaycast-server-abr-")
    clip = os.path.join(work, "in.mp4")
    make_clip(clip)

    _, _, origin_quic = start_node(bin_path, "origin", [
        "origin", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--token", TOKEN,
        "--ladder", f"lad={clip}", "--ladder-segment-s", "1", "--ladder-preset", "ultrafast",
        "--ladder-kbps", args.kbps,
    ], work)  # fmt: skip
    edges = {}
    for mode in MODES:
        name = "edge-" + mode.split()[0]
        _, http, _ = start_node(bin_path, name, [
            "relay", "--parent", origin_quic, "--http", "127.0.0.1:0", "--token", TOKEN,
            "--egress-kbps", str(args.cap_kbps),
        ], work, want_quic=False)  # fmt: skip
        edges[mode] = http
    for http in edges.values():
        wait_ladder(http)
    urls = {
        "server ABR": f"http://{edges['server ABR']}/live/lad/auto.m3u8",
        "fixed top": f"http://{edges['fixed top']}/live/lad/270p/index.m3u8",
        "client ABR": f"http://{edges['client ABR']}/live/lad/index.m3u8",
    }
    results = {m: [] for m in MODES}
    for n in counts:
        log(f"{n} viewers per edge for {args.duration:.0f} s")
        procs = []
        for mode in MODES:
            tag = mode.split()[0]
            base = os.path.join(work, f"{tag}-{n}.jsonl")
            cmd = [bin_path, "watch", "--quiet", "--viewers", str(n), "--duration", str(args.duration),
                   "--label", f"{tag}-{n}", "--log", base, urls[mode]]  # fmt: skip
            if mode == "client ABR":
                cmd.insert(2, "--client-abr")
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(base + ".stderr", "w"))
            PROCS.append((f"watch-{tag}-{n}", p))
            procs.append((mode, base, p))
        for mode, base, p in procs:
            p.wait()
            logs = [base] if n == 1 else sorted(glob.glob(base + ".*[0-9]"))
            r = summarise(logs, args.duration)
            results[mode].append(r)
            log(f"  {mode:10s} stall ratio {r['stall_ratio']:.3f}  mean {r['mean_kbps']:.0f} kbit/s  {r['renditions']}")
        time.sleep(9)  # let the edges forget this count's sessions (idle after 8 s; docs/ABR.md)

    out = {
        "machine": machine(),
        "binary": bin_path,
        "cap_kbps": args.cap_kbps,
        "ladder_video_kbps": args.kbps,
        "duration_s": args.duration,
        "modes": results,
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "server_abr.json"), "w") as f:
        json.dump(out, f, indent=1)
    lines = [
        f"Edge egress cap {args.cap_kbps} kbit/s; ladder 270p/180p/90p at {args.kbps} kbit/s video (+64 audio); "
        f"{args.duration:.0f} s per viewer count; stall ratio / mean delivered kbit/s.",
        "",
        "| viewers | " + " | ".join(MODES) + " |",
        "|---:|" + "---|" * len(MODES),
    ]
    for i, n in enumerate(counts):
        cells = [f"{results[m][i]['stall_ratio']:.3f} / {results[m][i]['mean_kbps']:.0f}" for m in MODES]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    with open(os.path.join(RESULTS, "server_abr.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig = subprocess.run([bin_path, "report", "--ramp", os.path.join(RESULTS, "server_abr.json"), "-o",
                          os.path.join(RESULTS, "server_abr")], capture_output=True, text=True)  # fmt: skip
    log(fig.stdout.strip() or fig.stderr.strip())
    if args.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run(main)

#!/usr/bin/env python3
"""Low-latency HLS figures (issue 15, F32), all on 127.0.0.1.

A chain origin -> r1 -> r2 -> edge, one process each. Two ffmpeg test patterns (426x240, 25 fps,
1 s GOP) feed the origin at once: `cam` as a live MPEG-TS stream over one chunked PUT (packaged
as 200 ms CMAF parts in 1 s segments: LL-HLS), `tscam` as classic HLS push (1 s TS segments).

1. Added delay per hop for parts (cut-through): for each part, one held request per node for
   that part (`/live/cam/src/{msn}.{part}.m4s`, answered the moment the node stores it), all sent
   before the part exists; per hop d, t_d - t_{d-1} over --part-seconds of parts.
3. Glass-to-glass: hls.js in headless Chromium (web/player-check.mjs) for --play-seconds on r1
   (1 hop from the origin) and on the edge (3 hops), LL channel in lowLatencyMode and the TS
   channel with hls.js defaults; "behind" = wall clock - EXT-X-PROGRAM-DATE-TIME of the frame on
   screen (the origin's timestamp), sampled once a second after the first 5 s.
2. Edge cost of blocking reloads: --held requests for a part about a second ahead, sent at once
   on open connections; the edge's CPU time and resident memory while they are held.

Usage: python3 bench/low_latency.py [--part-seconds 20] [--play-seconds 30] [--held 5000] [--no-build]
Binary: $RELAYCAST_BIN, else target/release/relaycast (built with cargo unless --no-build).
Writes bench/results/low_latency.{md,json}.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import PROCS, REPO, RESULTS, TOKEN, Client, binary, get, log, machine, run, start_node

KEY = "bench-key"


def ffmpeg(args_out, logdir, name):
    cmd = [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=426x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-b:v", "300k",
        "-c:a", "aac", "-b:a", "48k", *args_out,
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(logdir, f"{name}.log"), "w"))
    PROCS.append((name, p))
    return p


def hint(addr):
    status, body = get(addr, "/live/cam/src/index.m3u8", timeout=5)
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith("#EXT-X-PRELOAD-HINT"):
            uri = line.split('URI="')[1].split('"')[0]
            msn, part = uri[: -len(".m4s")].split(".")
            return int(msn), int(part)
    return None


def pct(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def per_hop(nodes, seconds):
    """Per part: wall time at which each node answered the held request for it."""
    rows = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        h = hint(nodes[0][1])
        if h is None:
            time.sleep(0.1)
            continue
        msn, part = h
        done = [None] * len(nodes)

        def fetch(i, addr):
            try:
                status, _ = get(addr, f"/live/cam/src/{msn}.{part}.m4s", timeout=10)
                if status == 200:
                    done[i] = time.time()
            except OSError:
                pass

        threads = [threading.Thread(target=fetch, args=(i, a)) for i, (_, a) in enumerate(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if all(done):
            rows.append([round((done[i] - done[i - 1]) * 1000, 2) for i in range(1, len(nodes))])
    return rows


def play(url, seconds, config):
    out = subprocess.run(
        ["node", os.path.join(REPO, "web", "player-check.mjs"), url, "--seconds", str(seconds), "--hls-config", config],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    events = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    summary = next((e for e in reversed(events) if e.get("event") == "summary"), {})
    behind = [e["behind"] for e in events if e.get("event") == "latency" and e["t"] >= 5]
    return {
        "played_s": summary.get("played"),
        "stalls": summary.get("stalls"),
        "behind_p50_s": pct(behind, 0.5),
        "behind_p90_s": pct(behind, 0.9),
        "behind_max_s": max(behind) if behind else None,
        "samples": len(behind),
        "parts_loaded": sum(1 for e in events if e.get("event") == "frag" and e.get("part") is not None),
    }


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return ticks / os.sysconf("SC_CLK_TCK"), rss


def held_cost(edge_pid, addr, n):
    """Hold `n` blocking requests at once; the edge's CPU and memory for them."""
    host, port = addr.rsplit(":", 1)
    # A connection opened first: the edge answers it while thousands wait in its accept queue.
    api = Client(addr)
    api.get("/api/v1/node")
    socks = [socket.create_connection((host, int(port))) for _ in range(n)]
    msn, part = hint(addr)
    want = msn + 1 if part == 0 else msn + 2
    cpu0, rss0 = proc_stats(edge_pid)
    req = f"GET /live/cam/src/index.m3u8?_HLS_msn={want}&_HLS_part=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    sent = time.time()
    for s in socks:
        s.sendall(req)
    peak, held_peak = rss0, 0
    deadline = time.time() + 8
    while time.time() < deadline:
        peak = max(peak, proc_stats(edge_pid)[1])
        held = json.loads(api.get("/api/v1/node")[1]).get("held_requests", 0)
        held_peak = max(held_peak, held)
        if held_peak > 0 and held == 0:
            break
        time.sleep(0.02)
    answered, waits = 0, []
    for s in socks:
        s.settimeout(5)
        try:
            if s.recv(16).startswith(b"HTTP/1.1 200"):
                answered += 1
                waits.append(time.time() - sent)
        except OSError:
            pass
        s.close()
    cpu1, _ = proc_stats(edge_pid)
    return {
        "requests": n,
        "held_peak": held_peak,
        "answered_200": answered,
        "cpu_us_per_request": round((cpu1 - cpu0) * 1e6 / n, 1),
        "rss_kib_per_held": round((peak - rss0) / max(held_peak, 1), 2),
        "rss_mib_per_10k_held": round((peak - rss0) / max(held_peak, 1) * 10_000 / 1024, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part-seconds", type=int, default=20)
    ap.add_argument("--play-seconds", type=int, default=30)
    ap.add_argument("--held", type=int, default=5000)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    bin_path = binary(a.no_build)
    logdir = tempfile.mkdtemp(prefix="relaycast-ll-")
    common = ["--token", TOKEN, "--http", "127.0.0.1:0"]
    _, o_http, o_quic = start_node(bin_path, "origin", ["origin", *common, "--quic", "127.0.0.1:0",
                                                       "--push", f"cam={KEY}", "--push", f"tscam={KEY}"], logdir)
    _, r1_http, r1_quic = start_node(bin_path, "r1", ["relay", *common, "--quic", "127.0.0.1:0", "--parent", o_quic], logdir)
    _, r2_http, r2_quic = start_node(bin_path, "r2", ["relay", *common, "--quic", "127.0.0.1:0", "--parent", r1_quic], logdir)
    edge, e_http, _ = start_node(bin_path, "edge", ["relay", *common, "--parent", r2_quic], logdir, want_quic=False)
    ffmpeg(["-f", "mpegts", "-muxdelay", "0", "-flush_packets", "1", "-method", "PUT",
            f"http://{o_http}/ingest/cam/{KEY}"], logdir, "ffmpeg-ll")
    ffmpeg(["-f", "hls", "-hls_time", "1", "-hls_list_size", "5", "-method", "PUT",
            f"http://{o_http}/ingest/tscam/{KEY}/src.m3u8"], logdir, "ffmpeg-ts")
    nodes = [("origin", o_http), ("r1", r1_http), ("r2", r2_http), ("edge", e_http)]
    deadline = time.time() + 60
    while time.time() < deadline and not all(hint(addr) for _, addr in nodes):
        time.sleep(0.3)
    for _, addr in nodes:
        get(addr, "/live/tscam/index.m3u8", timeout=15)
    time.sleep(3)

    log(f"per-hop part delay for {a.part_seconds} s")
    rows = per_hop(nodes, a.part_seconds)
    hops = {}
    for d, name in enumerate(["origin->r1", "r1->r2", "r2->edge"]):
        v = [r[d] for r in rows]
        hops[name] = {"p50_ms": pct(v, 0.5), "p99_ms": pct(v, 0.99), "max_ms": max(v) if v else None}
    total = [sum(r) for r in rows]
    hops["origin->edge (3 hops)"] = {"p50_ms": pct(total, 0.5), "p99_ms": pct(total, 0.99), "max_ms": max(total) if total else None}

    log(f"{a.held} held blocking requests at the edge")
    held = held_cost(edge.pid, e_http, a.held)

    plays = {}
    for label, addr, path, config in [
        ("LL, 1 hop (r1)", r1_http, "/live/cam/index.m3u8", '{"lowLatencyMode":true}'),
        ("LL, 3 hops (edge)", e_http, "/live/cam/index.m3u8", '{"lowLatencyMode":true}'),
        ("TS, 1 hop (r1)", r1_http, "/live/tscam/index.m3u8", "{}"),
        ("TS, 3 hops (edge)", e_http, "/live/tscam/index.m3u8", "{}"),
    ]:
        log(f"hls.js: {label}")
        plays[label] = play(f"http://{addr}{path}", a.play_seconds, config)


    result = {"machine": machine(), "parts": len(rows), "per_hop": hops, "glass_to_glass": plays, "held": held}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "low_latency.json"), "w") as f:
        json.dump(result, f, indent=1)
    md = ["# Low-latency HLS (bench/low_latency.py)", "", f"Machine: {result['machine']}", "",
          f"## Added delay per hop for parts ({len(rows)} parts)", "", "| hop | p50 ms | p99 ms | max ms |", "|---|---|---|---|"]
    md += [f"| {k} | {v['p50_ms']} | {v['p99_ms']} | {v['max_ms']} |" for k, v in hops.items()]
    md += ["", "## Glass-to-glass (hls.js, behind the origin clock)", "",
           "| player | p50 s | p90 s | max s | stalls | parts loaded |", "|---|---|---|---|---|---|"]
    md += [f"| {k} | {v['behind_p50_s']} | {v['behind_p90_s']} | {v['behind_max_s']} | {v['stalls']} | {v['parts_loaded']} |"
           for k, v in plays.items()]
    md += ["", "## Edge cost of blocking reloads", "", f"```\n{json.dumps(held, indent=1)}\n```", ""]
    with open(os.path.join(RESULTS, "low_latency.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    run(main)

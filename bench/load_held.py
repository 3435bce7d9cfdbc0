#!/usr/bin/env python3
"""Load held: how many viewers one edge serves before any viewer's segment takes longer than
its duration, beside nginx serving the same live files in the same run (issue 18).

An origin loops the built-in sample (channel `demo`, 2 s segments) and one relay (the edge)
carries it. A mirror thread copies the edge's live playlist and its segments into a folder that
nginx serves (segments first, then the playlist by rename), so both servers offer the same live
stream. For each audience size N (doubling), `relaycast watch --viewers N` plays from the edge
for --seconds, then the same from nginx. A size is held when no viewer stalled after starting
and no segment took longer to download (request to last byte) than its duration. The edge,
nginx, the origin and the viewers share this machine, so the viewers' own CPU is part of the
limit; both servers meet the same clients.

Usage: python3 bench/load_held.py [--seconds 20] [--start 50] [--max 3200] [--no-build]
Binary: $RELAYCAST_BIN, else target/release/relaycast. Needs nginx (apt-get install -y nginx-light).
Writes bench/results/load_held.md and bench/results/load_held.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import common
from common import RESULTS, TOKEN, binary, get, log, machine, playlist_seqs, start_node
from edge_vs_nginx import cpu_seconds, process_tree, start_nginx

CHANNEL = "demo"
PLAYLIST = f"/live/{CHANNEL}/src/index.m3u8"


def mirror(edge, root, stop):
    """Keep ROOT/live/demo/src/ equal to the edge's live playlist and its segments."""
    folder = os.path.join(root, "live", CHANNEL, "src")
    os.makedirs(folder, exist_ok=True)
    have = set()
    while not stop.wait(0.25):
        try:
            status, body = get(edge, PLAYLIST, timeout=5)
            if status != 200:
                continue
            seqs = playlist_seqs(body)
            for seq in seqs:
                if seq in have:
                    continue
                status, data = get(edge, f"/live/{CHANNEL}/src/{seq}.ts", timeout=5)
                if status != 200:
                    break
                tmp = os.path.join(folder, f".{seq}.ts")
                with open(tmp, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o644)
                os.rename(tmp, os.path.join(folder, f"{seq}.ts"))
                have.add(seq)
            else:
                tmp = os.path.join(folder, ".index.m3u8")
                with open(tmp, "wb") as f:
                    f.write(body)
                os.chmod(tmp, 0o644)
                os.rename(tmp, os.path.join(folder, "index.m3u8"))
        except OSError as e:
            log(f"mirror: {e}")


def watch(bin_path, url, viewers, seconds, log_path):
    """Run N viewers; return the worst segment download time / duration, stalls and segments."""
    cmd = [bin_path, "watch", "--quiet", "--viewers", str(viewers), "--duration", str(seconds),
           "--startup", "2", "--log", log_path, url]  # fmt: skip
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    logs = [log_path] if viewers == 1 else [f"{log_path}.{i}" for i in range(1, viewers + 1)]
    worst, stalls, segments, failed = 0.0, 0, 0, 0
    for path in logs:
        played = False
        try:
            lines = open(path).read().splitlines()
        except OSError:
            failed += 1
            continue
        for line in lines:
            v = json.loads(line)
            if v.get("type") == "segment" and v.get("duration_ms") and v.get("request_ms") is not None:
                played = True
                worst = max(worst, (v["done_ms"] - v["request_ms"]) / v["duration_ms"])
            elif v.get("type") == "end":
                stalls += v.get("stalls", 0)
                segments += v.get("segments", 0)
        failed += 0 if played else 1
        os.remove(path)
    return {"viewers": viewers, "worst_fetch_over_duration": round(worst, 3), "stalls": stalls,
            "segments": segments, "failed": failed, "exit": r.returncode, "wall_s": round(wall, 1)}  # fmt: skip


def held(row):
    return row["failed"] == 0 and row["stalls"] == 0 and row["worst_fetch_over_duration"] <= 1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--start", type=int, default=50)
    ap.add_argument("--max", type=int, default=3200)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    if not shutil.which("nginx"):
        raise SystemExit("nginx not found: apt-get install -y nginx-light")
    bin_path = binary(a.no_build)
    tmp = tempfile.mkdtemp(prefix="relaycast-load-held-")
    info = machine()
    _, _, origin_quic = start_node(bin_path, "origin", ["origin", "--sample", "--http", "127.0.0.1:0", "--quic",
                                                       "127.0.0.1:0", "--token", TOKEN], tmp)  # fmt: skip
    edge_proc, edge, _ = start_node(bin_path, "edge", ["relay", "--parent", origin_quic, "--http", "127.0.0.1:0",
                                                      "--token", TOKEN], tmp, want_quic=False)  # fmt: skip
    root = os.path.join(tmp, "www")
    stop = threading.Event()
    threading.Thread(target=mirror, args=(edge, root, stop), daemon=True).start()
    nginx_proc, nginx = start_nginx(tmp, "nginx", root, "auto")
    deadline = time.time() + 30
    while time.time() < deadline and len(playlist_seqs(get(nginx, PLAYLIST)[1])) < 3:
        time.sleep(0.5)
    servers = {"edge": (edge, [edge_proc.pid]), "nginx": (nginx, process_tree(nginx_proc.pid))}
    rows, limit = [], {"edge": None, "nginx": None}
    n = a.start
    while n <= a.max and not all(v is not None for v in limit.values()):
        for name, (addr, pids) in servers.items():
            if limit[name] is not None:
                continue
            cpu0 = cpu_seconds(pids)
            row = watch(bin_path, f"http://{addr}{PLAYLIST}", n, a.seconds, os.path.join(tmp, f"{name}-{n}.jsonl"))
            row["server"] = name
            row["server_cpu_s"] = round(cpu_seconds(pids) - cpu0, 2)
            row["held"] = held(row)
            rows.append(row)
            log(f"{name:5} {n:5} viewers: worst fetch {row['worst_fetch_over_duration']:.2f}× duration, "
                f"{row['stalls']} stalls, {row['failed']} failed, server CPU {row['server_cpu_s']} s -> "
                f"{'held' if row['held'] else 'NOT held'}")  # fmt: skip
            if not row["held"]:
                limit[name] = n
        n *= 2
    stop.set()
    best = {s: max([r["viewers"] for r in rows if r["server"] == s and r["held"]], default=0) for s in servers}
    result = {"machine": info, "seconds": a.seconds, "rows": rows, "held": best, "first_not_held": limit}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "load_held.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = ["# Load held: one edge vs nginx, same live files, same run", "",
             f"`python3 bench/load_held.py --seconds {a.seconds}` on {info['nproc']} cores ({info['cpu']}), "
             f"load average at start {info['loadavg_at_start']}.", "",
             "| viewers | server | worst fetch / duration | stalls | failed | server CPU s | held |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['viewers']} | {r['server']} | {r['worst_fetch_over_duration']} | {r['stalls']} | "
                     f"{r['failed']} | {r['server_cpu_s']} | {'yes' if r['held'] else 'no'} |")  # fmt: skip
    lines += ["", f"Held: edge {best['edge']} viewers, nginx {best['nginx']} viewers."]
    with open(os.path.join(RESULTS, "load_held.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    common.run(main, "load_held")

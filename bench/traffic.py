#!/usr/bin/env python3
"""Traffic manager under a flash crowd (F20-F23; issue 6's figures), real processes on 127.0.0.1.

A tracker (threshold 20 viewers per edge, secondary capacity 60, grace 5 s, steering TTL 1 s),
an origin looping the built-in sample (`--sample`, ~0.39 Mbit/s) and one primary edge `p1` in
region eu whose viewer egress is capped at --cap-kbps (its "uplink": about 30 viewers' worth).
A crowd of --viewers `relaycast watch --steer` viewers arrives at once and watches for
--duration s; then it leaves. The run is done twice:

  with       the tracker's local provisioner starts a secondary process when the region passes
             its threshold; it re-streams from p1 and takes the excess; it is drained and
             stopped after the crowd leaves;
  without    --provisioner none: every viewer stays on p1.

Every second the script samples the origin's and p1's egress (HTTP to viewers + QUIC to relays,
from /metrics) and the tracker's /api/v1/traffic. Reported: peak and mean egress of the origin
and of p1 during the crowd; time from the threshold crossing (the tracker starting the
secondary) to the secondary reporting viewers; time from the crowd leaving to the secondary's
process being stopped; and viewers "dropped": viewers that stalled after start-up or skipped a
segment (the goal is 0).

Usage: python3 bench/traffic.py [--viewers 60] [--duration 40] [--cap-kbps 12000] [--no-build]
Binary: $RELAYCAST_BIN, else target/release/relaycast (built with cargo unless --no-build).
Writes bench/results/traffic.{md,json}.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import TOKEN, log  # noqa: E402


def get(addr, path, timeout=5.0):
    """common.get, with a refused or failed connection as status 0."""
    try:
        return common.get(addr, path, timeout=timeout)
    except OSError:
        return 0, b""


def metric(addr, name):
    status, body = get(addr, "/metrics")
    if status != 200:
        return 0.0
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def egress(addr):
    return metric(addr, "relaycast_http_egress_bytes_total") + metric(addr, "relaycast_peer_egress_bytes_total")


def traffic(tracker):
    status, body = get(tracker, "/api/v1/traffic")
    return json.loads(body) if status == 200 else None


def start_tracker(bin_path, logdir, provisioner):
    port = common.free_port()
    addr = f"127.0.0.1:{port}"
    err = open(os.path.join(logdir, "tracker.log"), "w")
    args = [bin_path, "tracker", "--http", addr, "--viewer-rate", "0", "--heartbeat-ms", "300", "--threshold", "20",
            "--secondary-capacity", "60", "--grace-ms", "5000", "--steering-ttl", "1",
            "--provisioner", provisioner, "--token", TOKEN]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    common.PROCS.append(("tracker", p))
    deadline = time.time() + 15
    while time.time() < deadline:
        if get(addr, "/api/v1/traffic", timeout=1)[0] == 200:
            return addr
        time.sleep(0.2)
    sys.exit("the tracker did not start; see tracker.log")


def one_run(bin_path, args, secondaries, workdir):
    logdir = os.path.join(workdir, "with" if secondaries else "without")
    os.makedirs(logdir)
    tracker = start_tracker(bin_path, logdir, "local" if secondaries else "none")
    turl = f"http://{tracker}"
    _, origin, _ = common.start_node(bin_path, "origin", ["origin", "--sample", "--http", "127.0.0.1:0", "--quic",
                                     "127.0.0.1:0", "--token", TOKEN, "--tracker", turl, "--region", "eu"], logdir)
    _, p1, _ = common.start_node(bin_path, "p1", ["relay", "--region", "eu", "--tracker", turl, "--http", "127.0.0.1:0",
                                 "--quic", "127.0.0.1:0", "--token", TOKEN, "--egress-kbps", str(args.cap_kbps)], logdir)
    deadline = time.time() + 30
    while time.time() < deadline:
        t = traffic(tracker)
        if t and any(e["name"] == "p1" and e["state"] == "serving" for e in t["edges"]):
            if get(p1, "/live/demo/index.m3u8")[0] == 200:
                break
        time.sleep(0.3)
    else:
        sys.exit("p1 did not come up")
    time.sleep(3)
    qoe = os.path.join(logdir, "viewer.jsonl")
    crowd = subprocess.Popen([bin_path, "watch", "--quiet", "--steer", f"{turl}/play/demo?region=eu", "--viewers",
                              str(args.viewers), "--duration", str(args.duration), "--startup", "4", "--log", qoe],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(logdir, "crowd.log"), "w"))
    common.PROCS.append(("crowd", crowd))
    t0 = time.time()
    samples = []
    prev = (t0, egress(origin), egress(p1))
    crowd_end = None
    stopped_at = None
    while True:
        time.sleep(1.0)
        now = time.time()
        cur = (now, egress(origin), egress(p1))
        dt = cur[0] - prev[0]
        t = traffic(tracker) or {"edges": [], "events": []}
        sec = [e for e in t["edges"] if e["kind"] == "secondary" and e["state"] != "retired"]
        samples.append({
            "t_s": round(now - t0, 2),
            "origin_mbps": (cur[1] - prev[1]) * 8 / dt / 1e6,
            "p1_mbps": (cur[2] - prev[2]) * 8 / dt / 1e6,
            "p1_load": next((e["load"] for e in t["edges"] if e["name"] == "p1"), 0),
            "secondary_load": sum(e["load"] for e in sec),
            "secondaries": len(sec),
        })
        prev = cur
        if crowd_end is None and crowd.poll() is not None:
            crowd_end = now
            log(f"{'with' if secondaries else 'without'}: crowd left at {now - t0:.1f} s")
        if crowd_end is not None:
            if not secondaries or any(ev["event"] == "stopped" for ev in t["events"]):
                stopped_at = next((ev["unix_ms"] / 1000 for ev in t["events"] if ev["event"] == "stopped"), None)
                break
            if now - crowd_end > 60:
                break
    events = (traffic(tracker) or {}).get("events", [])
    common.cleanup()
    # Viewers: stalls after start-up, skips.
    dropped, stalls, skipped = 0, 0, 0
    for path in glob.glob(qoe + ".*"):
        s = k = 0
        with open(path) as f:
            for line in f:
                v = json.loads(line)
                if v["type"] == "end":
                    s, k = v["stalls"], v["skipped"]
        stalls += s
        skipped += k
        dropped += 1 if (s or k) else 0
    during = [x for x in samples if x["t_s"] <= (crowd_end - t0 if crowd_end else 1e9) and x["t_s"] >= 5]
    at = {ev["event"]: ev["unix_ms"] / 1000 for ev in reversed(events)}
    result = {
        "secondaries": secondaries,
        "viewers": args.viewers,
        "viewers_dropped": dropped,
        "stalls": stalls,
        "skipped": skipped,
        "origin_peak_mbps": max(x["origin_mbps"] for x in during),
        "origin_mean_mbps": sum(x["origin_mbps"] for x in during) / len(during),
        "p1_peak_mbps": max(x["p1_mbps"] for x in during),
        "p1_mean_mbps": sum(x["p1_mbps"] for x in during) / len(during),
        "threshold_to_serving_s": (at["viewers"] - at["starting"]) if "viewers" in at and "starting" in at else None,
        "leave_to_stopped_s": (stopped_at - crowd_end) if stopped_at and crowd_end else None,
        "events": events,
        "samples": samples,
    }
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--viewers", type=int, default=60)
    ap.add_argument("--duration", type=int, default=40)
    ap.add_argument("--cap-kbps", type=int, default=12000)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the logs (printed)")
    args = ap.parse_args()
    bin_path = common.binary(args.no_build)
    workdir = tempfile.mkdtemp(prefix="relaycast-traffic-")
    runs = []
    for secondaries in (True, False):
        log(f"run {'with' if secondaries else 'without'} secondaries: {args.viewers} viewers for {args.duration} s")
        runs.append(one_run(bin_path, args, secondaries, workdir))
    w, o = runs
    fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    md = [
        f"# Traffic manager under a flash crowd ({args.viewers} viewers, primary edge capped at {args.cap_kbps} kbit/s)",
        "",
        f"Machine: {', '.join(f'{k} {v}' for k, v in common.machine().items())}. Command: `python3 bench/traffic.py --viewers {args.viewers} "
        f"--duration {args.duration} --cap-kbps {args.cap_kbps}`.",
        "",
        "| | with secondaries | without |",
        "|---|---|---|",
        f"| primary edge p1 egress, peak / mean (Mbit/s) | {fmt(w['p1_peak_mbps'])} / {fmt(w['p1_mean_mbps'])} | "
        f"{fmt(o['p1_peak_mbps'])} / {fmt(o['p1_mean_mbps'])} |",
        f"| origin egress, peak / mean (Mbit/s) | {fmt(w['origin_peak_mbps'], 2)} / {fmt(w['origin_mean_mbps'], 2)} | "
        f"{fmt(o['origin_peak_mbps'], 2)} / {fmt(o['origin_mean_mbps'], 2)} |",
        f"| viewers dropped (stalled after start-up or skipped) | {w['viewers_dropped']} | {o['viewers_dropped']} |",
        f"| stalls / skipped segments, all viewers | {w['stalls']} / {w['skipped']} | {o['stalls']} / {o['skipped']} |",
        f"| threshold crossing → secondary serving viewers (s) | {fmt(w['threshold_to_serving_s'])} | - |",
        f"| crowd gone → secondary process stopped (s) | {fmt(w['leave_to_stopped_s'])} | - |",
        "",
    ]
    os.makedirs(common.RESULTS, exist_ok=True)
    with open(os.path.join(common.RESULTS, "traffic.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(common.RESULTS, "traffic.json"), "w") as f:
        json.dump({"machine": common.machine(), "args": vars(args), "with": w, "without": o}, f, indent=1)
    print("\n".join(md))
    if args.keep:
        print(f"logs: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    common.run(main)

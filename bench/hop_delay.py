#!/usr/bin/env python3
"""Per-hop added delay: origin -> relay1 -> relay2 -> relay3, one process each, on 127.0.0.1.

ffmpeg pushes a live testsrc2+sine stream (1 s segments) to the origin's push channel `cam`
for --seconds (default 60). One viewer polls relay3's /live/cam/index.m3u8 every 0.5 s so every
hop carries the channel. Meanwhile one thread per node polls that node's media playlist
/live/cam/src/index.m3u8 every --poll-ms (default 20) and notes the wall time at which each
sequence number first appears (a node lists a segment only once it holds all of it).

Per segment and depth d: t_d - t_origin (cumulative delay added by d hops) and t_d - t_{d-1}
(the delay added by hop d alone); reported as p50/p99/max. Second view: each node's own
/api/v1/node delay_ms (time it had the whole segment - origin timestamp, since start).

Usage: python3 bench/hop_delay.py [--seconds 60] [--poll-ms 20] [--no-build]
Binary: $RELAYCAST_BIN, else target/release/relaycast (built with cargo unless --no-build).
Writes bench/results/hop_delay.{md,json} (bench/results/hop_delay_poll{N}ms.{md,json} when --poll-ms N
is not 20).
"""

import argparse
import http.client
import json
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import common
from common import PROCS, RESULTS, TOKEN, Client, binary, cleanup, log, machine, playlist_seqs

PUSH_KEY = "benchkey"
CHANNEL = "cam"


def start_node(bin_path, name, args, logdir):
    """Start a node on ephemeral ports; return (http_addr, quic_addr) parsed from its stdout."""
    _, http_addr, quic_addr = common.start_node(bin_path, name, args, logdir, want_quic=True)
    return http_addr, quic_addr


class Poller(threading.Thread):
    """Polls one node's media playlist every `period` on average; first wall time (ms) each seq
    was listed.

    The interval is dithered (uniform 0.5..1.5 x period) so the pollers of different nodes do not
    run in lockstep: with lockstep ticks, t_d - t_origin would mostly measure the order in which
    the threads poll within a tick. Dithered, the polling error of each node is independent and
    identically distributed, so differences are unbiased (mean error 0, spread +-period).
    """

    def __init__(self, name, addr, period_s, stop, on_new=None):
        super().__init__(daemon=True)
        self.name_, self.client, self.period, self.stop = name, Client(addr), period_s, stop
        self.on_new = on_new
        self.first_seen = {}
        self.poll_ends = []  # wall ms at which each successful poll's response arrived

    def run(self):
        path = f"/live/{CHANNEL}/src/index.m3u8"
        rng = random.Random()
        next_t = time.monotonic() + rng.uniform(0, self.period)
        while not self.stop.is_set():
            try:
                status, body, _ = self.client.get(path)
            except Exception:
                status, body = 0, b""
            now = time.time() * 1000.0
            if status == 200:
                self.poll_ends.append(now)
                for seq in playlist_seqs(body):
                    if seq not in self.first_seen:
                        self.first_seen[seq] = now
                        if self.on_new:
                            self.on_new(seq)
            next_t += self.period * rng.uniform(0.5, 1.5)
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # fell behind: do not burst


def origin_times(addr, seqs, out, stop):
    """HEAD each new segment at the origin once, for its relaycast-origin-time header."""
    c = Client(addr, timeout=5)
    while not (stop.is_set() and seqs.empty()):
        try:
            seq = seqs.get(timeout=0.2)
        except queue.Empty:
            continue
        try:
            c.conn = c.conn or http.client.HTTPConnection(c.host, c.port, timeout=5)
            c.conn.request("HEAD", f"/live/{CHANNEL}/src/{seq}.ts")
            r = c.conn.getresponse()
            r.read()
            v = r.headers.get("relaycast-origin-time")
            if r.status == 200 and v:
                out[seq] = float(v)
        except (OSError, http.client.HTTPException):
            if c.conn:
                c.conn.close()
            c.conn = None


def viewer(addr, stop):
    c = Client(addr)
    while not stop.wait(0.5):
        try:
            c.get(f"/live/{CHANNEL}/index.m3u8")
        except Exception:
            pass


def pct(values, q):
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summarize(values):
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None, "ci95": None}
    return {
        "n": len(values),
        "p50": round(pct(values, 50), 1),
        "p99": round(pct(values, 99), 1),
        "max": round(max(values), 1),
        "mean": round(statistics.fmean(values), 2),
        "ci95": round(1.96 * statistics.stdev(values) / len(values) ** 0.5, 2) if len(values) > 1 else None,
    }



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="length of the ffmpeg push (s)")
    ap.add_argument("--poll-ms", type=float, default=20.0, help="playlist polling period per node (ms)")
    ap.add_argument("--warmup", type=int, default=3, help="first segments (by origin order) left out")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs) after a successful run")
    args = ap.parse_args()

    bin_path = binary(args.no_build)
    tmp = tempfile.mkdtemp(prefix="relaycast-hop-")
    log(f"logs in {tmp}")

    names = ["origin", "relay1", "relay2", "relay3"]
    http_addrs, quic_addrs = {}, {}
    node_args = ["--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--token", TOKEN]
    http_addrs["origin"], quic_addrs["origin"] = start_node(
        bin_path, "origin", ["origin", *node_args, "--push", f"{CHANNEL}={PUSH_KEY}"], tmp
    )
    for parent, name in zip(names, names[1:]):
        http_addrs[name], quic_addrs[name] = start_node(
            bin_path, name, ["relay", "--parent", quic_addrs[parent], *node_args], tmp
        )
    log("nodes: " + ", ".join(f"{n}=http://{http_addrs[n]}/" for n in names))

    # Wait until every relay is connected to its parent.
    deadline = time.time() + 15
    for name in names[1:]:
        c = Client(http_addrs[name], timeout=2)
        while True:
            try:
                _, body, _ = c.get("/api/v1/node")
                if json.loads(body).get("parent"):
                    break
            except Exception:
                pass
            if time.time() > deadline:
                sys.exit(f"{name} never connected to its parent; see {tmp}/{name}.log")
            time.sleep(0.1)

    stop = threading.Event()
    new_seqs, origin_ms = queue.Queue(), {}
    pollers = {
        n: Poller(n, http_addrs[n], args.poll_ms / 1000.0, stop, new_seqs.put if n == "origin" else None)
        for n in names
    }
    stamper = threading.Thread(target=origin_times, args=(http_addrs["origin"], new_seqs, origin_ms, stop))
    stamper.start()
    threading.Thread(target=viewer, args=(http_addrs["relay3"], stop), daemon=True).start()
    for p in pollers.values():
        p.start()

    ffmpeg_log = open(os.path.join(tmp, "ffmpeg.log"), "w")
    ff = [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning",
        "-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(args.seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k",
        "-f", "hls", "-hls_time", "1", "-hls_list_size", "6", "-method", "PUT",
        f"http://{http_addrs['origin']}/ingest/{CHANNEL}/{PUSH_KEY}/src.m3u8",
    ]  # fmt: skip
    log(f"ffmpeg pushing {args.seconds} s of 1 s segments to the origin")
    t_start = time.time()
    ffp = subprocess.Popen(ff, stdout=ffmpeg_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    PROCS.append(("ffmpeg", ffp))
    ffp.wait(timeout=args.seconds + 60)
    time.sleep(3)  # let the last segments travel down the chain
    stop.set()
    for p in pollers.values():
        p.join(timeout=15)
    stamper.join(timeout=15)
    elapsed = time.time() - t_start

    node_stats = {}
    for n in names:
        try:
            _, body, _ = Client(http_addrs[n], timeout=5).get("/api/v1/node")
            node_stats[n] = json.loads(body)["delay_ms"]
        except Exception as e:
            node_stats[n] = {"error": str(e)}
    cleanup()

    # Per-segment analysis over segments that every node saw, after the warm-up.
    seen = {n: pollers[n].first_seen for n in names}
    origin_order = sorted(seen["origin"])
    candidates = origin_order[args.warmup :]
    common_seqs = [s for s in candidates if all(s in seen[n] for n in names)]
    missing = {n: [s for s in candidates if s not in seen[n]] for n in names[1:]}
    per_segment = [
        {"seq": s, "origin_time": origin_ms.get(s), **{n: round(seen[n][s], 1) for n in names}} for s in common_seqs
    ]

    cumulative, per_hop, vs_stamp = {}, {}, {}
    for d, n in enumerate(names[1:], start=1):
        cumulative[n] = summarize([seen[n][s] - seen["origin"][s] for s in common_seqs])
        per_hop[n] = summarize([seen[n][s] - seen[names[d - 1]][s] for s in common_seqs])
    for n in names:
        vs_stamp[n] = summarize([seen[n][s] - origin_ms[s] for s in common_seqs if s in origin_ms])

    intervals = {}
    for n in names:
        ends = pollers[n].poll_ends
        gaps = [b - a for a, b in zip(ends, ends[1:])]
        intervals[n] = summarize(gaps)

    result = {
        "benchmark": "hop_delay",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "params": {
            "push_seconds": args.seconds,
            "segment_s": 1,
            "poll_ms": args.poll_ms,
            "poll_dither": "uniform 0.5..1.5 x poll_ms",
            "warmup_segments": args.warmup,
            "elapsed_s": round(elapsed, 1),
        },
        "segments_measured": len(common_seqs),
        "segments_missing_by_node": {n: len(v) for n, v in missing.items()},
        "delay_vs_origin_ms": cumulative,
        "delay_vs_previous_hop_ms": per_hop,
        "first_seen_minus_origin_timestamp_ms": vs_stamp,
        "poll_interval_ms": intervals,
        "node_delay_ms": node_stats,
        "per_segment_first_seen_unix_ms": per_segment,
    }

    def ms(v):
        return "–" if v is None else f"{v:.1f}"

    def mean(v):
        return "–" if v["mean"] is None else f"{v['mean']:+.1f} ± {v['ci95']:.1f}"

    lines = []
    lines.append(
        f"Per-hop delay from {len(common_seqs)} segments of 1 s (first {args.warmup} left out). Each node's "
        f"playlist is polled every {args.poll_ms:g} ms on average (dithered 0.5–1.5×, independently per node), "
        f"so each first-seen time is late by ~0–{1.5 * args.poll_ms:g} ms and a difference of two carries "
        f"±{1.5 * args.poll_ms:g} ms of polling noise with mean 0: per-segment p99/max are dominated by "
        f"that noise; the mean (± 95% CI) is the unbiased estimate."
    )
    lines.append("")
    lines.append("| depth | node | t_d − t_origin mean | p50 | p99 | max | t_d − t_(d−1) mean | p50 | p99 | max |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for d, n in enumerate(names[1:], start=1):
        c, h = cumulative[n], per_hop[n]
        lines.append(
            f"| {d} | {n} | {mean(c)} | {ms(c['p50'])} | {ms(c['p99'])} | {ms(c['max'])} | "
            f"{mean(h)} | {ms(h['p50'])} | {ms(h['p99'])} | {ms(h['max'])} |"
        )
    lines.append("")
    lines.append(
        "Polling view against the segment's own `relaycast-origin-time` (first-seen − origin timestamp, ms; "
        "the origin row is the pure polling lag):"
    )
    lines.append("")
    lines.append("| node | mean | p50 | p99 | max |")
    lines.append("|---|---|---|---|---|")
    for n in names:
        v = vs_stamp[n]
        lines.append(f"| {n} | {mean(v)} | {ms(v['p50'])} | {ms(v['p99'])} | {ms(v['max'])} |")
    lines.append("")
    lines.append(
        "Nodes' own `/api/v1/node` `delay_ms` (wall time the node had the whole segment − origin "
        "timestamp; integer ms, clamped to ≥ 1; whole run incl. warm-up), and the same minus the origin's:"
    )
    lines.append("")
    lines.append("| node | segments | p50 | p99 | max | p50 − origin p50 | p99 − origin p99 |")
    lines.append("|---|---|---|---|---|---|---|")
    o = node_stats.get("origin", {})
    for n in names:
        s = node_stats.get(n, {})
        if "p50" not in s:
            lines.append(f"| {n} | error: {s.get('error')} | | | | | |")
            continue
        dp50 = s["p50"] - o["p50"] if "p50" in o and n != "origin" else "–"
        dp99 = s["p99"] - o["p99"] if "p99" in o and n != "origin" else "–"
        lines.append(f"| {n} | {s['segments']} | {s['p50']} | {s['p99']} | {s['max']} | {dp50} | {dp99} |")
    lines.append("")
    iv = ", ".join(f"{n} p50 {ms(intervals[n]['p50'])} / p99 {ms(intervals[n]['p99'])}" for n in names)
    lines.append(f"Achieved polling interval (ms): {iv}.")
    if any(missing.values()):
        lines.append("")
        lines.append(
            "Segments listed at the origin but never seen at a relay: "
            + ", ".join(f"{n}: {len(v)}" for n, v in missing.items())
        )
    table = "\n".join(lines)

    os.makedirs(RESULTS, exist_ok=True)
    m = result["machine"]
    stem = "hop_delay" if args.poll_ms == 20 else f"hop_delay_poll{args.poll_ms:g}ms"
    with open(os.path.join(RESULTS, f"{stem}.md"), "w") as f:
        f.write(f"# hop_delay — {result['date']}\n\n")
        f.write(f"Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}, load average at start {m['loadavg_at_start']}.\n")
        f.write(f"Command: `python3 bench/hop_delay.py --seconds {args.seconds} --poll-ms {args.poll_ms:g}`\n\n")
        f.write(table + "\n")
    with open(os.path.join(RESULTS, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(table)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nwrote {RESULTS}/{stem}.md and {stem}.json")


if __name__ == "__main__":
    common.run(main, "hop_delay")

#!/usr/bin/env python3
"""Single vs dual-source viewer under a throttled edge (F40, F41; issue 4's figure).

An origin loops the built-in sample (`--sample`, channel `demo`, 2 s segments, ~0.39 Mbit/s)
and five relays carry it, all on 127.0.0.1: one "slow" edge per viewer (so the viewers never
share a cap) and one healthy edge shared by the three dual-source viewers. Four
`relaycast watch` viewers run at the same time, each for --duration s with --startup s of
startup buffer:

  single     its slow edge only;
  alternate  its slow edge + the healthy edge, --mode alternate;
  hedge      its slow edge + the healthy edge, --mode hedge;
  adaptive   its slow edge + the healthy edge, --mode adaptive.

--throttle-at s after the viewers start, every slow edge's egress cap is set to --cap-kbps
(below the stream's bitrate) with `PUT /api/v1/egress`; --throttle-for s later it is lifted.
From each viewer's QoE log (its `end` line) come stalls, stall time and duplicate bytes as a
share of all bytes received. The whole run is repeated --runs times (fresh nodes each time);
the script reports per viewer the median and the range over runs, and each dual mode's
stall-time reduction against the single viewer of the same run. Issue 4's goal: >= 50 % less
stall time than single with <= 5 % duplicate bytes.

`relaycast report` then draws the logs of the run whose single-viewer stall time is the median
into bench/results/dual_source/ (index.html + SVG charts).

Usage: python3 bench/dual_source.py [--runs 3] [--duration 60] [--no-build] [--keep]
Binary: $RELAYCAST_BIN, else target/release/relaycast (built with cargo unless --no-build).
Writes bench/results/dual_source.{md,json} and bench/results/dual_source/ (index.html, the SVG
charts and the four QoE logs they were drawn from).
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import PROCS, RESULTS, TOKEN, binary, cleanup, get, log, machine, playlist_seqs, request, run, start_node

CHANNEL = "demo"
VIEWERS = ["single", "alternate", "hedge", "adaptive"]
DUAL = VIEWERS[1:]
GOAL_REDUCTION = 50.0  # % less stall time than single
GOAL_DUPLICATE = 5.0  # % of bytes at most


def set_egress(addr, kbps):
    status, body = request(
        addr, "PUT", "/api/v1/egress", body=json.dumps({"kbps": kbps}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, timeout=5,
    )  # fmt: skip
    if status != 200:
        raise RuntimeError(f"PUT /api/v1/egress on {addr}: HTTP {status} {body[:200]!r}")


def wait_for_segments(addrs, n, timeout):
    """Until every edge's media playlist lists at least n segments."""
    deadline = time.time() + timeout
    pending = dict(addrs)
    while pending:
        for name, addr in list(pending.items()):
            try:
                status, body = get(addr, f"/live/{CHANNEL}/src/index.m3u8", timeout=2)
                if status == 200 and len(playlist_seqs(body)) >= n:
                    del pending[name]
            except OSError:
                pass
        if not pending:
            break
        if time.time() > deadline:
            sys.exit(f"edges never listed {n} segments: {', '.join(pending)}")
        time.sleep(0.25)


def read_log(path):
    """The parts of a QoE log this benchmark uses."""
    out = {"segments": [], "stalls": [], "duplicates": [], "buffer": [], "skips": 0, "end": None}
    with open(path) as f:
        for line in f:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            t = v.get("type")
            if t == "segment":
                out["segments"].append(v)
            elif t == "stall":
                out["stalls"].append({"start_s": round(v["start_ms"] / 1000, 1), "s": round(v["duration_ms"] / 1000, 2)})
            elif t == "buffer":
                out["buffer"].append((v["t_ms"] / 1000, v["level_ms"] / 1000))
            elif t == "duplicate":
                out["duplicates"].append(v)
            elif t == "skip":
                out["skips"] += 1
            elif t == "end":
                out["end"] = v
    return out


def one_run(bin_path, args, tmp, index):
    """Fresh nodes, four concurrent viewers, the throttle; returns {viewer: stats}."""
    rundir = os.path.join(tmp, f"run{index}")
    os.makedirs(rundir)
    _, origin, origin_quic = start_node(
        bin_path, "origin",
        ["origin", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--token", TOKEN, "--sample"], rundir,
    )  # fmt: skip
    edges = {}
    for name in [f"slow-{v}" for v in VIEWERS] + ["healthy"]:
        _, edges[name], _ = start_node(
            bin_path, name, ["relay", "--parent", origin_quic, "--http", "127.0.0.1:0", "--token", TOKEN], rundir,
            want_quic=False,
        )  # fmt: skip
    log(f"run {index}: origin http://{origin}/, " + ", ".join(f"{n}=http://{a}/" for n, a in edges.items()))
    # The viewers start 2 segments behind the newest listed one: wait until that exists everywhere.
    wait_for_segments(edges, 3, 40)

    url = {n: f"http://{a}/live/{CHANNEL}/index.m3u8" for n, a in edges.items()}
    procs, logs = {}, {}
    t0 = time.monotonic()
    for v in VIEWERS:
        logs[v] = os.path.join(rundir, f"{v}.jsonl")
        cmd = [bin_path, "watch", "--quiet", "--duration", str(args.duration), "--startup", str(args.startup),
               "--log", logs[v], "--label", v]  # fmt: skip
        cmd += [url["slow-single"]] if v == "single" else ["--mode", v, url[f"slow-{v}"], url["healthy"]]
        err = open(os.path.join(rundir, f"watch-{v}.log"), "w")
        procs[v] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "NO_COLOR": "1"})
        PROCS.append((f"watch-{v}", procs[v]))
    slow = [edges[f"slow-{v}"] for v in VIEWERS]

    time.sleep(max(0.0, t0 + args.throttle_at - time.monotonic()))
    for a in slow:
        set_egress(a, args.cap_kbps)
    capped = time.monotonic() - t0
    time.sleep(max(0.0, t0 + args.throttle_at + args.throttle_for - time.monotonic()))
    for a in slow:
        set_egress(a, 0)
    lifted = time.monotonic() - t0
    log(f"run {index}: slow edges capped to {args.cap_kbps} kbit/s from t={capped:.1f} s to t={lifted:.1f} s")

    for v, p in procs.items():
        try:
            rc = p.wait(timeout=args.duration + 30)
        except subprocess.TimeoutExpired:
            sys.exit(f"viewer {v} did not finish; see {rundir}/watch-{v}.log")
        if rc != 0:
            sys.exit(f"viewer {v} exited with {rc}; see {rundir}/watch-{v}.log")
    cleanup()  # the nodes of this run

    result = {"throttle_s": [round(capped, 2), round(lifted, 2)], "logs": logs, "viewers": {}}
    for v in VIEWERS:
        lg = read_log(logs[v])
        end = lg["end"]
        if end is None:
            sys.exit(f"{logs[v]} has no end line")
        seqs = [s["seq"] for s in lg["segments"]]
        in_order = all(b == a + 1 for a, b in zip(seqs, seqs[1:]))
        by_source = {}
        for s in lg["segments"]:
            by_source[s["source"]] = by_source.get(s["source"], 0) + 1
        media_bits = sum(s["bytes"] for s in lg["segments"]) * 8
        media_s = sum(s["duration_ms"] for s in lg["segments"]) / 1000
        # Lowest buffer from the throttle until 4 s after it was lifted (viewer clock ~ launch clock).
        during = [lv for t, lv in lg["buffer"] if capped <= t <= lifted + 4]
        result["viewers"][v] = {
            "stalls": end["stalls"],
            "stall_ms": end["stall_ms"],
            "min_buffer_s": round(min(during), 2) if during else None,
            "bytes": end["bytes"],
            "duplicate_bytes": end["duplicate_bytes"],
            "duplicate_pct": round(100.0 * end["duplicate_bytes"] / end["bytes"], 2) if end["bytes"] else 0.0,
            "segments": end["segments"],
            "skipped": end.get("skipped", lg["skips"]),
            "segments_by_source": {("slow" if k == 0 else "healthy"): n for k, n in sorted(by_source.items())},
            "hedged_segments": sum(1 for s in lg["segments"] if s.get("hedge")),
            "cancelled_requests": len(lg["duplicates"]),
            "in_order_no_gaps": in_order,
            "stream_kbps": round(media_bits / media_s / 1000, 1) if media_s else None,
            "stall_list": lg["stalls"],
        }
        s = result["viewers"][v]
        log(f"run {index}: {v:9s} stalls {s['stalls']} ({s['stall_ms'] / 1000:.1f} s), duplicate {s['duplicate_pct']:.1f} %, "
            f"segments {s['segments']} {s['segments_by_source']}, hedged {s['hedged_segments']}")  # fmt: skip
    single_ms = result["viewers"]["single"]["stall_ms"]
    for v in DUAL:
        ms = result["viewers"][v]["stall_ms"]
        result["viewers"][v]["stall_reduction_pct"] = round(100.0 * (1 - ms / single_ms), 1) if single_ms else None
    return result


def spread(values):
    vals = [x for x in values if x is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "values": values}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "values": values}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="repetitions of the whole run (fresh nodes each)")
    ap.add_argument("--duration", type=float, default=60, help="viewing time per viewer (s)")
    ap.add_argument("--startup", type=float, default=4, help="viewer startup / resume buffer (s)")
    ap.add_argument("--throttle-at", type=float, default=20, help="when the slow edges are capped (s after start)")
    ap.add_argument("--throttle-for", type=float, default=10, help="how long they stay capped (s)")
    ap.add_argument("--cap-kbps", type=int, default=120, help="the slow edges' cap while throttled (kbit/s)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (node logs, QoE logs of every run)")
    args = ap.parse_args()

    bin_path = binary(args.no_build)
    tmp = tempfile.mkdtemp(prefix="relaycast-dual-")
    log(f"work dir {tmp}")
    mach = machine()
    started = time.time()
    runs = [one_run(bin_path, args, tmp, i + 1) for i in range(args.runs)]

    summary = {}
    for v in VIEWERS:
        per = [r["viewers"][v] for r in runs]
        summary[v] = {k: spread([p[k] for p in per]) for k in ("stalls", "stall_ms", "duplicate_pct", "min_buffer_s")}
        summary[v]["segments"] = spread([p["segments"] for p in per])
        summary[v]["skipped_total"] = sum(p["skipped"] for p in per)
        summary[v]["in_order_no_gaps"] = all(p["in_order_no_gaps"] for p in per)
    single_med = summary["single"]["stall_ms"]["median"]
    for v in DUAL:
        red = spread([r["viewers"][v]["stall_reduction_pct"] for r in runs])
        summary[v]["stall_reduction_pct"] = red
        summary[v]["stall_reduction_of_medians_pct"] = (
            round(100.0 * (1 - summary[v]["stall_ms"]["median"] / single_med), 1) if single_med else None
        )
        runs_ok = sum(
            1 for r in runs
            if (r["viewers"][v]["stall_reduction_pct"] or 0) >= GOAL_REDUCTION
            and r["viewers"][v]["duplicate_pct"] <= GOAL_DUPLICATE
        )  # fmt: skip
        meets = (
            red["median"] is not None and red["median"] >= GOAL_REDUCTION
            and summary[v]["duplicate_pct"]["median"] <= GOAL_DUPLICATE
        )  # fmt: skip
        summary[v]["goal"] = {"meets_on_median": meets, "runs_meeting": runs_ok, "runs": len(runs)}
    kbps = [r["viewers"]["single"]["stream_kbps"] for r in runs if r["viewers"]["single"]["stream_kbps"]]
    stream_kbps = round(statistics.median(kbps)) if kbps else None

    # The report: the run whose single-viewer stall time is the median one.
    order = sorted(range(len(runs)), key=lambda i: runs[i]["viewers"]["single"]["stall_ms"])
    shown = order[(len(order) - 1) // 2]
    outdir = os.path.join(RESULTS, "dual_source")
    os.makedirs(outdir, exist_ok=True)
    for old in glob.glob(os.path.join(outdir, "*")):
        shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)
    for v in VIEWERS:  # the page names its logs: keep them beside it
        shutil.copy(runs[shown]["logs"][v], os.path.join(outdir, f"{v}.jsonl"))
    title = (f"Single vs dual-source viewer: slow edges capped to {args.cap_kbps} kbit/s "
             f"for {args.throttle_for:g} s at t = {args.throttle_at:g} s (run {shown + 1} of {len(runs)})")  # fmt: skip
    subprocess.run([bin_path, "report", *[f"{v}.jsonl" for v in VIEWERS], "-o", ".", "--title", title],
                   cwd=outdir, check=True, stdout=subprocess.DEVNULL)  # fmt: skip

    result = {
        "benchmark": "dual_source",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": mach,
        "params": {
            "runs": args.runs,
            "duration_s": args.duration,
            "startup_s": args.startup,
            "throttle_at_s": args.throttle_at,
            "throttle_for_s": args.throttle_for,
            "cap_kbps": args.cap_kbps,
            "stream_kbps": stream_kbps,
            "elapsed_s": round(time.time() - started, 1),
            "goal": f">= {GOAL_REDUCTION:g} % less stall time than single with <= {GOAL_DUPLICATE:g} % duplicate bytes",
        },
        "summary": summary,
        "report_run": shown + 1,
        "runs": [{k: v for k, v in r.items() if k != "logs"} for r in runs],
    }

    def rng(s, fmt):
        if s["median"] is None:
            return "–"
        if len(runs) == 1 or fmt(s["min"]) == fmt(s["max"]):
            return fmt(s["median"])
        return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"

    def sec(ms):
        return f"{ms / 1000:.1f}"

    def pct(x):
        return f"{x:.1f}"

    lines = []
    lines.append(
        f"{len(runs)} runs; each: 4 concurrent viewers × {args.duration:g} s, startup buffer {args.startup:g} s; "
        f"every slow edge capped to {args.cap_kbps} kbit/s from t = {args.throttle_at:g} s for {args.throttle_for:g} s "
        f"(stream ≈ {stream_kbps} kbit/s). Median over runs, (min–max) where the runs differ. Stall-time reduction is against "
        f"the single viewer of the same run (negative = more stall time than single)."
    )
    lines.append("")
    lines.append(
        "| viewer | sources | stalls | stall time s | stall-time reduction vs single | duplicate bytes % "
        "| lowest buffer s | meets goal |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for v in VIEWERS:
        s = summary[v]
        srcs = "slow edge" if v == "single" else f"slow + healthy, `--mode {v}`"
        if v == "single":
            red, goal = "–", "–"
        else:
            r = s["stall_reduction_pct"]
            red = rng(r, lambda x: f"{x:.0f} %") if r["median"] is not None else "– (single did not stall)"
            g = s["goal"]
            goal = f"{'**yes**' if g['meets_on_median'] else '**no**'} ({g['runs_meeting']}/{g['runs']} runs)"
        lines.append(
            f"| {v} | {srcs} | {rng(s['stalls'], str)} | {rng(s['stall_ms'], sec)} | {red} | "
            f"{rng(s['duplicate_pct'], pct)} | {rng(s['min_buffer_s'], lambda x: f'{x:.1f}')} | {goal} |"
        )
    lines.append("")
    lines.append(
        f"Goal (issue 4): ≥ {GOAL_REDUCTION:g} % less stall time than single with ≤ {GOAL_DUPLICATE:g} % duplicate "
        f"bytes; \"meets goal\" judges the medians, and counts the runs that met both on their own. Lowest buffer: "
        f"the least media buffered from the throttle until 4 s after it was lifted (startup buffer "
        f"{args.startup:g} s; 0 = stalled)."
    )
    lines.append("")
    lines.append("Per run (stalls / stall s / duplicate %; segments delivered from slow + healthy; hedged segments):")
    lines.append("")
    lines.append("| run | throttle (s) | " + " | ".join(VIEWERS) + " |")
    lines.append("|---|---|" + "---|" * len(VIEWERS))
    for i, r in enumerate(runs):
        cells = []
        for v in VIEWERS:
            x = r["viewers"][v]
            src = x["segments_by_source"]
            cells.append(
                f"{x['stalls']} / {x['stall_ms'] / 1000:.1f} / {x['duplicate_pct']:.1f}; "
                f"{src.get('slow', 0)}+{src.get('healthy', 0)}; {x['hedged_segments']}"
            )
        ts = r["throttle_s"]
        lines.append(f"| {i + 1} | {ts[0]:.1f}–{ts[1]:.1f} | " + " | ".join(cells) + " |")
    bad = [v for v in VIEWERS if not summary[v]["in_order_no_gaps"] or summary[v]["skipped_total"]]
    if bad:
        lines.append("")
        lines.append("Viewers with skipped segments or out-of-order delivery: " + ", ".join(bad))
    lines.append("")
    lines.append(f"Charts of run {shown + 1} (median single stall time): [dual_source/index.html](dual_source/index.html).")
    table = "\n".join(lines)

    os.makedirs(RESULTS, exist_ok=True)
    m = result["machine"]
    cmd = f"python3 bench/dual_source.py --runs {args.runs} --duration {args.duration:g}"
    with open(os.path.join(RESULTS, "dual_source.md"), "w") as f:
        f.write(f"# dual_source — {result['date']}\n\n")
        f.write(f"Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}, load average at start {m['loadavg_at_start']}.\n")
        f.write(f"Command: `{cmd}`\n\n")
        f.write(table + "\n")
    with open(os.path.join(RESULTS, "dual_source.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(table)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        log(f"kept {tmp}")
    print(f"\nwrote {RESULTS}/dual_source.md, dual_source.json and dual_source/")


if __name__ == "__main__":
    run(main, "dual_source")

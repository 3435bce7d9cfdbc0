#!/usr/bin/env python3
"""Soak: an hour of churn against a small real cluster, with every process's memory and open
files sampled (issue 18; docs/RELIABILITY.md, "Soak").

    python3 scripts/soak.py                      # 60 minutes, target/release/relaycast
    python3 scripts/soak.py --minutes 10 --bin target/debug/relaycast
    python3 scripts/soak.py --heaptrack edge-2   # that edge under heaptrack: its live heap over time

What runs: a tracker (traffic manager with a low threshold, so secondaries start and retire as
the audience swings), an origin taking an RTMP publisher (ffmpeg) that drops and reconnects every
1-3 minutes, two edges, and cohorts of `relaycast watch` viewers (steered, every third one
sharing P2P) joining every 20 s for 30-150 s each. Every 30 s it samples each relaycast
process's RSS (VmRSS), its heap (RssAnon) and open file descriptors (/proc/PID/fd), including the secondaries the
tracker starts. Writes results/soak-TIME/: samples.csv, soak.json (per process: first sample
after 5 minutes, last sample, growth) and soak.svg (RSS over time).
Needs ffmpeg. Only 127.0.0.1 is used.
"""

import argparse
import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TOKEN = "soak-token"
KEY = "soak-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, log):
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "ab"), stdin=subprocess.DEVNULL,
                            env={**os.environ, "NO_COLOR": "1"})


def wait_http(url, seconds=30):
    import urllib.request
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except Exception:
            time.sleep(0.3)
    sys.exit(f"soak: {url} did not answer in {seconds} s")


def descendants_and(pids):
    """The given pids and every process below them (the tracker's secondaries)."""
    children = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], list(pids)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def sample(pid, exe):
    """(name, rss_kib, anon_kib, fds) of a server process started from binary `exe`, or None.
    RSS counts the binary's own pages too (file-backed: code touched for the first time late in
    the run, e.g. by a reconnect, adds to it); RssAnon is the heap and stacks, what a leak grows."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if not cmd or Path(cmd[0].decode()).name != Path(exe).name or b"watch" in cmd:
            return None
        args = [a.decode() for a in cmd]
        name = args[args.index("--name") + 1] if "--name" in args else args[1]
        status = {k: v for k, _, v in (line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())}
        rss, anon = (int(status[k].split()[0]) for k in ("VmRSS", "RssAnon"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return name, rss, anon, fds
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def svg(series, out, minutes):
    """RSS (MiB) of each process over time, as a plain SVG line chart."""
    w, h, pad = 820, 420, 60
    top = max((v for pts in series.values() for _, v in pts), default=1) * 1.15
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    x = lambda t: pad + (w - 2 * pad) * t / max(minutes, 1e-9)
    y = lambda v: h - pad - (h - 2 * pad) * v / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w/2}" y="25" text-anchor="middle" font-size="18">Soak: memory (RSS) per process</text>',
             f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="black"/>',
             f'<text x="{w/2}" y="{h-15}" text-anchor="middle" font-size="13">minutes</text>',
             f'<text x="15" y="{h/2}" font-size="13" transform="rotate(-90 15 {h/2})">RSS (MiB)</text>']
    for i in range(6):
        t, v = minutes * i / 5, top * i / 5
        parts.append(f'<text x="{x(t)}" y="{h-pad+18}" text-anchor="middle" font-size="11">{t:.0f}</text>')
        parts.append(f'<text x="{pad-6}" y="{y(v)+4}" text-anchor="end" font-size="11">{v:.0f}</text>')
    for i, (name, pts) in enumerate(sorted(series.items())):
        c = colours[i % len(colours)]
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{line}"/>')
        parts.append(f'<text x="{w-pad+4}" y="{pad+16*i}" font-size="11" fill="{c}">{name}</text>')
    parts.append("</svg>")
    out.write_text("\n".join(parts))


def heap_over_time(out, name):
    """The live heap of the process run under heaptrack, from heaptrack_print's massif output:
    one line per snapshot (seconds, MiB), so a leak (steady climb) shows apart from an allocator
    that keeps freed pages (RSS up, live heap flat)."""
    record = next(out.glob(f"{name}.heaptrack*"), None)
    if record is None:
        print(f"soak: no heaptrack record for {name}", file=sys.stderr)
        return
    massif = out / f"heap-{name}.massif"
    subprocess.run(["heaptrack_print", "-f", str(record), "-M", str(massif), "--massif-detailed-freq", "0"],
                   stdout=open(out / f"heap-{name}-print.txt", "w"), stderr=subprocess.STDOUT)
    lines, t, heap = [], None, None
    for line in massif.read_text().splitlines() if massif.exists() else []:
        if line.startswith("time="):
            t = float(line[5:])
        elif line.startswith("mem_heap_B="):
            heap = int(line[11:])
            lines.append(f"{t:.0f}\t{heap / 2**20:.2f}")
    (out / f"heap-{name}.txt").write_text("seconds\tlive_heap_mib\n" + "\n".join(lines) + "\n")
    print(f"soak: live heap of {name} over time in {out / f'heap-{name}.txt'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--bin", default="target/release/relaycast")
    ap.add_argument("--results", default="results")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--heaptrack", metavar="NAME", choices=["origin", "tracker", "edge-1", "edge-2"],
                    help="run that process under heaptrack (a glibc-malloc build: heaptrack sees only malloc) "
                         "and write its live heap over time to heap-NAME.txt, to tell a leak from fragmentation")
    a = ap.parse_args()
    for tool in ["ffmpeg"] + (["heaptrack", "heaptrack_print"] if a.heaptrack else []):
        if shutil.which(tool) is None:
            sys.exit(f"soak: needs {tool} (apt-get install -y {tool.split('_')[0]})")
    exe = str(Path(a.bin).resolve())
    rng = random.Random(a.seed)
    out = Path(a.results) / time.strftime("soak-%Y%m%d-%H%M%S")
    (out / "viewers").mkdir(parents=True)
    procs = []

    def stop_all():
        # SIGTERM first: a process under heaptrack is its wrapper's child, and finishes its record on exit.
        for pid in descendants_and([p.pid for p in procs]):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    def cleanup(*_):
        stop_all()
        sys.exit(1)

    def wrapped(name, cmd):
        return ["heaptrack", "-o", str(out / f"{name}.heaptrack"), *cmd] if a.heaptrack == name else cmd

    signal.signal(signal.SIGINT, cleanup)
    signal.signal(signal.SIGTERM, cleanup)
    tp, oq, oh, rtmp = free_port(), free_port(), free_port(), free_port()
    tracker_url = f"http://127.0.0.1:{tp}"
    key = out / "origin.key"
    origin = start(wrapped("origin", [exe, "origin", "--name", "origin", "--http", f"127.0.0.1:{oh}", "--quic", f"127.0.0.1:{oq}",
                    "--push", f"soak={KEY}", "--rtmp", f"127.0.0.1:{rtmp}", "--signing-key", str(key),
                    "--tracker", tracker_url, "--region", "eu", "--token", TOKEN]), out / "origin.log")
    procs.append(origin)
    wait_http(f"http://127.0.0.1:{oh}/api/v1/ping")
    tracker = start(wrapped("tracker", [exe, "tracker", "--http", f"127.0.0.1:{tp}", "--token", TOKEN, "--threshold", "6",
                     "--secondary-capacity", "6", "--grace-ms", "15000", "--max-secondaries", "2",
                     "--origin-key", str(key) + ".pub", "--viewer-rate", "100000"]), out / "tracker.log")
    procs.append(tracker)
    wait_http(f"{tracker_url}/api/v1/nodes")
    for name in ("edge-1", "edge-2"):
        procs.append(start(wrapped(name, [exe, "relay", "--name", name, "--parent", f"127.0.0.1:{oq}", "--tracker", tracker_url,
                            "--region", "eu", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0",
                                          "--token", TOKEN]), out / f"{name}.log"))

    def publisher():
        return start(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                      "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                      "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "800k", "-g", "25",
                      "-c:a", "aac", "-b:a", "64k", "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/live/soak?key={KEY}"],
                     out / "publisher.log")

    pub = publisher()
    wait_http(f"http://127.0.0.1:{oh}/live/soak/index.m3u8")
    started = time.time()
    end = started + a.minutes * 60
    next_drop = started + rng.uniform(60, 180)
    next_cohort, next_sample = started, started
    cohorts, rows, reconnects = [], [], 0
    print(f"soak: {a.minutes:.0f} min, results in {out}", flush=True)
    while time.time() < end:
        now = time.time()
        if now >= next_drop:  # the publisher drops (as OBS on a bad link) and comes back
            pub.kill()
            pub.wait()
            time.sleep(3)
            pub = publisher()
            reconnects += 1
            next_drop = time.time() + rng.uniform(60, 180)
        if now >= next_cohort:
            n, dur, i = rng.randint(1, 8), rng.uniform(30, 150), len(cohorts)
            cmd = [exe, "watch", "--quiet", "--steer", f"{tracker_url}/play/soak?region=eu", "--viewers", str(n),
                   "--duration", f"{dur:.0f}", "--startup", "2", "--log", str(out / "viewers" / f"c{i}.jsonl")]
            if i % 3 == 2:
                cmd += ["--p2p", "--tracker", tracker_url, "--region", "eu"]
            cohorts.append((start(cmd, out / "viewers" / f"c{i}.log"), n))
            next_cohort = now + 20
        if now >= next_sample:
            t_min = (now - started) / 60
            for pid in descendants_and([p.pid for p in procs]):
                s = sample(pid, exe)
                if s:
                    rows.append({"minute": round(t_min, 2), "process": s[0], "pid": pid, "rss_kib": s[1], "anon_kib": s[2],
                                 "fds": s[3]})
            live = sum(n for c, n in cohorts if c.poll() is None)
            print(f"  {t_min:5.1f} min: {live} viewers watching, {reconnects} publisher reconnects", flush=True)
            next_sample = now + 30
        time.sleep(0.5)

    failed = [i for i, (c, _) in enumerate(cohorts) if c.poll() not in (None, 0)]
    for c, _ in cohorts:
        if c.poll() is None:
            c.kill()
    pub.kill()
    stop_all()
    if a.heaptrack:
        heap_over_time(out, a.heaptrack)
    with open(out / "samples.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["minute", "process", "pid", "rss_kib", "anon_kib", "fds"])
        wr.writeheader()
        wr.writerows(rows)
    summary = {"minutes": a.minutes, "cohorts": len(cohorts), "viewers": sum(n for _, n in cohorts),
               "cohorts_failed": failed, "publisher_reconnects": reconnects, "processes": {}}
    mark = min(5.0, a.minutes / 2)
    series = {}
    for name in sorted({r["process"] for r in rows}):
        mine = [r for r in rows if r["process"] == name]
        series[name] = [(r["minute"], r["rss_kib"] / 1024) for r in mine]
        at_mark = next((r for r in mine if r["minute"] >= mark), None)
        last = mine[-1]
        if at_mark is None or last["minute"] - at_mark["minute"] < a.minutes / 4:
            summary["processes"][name] = {"note": "not up long enough to compare (a secondary)",
                                          "samples": len(mine), "peak_rss_mib": max(r["rss_kib"] for r in mine) / 1024}
            continue
        summary["processes"][name] = {
            f"rss_mib_at_{mark:g}_min": round(at_mark["rss_kib"] / 1024, 1),
            "rss_mib_at_end": round(last["rss_kib"] / 1024, 1),
            "rss_growth_pct": round(100 * (last["rss_kib"] / at_mark["rss_kib"] - 1), 1),
            f"heap_mib_at_{mark:g}_min": round(at_mark["anon_kib"] / 1024, 1),
            "heap_mib_at_end": round(last["anon_kib"] / 1024, 1),
            "heap_growth_pct": round(100 * (last["anon_kib"] / at_mark["anon_kib"] - 1), 1),
            f"fds_at_{mark:g}_min": at_mark["fds"], "fds_at_end": last["fds"],
            "fd_growth_pct": round(100 * (last["fds"] / at_mark["fds"] - 1), 1),
        }
    (out / "soak.json").write_text(json.dumps(summary, indent=2))
    svg(series, out / "soak.svg", a.minutes)
    print(json.dumps(summary, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Edge throughput vs nginx: the same segment bytes served by a relaycast edge and by nginx.

An origin loops the built-in sample (`--sample`, channel `demo`, 2 s segments, a 12 s clip =
6 segments repeating with identical bytes) and one relay (the edge) carries it. The segments of
the edge's current media playlist are downloaded into a folder that nginx serves, named by
content hash; in every round the edge URL is re-picked so that it holds exactly the bytes of the
nginx file (sha256-checked), which keeps it inside the edge's default 30-segment window however
long the test runs. A background viewer polls the edge's playlist every second so the edge stays
subscribed.

Two scenarios, each 3 rounds of (edge, nginx workers=1, nginx workers=auto), alternating, after
a 2 s unrecorded warm-up run of each server:
  single  - wrk on one segment URL (the newest segment at the start);
  rotate  - wrk over every segment of the edge's playlist window (6 URLs, one clip loop), via a
            lua request() rotating URLs (the same script for both servers).
Reports the median of 3 for requests/s and MB/s (10^6 bytes), the edge/nginx ratios, latency
and the server's CPU time per request. wrk, the edge, the origin and nginx share this machine.

Usage: python3 bench/edge_vs_nginx.py [--duration 8] [--rounds 3] [--no-build] [--perf] [--cc reno]
Binary: $RELAYCAST_BIN, else target/release/relaycast (built with cargo unless --no-build).
Writes bench/results/edge_vs_nginx.md and bench/results/edge_vs_nginx.json
(and bench/results/edge_perf.txt with --perf); with --cc NAME, edge_vs_nginx-NAME.* instead.

The congestion control matters here: bbr without the fq qdisc paces each connection with its
own timer, and on this VM a timer costs a VM exit and an interrupt. Whether bbr ends up pacing
differs from run to run, for every server alike, so each run records the timers it caused.
"""

import argparse
import hashlib
import json
import os
import resource
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import common
from common import RESULTS, TOKEN, PROCS, binary, cleanup, free_port, get, log, machine, playlist_seqs, start_node

CHANNEL = "demo"
PLAYLIST = f"/live/{CHANNEL}/src/index.m3u8"
CLK_TCK = os.sysconf("SC_CLK_TCK")

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"bytes":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"lat_p50_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

WRK_ROTATE = r"""
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def tool_versions():
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"

    return {"nginx": first_line(["nginx", "-v"]), "wrk": first_line(["wrk", "-v"])}


def keep_subscribed(addr, stop):
    while not stop.wait(1.0):
        try:
            get(addr, PLAYLIST, timeout=5)
        except OSError:
            pass


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def process_tree(pid):
    """pid and its children (nginx master + workers)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            pids.append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
    return pids


class Library:
    """Segment files served by nginx, named by the sha256 of their bytes."""

    def __init__(self, root):
        self.root = root
        self.by_hash = {}

    def add(self, data):
        h = hashlib.sha256(data).hexdigest()
        if h not in self.by_hash:
            name = f"{h[:16]}.ts"
            with open(os.path.join(self.root, name), "wb") as f:
                f.write(data)
            os.chmod(os.path.join(self.root, name), 0o644)
            self.by_hash[h] = name
        return h


def edge_window(edge, lib):
    """The edge playlist's segments: [(seq, sha256, size)], each also stored in the library."""
    status, body = get(edge, PLAYLIST)
    if status != 200:
        raise RuntimeError(f"edge playlist: HTTP {status}")
    out = []
    for seq in playlist_seqs(body):
        status, data = get(edge, f"/live/{CHANNEL}/src/{seq}.ts")
        if status != 200:
            raise RuntimeError(f"edge segment {seq}: HTTP {status}")
        out.append((seq, lib.add(data), len(data)))
    return out


def start_nginx(tmp, name, root, workers, tls=None):
    """nginx serving ROOT on a free loopback port; over TLS with tls=(cert, key)."""
    prefix = os.path.join(tmp, name)
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    port = free_port()
    conf = os.path.join(prefix, "nginx.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"""{user}daemon off;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ video/mp2t ts; application/vnd.apple.mpegurl m3u8; }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port}{" ssl" if tls else ""};
        {f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; ssl_session_cache shared:SSL:10m;" if tls else ""}
        root {root};
    }}
}}
""")
    p = subprocess.Popen(["nginx", "-c", conf, "-p", prefix + "/"], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(prefix, "logs", "stderr.log"), "w"))  # fmt: skip
    PROCS.append((name, p))
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return p, f"127.0.0.1:{port}"
        except OSError:
            if p.poll() is not None:
                break
            time.sleep(0.05)
    sys.exit(f"nginx ({name}) did not start; see {prefix}/logs")


def hrtimer_softirqs():
    """High-resolution timer softirqs so far, all CPUs: with a pacing congestion control (bbr
    without the fq qdisc) each paced TCP segment that has to wait arms one."""
    with open("/proc/softirqs") as f:
        for line in f:
            if line.split(":")[0].strip() == "HRTIMER":
                return sum(int(x) for x in line.split()[1:])
    return 0


def congestion_control():
    """The TCP congestion control new connections get in this network namespace."""
    with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
        return f.read().strip()


def run_wrk(url, script, duration, threads, conns, server_pids, wrk_log):
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "-s", script, url]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, t0, timers0 = cpu_seconds(server_pids), time.monotonic(), hrtimer_softirqs()
    r = subprocess.run(cmd, capture_output=True, text=True)
    cpu1, t1, timers1 = cpu_seconds(server_pids), time.monotonic(), hrtimer_softirqs()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    wrk_log.write(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}\n")
    m = re.search(r"^WRKJSON (.*)$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed: {r.stdout}{r.stderr}")
    s = json.loads(m.group(1))
    secs = s["duration_us"] / 1e6
    errors = s["connect_errors"] + s["read_errors"] + s["write_errors"] + s["status_errors"] + s["timeouts"]
    server_cpu = cpu1 - cpu0
    return {
        "url": url,
        "rps": s["requests"] / secs,
        "mbps": s["bytes"] / secs / 1e6,
        "requests": s["requests"],
        "bytes": s["bytes"],
        "errors": errors,
        "status_errors": s["status_errors"],
        "lat_p50_ms": s["lat_p50_us"] / 1000,
        "lat_p99_ms": s["lat_p99_us"] / 1000,
        "server_cpu_s": round(server_cpu, 2),
        "server_cores": round(server_cpu / (t1 - t0), 2),
        "server_us_per_req": round(server_cpu / s["requests"] * 1e6, 1) if s["requests"] else None,
        "wrk_cores": round(wrk_cpu / (t1 - t0), 2),
        "timers_per_req": round((timers1 - timers0) / s["requests"], 2) if s["requests"] else None,
    }


def perf_profile(edge_pid, url, script, seconds, tmp):
    """perf record the edge under the same wrk load; return the top of `perf report`."""
    if not shutil.which("perf"):
        return "perf not installed"
    data = os.path.join(tmp, "perf.data")
    rec = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(edge_pid), "-o", data,
                            "--", "sleep", str(seconds)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    PROCS.append(("perf", rec))
    subprocess.run(["wrk", "-t2", "-c200", f"-d{seconds}s", "-s", script, url], capture_output=True)
    _, err = rec.communicate(timeout=seconds + 30)
    if rec.returncode != 0:
        return f"perf record failed: {err.strip()}"
    flat = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol",
                           "--percent-limit", "0.7", "-g", "none"],
                          capture_output=True, text=True).stdout  # fmt: skip
    cumulative = subprocess.run(["perf", "report", "-i", data, "--stdio", "--children", "--sort", "symbol",
                                 "--percent-limit", "3", "-g", "none"],
                                capture_output=True, text=True).stdout  # fmt: skip
    by_dso = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso",
                             "--percent-limit", "0.5", "-g", "none"],
                            capture_output=True, text=True).stdout  # fmt: skip

    def keep(text):
        rows = (re.sub(r"(\s+-)+\s*$", "", l).rstrip() for l in text.splitlines())
        return "\n".join(l for l in rows if l.strip() and not l.startswith("#"))

    return (
        "## self time by binary (dso)\n" + keep(by_dso)
        + "\n\n## self time (dso, symbol)\n" + keep(flat)
        + "\n\n## including children (symbol)\n" + keep(cumulative)
    )  # fmt: skip


NETNS_MARK = "RELAYCAST_BENCH_NETNS"


def run_in_namespace(cc):
    """Run this script again inside a new network namespace whose connections use congestion
    control CC, so every server (and wrk) is measured under the same one; returns its exit code."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        sys.exit("--cc needs root and iproute2's `ip` (it creates a network namespace)")
    ns = f"relaycast-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        set_cc = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={cc}"],
                                capture_output=True, text=True)  # fmt: skip
        if set_cc.returncode != 0:
            with open("/proc/sys/net/ipv4/tcp_allowed_congestion_control") as f:
                allowed = f.read().strip()
            sys.exit(f"cannot use congestion control {cc!r} in a network namespace ({set_cc.stderr.strip()}); "
                     f"this host allows: {allowed}")  # fmt: skip
        log(f"running in network namespace {ns} with congestion control {cc}")
        env = dict(os.environ, **{NETNS_MARK: ns})
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, *sys.argv], env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per scenario (median taken)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs) after a successful run")
    ap.add_argument("--perf", action="store_true", help="also perf-record the edge under each load")
    ap.add_argument("--cc", metavar="NAME",
                    help="run everything in a new network namespace whose TCP congestion control is NAME "
                         "(needs root); results go to edge_vs_nginx-NAME.{md,json}")  # fmt: skip
    args = ap.parse_args()
    if args.cc and NETNS_MARK not in os.environ:
        sys.exit(run_in_namespace(args.cc))
    out_name = "edge_vs_nginx" + (f"-{args.cc}" if args.cc else "")

    bin_path = binary(args.no_build)
    tmp = tempfile.mkdtemp(prefix="relaycast-edge-")
    os.chmod(tmp, 0o755)
    root = os.path.join(tmp, "www")
    os.makedirs(root)
    os.chmod(root, 0o755)
    log(f"work dir {tmp}")

    _, origin, origin_quic = start_node(
        bin_path, "origin", ["origin", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--token", TOKEN,
                             "--sample"], tmp, True)  # fmt: skip
    edge_p, edge, _ = start_node(
        bin_path, "edge", ["relay", "--parent", origin_quic, "--http", "127.0.0.1:0", "--token", TOKEN], tmp, False
    )
    servers = {"edge": (edge, [edge_p.pid])}
    for name, workers in (("nginx-1", "1"), ("nginx-auto", "auto")):
        p, addr = start_nginx(tmp, name, root, workers)
        servers[name] = (addr, p.pid)
    time.sleep(0.5)  # the workers have forked by now: resolve master + worker pids
    for name in ("nginx-1", "nginx-auto"):
        addr, pid = servers[name]
        servers[name] = (addr, process_tree(pid))
    log("servers: " + ", ".join(f"{n}=http://{a}/ (pids {p})" for n, (a, p) in servers.items()))

    stop = threading.Event()
    threading.Thread(target=keep_subscribed, args=(edge, stop), daemon=True).start()

    # Wait for a full clip loop (6 segments) in the edge's playlist.
    lib = Library(root)
    deadline = time.time() + 40
    while True:
        try:
            status, body = get(edge, PLAYLIST)
            if status == 200 and len(playlist_seqs(body)) >= 6:
                break
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit(f"the edge never listed 6 segments; see {tmp}/edge.log")
        time.sleep(0.5)
    window = edge_window(edge, lib)
    target_hash = window[-1][1]  # the newest segment at the start
    log(f"edge window: {[(s, h[:8], n) for s, h, n in window]}; single-URL segment {target_hash[:8]}")

    done_script = os.path.join(tmp, "done.lua")
    with open(done_script, "w") as f:
        f.write(WRK_DONE)
    wrk_log = open(os.path.join(tmp, "wrk.log"), "w")
    order = ["edge", "nginx-1", "nginx-auto"]
    runs = {"single": {n: [] for n in order}, "rotate": {n: [] for n in order}}
    sizes = {}
    perf_text = {}

    for scenario in ("single", "rotate"):
        for rnd in range(args.rounds):
            window = edge_window(edge, lib)  # re-pick seqs holding the same bytes as the nginx files
            if scenario == "single":
                match = [(s, h) for s, h, _ in window if h == target_hash]
                if not match:
                    raise RuntimeError("the edge's window no longer holds the single-URL segment's bytes")
                seq, h = match[-1]
                paths = {"edge": [f"/live/{CHANNEL}/src/{seq}.ts"], "nginx": [f"/{lib.by_hash[h]}"]}
                sizes["single"] = [n for s, hh, n in window if hh == h][:1]
                script = done_script
                scripts = {"edge": script, "nginx": script}
            else:
                paths = {
                    "edge": [f"/live/{CHANNEL}/src/{s}.ts" for s, _, _ in window],
                    "nginx": [f"/{lib.by_hash[h]}" for _, h, _ in window],
                }
                sizes["rotate"] = [n for _, _, n in window]
                scripts = {}
                for kind in ("edge", "nginx"):
                    scripts[kind] = os.path.join(tmp, f"rotate-{kind}-{rnd}.lua")
                    with open(scripts[kind], "w") as f:
                        f.write(WRK_ROTATE % ", ".join(f'"{p}"' for p in paths[kind]) + WRK_DONE)
            for name in order:
                kind = "edge" if name == "edge" else "nginx"
                addr, pids = servers[name]
                url = f"http://{addr}{paths[kind][0]}"
                if rnd == 0:
                    # Warm-up, not recorded: the first run after start-up was 5-20 % slower for
                    # every server (caches, CPU frequency), which skewed whichever ran first.
                    run_wrk(url, scripts[kind], 2, args.threads, args.connections, pids, wrk_log)
                r = run_wrk(url, scripts[kind], args.duration, args.threads, args.connections, pids, wrk_log)
                r["round"] = rnd + 1
                runs[scenario][name].append(r)
                log(f"{scenario} round {rnd + 1} {name:10s} {r['rps']:9.0f} req/s {r['mbps']:8.1f} MB/s "
                    f"errors {r['errors']} server {r['server_cores']} cores, wrk {r['wrk_cores']} cores")  # fmt: skip
                if r["errors"]:
                    log(f"  WARNING: {r['errors']} errors ({r['status_errors']} non-2xx) in this run")
        if args.perf:
            log(f"perf-recording the edge under the {scenario} load")
            url = f"http://{edge}{paths['edge'][0]}"
            perf_text[scenario] = perf_profile(edge_p.pid, url, scripts["edge"], 8, tmp)

    stop.set()
    cleanup()

    def med(scenario, name, key):
        return statistics.median(r[key] for r in runs[scenario][name])

    summary = {}
    for scenario in runs:
        summary[scenario] = {}
        for name in order:
            summary[scenario][name] = {
                k: round(med(scenario, name, k), 2)
                for k in ("rps", "mbps", "lat_p50_ms", "lat_p99_ms", "server_cores", "server_us_per_req", "wrk_cores",
                          "timers_per_req")
            }
            summary[scenario][name]["errors"] = sum(r["errors"] for r in runs[scenario][name])
        for ng in ("nginx-1", "nginx-auto"):
            per_round = [e["rps"] / n["rps"] for e, n in zip(runs[scenario]["edge"], runs[scenario][ng])]
            summary[scenario][f"edge/{ng}"] = {
                "rps_ratio_of_medians": round(med(scenario, "edge", "rps") / med(scenario, ng, "rps"), 3),
                "rps_ratio_per_round": [round(x, 3) for x in per_round],
                "cpu_per_req_ratio": round(
                    med(scenario, "edge", "server_us_per_req") / med(scenario, ng, "server_us_per_req"), 2
                ),
            }

    result = {
        "benchmark": "edge_vs_nginx",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "tools": tool_versions(),
        "params": {
            "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration}s",
            "congestion_control": congestion_control(),
            "network_namespace": os.environ.get(NETNS_MARK),
            "rounds": args.rounds,
            "order": order,
            "segment_bytes": sizes,
        },
        "summary": summary,
        "runs": runs,
    }

    lines = []
    lines.append(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, median of {args.rounds} alternating rounds "
        f"(edge, nginx workers=1, nginx workers=auto); MB = 10^6 bytes; wrk, edge, origin and nginx share "
        f"{result['machine']['nproc']} cores. server cores / wrk cores = CPU time of the server process(es) / of wrk "
        f"over wall time; µs CPU/req = server CPU per request; timers/req = high-resolution timer softirqs "
        f"per request, machine-wide (TCP pacing timers when the congestion control paces)."
    )
    lines.append(
        f"single = one {sizes['single'][0]} B segment; rotate = {len(sizes['rotate'])} segments "
        f"({min(sizes['rotate'])}–{max(sizes['rotate'])} B) rotated by a lua request()."
    )
    lines.append("")
    lines.append(
        "| scenario | server | req/s | MB/s | lat p50 ms | lat p99 ms | server cores | µs CPU/req | wrk cores "
        "| timers/req | errors |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario in runs:
        for name in order:
            s = summary[scenario][name]
            lines.append(
                f"| {scenario} | {name} | {s['rps']:.0f} | {s['mbps']:.1f} | {s['lat_p50_ms']:.2f} | "
                f"{s['lat_p99_ms']:.2f} | {s['server_cores']:.2f} | {s['server_us_per_req']:.1f} | {s['wrk_cores']:.2f} | "
                f"{s['timers_per_req']:.2f} | {s['errors']} |"
            )
    lines.append("")
    lines.append("| scenario | ratio | req/s (ratio of medians) | per round | CPU/req |")
    lines.append("|---|---|---|---|---|")
    for scenario in runs:
        for ng in ("nginx-1", "nginx-auto"):
            r = summary[scenario][f"edge/{ng}"]
            lines.append(
                f"| {scenario} | edge / {ng} | {r['rps_ratio_of_medians']:.2f} | "
                f"{', '.join(f'{x:.2f}' for x in r['rps_ratio_per_round'])} | {r['cpu_per_req_ratio']:.2f} |"
            )
    table = "\n".join(lines)

    os.makedirs(RESULTS, exist_ok=True)
    m = result["machine"]
    with open(os.path.join(RESULTS, f"{out_name}.md"), "w") as f:
        f.write(f"# edge_vs_nginx — {result['date']}\n\n")
        f.write(f"Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}, load average at start {m['loadavg_at_start']}; "
                f"{result['tools']['nginx']}; {result['tools']['wrk']}.\n")  # fmt: skip
        cc = f" --cc {args.cc}" if args.cc else ""
        f.write(f"Command: `python3 bench/edge_vs_nginx.py --duration {args.duration} --rounds {args.rounds}{cc}`; "
                f"TCP congestion control {congestion_control()}"
                f"{' (a network namespace of its own)' if args.cc else ' (the host default)'}.\n\n")  # fmt: skip
        f.write(table + "\n")
    with open(os.path.join(RESULTS, f"{out_name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    if perf_text:
        with open(os.path.join(RESULTS, f"{out_name.replace('edge_vs_nginx', 'edge_perf')}.txt"), "w") as f:
            for scenario, text in perf_text.items():
                f.write(f"# {scenario}: perf record -F 499 -g -p EDGE for 8 s under wrk -t2 -c200\n\n{text}\n\n")
    print(table)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nwrote {RESULTS}/{out_name}.md and {out_name}.json" + (" and the perf profile" if perf_text else ""))


if __name__ == "__main__":
    common.run(main, "edge_vs_nginx")

#!/usr/bin/env python3
"""HTTPS edges and the cost of signed playback (issue 17).

1. Edge throughput over HTTPS vs plain HTTP vs nginx with the same certificate. An origin loops
   the built-in sample (channel `demo`, 2 s segments); two relays carry it, one serving plain
   HTTP, one HTTPS (--tls-cert/--tls-key). nginx serves the same segment bytes over TLS with the
   same certificate and key (an ECDSA P-256 certificate from `relaycast cluster-ca issue`), with
   one worker and with `auto` workers. wrk (HTTP/1.1 over TLS, as wrk speaks) requests one
   segment URL for --duration seconds per run; every round runs all servers, alternating; the
   median of --rounds is reported.
2. Token check cost. A second origin declares its `demo` signed (--playback signed); a relay
   serves it to wrk with a valid token in the URL. Its server CPU per request minus the plain
   public edge's is the cost of the signed path (token parse, HMAC-SHA256, door), and that over
   the public edge's CPU per request is its share of a segment request.

Usage: python3 bench/https.py [--duration 8] [--rounds 3] [--no-build]
Results: bench/results/https.{md,json}.
"""

import argparse
import json
import os
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

import common
import edge_vs_nginx as ev
from common import RESULTS, TOKEN, log

CHANNEL = "demo"


def fetch(url, timeout=10):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
        return r.read()


def keep_subscribed(urls, stop):
    while not stop.wait(1.0):
        for u in urls:
            try:
                fetch(u, timeout=5)
            except OSError:
                pass


def newest_segment(playlist_url):
    """The path (with query, if the playlist gave one) of the newest segment listed."""
    lines = [l for l in fetch(playlist_url).decode().splitlines() if l and not l.startswith("#")]
    return lines[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    bin_path = common.binary(args.no_build)
    tmp = tempfile.mkdtemp(prefix="relaycast-https-")
    logdir = os.path.join(tmp, "logs")
    os.makedirs(logdir)
    ca = os.path.join(tmp, "ca")
    for action in (["init"], ["issue", "bench"]):
        subprocess.run([bin_path, "cluster-ca", "--dir", ca, *action], check=True, capture_output=True)
    cert, key = os.path.join(ca, "bench.pem"), os.path.join(ca, "bench.key")
    pkey = os.path.join(tmp, "playback.key")

    node = ["--http", "127.0.0.1:0", "--token", TOKEN]
    _, _, quic_a = common.start_node(bin_path, "origin-public", ["origin", *node, "--quic", "127.0.0.1:0", "--sample"], logdir)
    _, _, quic_b = common.start_node(bin_path, "origin-signed", ["origin", *node, "--quic", "127.0.0.1:0", "--sample",
                                     "--playback", "signed", "--playback-key", pkey], logdir)  # fmt: skip
    plain_p, plain, _ = common.start_node(bin_path, "edge-http", ["relay", *node, "--parent", quic_a], logdir, False)
    tls_p, tls, _ = common.start_node(bin_path, "edge-https", ["relay", *node, "--parent", quic_a,
                                      "--tls-cert", cert, "--tls-key", key], logdir, False)  # fmt: skip
    signed_p, signed, _ = common.start_node(bin_path, "edge-signed", ["relay", *node, "--parent", quic_b,
                                            "--playback-key", pkey], logdir, False)  # fmt: skip
    link = subprocess.run([bin_path, "sign", "--key", pkey, "--channel", CHANNEL, "--ttl", "1h", "--base",
                           f"http://{signed}"], check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    playlists = {
        "plain": f"http://{plain}/live/{CHANNEL}/index.m3u8",
        "tls": f"https://{tls}/live/{CHANNEL}/index.m3u8",
        "signed": link,
    }
    deadline = time.time() + 60
    while True:
        try:
            if all(b"#EXTINF" in fetch(u) for u in playlists.values()):
                break
        except OSError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"edges did not serve {CHANNEL} in 60 s; see {logdir}")
        time.sleep(0.5)
    stop = threading.Event()
    threading.Thread(target=keep_subscribed, args=(list(playlists.values()), stop), daemon=True).start()

    root = os.path.join(tmp, "www")
    os.makedirs(root)
    os.chmod(tmp, 0o755)
    os.chmod(root, 0o755)
    nginx = {w: ev.start_nginx(tmp, f"nginx-{w}", root, w, tls=(cert, key)) for w in ("1", "auto")}
    nginx_pids = {w: ev.process_tree(p.pid) for w, (p, _) in nginx.items()}
    script = os.path.join(tmp, "done.lua")
    with open(script, "w") as f:
        f.write(ev.WRK_DONE)
    wrk_log = open(os.path.join(tmp, "wrk.log"), "w")
    runs = {k: [] for k in ("edge_http", "edge_https", "nginx1_https", "nginxauto_https", "edge_signed_http")}
    for rnd in range(args.rounds):
        seg = newest_segment(playlists["plain"])  # e.g. src/123.ts
        data = fetch(f"http://{plain}/live/{CHANNEL}/{seg}")
        name = f"r{rnd}.ts"
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(root, name), 0o644)
        signed_seg = newest_segment(link)
        targets = [
            ("edge_http", f"http://{plain}/live/{CHANNEL}/{seg}", [plain_p.pid]),
            ("edge_https", f"https://{tls}/live/{CHANNEL}/{seg}", [tls_p.pid]),
            ("nginx1_https", f"https://{nginx['1'][1]}/{name}", nginx_pids["1"]),
            ("nginxauto_https", f"https://{nginx['auto'][1]}/{name}", nginx_pids["auto"]),
            ("edge_signed_http", f"http://{signed}/live/{CHANNEL}/{signed_seg}", [signed_p.pid]),
        ]
        for label, url, pids in targets:
            r = ev.run_wrk(url, script, args.duration, args.threads, args.connections, pids, wrk_log)
            if r["errors"] or r["requests"] == 0:
                raise SystemExit(f"{label}: {r['errors']} errors on {url}; see {wrk_log.name}")
            r["segment_bytes"] = len(data)
            runs[label].append(r)
            log(f"round {rnd + 1} {label}: {r['rps']:.0f} req/s, {r['mbps']:.0f} MB/s, {r['server_us_per_req']} us CPU/req")
    stop.set()

    def med(label, field):
        return statistics.median(r[field] for r in runs[label])

    summary = {k: {f: med(k, f) for f in ("rps", "mbps", "server_us_per_req", "server_cores", "lat_p50_ms")} for k in runs}
    best_nginx = max(summary["nginx1_https"]["rps"], summary["nginxauto_https"]["rps"])
    ratios = {
        "https_vs_http": summary["edge_https"]["rps"] / summary["edge_http"]["rps"],
        "https_vs_nginx1_https": summary["edge_https"]["rps"] / summary["nginx1_https"]["rps"],
        "https_vs_nginxauto_https": summary["edge_https"]["rps"] / summary["nginxauto_https"]["rps"],
        "https_vs_best_nginx_https": summary["edge_https"]["rps"] / best_nginx,
    }
    token_us = summary["edge_signed_http"]["server_us_per_req"] - summary["edge_http"]["server_us_per_req"]
    token = {"us_per_request": round(token_us, 1), "share_of_segment_request": token_us / summary["edge_http"]["server_us_per_req"]}
    out = {"machine": common.machine(), "tools": ev.tool_versions(), "args": vars(args), "segment_bytes": len(data),
           "summary": summary, "ratios": ratios, "token_check": token, "runs": runs}  # fmt: skip
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "https.json"), "w") as f:
        json.dump(out, f, indent=1)
    rows = [f"| {k} | {v['rps']:.0f} | {v['mbps']:.0f} | {v['server_us_per_req']} | {v['server_cores']} | {v['lat_p50_ms']:.1f} |"
            for k, v in summary.items()]  # fmt: skip
    md = "\n".join([
        f"# HTTPS edge and signed playback ({time.strftime('%Y-%m-%d %H:%M')}, median of {args.rounds})",
        "", f"Machine: {out['machine']}. wrk -t{args.threads} -c{args.connections} -d{args.duration}s, one segment of {len(data)} bytes.",
        "", "| server | req/s | MB/s | server CPU µs/req | server cores | p50 ms |", "|---|---|---|---|---|---|", *rows, "",
        f"- HTTPS edge / plain HTTP edge: **{ratios['https_vs_http']:.2f}×**",
        f"- HTTPS edge / nginx HTTPS, 1 worker: **{ratios['https_vs_nginx1_https']:.2f}×**; auto workers: **{ratios['https_vs_nginxauto_https']:.2f}×** (goal ≥ 0.9× the better: {ratios['https_vs_best_nginx_https']:.2f}×)",
        f"- Signed playback: **{token_us:.1f} µs** more server CPU per request than a public channel, {100 * token['share_of_segment_request']:.1f} % of a segment request",
    ])  # fmt: skip
    with open(os.path.join(RESULTS, "https.md"), "w") as f:
        f.write(md + "\n")
    print(md)


if __name__ == "__main__":
    common.run(main, "https")

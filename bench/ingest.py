#!/usr/bin/env python3
"""Broadcasters in: encoder-to-edge delay per ingest protocol, and origin CPU per RTMP publisher
against nginx-rtmp (issue 16).

1. Encoder-to-edge delay. One origin (--rtmp, --srt, --push) and one relay edge on 127.0.0.1.
   One ffmpeg encodes a test pattern once and sends the same packets (tee muxer) over RTMP
   (flv), SRT (mpegts, --srt-latency-ms as given) and an HTTP PUT of an MPEG-TS stream, and
   writes a framemd5 line per packet to the script: the moment each frame left the encoder.
   The script reads every part from the edge with blocking requests and takes, per part, the
   moment it had it minus the moment the encoder handed out the part's last frame (found by its
   decode time: tfdt + the durations before it in trun). That is protocol, origin packaging
   and one relay hop together; the encoder's own delay is the same for all three and left out.
2. CPU per publisher. N publishers (default 20) each send a pre-encoded 2 Mbit/s FLV (no
   encoding during the measurement: `ffmpeg -re -stream_loop -1 -c copy`) over RTMP, first to
   nginx-rtmp (Debian libnginx-mod-rtmp, `live on` plus `hls on` with 1 s fragments, so it
   segments as we do), then to a Relaycast origin (--rtmp, packaging CMAF parts). Server CPU
   seconds (utime+stime of all its processes) over the same window.

Usage: python3 bench/ingest.py [--seconds 30] [--publishers 20] [--srt-latency-ms 120] [--no-build]
Results: bench/results/ingest.{md,json}.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
import threading
import time

import common
from common import log

KEY = "bench-key"
SIZE = "640x360"


def tee_encoder(outputs, logdir):
    """One ffmpeg encoding a test pattern once and sending the same packets to every ingest (tee
    muxer), plus a framemd5 line per packet on its stdout. Returns {decode time in ms: wall-clock
    ms when the encoder handed that frame out} (filled while it runs)."""
    slaves = "|".join([*outputs, "[f=framemd5]pipe:1"])
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-re", "-f", "lavfi",
           "-i", f"testsrc2=size={SIZE}:rate=25", "-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast",
           "-tune", "zerolatency", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-b:v", "1000k",
           # Parameter sets as global headers, as FLV needs them (mpegts repeats them in-band).
           "-flags", "+global_header", "-flush_packets", "1", "-f", "tee", slaves]
    err = open(os.path.join(logdir, "encoder.log"), "w")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True)
    common.PROCS.append(("encoder", p))
    emitted = {}

    def read():
        tb_ms = 40.0
        for line in p.stdout:
            now = time.time() * 1000
            m = re.match(r"#tb 0: (\d+)/(\d+)", line)
            if m:
                tb_ms = 1000.0 * int(m.group(1)) / int(m.group(2))
            elif not line.startswith("#"):
                emitted[round(int(line.split(",")[1]) * tb_ms)] = now

    threading.Thread(target=read, daemon=True).start()
    return emitted


def boxes(data, start=0, end=None):
    """(type, body_start, body_end) of the ISO-BMFF boxes in data[start:end]."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        if size < 8:
            return
        yield kind.decode("latin-1"), start + 8, start + size
        start += size


def last_frame_time(part):
    """Decode time (90 kHz) of the last video frame in a part: the first track fragment's tfdt
    plus the durations of the samples before its last (from trun)."""
    for kind, s, e in boxes(part):
        if kind != "moof":
            continue
        for k2, s2, e2 in boxes(part, s, e):
            if k2 != "traf":
                continue
            tfdt, durations = None, []
            for k3, s3, _ in boxes(part, s2, e2):
                if k3 == "tfdt":
                    v1 = part[s3] == 1
                    tfdt = struct.unpack(">Q" if v1 else ">I", part[s3 + 4:s3 + (12 if v1 else 8)])[0]
                elif k3 == "trun":
                    flags = int.from_bytes(part[s3 + 1:s3 + 4], "big")
                    count = struct.unpack(">I", part[s3 + 4:s3 + 8])[0]
                    at = s3 + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
                    fields = sum(4 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
                    for i in range(count):
                        if flags & 0x100:
                            durations.append(struct.unpack(">I", part[at + i * fields:at + i * fields + 4])[0])
            if tfdt is not None:
                return tfdt + sum(durations[:-1])
    return None


def follow(edge, channel, emitted, seconds, out):
    """Fetch each part of `channel` from the edge as it is made; append, per part, the moment the
    edge had it minus the moment the encoder handed out the part's last frame (ms)."""
    client = common.Client(edge, timeout=10)
    deadline = time.time() + seconds
    nxt = None
    while time.time() < deadline:
        if nxt is None:
            status, body, _ = client.get(f"/live/{channel}/src/index.m3u8")
            hint = [l for l in body.decode().splitlines() if l.startswith("#EXT-X-PRELOAD-HINT")]
            if status != 200 or not hint:
                time.sleep(0.2)
                continue
            uri = hint[0].split('URI="')[1].split('"')[0]
            seq, idx, _ = uri.split(".")
            nxt = (int(seq), int(idx))
        seq, idx = nxt
        status, part, headers = client.get(f"/live/{channel}/src/{seq}.{idx}.m4s")
        had = time.time() * 1000
        if status == 404 and idx > 0:
            nxt = (seq + 1, 0)  # past the segment's last part
            continue
        if status != 200:
            nxt = None
            continue
        last = last_frame_time(part)
        nxt = (seq + 1, 0) if headers.get("relaycast-last-part") else (seq, idx + 1)
        # Every ingest keeps the encoder's decode times (from 0; TS ones may sit one 33-bit
        # wrap up), 40 ms frames.
        ms = (last / 90.0) % (2 ** 33 / 90.0) if last is not None else None
        sent = emitted.get(round(ms / 40) * 40) if ms is not None else None
        if sent is not None:
            out.append(had - sent)


def delay_run(bin_path, seconds, srt_latency_ms, logdir):
    rtmp, srt = f"127.0.0.1:{common.free_port()}", f"127.0.0.1:{common.free_port()}"
    pushes = [a for c in ("rtmp", "srt", "http") for a in ("--push", f"{c}={KEY}")]
    _, origin, quic = common.start_node(bin_path, "origin", [
        "origin", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--token", common.TOKEN, *pushes,
        "--rtmp", rtmp, "--srt", srt, "--srt-latency-ms", str(srt_latency_ms)], logdir)
    _, edge, _ = common.start_node(bin_path, "edge", [
        "relay", "--parent", quic, "--http", "127.0.0.1:0", "--token", common.TOKEN], logdir, want_quic=False)
    emitted = tee_encoder([
        f"[f=flv]rtmp://{rtmp}/live/rtmp?key={KEY}",
        f"[f=mpegts:max_delay=0]srt://{srt}?streamid=publish%3Asrt%3A{KEY}&latency={srt_latency_ms * 1000}",
        f"[f=mpegts:max_delay=0:method=PUT]http://{origin}/ingest/http/{KEY}"], logdir)
    time.sleep(4)
    found = {c: [] for c in ("rtmp", "srt", "http")}
    threads = [threading.Thread(target=follow, args=(edge, c, emitted, seconds, found[c])) for c in found]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    common.cleanup()
    rows = {}
    for c, values in found.items():
        values = sorted(values)
        if not values:
            rows[c] = None
            continue
        rows[c] = {"parts": len(values), "p50_ms": round(values[len(values) // 2]),
                   "p90_ms": round(values[int(len(values) * 0.9)]), "max_ms": round(values[-1])}
    return rows


def cpu_seconds(pids):
    """utime+stime of these processes and their children, seconds."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except OSError:
            pass
    return total / tick


def process_tree(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(int(p) for p in out)]


def publishers(n, url_of, clip, logdir, tag):
    procs = []
    for i in range(n):
        cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
               "-i", clip, "-c", "copy", "-f", "flv", url_of(i)]
        err = open(os.path.join(logdir, f"pub-{tag}-{i}.log"), "w")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        common.PROCS.append((f"pub-{tag}-{i}", p))
        procs.append(p)
    return procs


def measure(server_pids, seconds):
    time.sleep(5)  # every publisher connected and past its first keyframe
    before = cpu_seconds(server_pids)
    time.sleep(seconds)
    return cpu_seconds(server_pids) - before


def nginx_run(n, clip, seconds, logdir):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx) or not os.path.exists("/usr/lib/nginx/modules/ngx_rtmp_module.so"):
        log("nginx or libnginx-mod-rtmp missing (apt-get install -y nginx libnginx-mod-rtmp); skipping")
        return None
    root = tempfile.mkdtemp(prefix="nginx-rtmp-")
    # nginx's workers run as an unprivileged user when started as root: let them write the HLS.
    os.chmod(root, 0o755)
    os.mkdir(os.path.join(root, "hls"), 0o777)
    os.chmod(os.path.join(root, "hls"), 0o777)
    port, http_port = common.free_port(), common.free_port()
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
rtmp {{
  server {{
    listen 127.0.0.1:{port};
    application live {{
      live on;
      hls on;
      hls_path {root}/hls;
      hls_fragment 1s;
      hls_playlist_length 6s;
    }}
  }}
}}
http {{
  access_log off;
  server {{ listen 127.0.0.1:{http_port}; root {root}; }}
}}
""")
    p = subprocess.Popen([nginx, "-c", conf, "-p", root], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(logdir, "nginx.log"), "w"))
    common.PROCS.append(("nginx", p))
    time.sleep(1)
    pubs = publishers(n, lambda i: f"rtmp://127.0.0.1:{port}/live/ch{i}", clip, logdir, "nginx")
    cpu = measure(process_tree(p.pid), seconds)
    alive = sum(1 for q in pubs if q.poll() is None)
    for q in pubs:
        q.kill()
    p.terminate()
    p.wait()
    segments = len([x for x in os.listdir(os.path.join(root, "hls")) if x.endswith(".ts")]) if os.path.isdir(
        os.path.join(root, "hls")) else 0
    shutil.rmtree(root, ignore_errors=True)
    return {"cpu_s": round(cpu, 2), "publishers_alive": alive, "hls_segments_on_disk": segments}


def relaycast_run(bin_path, n, clip, seconds, logdir):
    port = common.free_port()
    pushes = [a for i in range(n) for a in ("--push", f"ch{i}={KEY}")]
    p, http_addr, _ = common.start_node(bin_path, "origin-cpu", [
        "origin", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--token", common.TOKEN, *pushes,
        "--rtmp", f"127.0.0.1:{port}"], logdir)
    pubs = publishers(n, lambda i: f"rtmp://127.0.0.1:{port}/live/ch{i}?key={KEY}", clip, logdir, "relaycast")
    cpu = measure([p.pid], seconds)
    alive = sum(1 for q in pubs if q.poll() is None)
    status, body = common.get(http_addr, "/api/v1/channels")
    live = sum(1 for c in json.loads(body)["channels"] if c["live"]) if status == 200 else 0
    for q in pubs:
        q.kill()
    p.terminate()
    return {"cpu_s": round(cpu, 2), "publishers_alive": alive, "channels_live": live}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--publishers", type=int, default=20)
    ap.add_argument("--srt-latency-ms", type=int, default=120)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    bin_path = common.binary(args.no_build)
    logdir = tempfile.mkdtemp(prefix="bench-ingest-")
    log(f"logs in {logdir}")

    log(f"encoder-to-edge delay, {args.seconds} s, RTMP / SRT ({args.srt_latency_ms} ms) / HTTP PUT at once")
    delays = delay_run(bin_path, args.seconds, args.srt_latency_ms, logdir)

    clip = os.path.join(logdir, "2mbit.flv")
    log("encoding a 20 s 2 Mbit/s clip for the publishers")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=30:duration=20", "-f", "lavfi", "-i", "sine=duration=20",
                    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1900k", "-maxrate", "2000k", "-bufsize",
                    "2000k", "-g", "60", "-c:a", "aac", "-b:a", "96k", clip], check=True)
    log(f"{args.publishers} RTMP publishers into nginx-rtmp for {args.seconds} s")
    nginx = nginx_run(args.publishers, clip, args.seconds, logdir)
    log(f"{args.publishers} RTMP publishers into a Relaycast origin for {args.seconds} s")
    ours = relaycast_run(bin_path, args.publishers, clip, args.seconds, logdir)
    if nginx and not nginx["hls_segments_on_disk"]:
        log("nginx-rtmp wrote no HLS segments (see its error.log): its CPU figure is not comparable")
        nginx = None
    ratio = round(ours["cpu_s"] / nginx["cpu_s"], 2) if nginx and nginx["cpu_s"] > 0 else None

    result = {"machine": common.machine(), "seconds": args.seconds, "srt_latency_ms": args.srt_latency_ms,
              "encoder_to_edge": delays, "publishers": args.publishers, "nginx_rtmp": nginx, "relaycast": ours,
              "cpu_ratio_relaycast_to_nginx": ratio}
    os.makedirs(common.RESULTS, exist_ok=True)
    with open(os.path.join(common.RESULTS, "ingest.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = ["# Ingest benchmark", "", f"Machine: {result['machine']}", "",
             "## Encoder-to-edge delay (one encoder, tee'd to all three; one relay hop, loopback)", "",
             "| protocol | parts | p50 ms | p90 ms | max ms |", "|---|---|---|---|---|"]
    for c, r in delays.items():
        lines.append(f"| {c} | " + (" | ".join(str(r[k]) for k in ("parts", "p50_ms", "p90_ms", "max_ms")) if r else
                                     "— | — | — | —") + " |")
    lines += ["", f"## Server CPU, {args.publishers} RTMP publishers at 2 Mbit/s, {args.seconds} s", "",
              "| server | CPU s | per publisher | publishers alive |", "|---|---|---|---|"]
    for label, r in (("nginx-rtmp (hls on)", nginx), ("relaycast origin (CMAF parts)", ours)):
        if r:
            lines.append(f"| {label} | {r['cpu_s']} | {r['cpu_s'] / args.publishers:.3f} | {r['publishers_alive']} |")
    lines += ["", f"Relaycast ÷ nginx-rtmp CPU: **{ratio}**"]
    with open(os.path.join(common.RESULTS, "ingest.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    common.run(main)

"""Plumbing shared by the benchmark scripts in bench/ (python3 stdlib only).

- REPO / RESULTS paths (RESULTS = bench/results, or $RELAYCAST_BENCH_RESULTS) and the cluster TOKEN the benchmarks give their nodes;
- a registry of every process a script starts (PROCS), stopped by cleanup() on exit, Ctrl-C,
  SIGTERM or SIGHUP included: run(main, name) installs the handlers and calls cleanup();
- log(msg): a timestamped line on stderr, prefixed with the script's name;
- machine(): cores, CPU model, kernel and load average, for the result files;
- binary(no_build): the relaycast binary ($RELAYCAST_BIN, else target/release/relaycast,
  built with cargo first unless no_build);
- start_node(): start a relaycast node on ephemeral ports and read the addresses it prints;
- tiny HTTP helpers (get, request, Client for one keep-alive connection) and free_port();
- playlist_seqs(): the sequence numbers an HLS media playlist lists.
"""

import http.client
import os
import platform
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# RELAYCAST_BENCH_RESULTS redirects the result files (e.g. for a quick trial run).
RESULTS = os.environ.get("RELAYCAST_BENCH_RESULTS") or os.path.join(REPO, "bench", "results")
TOKEN = "bench-token"

PROCS = []  # (name, Popen) of everything this script started
NAME = os.path.splitext(os.path.basename(sys.argv[0]))[0] or "bench"


def log(msg):
    print(f"[{NAME} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cleanup():
    """Stop every process this script started (SIGTERM, then SIGKILL after 5 s), newest first."""
    for name, p in reversed(PROCS):
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 5
    for name, p in reversed(PROCS):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    PROCS.clear()


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def run(main, name=None):
    """Run main() with the signal handlers installed and cleanup() on the way out."""
    global NAME
    if name:
        NAME = name
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        main()
    finally:
        cleanup()


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = [round(x, 2) for x in os.getloadavg()]
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "loadavg_at_start": load}


def binary(no_build):
    env_bin = os.environ.get("RELAYCAST_BIN")
    if env_bin:
        return env_bin
    if not no_build:
        log("cargo build --release -p relaycast")
        subprocess.run(["cargo", "build", "--release", "-p", "relaycast"], cwd=REPO, check=True)
    path = os.path.join(REPO, "target", "release", "relaycast")
    if not os.path.exists(path):
        sys.exit(f"{path} not found (build it or set RELAYCAST_BIN)")
    return path


def start_node(bin_path, name, args, logdir, want_quic=True, named=True):
    """Start a node on ephemeral ports; return (Popen, http_addr, quic_addr) parsed from its stdout.

    The node prints `{name} listening: http://ADDR/` and, with --quic, `accepting relays on udp
    ADDR`; its stderr goes to LOGDIR/NAME.log. quic_addr is None when want_quic is false. Nodes
    get `--name NAME` (not a tracker: named=False).
    """
    err = open(os.path.join(logdir, f"{name}.log"), "w")
    p = subprocess.Popen([bin_path, *args, *(["--name", name] if named else [])], stdout=subprocess.PIPE, stderr=err, text=True)
    PROCS.append((name, p))
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in p.stdout], daemon=True).start()
    http_addr = quic_addr = None
    deadline = time.time() + 15
    while time.time() < deadline and not (http_addr and (quic_addr or not want_quic)):
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if p.poll() is not None:
                break
            continue
        m = re.search(r"listening: https?://([^/]+)/", line)
        if m:
            http_addr = m.group(1)
        m = re.search(r"accepting relays on udp (\S+)", line)
        if m:
            quic_addr = m.group(1)
    if not http_addr or (want_quic and not quic_addr):
        sys.exit(f"{name} did not start; see {err.name}")
    return p, http_addr, quic_addr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(addr, method, path, body=None, headers=None, timeout=12.0):
    """One HTTP request on a fresh connection to HOST:PORT; returns (status, body bytes)."""
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def get(addr, path, timeout=12.0):
    """GET on a fresh connection to HOST:PORT; returns (status, body bytes)."""
    return request(addr, "GET", path, timeout=timeout)


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects on error."""

    def __init__(self, addr, timeout=12.0):
        host, port = addr.rsplit(":", 1)
        self.host, self.port, self.timeout = host, int(port), timeout
        self.conn = None

    def get(self, path):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                return r.status, r.read(), r.headers
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def playlist_seqs(body):
    """The sequence numbers a media playlist (bytes) lists, oldest first."""
    text = body.decode("utf-8", "replace")
    m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
    if not m:
        return []
    first = int(m.group(1))
    n = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return list(range(first, first + n))

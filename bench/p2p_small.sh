#!/usr/bin/env bash
# Five `relaycast watch --p2p` viewers behind one edge for 30 s, on 127.0.0.1: an origin that
# signs the built-in sample, a tracker with its key, one relay whose viewer egress is capped at
# EGRESS_KBPS (0 = none). Prints the offload (bytes from peers / all bytes, from each viewer's
# `p2p` log line) and the stalls (from the `end` lines).
#
# Used to check that one change to the viewer keeps its figures: run it with the binary before
# and the binary after, in the same hour, e.g.
#   git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/oldtgt cargo build)
#   for cap in 0 1000 1500; do bench/p2p_small.sh /tmp/oldtgt/debug/relaycast $cap; \
#                              bench/p2p_small.sh target/debug/relaycast $cap; done
#
# Usage: bench/p2p_small.sh BIN [EGRESS_KBPS]
set -euo pipefail
BIN=$(realpath "$1"); CAP=${2:-0}
DIR=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$DIR"' EXIT
PORT=$((20000 + RANDOM % 10000))
TRACKER=127.0.0.1:$PORT ORIGIN_QUIC=127.0.0.1:$((PORT + 1)) ORIGIN_HTTP=127.0.0.1:$((PORT + 2)) EDGE=127.0.0.1:$((PORT + 3))
"$BIN" origin --sample --signing-key "$DIR/origin.key" --tracker "http://$TRACKER" --region us \
  --http "$ORIGIN_HTTP" --quic "$ORIGIN_QUIC" --token bench >/dev/null 2>"$DIR/origin.log" &
for _ in $(seq 50); do [ -f "$DIR/origin.key.pub" ] && break; sleep 0.1; done
"$BIN" tracker --http "$TRACKER" --origin-key "$DIR/origin.key.pub" --viewer-refresh-ms 1000 >/dev/null 2>"$DIR/tracker.log" &
"$BIN" relay --parent "$ORIGIN_QUIC" --http "$EDGE" --token bench --egress-kbps "$CAP" >/dev/null 2>"$DIR/edge.log" &
for _ in $(seq 60); do curl -s "http://$EDGE/live/demo/index.m3u8" | grep -q '\.ts' && break; sleep 0.5; done
"$BIN" watch --quiet --duration 30 --startup 4 --p2p --tracker "http://$TRACKER" --region eu --viewers 5 \
  --log "$DIR/v.jsonl" "http://$EDGE/live/demo/index.m3u8" 2>"$DIR/watch.log"
python3 - "$DIR" "$CAP" "$1" <<'PY'
import glob, json, sys
edge = peer = stalls = 0
for f in glob.glob(sys.argv[1] + "/v.jsonl.*"):
    for line in open(f):
        r = json.loads(line)
        if r["type"] == "p2p":
            edge += r["edge_bytes"]; peer += r["peer_bytes"]
        if r["type"] == "end":
            stalls += r["stalls"]
print(f"{sys.argv[3]}  cap {sys.argv[2]} kbit/s  offload {peer * 100 / max(edge + peer, 1):.1f} %  stalls {stalls}")
PY

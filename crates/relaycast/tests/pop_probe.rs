//! POP probing (F24) through the lab's link emulator: a viewer given two candidate edges — the
//! far one listed first — probes both (`relaycast watch --pop`: HTTP round trip plus each edge's
//! reported latency to the origin) and watches the near one (at most one switch to it, once its
//! advantage has lasted), without a gap in segment sequence numbers. The switching rule
//! itself (margin, sustain) is unit-tested in `crates/core/tests/steering.rs`.

mod support;

use support::{TempDir, require_ffmpeg, run_lab};

#[test]
fn watch_pop_picks_the_near_edge() {
    require_ffmpeg();
    let results = TempDir::new("pop");
    let dir = run_lab("pop.toml", &[], results.path());
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let rtt = |path: &str| summary["paths_rtt"][path]["measured_ms"].as_f64().unwrap();
    let (near, far) = (rtt("viewer->near"), rtt("viewer->far"));
    assert!(far > near + 50.0, "the lab made one edge far: near {near} ms, far {far} ms");

    // The viewer's own account: its probes, its first choice and any switch, with scores
    // (HTTP round trip + the edge's latency to the origin, ms).
    let stderr = std::fs::read_to_string(dir.join("viewer.log")).unwrap();
    let scores: Vec<f64> = stderr
        .lines()
        .filter(|l| l.contains("POP chosen") || l.contains("switching POP"))
        .filter_map(|l| l.split("score_ms=Some(").nth(1)?.split(')').next()?.parse().ok())
        .collect();
    let chosen = *scores.last().unwrap_or_else(|| panic!("the viewer logged no POP choice:\n{stderr}"));
    assert!(chosen < (near + far) / 2.0, "ends on the near edge: scores {scores:?} ms (near {near}, far {far})");
    assert_eq!(scores.len(), 1, "chosen from the first round of probes, never left: {scores:?}");

    let log = std::fs::read_to_string(dir.join("viewer.jsonl")).unwrap();
    let mut seqs = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "segment" {
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    assert!(seqs.len() >= 6, "only {} segments", seqs.len());
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "no gap: {seqs:?}");
    }
}

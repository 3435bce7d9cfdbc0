//! `relaycast watch` against two real HLS edges (separate relay processes under one origin),
//! one of them throttled below the stream's bitrate for part of the run through its egress
//! cap: the dual-source viewer stalls less than a single-source viewer facing the same
//! throttle, receives every segment exactly once and in order, and its output file is exactly
//! the concatenation of the origin's segments it logged.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Node, Proc, TempDir, http_get, request, require_ffmpeg, wait_until};

const TOKEN: &str = "dual-token";

fn set_egress(node: &Node, kbps: u64) {
    let body = format!("{{\"kbps\": {kbps}}}");
    let resp = support::request_with_token("PUT", &node.url("/api/v1/egress"), TOKEN, body.as_bytes()).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
}

fn watch(label: &str, sources: &[String], log: &Path, out: &Path, seconds: u32) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.args(["watch", "--quiet", "--duration", &seconds.to_string(), "--label", label, "--startup", "4"])
        .arg("--log")
        .arg(log)
        .arg("--out")
        .arg(out)
        .args(sources)
        .env("NO_COLOR", "1");
    Proc::spawn(label, cmd)
}

struct LoggedSegment {
    seq: u64,
    source: u64,
}

fn read_log(path: &Path) -> (Vec<LoggedSegment>, u64, u64) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut segments = Vec::new();
    let (mut stall_ms, mut stalls) = (0, 0);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad log line {line:?}: {e}"));
        match v["type"].as_str() {
            Some("segment") => {
                segments.push(LoggedSegment { seq: v["seq"].as_u64().unwrap(), source: v["source"].as_u64().unwrap() })
            }
            Some("end") => {
                stall_ms = v["stall_ms"].as_u64().unwrap();
                stalls = v["stalls"].as_u64().unwrap();
            }
            _ => {}
        }
    }
    (segments, stalls, stall_ms)
}

#[test]
fn dual_source_viewer_rides_out_a_throttled_edge() {
    require_ffmpeg();
    let dir = TempDir::new("dual");
    let origin = Node::origin("origin", TOKEN, &["--sample"]);
    let quic = origin.quic.unwrap();
    // Two throttle-able edges (one per viewer, so they do not share a cap) and a healthy one.
    let slow_single = Node::relay("slow-single", quic, TOKEN, false);
    let slow_dual = Node::relay("slow-dual", quic, TOKEN, false);
    let healthy = Node::relay("healthy", quic, TOKEN, false);
    for edge in [&slow_single, &slow_dual, &healthy] {
        wait_until(Duration::from_secs(30), "edge serves the demo channel", || {
            let r = http_get(&edge.url("/live/demo/index.m3u8")).ok()?;
            (r.status == 200 && r.text().contains(".ts")).then_some(())
        });
    }

    let playlist = "/live/demo/index.m3u8";
    let single_log = dir.join("single.jsonl");
    let dual_log = dir.join("dual.jsonl");
    let single_out = dir.join("single.ts");
    let dual_out = dir.join("dual.ts");
    let mut single = watch("single", &[slow_single.url(playlist)], &single_log, &single_out, 40);
    let mut dual = watch("dual", &[slow_dual.url(playlist), healthy.url(playlist)], &dual_log, &dual_out, 40);

    // The sample stream is ~0.4 Mbit/s. After 10 s, squeeze both slow edges to 0.12 Mbit/s
    // for 14 s, then lift the cap.
    std::thread::sleep(Duration::from_secs(10));
    set_egress(&slow_single, 120);
    set_egress(&slow_dual, 120);
    std::thread::sleep(Duration::from_secs(14));
    set_egress(&slow_single, 0);
    set_egress(&slow_dual, 0);

    for p in [&mut single, &mut dual] {
        let status = wait_until(Duration::from_secs(60), "viewer exits", || p.child().try_wait().unwrap());
        assert!(status.success(), "viewer failed:\n{}", p.log());
    }

    let (single_segments, single_stalls, single_stall_ms) = read_log(&single_log);
    let (dual_segments, dual_stalls, dual_stall_ms) = read_log(&dual_log);
    eprintln!("single: {single_stalls} stalls, {single_stall_ms} ms; dual: {dual_stalls} stalls, {dual_stall_ms} ms");
    assert!(single_stalls >= 1, "the throttle must stall a single-source viewer:\n{}", single.log());
    assert!(
        dual_stall_ms < single_stall_ms && dual_stalls <= single_stalls,
        "dual {dual_stalls} stalls / {dual_stall_ms} ms vs single {single_stalls} / {single_stall_ms} ms"
    );
    assert!(
        dual_segments.iter().any(|s| s.source == 0) && dual_segments.iter().any(|s| s.source == 1),
        "both servers used"
    );

    // Exactly once, in order, and the output is the origin's bytes for those segments.
    for (name, segments, out) in [("single", &single_segments, &single_out), ("dual", &dual_segments, &dual_out)] {
        assert!(segments.len() >= 10, "{name}: only {} segments", segments.len());
        for w in segments.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1, "{name}: segments in order, once, without gaps");
        }
        let mut expected = Vec::new();
        for s in segments.iter() {
            let r = origin.get(&format!("/live/demo/src/{}.ts", s.seq));
            assert_eq!(r.status, 200, "{name}: origin still has segment {}", s.seq);
            expected.extend_from_slice(&r.body);
        }
        let got = std::fs::read(out).unwrap();
        assert!(
            got == expected,
            "{name}: output ({} bytes) is not the origin's segments ({} bytes)",
            got.len(),
            expected.len()
        );
    }
    let _ = request;
}

#[test]
fn many_viewers_in_one_process_each_get_the_stream_and_a_log() {
    let dir = TempDir::new("viewers");
    let origin = Node::origin("origin", TOKEN, &["--sample"]);
    wait_until(Duration::from_secs(20), "origin serves demo", || {
        let r = http_get(&origin.url("/live/demo/index.m3u8")).ok()?;
        (r.status == 200 && r.text().contains(".ts")).then_some(())
    });
    let log = dir.join("many.jsonl");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.args(["watch", "--quiet", "--viewers", "3", "--duration", "8", "--startup", "2", "--log"])
        .arg(&log)
        .arg(origin.url("/live/demo/index.m3u8"));
    let mut p = Proc::spawn("viewers", cmd);
    let status = wait_until(Duration::from_secs(40), "viewers finish", || p.child().try_wait().unwrap());
    assert!(status.success(), "{}", p.log());
    for i in 1..=3 {
        let path = format!("{}.{i}", log.display());
        let (segments, _, _) = read_log(Path::new(&path));
        assert!(segments.len() >= 3, "viewer {i} got {} segments", segments.len());
    }
    assert!(p.log().contains("3 viewers (0 failed)"), "{}", p.log());
}

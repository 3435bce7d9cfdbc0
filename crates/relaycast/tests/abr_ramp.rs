//! Server-side ABR under a crowd (F30), all real processes: an origin's ffmpeg ladder
//! (270p/180p/90p at 1200/500/200 kbit/s) feeds two edges, each capped at 20 Mbit/s. On both,
//! viewers ramp 1 → 15 → 30 with `relaycast watch --viewers`; on one they watch the auto
//! playlist, on the other the top rendition. With server-side ABR no viewer stalls for more than
//! a moment and the first viewer's rendition steps down as the crowd grows; with the top
//! rendition fixed, the same ramp stalls.

mod ladder_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ladder_support::{TOKEN, ladder_origin};
use support::{MEDIA_WAIT, Node, Proc, TempDir, http_get, segment_uris, wait_until};

const CAP_KBPS: &str = "20000";

fn edge(origin: &Node, label: &str) -> Node {
    let parent = origin.quic.unwrap().to_string();
    Node::start(
        label,
        &[
            "relay",
            "--name",
            label,
            "--parent",
            &parent,
            "--http",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--egress-kbps",
            CAP_KBPS,
        ],
        false,
    )
}

fn watch(label: &str, url: &str, viewers: usize, seconds: u32, log: &Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.args(["watch", "--quiet", "--viewers", &viewers.to_string(), "--duration", &seconds.to_string()])
        .args(["--label", label, "--log"])
        .arg(log)
        .arg(url)
        .env("NO_COLOR", "1");
    Proc::spawn(label, cmd)
}

/// One viewer's log: (request time s, rendition, bitrate) per segment, and total stall ms.
struct Viewer {
    segments: Vec<(f64, String, f64)>,
    stall_ms: f64,
}

fn read_log(path: &Path) -> Viewer {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v = Viewer { segments: Vec::new(), stall_ms: 0.0 };
    for line in text.lines() {
        let Ok(r) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        match r["type"].as_str() {
            Some("segment") => v.segments.push((
                r["request_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                r["rendition"].as_str().unwrap_or("?").to_string(),
                r["bitrate_bps"].as_f64().unwrap_or(0.0),
            )),
            Some("end") => v.stall_ms = r["stall_ms"].as_f64().unwrap_or(0.0),
            _ => {}
        }
    }
    v
}

/// The logs of a `--viewers N` run (LOG itself for one viewer).
fn logs(base: &Path, viewers: usize) -> Vec<PathBuf> {
    if viewers == 1 {
        vec![base.to_path_buf()]
    } else {
        (1..=viewers).map(|i| PathBuf::from(format!("{}.{i}", base.display()))).collect()
    }
}

#[test]
fn a_growing_crowd_steps_down_with_server_abr_and_stalls_on_a_fixed_top_rendition() {
    support::require_ffmpeg();
    let dir = TempDir::new("abr-ramp");
    let origin = ladder_origin(&dir, &["--ladder-kbps", "1200,500,200"]);
    let (auto_edge, fixed_edge) = (edge(&origin, "edge-auto"), edge(&origin, "edge-fixed"));
    for e in [&auto_edge, &fixed_edge] {
        wait_until(MEDIA_WAIT, "the ladder at the edge", || {
            let r = http_get(&e.url("/live/lad/270p/index.m3u8")).ok()?;
            (r.status == 200 && segment_uris(&r.text()).len() >= 4).then_some(())
        });
    }
    let urls = [auto_edge.url("/live/lad/auto.m3u8"), fixed_edge.url("/live/lad/270p/index.m3u8")];

    // The ramp, on both edges at once: 1 viewer, +14 at 8 s, +15 at 18 s, all until 36 s.
    let ramp = [(1usize, 0u32), (14, 8), (15, 18)];
    let mut procs = Vec::new();
    let mut elapsed = 0;
    for (i, (viewers, at)) in ramp.iter().enumerate() {
        // A workload schedule, not a wait for a condition.
        std::thread::sleep(Duration::from_secs(u64::from(at - elapsed)));
        elapsed = *at;
        for (kind, url) in ["auto", "fixed"].iter().zip(&urls) {
            let log = dir.join(&format!("{kind}-{i}.jsonl"));
            procs.push(watch(&format!("{kind}-{i}"), url, *viewers, 36 - at, &log));
        }
    }
    for mut p in procs {
        wait_until(Duration::from_secs(60), "the viewers to finish", || (!p.is_alive()).then_some(()));
        let status = p.child().wait().unwrap();
        assert!(status.success(), "a watch run failed:\n{}", p.log());
    }

    let read = |kind: &str| -> Vec<Viewer> {
        ramp.iter()
            .enumerate()
            .flat_map(|(i, (n, _))| logs(&dir.join(&format!("{kind}-{i}.jsonl")), *n))
            .map(|p| read_log(&p))
            .collect()
    };
    let (auto, fixed) = (read("auto"), read("fixed"));
    assert_eq!((auto.len(), fixed.len()), (30, 30));
    let stall_s = |v: &[Viewer]| v.iter().map(|x| x.stall_ms).sum::<f64>() / 1000.0;
    let worst = auto.iter().map(|v| v.stall_ms).fold(0.0, f64::max);
    eprintln!("stall time: auto {:.1} s (worst viewer {worst:.0} ms), fixed {:.1} s", stall_s(&auto), stall_s(&fixed));

    // Server-side ABR: no viewer stalls beyond a small bound.
    // (A bound, not zero: on a loaded two-core machine one viewer once stalled 4.7 s while the
    // fixed edge's viewers stalled 150 s in total; runs on a quiet machine show 0.)
    assert!(
        worst <= 6000.0 && stall_s(&auto) <= 15.0,
        "auto viewers stalled {:.1} s, worst {worst} ms",
        stall_s(&auto)
    );
    // The fixed top rendition: 30 × 1.3 Mbit/s does not fit in 20 Mbit/s.
    assert!(stall_s(&fixed) >= 30.0 && stall_s(&fixed) > 5.0 * stall_s(&auto).max(1.0), "fixed top should stall");

    // The first auto viewer: the top rendition while alone, lower ones once 30 share the edge.
    let first = &auto[0];
    let alone: Vec<&(f64, String, f64)> = first.segments.iter().filter(|s| s.0 < 7.0).collect();
    let crowded: Vec<&(f64, String, f64)> = first.segments.iter().filter(|s| s.0 > 24.0).collect();
    assert!(!alone.is_empty() && !crowded.is_empty(), "{:?}", first.segments);
    assert!(alone.iter().any(|s| s.1 == "270p"), "alone: {alone:?}");
    assert!(crowded.iter().all(|s| s.1 != "270p"), "with 30 viewers: {crowded:?}");
    let mean = |v: &[&(f64, String, f64)]| v.iter().map(|s| s.2).sum::<f64>() / v.len() as f64;
    assert!(mean(&crowded) < 0.7 * mean(&alone), "bitrate {} → {}", mean(&alone), mean(&crowded));
    // Every auto viewer was told its rendition.
    assert!(auto.iter().flat_map(|v| &v.segments).all(|s| ["270p", "180p", "90p"].contains(&s.1.as_str())));
}

//! Helpers shared by the ladder and server-side ABR tests: a test clip, an origin encoding it
//! into a small ladder (480x270 / 320x180 / 160x90, 1 s segments, ultrafast, to fit two shared
//! cores), the edge's `/api/v1/abr` view and its egress cap.

#![allow(dead_code)]

use std::process::Command;

use crate::support::{Node, TempDir, run};

/// The cluster token of these tests.
pub const TOKEN: &str = "abr-token";

/// An H.264 + AAC test clip of `size` lasting `seconds`.
pub fn make_clip(path: &std::path::Path, size: &str, seconds: u32) {
    let out = run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate=25:duration={seconds}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=330:duration={seconds}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac", "-shortest"])
        .arg(path));
    assert!(out.status.success(), "ffmpeg could not make {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}

/// An origin encoding a 480x270 clip into channel `lad` with `extra` ladder flags.
pub fn ladder_origin(dir: &TempDir, extra: &[&str]) -> Node {
    let clip = dir.join("in.mp4");
    make_clip(&clip, "480x270", 6);
    let input = format!("lad={}", clip.display());
    let mut args = vec![
        "--ladder",
        &input,
        "--ladder-segment-s",
        "1",
        "--ladder-preset",
        "ultrafast",
        "--ladder-stall-timeout-s",
        "5",
    ];
    args.extend_from_slice(extra);
    Node::origin("origin", TOKEN, &args)
}

/// Set an edge's egress cap (kbit/s, 0 = none).
pub fn set_egress(edge: &Node, kbps: u64) {
    let out = run(Command::new("curl")
        .args(["-s", "-f", "-X", "PUT", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["-d", &format!("{{\"kbps\": {kbps}}}")])
        .arg(edge.url("/api/v1/egress")));
    assert!(out.status.success(), "PUT /api/v1/egress failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The edge's server-side ABR sessions of channel `lad` that made a request in the last 3 s:
/// (id, rendition, last_seq).
pub fn sessions(edge: &Node) -> Vec<(String, Option<String>, Option<u64>)> {
    let v: serde_json::Value = serde_json::from_slice(&edge.get("/api/v1/abr").body).unwrap_or_default();
    v["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["channel"] == "lad")
        .flat_map(|c| c["sessions"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["idle_s"].as_f64().is_some_and(|i| i < 3.0))
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["rendition"].as_str().map(String::from),
                s["last_seq"].as_u64(),
            )
        })
        .collect()
}

//! A folder of media files becomes live channels (F5): an MP4 (remuxed by ffmpeg without
//! re-encoding) and an MPEG-TS file are each looped as a channel named after the file, with an
//! EXT-X-DISCONTINUITY where the loop starts over; files that are not media, or are broken, are
//! skipped with a log line and do not stop the origin. Also checks that the edge speaks HTTP/2
//! to a client that asks for it.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Node, TempDir, probe, require_ffmpeg, run, video_size, wait_until};

fn make_clip(path: &std::path::Path, size: &str, seconds: u32) {
    let out = run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate=25:duration={seconds}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=330:duration={seconds}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-shortest"])
        .arg(path));
    assert!(out.status.success(), "ffmpeg could not make {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn media_files_in_a_folder_loop_as_live_channels() {
    require_ffmpeg();
    let dir = TempDir::new("videos");
    make_clip(&dir.join("lecture.mp4"), "320x180", 4);
    make_clip(&dir.join("lobby cam.ts"), "160x90", 4);
    std::fs::write(dir.join("notes.txt"), "not media").unwrap();
    std::fs::write(dir.join("broken.mp4"), vec![0x42u8; 4096]).unwrap();

    let videos = dir.path().to_str().unwrap().to_string();
    let origin = Node::origin("origin", "vid-token", &["--videos", &videos]);
    let relay = Node::relay("relay", origin.quic.unwrap(), "vid-token", false);

    let channels = wait_until(Duration::from_secs(30), "both channels are listed", || {
        let r = relay.get("/api/v1/channels");
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        let names: Vec<String> =
            v["channels"].as_array()?.iter().filter_map(|c| Some(c["name"].as_str()?.to_string())).collect();
        (names.contains(&"lecture".to_string()) && names.contains(&"lobby_cam".to_string())).then_some(names)
    });
    assert!(!channels.iter().any(|n| n.contains("broken") || n.contains("notes")), "{channels:?}");
    assert!(origin.log().contains("broken.mp4"), "the broken file is named in the log:\n{}", origin.log());

    for (channel, size) in [("lecture", "320x180"), ("lobby_cam", "160x90")] {
        let streams = probe(&relay.url(&format!("/live/{channel}/index.m3u8")));
        assert_eq!(video_size(&streams), size, "{channel}: {streams:?}");
        assert!(streams.iter().any(|s| s.codec_type == "audio"), "{channel} keeps its audio");
    }

    // A 4 s clip cut into 2 s segments loops after two segments: the playlist marks it.
    wait_until(Duration::from_secs(20), "a loop point appears in the playlist", || {
        let text = origin.get("/live/lecture/src/index.m3u8").text();
        text.contains("#EXT-X-DISCONTINUITY\n").then_some(())
    });

    // HTTP/2 with prior knowledge (h2c), as an HTTP/2 client or CDN would use it.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_version}", "--http2-prior-knowledge"])
        .arg(relay.url("/live/lecture/index.m3u8"))
        .output()
        .expect("curl is needed for the HTTP/2 check (apt-get install -y curl)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2", "the edge answers HTTP/2");
}

/// With `--low-latency`, the same folder's files loop as LL-HLS channels: fMP4 parts through a
/// relay, a discontinuity at the loop, decodable by ffprobe.
#[test]
fn media_files_loop_as_low_latency_channels_on_request() {
    require_ffmpeg();
    let dir = TempDir::new("videos-ll");
    make_clip(&dir.join("talk.mp4"), "320x180", 3);
    let videos = dir.path().to_str().unwrap().to_string();
    let origin = Node::origin("origin", "vid-token", &["--videos", &videos, "--low-latency"]);
    let relay = Node::relay("relay", origin.quic.unwrap(), "vid-token", false);
    let text = wait_until(Duration::from_secs(30), "the relay lists parts and a loop point", || {
        let r = relay.get("/live/talk/src/index.m3u8");
        let text = r.text();
        (r.status == 200 && text.contains("#EXT-X-PART:") && text.contains("#EXT-X-DISCONTINUITY\n")).then_some(text)
    });
    assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{text}");
    let streams = probe(&relay.url("/live/talk/index.m3u8"));
    assert_eq!(video_size(&streams), "320x180", "{streams:?}");
}

//! `relaycast demo` works out of the box: one command starts an origin, a relay and an edge,
//! prints a playlist URL that ffprobe can open (video and audio, through two QUIC hops), serves
//! the hls.js player page at `/`, and lists the sample channel `demo` in its API.

mod support;

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{MEDIA_WAIT, Proc, STARTUP, http_get, play_in_browser, require_ffmpeg, run, stdout_lines, wait_until};

/// A base port P with TCP P, P+1, P+2 and UDP P+1, P+2 free on loopback (at the time of asking).
fn three_free_ports() -> Option<u16> {
    let base = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    base.checked_add(2)?;
    let _held: Vec<TcpListener> =
        (0..3).map(|i| TcpListener::bind(("127.0.0.1", base + i))).collect::<Result<_, _>>().ok()?;
    let _held_udp: Vec<UdpSocket> =
        (1..3).map(|i| UdpSocket::bind(("127.0.0.1", base + i))).collect::<Result<_, _>>().ok()?;
    Some(base)
}

/// The running demo and the URLs it printed.
struct Demo {
    proc: Proc,
    playlist: String,
    page: String,
}

/// Start `relaycast demo --port P --no-ffmpeg` and read its URLs, retrying on a port race.
fn start_demo() -> Demo {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let Some(port) = three_free_ports() else { continue };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
        cmd.args(["demo", "--port", &port.to_string(), "--no-ffmpeg"]).env("NO_COLOR", "1").stdout(Stdio::piped());
        let mut proc = Proc::spawn("demo", cmd);
        let lines = stdout_lines(proc.child());
        let deadline = Instant::now() + STARTUP;
        let (mut playlist, mut page) = (None, None);
        while playlist.is_none() || page.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left.max(Duration::from_millis(1))) else { break };
            let url = line.split_whitespace().find(|w| w.starts_with("http://")).map(String::from);
            if line.trim_start().starts_with("playlist:") {
                playlist = url;
            } else if line.trim_start().starts_with("player page:") {
                page = url;
            }
        }
        if let (Some(playlist), Some(page)) = (playlist, page) {
            assert!(playlist.contains(&format!(":{port}/")), "the playlist is on the edge's --port: {playlist}");
            return Demo { proc, playlist, page };
        }
        failures.push(format!("port {port}: exited={}; stderr:\n{}", !proc.is_alive(), proc.log()));
    }
    panic!("relaycast demo never printed its URLs:\n{}", failures.join("\n"));
}

#[test]
fn demo_serves_a_playable_channel_a_player_page_and_the_api() {
    require_ffmpeg();
    let started = Instant::now();
    let demo = start_demo();
    let base = demo.page.trim_end_matches('/');
    assert!(demo.playlist.ends_with("/live/demo/index.m3u8"), "{}", demo.playlist);

    // The edge learns the channel from upstream; once it answers, ffprobe must find both streams.
    wait_until(MEDIA_WAIT, "the demo playlist to be served at the edge", || {
        http_get(&demo.playlist).ok().filter(|r| r.status == 200).map(|_| ())
    });
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0"])
        .arg(&demo.playlist));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ffprobe {}: {}", demo.playlist, String::from_utf8_lossy(&out.stderr));
    let kinds: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "ffprobe found {kinds:?} in {}", demo.playlist);

    // A standard browser player (hls.js in headless Chromium) plays it with no stall or error.
    let browser = play_in_browser(&demo.playlist, 8, "{}");
    let summary = browser.summary();
    assert!(browser.status.success(), "hls.js did not play {}: {:?}", demo.playlist, browser.events);
    assert!(summary["played"].as_f64().unwrap_or(0.0) > 3.0, "hls.js played too little: {summary}");
    assert_eq!(summary["fatal"], false, "{:?}", browser.of("error"));

    let page = http_get(&demo.page).expect("GET the player page");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap_or_default().starts_with("text/html"), "{:?}", page.headers);
    assert!(page.text().to_ascii_lowercase().contains("hls"), "the player page mentions hls:\n{}", page.text());

    let api = http_get(&format!("{base}/api/v1/channels")).expect("GET /api/v1/channels");
    assert_eq!(api.status, 200, "{}", api.text());
    let json: serde_json::Value = serde_json::from_slice(&api.body).expect("the channel list is JSON");
    let names: Vec<&str> = json["channels"]
        .as_array()
        .map(|list| list.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"demo"), "channels at the edge: {json}");
    assert!(!names.contains(&"clock"), "--no-ffmpeg starts no test-pattern channel: {json}");
    drop(demo.proc);
    eprintln!("demo test took {:?}", started.elapsed());
}

//! Cold start (issue 18): viewers the traffic manager sends away the moment `/play` first
//! redirects all play. Until an edge is attached to the tree and offers the channel, `/play`
//! answers 503 with `Retry-After` (it never sends a viewer where it can't be served);
//! `relaycast watch --steer` retries what is transient, and exits non-zero with a count and a
//! reason when a viewer fails for good.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Node, Proc, TempDir, http_get, wait_until};

const TOKEN: &str = "cold-token";
const VIEWERS: usize = 16;

#[test]
fn viewers_sent_the_moment_play_first_redirects_all_play_with_a_secondary_starting() {
    support::require_ffmpeg();
    let dir = TempDir::new("cold");
    // A threshold of 8 makes the tracker start a secondary while the 16 viewers arrive.
    let tracker = Node::tracker(&[
        "--heartbeat-ms",
        "300",
        "--threshold",
        "8",
        "--secondary-capacity",
        "20",
        "--steering-ttl",
        "1",
        "--token",
        TOKEN,
    ]);
    let tracker_url = format!("http://{}", tracker.http);
    let play = format!("{tracker_url}/play/demo?region=eu");
    let before = http_get(&play).unwrap();
    assert_eq!(before.status, 503, "no edge yet: {}", before.text());
    assert!(before.header("retry-after").is_some(), "a 503 says when to retry");
    assert!(before.text().contains("demo"), "the reason names the channel: {}", before.text());

    let _origin = Node::origin("origin", TOKEN, &["--sample", "--tracker", &tracker_url, "--region", "eu"]);
    let _edge = Node::start(
        "p1",
        &["relay", "--name", "p1", "--region", "eu", "--tracker", &tracker_url, "--http", "127.0.0.1:0"]
            .into_iter()
            .chain(["--quic", "127.0.0.1:0", "--token", TOKEN])
            .collect::<Vec<_>>(),
        true,
    );
    // The instant /play first redirects, start every viewer.
    let deadline = Instant::now() + support::MEDIA_WAIT;
    loop {
        let r = http_get(&play).unwrap();
        if (300..400).contains(&r.status) {
            // Where it sends a viewer, the playlist is there at once.
            let edge_playlist = r.header("location").expect("a redirect has a Location").to_string();
            let first = http_get(&edge_playlist).unwrap();
            assert_eq!(first.status, 200, "the edge /play chose can't serve yet: {}", first.text());
            break;
        }
        assert_eq!(r.status, 503, "until an edge can serve, /play says so: {}", r.text());
        assert!(Instant::now() < deadline, "/play never redirected: {}", r.text());
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = dir.join("cold.jsonl");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.args(["watch", "--quiet", "--steer", &play, "--viewers", &VIEWERS.to_string()])
        .args(["--duration", "15", "--startup", "1", "--log"])
        .arg(&log);
    let mut viewers = Proc::spawn("viewers", cmd);
    let status = wait_until(Duration::from_secs(60), "the viewers finish", || viewers.child().try_wait().unwrap());
    assert!(status.success(), "every viewer plays:\n{}", viewers.log());
    assert!(viewers.log().contains(&format!("{VIEWERS} viewers (0 failed)")), "{}", viewers.log());
    for i in 1..=VIEWERS {
        let text = std::fs::read_to_string(format!("{}.{i}", log.display())).unwrap();
        let segments = text.lines().filter(|l| l.contains("\"type\":\"segment\"")).count();
        assert!(segments >= 5, "viewer {i} played {segments} segments");
    }
    let traffic = http_get(&format!("{tracker_url}/api/v1/traffic")).unwrap().text();
    assert!(traffic.contains("\"secondary\""), "past the threshold a secondary was started: {traffic}");
}

#[test]
fn watch_exits_non_zero_with_the_reason_when_viewers_fail() {
    let origin = Node::origin("origin", TOKEN, &["--sample"]);
    let out = support::run(
        Command::new(env!("CARGO_BIN_EXE_relaycast"))
            .args(["watch", "--quiet", "--viewers", "3", "--duration", "3"])
            .arg(origin.url("/live/no-such-channel/index.m3u8")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a run where every viewer failed must not exit 0:\n{stderr}");
    assert!(stderr.contains("3 of 3 viewers failed") && stderr.contains("404"), "{stderr}");
}

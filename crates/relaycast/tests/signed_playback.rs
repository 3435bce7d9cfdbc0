//! Signed playback URLs (F71): an origin declares its channels `signed`; every edge of the
//! tree then serves them only with a valid token from `relaycast sign` or the tracker's `/play`,
//! refuses everything else with a one-line reason, and carries the token into every URI it
//! lists. ffprobe and hls.js (headless Chromium) play through origin → relay → edge and through
//! `/play`.

mod support;

use std::time::Duration;

use support::{Node, TempDir, http_get, wait_until};

const TOKEN: &str = "signed-token";

fn sign(key: &str, channel: &str, ttl: &str, base: &str) -> String {
    support::sign_link(key, channel, ttl, base, None)
}

/// Every URI a playlist lists: URI lines and `URI="..."` attributes (not the steering server).
fn listed_uris(playlist: &str) -> Vec<String> {
    let mut uris = Vec::new();
    for line in playlist.lines().filter(|l| !l.is_empty()) {
        if !line.starts_with('#') {
            uris.push(line.to_string());
            continue;
        }
        for (i, _) in line.match_indices("URI=\"").filter(|(i, _)| *i > 0 && line.as_bytes()[i - 1] != b'-') {
            let rest = &line[i + 5..];
            uris.push(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    uris
}

/// Wait until the node behind `url` has joined the tree (it answers 503 until then).
fn joined(url: &str) {
    wait_until(support::STARTUP, "the node joins the tree", || (http_get(url).ok()?.status != 503).then_some(()));
}

fn refused(url: &str) -> String {
    let r = http_get(url).unwrap();
    assert_eq!(r.status, 403, "{url} should be refused: {}", r.text());
    r.text()
}

fn relay(name: &str, parent: std::net::SocketAddr, key: Option<&str>, quic: bool) -> Node {
    let parent = parent.to_string();
    let mut args = vec!["relay", "--name", name, "--parent", &parent, "--http", "127.0.0.1:0", "--token", TOKEN];
    if let Some(k) = key {
        args.extend_from_slice(&["--playback-key", k]);
    }
    if quic {
        args.extend_from_slice(&["--quic", "127.0.0.1:0"]);
    }
    Node::start(name, &args, quic)
}

#[test]
fn signed_channels_play_only_with_a_valid_token_and_the_token_reaches_every_uri() {
    support::require_ffmpeg();
    let dir = TempDir::new("signed");
    let key = dir.join("playback.key");
    let key = key.to_str().unwrap();
    let tracker =
        Node::tracker(&["--heartbeat-ms", "300", "--provisioner", "none", "--token", TOKEN, "--playback-key", key]);
    // The tracker started first, so it created the key file; the origin and edges share it.
    let tracker_url = format!("http://{}", tracker.http);
    let origin = Node::origin(
        "origin",
        TOKEN,
        &["--sample", "--sample-ll", "--playback", "signed", "--playback-key", key, "--tracker", &tracker_url],
    );
    let mid = relay("mid", origin.quic.unwrap(), Some(key), true);
    let edge = relay("edge", mid.quic.unwrap(), Some(key), false);
    let base = format!("http://{}", edge.http);

    // Refusals, each with its reason (once the edge has joined the tree and heard of the channel).
    let open = edge.url("/live/demo/index.m3u8");
    joined(&open);
    assert!(refused(&open).contains("needs a signed link"));
    let for_ll = sign(key, "demo-ll", "1h", &base);
    let ll_token = for_ll.split_once("token=").unwrap().1.to_string();
    assert!(refused(&format!("{open}?token={ll_token}")).contains("opens channel demo-ll, not demo"));
    let good = sign(key, "demo", "1h", &base);
    let (expiry, rest) = good.split_once("~").unwrap().1.split_once('~').unwrap();
    let later = good.replace(&format!("~{expiry}~{rest}"), &format!("~{}~{rest}", expiry.parse::<u64>().unwrap() + 9));
    assert!(refused(&later).contains("signature does not match"));
    let short = sign(key, "demo", "1", &base);
    wait_until(Duration::from_secs(10), "a 1 s link expires", || {
        let r = http_get(&short).ok()?;
        (r.status == 403).then(|| assert!(r.text().contains("expired"), "{}", r.text()))
    });
    let bound = support::sign_link(key, "demo", "1h", &base, Some("10.9.9.9"));
    assert!(refused(&bound).contains("bound to another client address"));

    // A valid link plays, and every URI the edge lists carries the token, down to the segments.
    let token = good.split_once("token=").unwrap().1.to_string();
    let listed = wait_until(support::MEDIA_WAIT, "the signed playlist lists segments", || {
        let r = http_get(&good).ok()?;
        (r.status == 200 && r.text().contains(".ts")).then(|| r.text())
    });
    assert!(listed_uris(&listed).iter().all(|u| u.contains(&format!("token={token}"))), "{listed}");
    let segment = listed_uris(&listed).pop().unwrap();
    let seg_url = edge.url(&format!("/live/demo/{segment}"));
    assert_eq!(http_get(&seg_url).unwrap().status, 200);
    assert!(refused(seg_url.split('?').next().unwrap()).contains("needs a signed link"));
    let streams = support::probe(&good);
    assert!(streams.iter().any(|s| s.codec_type == "video"), "ffprobe reads the signed stream: {streams:?}");

    // Server-side ABR: the session redirect and the session's playlist carry the token too.
    let auto = support::request("GET", &edge.url(&format!("/live/demo/auto.m3u8?token={token}")), b"").unwrap();
    assert_eq!(auto.status, 302, "{}", auto.text());
    let session = auto.header("location").unwrap().to_string();
    assert!(session.contains(&format!("token={token}")), "{session}");
    let auto_list = http_get(&edge.url(&format!("/live/demo/{session}"))).unwrap();
    assert_eq!(auto_list.status, 200, "{}", auto_list.text());
    let auto_uris = listed_uris(&auto_list.text());
    assert!(!auto_uris.is_empty() && auto_uris.iter().all(|u| u.contains(&format!("token={token}"))));

    // Low latency: the master, media playlist, parts, preload hints, map and reports all carry it.
    let ll_master = http_get(&for_ll).unwrap();
    assert_eq!(ll_master.status, 200, "{}", ll_master.text());
    let media_uri = listed_uris(&ll_master.text()).into_iter().next().unwrap();
    let media = wait_until(support::MEDIA_WAIT, "the signed LL playlist lists parts", || {
        let r = http_get(&edge.url(&format!("/live/demo-ll/{media_uri}"))).ok()?;
        let t = r.text();
        (r.status == 200
            && t.contains("#EXT-X-MAP:")
            && t.contains("#EXT-X-PART:")
            && t.matches("#EXTINF").count() >= 2
            && listed_uris(&t).len() > 5)
            .then_some(r)
    });
    let uris = listed_uris(&media.text());
    assert!(media.text().contains("#EXT-X-PART:") && media.text().contains("#EXT-X-MAP:"), "{}", media.text());
    assert!(uris.len() > 5 && uris.iter().all(|u| u.contains(&format!("token={ll_token}"))), "{}", media.text());
    let run = support::play_in_browser(&for_ll, 12, r#"{"lowLatencyMode":true}"#);
    let summary = run.summary().clone();
    assert!(run.status.success(), "hls.js did not play the signed link: {summary}");
    assert!(summary["played"].as_f64().unwrap() >= 8.0, "played 8 s: {summary}");
    assert!(run.of("frag").iter().all(|f| f["url"].as_str().unwrap().contains("token=")), "every fetch signed");

    // An edge without the key cannot serve a signed channel, and says so.
    let keyless = relay("keyless", mid.quic.unwrap(), None, false);
    joined(&keyless.url("/live/demo/index.m3u8"));
    assert!(refused(&keyless.url("/live/demo/index.m3u8")).contains("no playback key"));

    // Through the traffic manager: /play hands out a signed link to the edge it picks.
    let tracked = Node::start(
        "tracked",
        &[
            "relay",
            "--name",
            "tracked",
            "--tracker",
            &tracker_url,
            "--http",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--playback-key",
            key,
        ],
        false,
    );
    let play = tracker.url("/play/demo");
    let location = wait_until(Duration::from_secs(30), "/play sends viewers to the edge", || {
        let r = support::request("GET", &play, b"").ok()?;
        (r.status == 302).then(|| r.header("location").unwrap().to_string())
    });
    assert!(location.contains(&format!("{}/live/demo/index.m3u8", tracked.http)) && location.contains("token=demo~"));
    let run = support::play_in_browser(&play, 10, "{}");
    let summary = run.summary().clone();
    assert!(run.status.success() && summary["played"].as_f64().unwrap() >= 6.0, "hls.js via /play: {summary}");
}

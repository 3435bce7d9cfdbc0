//! Live video through a real chain of processes: ffmpeg pushes HLS over HTTP PUT into an
//! origin, which feeds relay-1 over QUIC on loopback, which feeds relay-2 (a leaf edge).
//!
//! Proves that a player at the end of the chain gets at least 8 s of decodable audio and
//! video; that a relay serves the origin's segment bytes unchanged, with the origin's
//! timestamp; that playlists and segments carry the content types, cache headers and CORS
//! header players and CDNs rely on; and that two channels pushed at once never mix on the way.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    MEDIA_WAIT, Node, TempDir, ffmpeg_push, max_age, probe, probe_bytes, require_ffmpeg, run, segment_uris, seq_of,
    video_size, wait_until,
};

const TOKEN: &str = "chain-token";

/// origin → relay-1 → relay-2, each its own process.
fn chain(origin_args: &[&str]) -> (Node, Node, Node) {
    let origin = Node::origin("origin", TOKEN, origin_args);
    let relay1 = Node::relay("relay-1", origin.quic.expect("an origin accepts relays"), TOKEN, true);
    let relay2 = Node::relay("relay-2", relay1.quic.expect("relay-1 was started with --quic"), TOKEN, false);
    (origin, relay1, relay2)
}

/// Wait until `node` serves `channel`'s media playlist with at least `min` segments; return it.
fn playlist_with(node: &Node, channel: &str, min: usize) -> String {
    let path = format!("/live/{channel}/index.m3u8");
    wait_until(MEDIA_WAIT, &format!("{path} with {min} segments at {}", node.http), || {
        let r = node.get(&path);
        (r.status == 200 && segment_uris(&r.text()).len() >= min).then(|| r.text())
    })
}

#[test]
fn pushed_stream_plays_through_two_relays_with_identical_segments() {
    require_ffmpeg();
    let started = Instant::now();
    let (origin, relay1, relay2) = chain(&["--push", "cam=s3cret"]);
    let _ffmpeg = ffmpeg_push("ffmpeg-cam", &origin.url("/ingest/cam/s3cret/src.m3u8"), "320x180");
    playlist_with(&origin, "cam", 3);

    // A player at the end of the chain: record 10 s (copying, so nothing is hidden by a
    // re-encode), then decode every frame of the recording.
    let dir = TempDir::new("live-chain");
    let recording = dir.join("recording.ts");
    let recording = recording.to_str().expect("UTF-8 temp path");
    let url = relay2.url("/live/cam/index.m3u8");
    let out = run(Command::new("ffmpeg").args([
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-i",
        &url,
        "-t",
        "10",
        "-map",
        "0:v",
        "-map",
        "0:a",
        "-c",
        "copy",
        "-f",
        "mpegts",
        "-y",
        recording,
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg could not play {url} ({}): {stderr}", out.status);
    assert!(stderr.trim().is_empty(), "ffmpeg reported errors playing {url}: {stderr}");
    let decode = run(Command::new("ffmpeg").args([
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-i",
        recording,
        "-f",
        "null",
        "-",
    ]));
    let decode_err = String::from_utf8_lossy(&decode.stderr);
    assert!(decode.status.success() && decode_err.trim().is_empty(), "recording does not decode cleanly: {decode_err}");
    let streams = probe(recording);
    for kind in ["video", "audio"] {
        let s = streams.iter().find(|s| s.codec_type == kind).unwrap_or_else(|| panic!("no {kind} in {streams:?}"));
        let d = s.duration_s.unwrap_or(0.0);
        assert!(d >= 8.0, "only {d:.2} s of {kind} came through the chain: {streams:?}");
    }
    assert_eq!(video_size(&streams), "320x180");

    // The same segment, from the origin and from the end of the chain.
    let edge_playlist = relay2.get("/live/cam/index.m3u8");
    assert_eq!(edge_playlist.status, 200, "{}", edge_playlist.text());
    let uris = segment_uris(&edge_playlist.text());
    let uri = uris.last().expect("the edge lists segments").clone();
    assert!(uri.starts_with("src/"), "one rendition: the channel playlist is the media playlist, got {uri:?}");
    let seq = seq_of(&uri);
    let at_origin = origin.get(&format!("/live/cam/src/{seq}.ts"));
    let at_edge = relay2.get(&format!("/live/cam/src/{seq}.ts"));
    let at_relay1 = relay1.get(&format!("/live/cam/src/{seq}.ts"));
    for (who, r) in [("origin", &at_origin), ("relay-1", &at_relay1), ("relay-2", &at_edge)] {
        assert_eq!(r.status, 200, "segment {seq} at {who}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("video/mp2t"), "segment at {who}");
        let cc = r.header("cache-control").unwrap_or_default();
        assert!(cc.contains("immutable"), "segment at {who} has cache-control {cc:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "CORS on a segment at {who}");
        let exposed = r.header("access-control-expose-headers").unwrap_or_default();
        assert!(exposed.contains("relaycast-origin-time"), "browsers may not read the origin time at {who}");
        assert!(r.body.len() > 1000 && r.body[0] == 0x47, "segment at {who} is not MPEG-TS");
    }
    assert!(at_origin.body == at_edge.body, "segment {seq} differs between origin and relay-2");
    assert!(at_origin.body == at_relay1.body, "segment {seq} differs between origin and relay-1");
    let stamp = at_origin.header("relaycast-origin-time").expect("origin time on the origin's segment");
    assert!(stamp.parse::<u64>().is_ok_and(|ms| ms > 1_600_000_000_000), "origin time {stamp:?} is Unix ms");
    assert_eq!(at_edge.header("relaycast-origin-time"), Some(stamp), "relay-2 keeps the origin's timestamp");
    assert_eq!(at_relay1.header("relaycast-origin-time"), Some(stamp), "relay-1 keeps the origin's timestamp");

    // Playlist headers on every node.
    for (who, node) in [("origin", &origin), ("relay-1", &relay1), ("relay-2", &relay2)] {
        for path in ["/live/cam/index.m3u8", "/live/cam/src/index.m3u8"] {
            let r = node.get(path);
            assert_eq!(r.status, 200, "{path} at {who}: {}", r.text());
            assert!(r.text().starts_with("#EXTM3U"), "{path} at {who}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/vnd.apple.mpegurl"), "{path} at {who}");
            let cc = r.header("cache-control").unwrap_or_default();
            let age = max_age(cc).unwrap_or_else(|| panic!("{path} at {who}: no max-age in {cc:?}"));
            assert!(age <= 2, "{path} at {who}: a live playlist cached for {age} s goes stale");
            assert!(!cc.contains("immutable"), "{path} at {who}: a live playlist is not immutable");
            assert_eq!(r.header("access-control-allow-origin"), Some("*"), "CORS on {path} at {who}");
        }
    }
    eprintln!("chain test took {:?}", started.elapsed());
}

/// The documented command lines, without `--name`: every relay then has the default name.
/// Two of them must still chain (a node's identity must not collide just because two
/// operators kept the default name).
#[test]
fn relays_started_without_names_can_chain() {
    let origin = Node::origin("origin", TOKEN, &["--sample"]);
    let relay = |label: &str, parent: std::net::SocketAddr, quic: bool| {
        let parent = parent.to_string();
        let mut args = vec!["relay", "--parent", &parent, "--http", "127.0.0.1:0", "--token", TOKEN];
        if quic {
            args.extend_from_slice(&["--quic", "127.0.0.1:0"]);
        }
        Node::start(label, &args, quic)
    };
    let relay1 = relay("relay-1 (unnamed)", origin.quic.expect("origin accepts relays"), true);
    let relay2 = relay("relay-2 (unnamed)", relay1.quic.expect("relay-1 accepts relays"), false);
    wait_until(Duration::from_secs(30), "relay-1 to serve demo", || {
        (relay1.get("/live/demo/index.m3u8").status == 200).then_some(())
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let r = relay2.get("/live/demo/index.m3u8");
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        last.status,
        200,
        "two relays with the default name cannot chain; relay-2 answers {:?}. relay-1 refuses \
         relay-2 with \"has our own id\": run.rs takes the node id from node_id(&spec.name) and \
         config.rs names every relay \"relay\" by default.\nrelay-1 log:\n{}",
        last.text(),
        relay1.log()
    );
}

#[test]
fn two_channels_pushed_at_once_never_mix() {
    require_ffmpeg();
    let started = Instant::now();
    let (origin, _relay1, relay2) = chain(&["--push", "cam=k1", "--push", "cam2=k2"]);
    let _big = ffmpeg_push("ffmpeg-cam", &origin.url("/ingest/cam/k1/src.m3u8"), "320x180");
    let _small = ffmpeg_push("ffmpeg-cam2", &origin.url("/ingest/cam2/k2/src.m3u8"), "160x90");
    let expected = [("cam", "320x180"), ("cam2", "160x90")];

    // Follow both channels at the end of the chain until each has shown at least 6 segments,
    // and check every one of them.
    let dir = TempDir::new("two-channels");
    let mut checked: BTreeMap<&str, BTreeMap<u64, String>> = BTreeMap::new();
    wait_until(MEDIA_WAIT, "6 segments of each channel at relay-2", || {
        for (channel, size) in expected {
            let playlist = relay2.get(&format!("/live/{channel}/index.m3u8"));
            if playlist.status != 200 {
                continue;
            }
            for uri in segment_uris(&playlist.text()) {
                let seq = seq_of(&uri);
                let seen = checked.entry(channel).or_default();
                if seen.contains_key(&seq) {
                    continue;
                }
                let seg = relay2.get(&format!("/live/{channel}/{uri}"));
                if seg.status == 404 {
                    continue; // slid out of the window between the two requests
                }
                assert_eq!(seg.status, 200, "{channel}/{uri}: {}", seg.text());
                let streams = probe_bytes(&dir, &format!("{channel}-{seq}.ts"), &seg.body);
                let got = video_size(&streams);
                assert_eq!(got, size, "segment {uri} of {channel} at relay-2 is {got}: channels mixed");
                assert!(streams.iter().any(|s| s.codec_type == "audio"), "{channel}/{uri} lost its audio");
                seen.insert(seq, got);
            }
        }
        expected.iter().all(|(c, _)| checked.get(c).is_some_and(|s| s.len() >= 6)).then_some(())
    });
    // And the origin keeps them apart too.
    for (channel, size) in expected {
        let playlist = origin.get(&format!("/live/{channel}/index.m3u8")).text();
        let uri = segment_uris(&playlist).last().cloned().expect("origin lists segments");
        let seg = origin.get(&format!("/live/{channel}/{uri}"));
        assert_eq!(video_size(&probe_bytes(&dir, &format!("origin-{channel}.ts"), &seg.body)), size);
    }
    eprintln!("two-channel test took {:?}", started.elapsed());
}

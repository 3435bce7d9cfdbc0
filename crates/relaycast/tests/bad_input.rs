//! Bad input never takes an origin down. One origin (a pushed channel `cam` fed by a real
//! ffmpeg, the sample channel `demo`, and a pull channel whose URL serves an HTML page) is hit
//! with wrong stream keys, undeclared channels, an oversized segment, a garbage playlist, unknown
//! and invalid channel names, 1000 garbage UDP datagrams on its QUIC port and a relay holding the
//! wrong cluster token.
//!
//! Proves that each bad request gets the documented 4xx status with a reason, that the bad pull
//! source is logged as "not an HLS playlist", that the wrong-token relay never gets the stream
//! and is counted in `relaycast_peers_refused_total`, and that afterwards the origin is still
//! running and serving `demo` (to HTTP clients and to a relay with the right token) and `cam`.

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{
    MEDIA_WAIT, Node, Response, TempDir, ffmpeg_push, http_put, probe, require_ffmpeg, require_python, segment_uris,
    seq_of, serve_dir, wait_until,
};

const TOKEN: &str = "right-token";
const KEY: &str = "cam-key";

/// `(status, body)` of a response, for assertions that print both.
fn summary(r: &Response) -> (u16, String) {
    (r.status, r.text())
}

/// The newest segment number of `channel` at `node`, once it lists any.
fn latest_seq(node: &Node, channel: &str) -> u64 {
    wait_until(MEDIA_WAIT, &format!("{channel} to list segments at {}", node.http), || {
        let r = node.get(&format!("/live/{channel}/index.m3u8"));
        if r.status != 200 {
            return None;
        }
        segment_uris(&r.text()).last().map(|u| seq_of(u))
    })
}

/// A tiny xorshift generator: reproducible garbage from a printed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// 1000 datagrams to `target`: half pure noise of random length, half shaped like QUIC v1
/// Initial packets (long header, version 1, random connection IDs, padded to 1200 bytes) so
/// they get past the first header checks.
fn spray_garbage(target: std::net::SocketAddr) {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    eprintln!("garbage UDP seed: {seed:#x}");
    let mut rng = XorShift(seed);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket");
    for i in 0..1000 {
        let mut packet = vec![0u8; 1 + (rng.next() % 1400) as usize];
        rng.fill(&mut packet);
        if i % 2 == 1 {
            packet.resize(1200, 0);
            rng.fill(&mut packet);
            packet[0] = 0xc0 | (packet[0] & 0x0f);
            packet[1..5].copy_from_slice(&1u32.to_be_bytes());
            packet[5] = 8; // destination connection ID length
            packet[14] = 8; // source connection ID length
            packet[23] = 0; // token length
        }
        // Loopback can drop datagrams under load; what arrives is what matters.
        let _ = socket.send_to(&packet, target);
    }
}

#[test]
fn bad_requests_get_reasons_and_the_origin_keeps_serving() {
    require_ffmpeg();
    require_python();
    let started = Instant::now();
    let html = TempDir::new("html-source");
    std::fs::write(html.join("index.html"), "<!doctype html><html><body><h1>Not a playlist</h1></body></html>\n")
        .expect("writing index.html");
    let (_html_server, html_port) = serve_dir(&html);
    let bad_pull = format!("bad=http://127.0.0.1:{html_port}/");
    let push = format!("cam={KEY}");
    let mut origin = Node::origin(
        "origin",
        TOKEN,
        &["--sample", "--push", &push, "--pull", &bad_pull, "--max-segment-bytes", "100000"],
    );
    let quic = origin.quic.expect("origin accepts relays");
    let _ffmpeg = ffmpeg_push("ffmpeg-cam", &origin.url(&format!("/ingest/cam/{KEY}/src.m3u8")), "320x180");
    latest_seq(&origin, "demo");
    let cam_before = latest_seq(&origin, "cam");

    // A viewer of the broken pull channel waits for it, then gets an error, never a playlist.
    let bad_viewer = {
        let url = origin.url("/live/bad/index.m3u8");
        std::thread::spawn(move || support::http_get(&url).map(|r| summary(&r)))
    };

    // Push ingest.
    let r = http_put(&origin.url("/ingest/cam/not-the-key/src.m3u8"), b"#EXTM3U\n").expect("PUT wrong key");
    assert_eq!(r.status, 403, "wrong stream key: {:?}", summary(&r));
    assert!(r.text().contains("key"), "a 403 says the key is wrong: {:?}", r.text());
    let r = http_put(&origin.url(&format!("/ingest/nope/{KEY}/src.m3u8")), b"#EXTM3U\n").expect("PUT undeclared");
    assert_eq!(r.status, 404, "undeclared channel: {:?}", summary(&r));
    assert!(r.text().contains("nope"), "the 404 names the channel: {:?}", r.text());
    let big = vec![0x47u8; 300_000];
    let r = http_put(&origin.url(&format!("/ingest/cam/{KEY}/0.ts")), &big).expect("PUT oversized segment");
    assert_eq!(r.status, 413, "segment over --max-segment-bytes: {:?}", summary(&r));
    assert!(r.text().contains("100000"), "the 413 states the limit: {:?}", r.text());
    let garbage = b"this is not a playlist\x00\xff\xfe garbage";
    let r = http_put(&origin.url(&format!("/ingest/cam/{KEY}/src.m3u8")), garbage).expect("PUT garbage playlist");
    assert_eq!(r.status, 422, "garbage playlist: {:?}", summary(&r));
    assert!(r.text().contains("not an HLS playlist"), "{:?}", r.text());
    for path in ["/ingest/cam/../src.m3u8", "/ingest/a$b/k/src.m3u8"] {
        let r = http_put(&origin.url(path), b"#EXTM3U\n").expect("PUT odd path");
        assert!((400..500).contains(&r.status), "PUT {path}: {:?}", summary(&r));
    }

    // Viewing.
    let r = origin.get("/live/nope/index.m3u8");
    assert_eq!(r.status, 404, "unknown channel: {:?}", summary(&r));
    assert!(r.text().contains("no channel named"), "{:?}", r.text());
    for path in ["/live/..%2f/index.m3u8", "/live/a$b/index.m3u8", "/live/%2e%2e/index.m3u8", "/live/demo/src/x.ts"] {
        let r = origin.get(path);
        assert_eq!(r.status, 400, "GET {path}: {:?}", summary(&r));
        assert!(!r.text().trim().is_empty(), "GET {path}: a 400 carries a reason");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"), "GET {path}");
    }
    let r = origin.get("/live/demo/src/1.ts");
    assert_eq!(r.status, 404, "a segment long gone: {:?}", summary(&r));

    // The HTML "source" is refused with a reason in the log.
    wait_until(MEDIA_WAIT, "the origin to log that the pull source is not HLS", || {
        origin.log().contains("not an HLS playlist").then_some(())
    });

    // Garbage on the QUIC port, then a relay with the wrong token and one with the right token.
    spray_garbage(quic);
    let intruder = Node::relay("wrong-token-relay", quic, "WRONG-token", false);
    wait_until(MEDIA_WAIT, "the origin to count the wrong-token relay as refused", || {
        (origin.metric("relaycast_peers_refused_total") >= 1.0).then_some(())
    });
    let r = intruder.get("/live/demo/index.m3u8");
    assert!((400..600).contains(&r.status), "the wrong-token relay served demo: {:?}", summary(&r));
    assert!(!r.text().contains("#EXTM3U"), "the wrong-token relay served a playlist: {:?}", r.text());
    let r = intruder.get(&format!("/live/demo/src/{}.ts", latest_seq(&origin, "demo")));
    assert!((400..600).contains(&r.status), "the wrong-token relay served a segment: {}", r.status);

    let relay = Node::relay("relay", quic, TOKEN, false);
    let seq = latest_seq(&relay, "demo");
    let seg = relay.get(&format!("/live/demo/src/{seq}.ts"));
    assert_eq!(seg.status, 200, "the right-token relay serves demo: {}", seg.text());
    assert!(seg.header("relaycast-origin-time").is_some());

    // The broken channel answered its viewer with an error.
    let bad = bad_viewer.join().expect("viewer thread").expect("GET /live/bad/index.m3u8");
    assert!((400..600).contains(&bad.0) && !bad.1.contains("#EXTM3U"), "broken pull channel: {bad:?}");

    // After all of that: still up, still serving.
    assert!(origin.proc.is_alive(), "the origin exited:\n{}", origin.log());
    let playlist = origin.url("/live/demo/index.m3u8");
    let streams = probe(&playlist);
    for kind in ["video", "audio"] {
        assert!(streams.iter().any(|s| s.codec_type == kind), "no {kind} in demo after the abuse: {streams:?}");
    }
    wait_until(MEDIA_WAIT, "cam to keep advancing after the bad pushes", || {
        (latest_seq(&origin, "cam") >= cam_before + 3).then_some(())
    });
    let names = origin.get("/api/v1/channels").text();
    for ch in ["\"cam\"", "\"demo\"", "\"bad\""] {
        assert!(names.contains(ch), "channel {ch} missing from {names}");
    }
    eprintln!("bad-input test took {:?}", started.elapsed());
}

/// A relay refused for a wrong cluster token must say so in its own log: an operator looking
/// at the relay otherwise sees only "connection lost" and retries forever.
#[test]
fn wrong_token_relay_logs_why_it_was_refused() {
    let origin = Node::origin("origin", TOKEN, &[]);
    // Named so that its own name cannot satisfy the check below.
    let relay = Node::relay("intruder", origin.quic.expect("origin accepts relays"), "WRONG", false);
    // Two refusals: the relay has received (and logged) the first one's close before redialling.
    wait_until(Duration::from_secs(30), "the origin to refuse the relay twice", || {
        (origin.metric("relaycast_peers_refused_total") >= 2.0).then_some(())
    });
    assert!(origin.log().contains("wrong cluster token"), "the origin logs the reason:\n{}", origin.log());
    let log = relay.log();
    assert!(
        log.to_ascii_lowercase().contains("token"),
        "the refused relay never logs why (the origin closed the connection with \"wrong cluster \
         token\", but transport.rs serve_connection reports the control stream's ReadError with \
         to_string(), which is just \"connection lost\"); relay log:\n{log}"
    );
}

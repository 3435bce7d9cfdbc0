//! Broadcasters in (F3, F4): ffmpeg publishes RTMP to an origin's `--rtmp` listener (no ffmpeg
//! in the server's path), the origin packages it as low-latency CMAF parts, a relay serves it,
//! ffprobe decodes it and hls.js plays it. Wrong keys, unknown channels, a second publisher and
//! garbage on the port are refused with a reason and leave the live channel alone; a publisher
//! that drops and comes back continues the channel after one discontinuity, its numbers never
//! going backwards, while an ffmpeg reading the relay keeps decoding.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{
    MEDIA_WAIT, Node, Proc, counter_with, ffmpeg_publish, free_tcp_port, play_in_browser, probe, video_size, wait_until,
};

const TOKEN: &str = "ingest-token";
const KEY: &str = "s3cret";

/// (media sequence, discontinuity sequence, newest segment) of an LL playlist.
fn position(playlist: &str) -> Option<(u64, u64, u64)> {
    let tag = |name: &str| playlist.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
    let newest = playlist.lines().rfind(|l| l.ends_with(".m4s") && !l.starts_with('#'))?;
    Some((
        tag("#EXT-X-MEDIA-SEQUENCE:")?,
        tag("#EXT-X-DISCONTINUITY-SEQUENCE:")?,
        newest.trim_end_matches(".m4s").parse().ok()?,
    ))
}

/// The origin's per-publisher metrics for `channel` show a stream coming in: bytes, video and
/// audio frames, and the publisher's 1 s keyframe interval.
fn assert_publisher_metrics(origin: &Node, channel: &str, protocol: &str) {
    let metrics = origin.get("/metrics").text();
    let ch = format!("channel=\"{channel}\"");
    let bytes = counter_with(&metrics, "relaycast_publisher_bytes_total", &format!("protocol=\"{protocol}\""));
    assert!(bytes > 10_000.0, "bytes in: {bytes}\n{metrics}");
    for kind in ["video", "audio"] {
        let frames = counter_with(&metrics, "relaycast_publisher_frames_total", &format!("kind=\"{kind}\""));
        assert!(frames >= 25.0, "{kind} frames: {frames}\n{metrics}");
    }
    let interval = counter_with(&metrics, "relaycast_publisher_keyframe_interval_seconds", &ch);
    assert!((0.9..=1.1).contains(&interval), "keyframe interval {interval} s (the publisher sends 1 s)\n{metrics}");
}

/// ffmpeg exits non-zero at once when the server refuses the publish.
fn refused(url: &str) -> String {
    let mut p = ffmpeg_publish("ffmpeg-refused", "flv", url);
    let status = wait_until(Duration::from_secs(20), "a refused publisher exits", || p.child().try_wait().unwrap());
    assert!(!status.success(), "the publish to {url} was not refused");
    p.log()
}

#[test]
fn rtmp_publishers_go_live_are_checked_and_reconnect_without_a_gap() {
    support::require_ffmpeg();
    let port = free_tcp_port();
    let rtmp = format!("127.0.0.1:{port}");
    let origin =
        Node::origin("origin", TOKEN, &["--push", &format!("cam={KEY}"), "--push", "other=k2", "--rtmp", &rtmp]);
    let relay = Node::relay("relay", origin.quic.unwrap(), TOKEN, false);
    let url = format!("rtmp://{rtmp}/live/cam?key={KEY}");
    let mut publisher = ffmpeg_publish("ffmpeg-rtmp", "flv", &url);

    let playlist = wait_until(MEDIA_WAIT, "the relay lists the RTMP channel's parts", || {
        let text = relay.get("/live/cam/src/index.m3u8").text();
        (text.matches("#EXTINF").count() >= 3 && text.contains("#EXT-X-PART:")).then_some(text)
    });
    // Every segment starts on a keyframe: its first part is independent.
    let firsts: Vec<&str> =
        playlist.lines().filter(|l| l.starts_with("#EXT-X-PART:") && l.contains(".0.m4s\"")).collect();
    assert!(!firsts.is_empty() && firsts.iter().all(|l| l.contains("INDEPENDENT=YES")), "{playlist}");
    let streams = probe(&relay.url("/live/cam/src/index.m3u8"));
    assert_eq!(video_size(&streams), "320x180", "{streams:?}");
    assert!(streams.iter().any(|s| s.codec_type == "audio"), "{streams:?}");
    let channels = origin.get("/api/v1/channels").text();
    assert!(channels.contains("rtmp · low latency"), "{channels}");
    assert_publisher_metrics(&origin, "cam", "rtmp");

    // Refusals, each with a reason in the origin's log naming the channel and the peer.
    refused(&format!("rtmp://{rtmp}/live/cam?key=wrong"));
    refused(&format!("rtmp://{rtmp}/live/nope?key={KEY}"));
    refused(&url); // a second publisher on a live channel
    let log = origin.log();
    assert!(log.contains("publish refused: wrong stream key") && log.contains("channel=cam"), "{log}");
    assert!(log.contains("already has a publisher"), "{log}");
    // Garbage on the port, and a client that stops in the middle of the handshake.
    for junk in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[3u8; 700][..], &[0xFFu8; 100_000][..]] {
        let mut s = TcpStream::connect(&rtmp).unwrap();
        let _ = s.write_all(junk);
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut sink = Vec::new();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = s.read_to_end(&mut sink);
    }
    // A client that shakes hands, sets an absurd chunk size and announces a 16 MiB message it
    // never sends.
    abusive_rtmp_client(&rtmp);
    // A chunk stream the fuzzer found that panics rml_rtmp's deserializer: contained, this
    // connection dropped with a reason, the origin and the live publisher unaffected.
    let crash = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions/rtmp"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .next()
        .expect("a committed regression input");
    rtmp_client_sending(&rtmp, &crash[1..]);
    wait_until(Duration::from_secs(10), "the origin names the broken chunk stream", || {
        origin.log().contains("the chunk stream broke the RTMP parser").then_some(())
    });
    assert!(publisher.is_alive(), "the live publisher was not disturbed: {}", publisher.log());

    // hls.js plays the channel from the relay.
    let run = play_in_browser(&relay.url("/live/cam/index.m3u8"), 12, r#"{"lowLatencyMode":true}"#);
    let summary = run.summary().clone();
    assert!(run.status.success() && summary["played"].as_f64().unwrap_or(0.0) >= 8.0, "hls.js: {summary}");

    // An ffmpeg reading the relay while the publisher drops and comes back.
    let mut reader = {
        let mut cmd = std::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i", &relay.url("/live/cam/src/index.m3u8")])
            .args(["-t", "25", "-f", "null", "-"]);
        Proc::spawn("ffmpeg-reader", cmd)
    };
    let before = position(&relay.get("/live/cam/src/index.m3u8").text()).unwrap();
    drop(publisher);
    std::thread::sleep(Duration::from_secs(2));
    let again = ffmpeg_publish("ffmpeg-rtmp-2", "flv", &url);
    let mut seen = vec![before];
    let after = wait_until(MEDIA_WAIT, "the channel continues after the reconnect", || {
        let p = position(&relay.get("/live/cam/src/index.m3u8").text())?;
        seen.push(p);
        (p.1 > before.1 && p.2 >= before.2 + 4).then_some(p)
    });
    assert_eq!(after.1, before.1 + 1, "one discontinuity: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1].0 >= w[0].0 && w[1].2 >= w[0].2), "never backwards: {seen:?}");
    let status = wait_until(Duration::from_secs(60), "the reader to finish", || reader.child().try_wait().unwrap());
    assert!(status.success(), "ffmpeg reading the relay across the reconnect: {}", reader.log());

    // Without a publisher for --publisher-timeout, the channel shows as offline.
    let live = |node: &Node| -> Option<bool> {
        let v: serde_json::Value = serde_json::from_slice(&node.get("/api/v1/channels").body).ok()?;
        v["channels"].as_array()?.iter().find(|c| c["name"] == "cam")?["live"].as_bool()
    };
    assert_eq!(live(&origin), Some(true));
    drop(again);
    wait_until(Duration::from_secs(20), "the channel to show offline", || (live(&origin) == Some(false)).then_some(()));
}

/// RTMP's simple handshake by hand, then a Set Chunk Size of 2^31-1 and the header of a 16 MiB
/// video message whose body never comes; the server must drop the connection, nothing else.
fn abusive_rtmp_client(addr: &str) {
    // fmt 0, chunk stream 2: Set Chunk Size (type 1) = 0x7FFFFFFF.
    let mut msg = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
    msg.extend_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
    // fmt 0, chunk stream 6: a video message (type 9) of 0xFFFFFF bytes, 3 of them sent.
    msg.extend_from_slice(&[0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0, 0x17, 1, 0]);
    rtmp_client_sending(addr, &msg);
}

/// Shake hands by hand, send `chunks`, and wait for the server to close.
fn rtmp_client_sending(addr: &str, chunks: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c1 = vec![0u8; 1536];
    c1.iter_mut().enumerate().skip(8).for_each(|(i, b)| *b = (i * 7) as u8);
    s.write_all(&[3]).unwrap();
    s.write_all(&c1).unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 1536 * 2];
    s.read_exact(&mut s0s1s2).expect("the server answers the handshake");
    s.write_all(&s0s1s2[1..1537]).unwrap(); // C2 echoes S1
    let _ = s.write_all(chunks);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

/// Stream ids in both conventions, with and without AES: Debian ffmpeg's libsrt as the caller.
#[test]
fn srt_publishers_with_and_without_a_passphrase() {
    support::require_ffmpeg();
    let udp = |port: u16| format!("127.0.0.1:{port}");
    // Plain: `publish:CHANNEL:KEY`, through a relay.
    let plain = udp(free_udp_port());
    let origin = Node::origin("origin", TOKEN, &["--push", &format!("cam={KEY}"), "--srt", &plain]);
    let relay = Node::relay("relay", origin.quic.unwrap(), TOKEN, false);
    let _publisher = ffmpeg_publish("ffmpeg-srt", "mpegts", &format!("srt://{plain}?streamid=publish:cam:{KEY}"));
    wait_until(MEDIA_WAIT, "the relay lists the SRT channel's parts", || {
        let text = relay.get("/live/cam/src/index.m3u8").text();
        (text.matches("#EXTINF").count() >= 2).then_some(())
    });
    let streams = probe(&relay.url("/live/cam/src/index.m3u8"));
    assert_eq!(video_size(&streams), "320x180", "{streams:?}");
    assert!(origin.get("/api/v1/channels").text().contains("srt · low latency"));
    assert_publisher_metrics(&origin, "cam", "srt");
    // Datagrams that are not SRT do not disturb it.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for size in [1, 16, 1500] {
        let _ = junk.send_to(&vec![0xA5; size], &plain);
    }

    // Encrypted: `#!::r=CHANNEL,m=publish,s=KEY` (URL-encoded, as ffmpeg needs it).
    let secret = udp(free_udp_port());
    let passphrase = "correct-horse-battery";
    let enc = Node::origin(
        "origin-aes",
        TOKEN,
        &["--push", &format!("cam={KEY}"), "--srt", &secret, "--srt-passphrase", passphrase],
    );
    let id = format!("%23%21%3A%3Ar%3Dcam%2Cm%3Dpublish%2Cs%3D{KEY}");
    let srt_url = |extra: &str| format!("srt://{secret}?streamid={id}{extra}");
    let refused_srt = |extra: &str| {
        let mut p = ffmpeg_publish("ffmpeg-srt-refused", "mpegts", &srt_url(extra));
        wait_until(Duration::from_secs(20), "a refused SRT publisher exits", || p.child().try_wait().unwrap())
    };
    assert!(!refused_srt("").success(), "no passphrase is refused");
    assert!(!refused_srt("&passphrase=not-the-right-one&pbkeylen=16").success(), "a wrong one too");
    let _encrypted =
        ffmpeg_publish("ffmpeg-srt-aes", "mpegts", &srt_url(&format!("&passphrase={passphrase}&pbkeylen=16")));
    wait_until(MEDIA_WAIT, "the encrypted channel lists parts", || {
        (enc.get("/live/cam/src/index.m3u8").text().matches("#EXTINF").count() >= 2).then_some(())
    });
    let streams = probe(&enc.url("/live/cam/src/index.m3u8"));
    assert_eq!(video_size(&streams), "320x180", "{streams:?}");
    assert!(enc.log().contains("needs the passphrase"), "the refusal names the reason");
    assert!(relay.get("/live/cam/src/index.m3u8").text().contains("#EXTINF"), "the plain channel still plays");
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("bind udp").port()
}

/// One RTMP publish feeds a bitrate ladder (`--ladder lad=channel:cam`): no second listener,
/// the ladder reads the channel from the origin itself.
#[test]
fn an_rtmp_channel_feeds_a_ladder() {
    support::require_ffmpeg();
    let rtmp = format!("127.0.0.1:{}", free_tcp_port());
    let args = [
        "--push",
        &format!("cam={KEY}"),
        "--rtmp",
        &rtmp,
        "--ladder",
        "lad=channel:cam",
        "--ladder-rungs",
        "180,90",
        "--ladder-preset",
        "ultrafast",
        "--ladder-segment-s",
        "1",
    ];
    let origin = Node::origin("origin", TOKEN, &args);
    let _publisher = ffmpeg_publish("ffmpeg-rtmp", "flv", &format!("rtmp://{rtmp}/live/cam?key={KEY}"));
    let master = wait_until(Duration::from_secs(90), "the ladder's two renditions", || {
        let text = origin.get("/live/lad/index.m3u8").text();
        let ready = ["180p", "90p"]
            .iter()
            .all(|r| origin.get(&format!("/live/lad/{r}/index.m3u8")).text().matches("#EXTINF").count() >= 2);
        (text.matches("#EXT-X-STREAM-INF").count() == 2 && ready).then_some(text)
    });
    assert!(master.contains("RESOLUTION=160x90"), "{master}");
    let streams = probe(&origin.url("/live/lad/90p/index.m3u8"));
    assert_eq!(video_size(&streams), "160x90", "{streams:?}");
}

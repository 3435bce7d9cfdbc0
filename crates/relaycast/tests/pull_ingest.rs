//! Pull ingest of a live multi-variant HLS source: ffmpeg writes a master playlist with two
//! variants (320x180 and 160x90, each with audio) into a folder served by a plain HTTP server,
//! and an origin pulls it with `--pull tv=URL`.
//!
//! Proves that the origin, and a relay fed by it over QUIC, serve `/live/tv/index.m3u8` as a
//! master playlist listing both variants (`v0`, `v1`) with a BANDWIDTH, and that each variant's
//! media playlist lists segments that decode at that variant's resolution.

mod support;

use std::process::{Command, Stdio};
use std::time::Instant;

use support::{
    MEDIA_WAIT, Node, Proc, Response, TempDir, http_get, probe_bytes, require_ffmpeg, require_python, segment_uris,
    serve_dir, video_size, wait_until,
};

/// The variants ffmpeg writes, in master-playlist order.
const VARIANTS: [(&str, &str); 2] = [("v0", "320x180"), ("v1", "160x90")];

/// One `#EXT-X-STREAM-INF` entry: its attributes and URI.
#[derive(Debug)]
struct Variant {
    attrs: String,
    uri: String,
}

impl Variant {
    fn attr(&self, name: &str) -> Option<&str> {
        // Attribute values here (BANDWIDTH, RESOLUTION) hold no commas; CODECS is quoted.
        self.attrs.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }
}

fn variants(master: &str) -> Vec<Variant> {
    let mut out = Vec::new();
    let mut lines = master.lines().map(str::trim).filter(|l| !l.is_empty());
    while let Some(line) = lines.next() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            let uri = lines.next().unwrap_or_default().to_string();
            out.push(Variant { attrs: attrs.to_string(), uri });
        }
    }
    out
}

/// ffmpeg writing a live two-variant HLS ladder into `dir`.
fn ladder(dir: &TempDir) -> Proc {
    let out = |name: &str| dir.join(name).to_str().expect("UTF-8 temp path").to_string();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-filter_complex", "[0:v]split=2[big][s];[s]scale=160:90[small]"])
        .args(["-map", "[big]", "-map", "1:a", "-map", "[small]", "-map", "1:a"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-b:v:0", "300k", "-b:v:1", "100k"])
        .args(["-c:a", "aac", "-b:a", "48k"])
        .args(["-f", "hls", "-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments"])
        .args(["-master_pl_name", "master.m3u8", "-var_stream_map", "v:0,a:0 v:1,a:1"])
        .args(["-hls_segment_filename", &out("v%v_%d.ts"), &out("v%v.m3u8")])
        .stdout(Stdio::null());
    Proc::spawn("ffmpeg-ladder", cmd)
}

/// Wait until `node` serves `/live/tv/index.m3u8` as a master listing both variants. Also
/// returns the first successful (200) response it got, whatever it was.
fn master_at(node: &Node) -> (String, Vec<Variant>) {
    let mut first_ok: Option<String> = None;
    let variants = wait_until(MEDIA_WAIT, &format!("a two-variant master playlist at {}", node.http), || {
        let r = node.get("/live/tv/index.m3u8");
        if r.status == 200 && first_ok.is_none() {
            first_ok = Some(r.text());
        }
        let v = variants(&r.text());
        (r.status == 200 && v.len() == 2).then_some(v)
    });
    (first_ok.expect("a master was served"), variants)
}

/// Whether a channel playlist lists both variants (rather than one variant's segments).
fn is_full_master(playlist: &str) -> bool {
    variants(playlist).len() == 2 && !playlist.contains("#EXTINF")
}

/// Check the master's variants, then fetch and probe the newest segment of each.
fn check_variants(who: &str, node: &Node, master: &[Variant], scratch: &TempDir) {
    for ((name, size), v) in VARIANTS.iter().zip(master) {
        assert_eq!(v.uri, format!("{name}/index.m3u8"), "{who}: variant order and names: {master:?}");
        let bandwidth = v.attr("BANDWIDTH").and_then(|b| b.parse::<u64>().ok());
        assert!(bandwidth.is_some_and(|b| b > 0), "{who}: {name} has no BANDWIDTH: {master:?}");
        if let Some(res) = v.attr("RESOLUTION") {
            assert_eq!(res, *size, "{who}: {name} advertises the wrong resolution");
        }
        let media: Response = node.get(&format!("/live/tv/{name}/index.m3u8"));
        assert_eq!(media.status, 200, "{who}: {name} media playlist: {}", media.text());
        assert_eq!(media.header("content-type"), Some("application/vnd.apple.mpegurl"));
        let uris = segment_uris(&media.text());
        assert!(!uris.is_empty(), "{who}: {name} lists no segments: {}", media.text());
        let uri = uris.last().expect("non-empty");
        let seg = node.get(&format!("/live/tv/{name}/{uri}"));
        assert_eq!(seg.status, 200, "{who}: {name}/{uri}: {}", seg.text());
        let streams = probe_bytes(scratch, &format!("{who}-{name}.ts"), &seg.body);
        assert_eq!(video_size(&streams), *size, "{who}: a {name} segment has the wrong picture size");
        assert!(streams.iter().any(|s| s.codec_type == "audio"), "{who}: {name}/{uri} has no audio: {streams:?}");
    }
}

#[test]
fn pulled_master_playlist_is_served_with_both_variants() {
    require_ffmpeg();
    require_python();
    let started = Instant::now();
    let source = TempDir::new("ladder");
    let _ffmpeg = ladder(&source);
    let (_server, port) = serve_dir(&source);
    let base = format!("http://127.0.0.1:{port}");
    // The source is live once the server hands out both media playlists with segments.
    wait_until(MEDIA_WAIT, "the ffmpeg ladder to be served over HTTP", || {
        let master = http_get(&format!("{base}/master.m3u8")).ok()?;
        let ready = master.status == 200
            && variants(&master.text()).len() == 2
            && ["v0", "v1"].iter().all(|v| {
                http_get(&format!("{base}/{v}.m3u8"))
                    .is_ok_and(|r| r.status == 200 && segment_uris(&r.text()).len() >= 2)
            });
        ready.then_some(())
    });

    let pull = format!("tv={base}/master.m3u8");
    let origin = Node::origin("origin", "pull-token", &["--pull", &pull]);
    let relay = Node::relay("relay", origin.quic.expect("origin accepts relays"), "pull-token", false);
    let scratch = TempDir::new("pull-probe");

    let (first_at_origin, at_origin) = master_at(&origin);
    // The origin knows the source's resolutions; it must pass them on.
    for ((_, size), v) in VARIANTS.iter().zip(&at_origin) {
        assert_eq!(v.attr("RESOLUTION"), Some(*size), "origin master: {at_origin:?}");
    }
    check_variants("origin", &origin, &at_origin, &scratch);

    // The relay has not carried `tv` yet: this first request makes it subscribe upstream.
    let (first_at_relay, at_relay) = master_at(&relay);
    for ((_, size), v) in VARIANTS.iter().zip(&at_relay) {
        assert_eq!(v.attr("RESOLUTION"), Some(*size), "relay master: {at_relay:?}");
    }
    check_variants("relay", &relay, &at_relay, &scratch);

    let channels = origin.get("/api/v1/channels").text();
    assert!(channels.contains("\"tv\"") && channels.contains("\"pull\""), "{channels}");

    // A player loads the channel URL once and decides from that answer whether it has a master
    // (and may switch variants) or a media playlist (which it then reloads). The answer must
    // not depend on which variant's first segment happened to arrive first.
    let flipped: Vec<String> = [("origin", &first_at_origin), ("relay", &first_at_relay)]
        .into_iter()
        .filter(|(_, first)| !is_full_master(first))
        .map(|(who, first)| format!("--- first answer of the {who} ---\n{first}"))
        .collect();
    assert!(
        flipped.is_empty(),
        "the first /live/tv/index.m3u8 was not the two-variant master (http.rs main_playlist picks \
         master vs media from the renditions that already hold segments, so a two-variant channel \
         is served as one variant's media playlist until the other's first segment arrives, and then \
         flips to a master under the same URL):\n{}",
        flipped.join("\n")
    );

    // The same source pulled by a low-latency origin: each variant packaged as CMAF parts.
    let ll = Node::origin("origin-ll", "pull-token", &["--pull", &pull, "--low-latency"]);
    let (_, at_ll) = master_at(&ll);
    for ((name, size), v) in VARIANTS.iter().zip(&at_ll) {
        assert!(v.attr("BANDWIDTH").is_some_and(|b| b != "0"), "the source's rate is kept: {at_ll:?}");
        let playlist = wait_until(MEDIA_WAIT, "an LL playlist with parts", || {
            let text = ll.get(&format!("/live/tv/{name}/index.m3u8")).text();
            (text.contains("#EXT-X-PART:") && text.contains("#EXT-X-MAP:URI=\"init.mp4\"")).then_some(text)
        });
        assert!(playlist.contains("INDEPENDENT=YES"), "{playlist}");
        let streams = support::probe(&ll.url(&format!("/live/tv/{name}/index.m3u8")));
        assert_eq!(video_size(&streams), *size, "{name} decodes from its fMP4 parts: {streams:?}");
    }
    assert!(ll.get("/api/v1/channels").text().contains("pull · low latency"));
    eprintln!("pull test took {:?}", started.elapsed());
}

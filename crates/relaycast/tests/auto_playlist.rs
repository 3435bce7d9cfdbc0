//! Server-side ABR's auto playlist (F30) with real players: an edge of an ffmpeg ladder serves
//! `/live/lad/auto.m3u8` to ffmpeg and to hls.js in headless Chromium at the same time; its
//! egress cap is lowered, then raised. Both players get the smallest rendition, then the largest
//! again (ffmpeg's decoded frame sizes go 480x270 → 160x90 → 480x270; the browser's video element
//! reports the new sizes), with no decoder error — whereas the same renditions' raw segments
//! spliced without the edge's continuity renumbering make ffmpeg report corrupt packets. Also
//! checks the response headers (rendition, Content-Location, CMSD) and the bad-input answers.

mod ladder_support;
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use ladder_support::{TOKEN, ladder_origin, sessions, set_egress};
use support::{MEDIA_WAIT, Node, Proc, TempDir, http_get, play_in_browser, run, segment_uris, wait_until};

/// Distinct consecutive frame sizes in ffmpeg `showinfo` output, e.g. ["480x270", "160x90", ...].
fn size_runs(log: &str) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for size in log.lines().filter(|l| l.contains("Parsed_showinfo")).filter_map(|l| {
        let s = l.split(" s:").nth(1)?;
        Some(s.split_whitespace().next()?.to_string())
    }) {
        if runs.last() != Some(&size) {
            runs.push(size);
        }
    }
    runs
}

/// hls.js played on with no fatal error, its picture going 480 → 160 → 480 pixels wide.
fn followed_down_and_up(played: &support::PlayerRun) {
    let summary = played.summary().clone();
    assert!(played.status.success(), "hls.js failed: {:?}", played.events);
    assert!(played.of("error").iter().all(|e| e["fatal"] != true), "{:?}", played.of("error"));
    let widths: Vec<u64> = played.of("resize").iter().filter_map(|e| e["width"].as_u64()).collect();
    let w_first = widths.iter().position(|&w| w == 480);
    let w_small = w_first.and_then(|f| widths.iter().skip(f).position(|&w| w == 160).map(|p| p + f));
    let w_back = w_small.and_then(|s| widths.iter().skip(s).position(|&w| w == 480));
    assert!(w_back.is_some(), "the browser's picture went 480 → 160 → 480 wide: {widths:?}");
    assert!(summary["played"].as_f64().unwrap_or(0.0) >= 10.0, "hls.js played on: {summary}");
}

fn problems(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let l = l.to_lowercase();
            ["corrupt", "error", "invalid", "non monoton", "non-monoton", "continuity"].iter().any(|w| l.contains(w))
                && !l.contains("skip ('#ext-x-discontinuity")
        })
        .map(String::from)
        .collect()
}

/// Wait until at least two auto sessions other than `except` are being served and all of them
/// got `rendition`; return the highest segment number served.
fn all_on(edge: &Node, rendition: &str, what: &str, except: &str) -> u64 {
    wait_until(MEDIA_WAIT, what, || {
        let s = sessions(edge);
        let served: Vec<_> = s.iter().filter(|(id, r, _)| r.is_some() && id != except).collect();
        (served.len() >= 2 && served.iter().all(|(_, r, _)| r.as_deref() == Some(rendition)))
            .then(|| served.iter().filter_map(|(_, _, q)| *q).max().unwrap_or(0))
    })
}

#[test]
fn players_follow_server_side_switches_without_decoder_errors() {
    support::require_ffmpeg();
    let dir = TempDir::new("auto");
    let origin = ladder_origin(&dir, &[]);
    let edge = Node::start(
        "edge",
        &[
            "relay",
            "--name",
            "edge",
            "--parent",
            &origin.quic.unwrap().to_string(),
            "--http",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--egress-kbps",
            "8000",
        ],
        false,
    );
    let auto = edge.url("/live/lad/auto.m3u8");
    wait_until(MEDIA_WAIT, "the auto playlist lists segments", || {
        let r = http_get(&edge.url("/live/lad/auto/index.m3u8?s=1")).ok()?;
        (r.status == 200 && segment_uris(&r.text()).len() >= 3).then_some(())
    });

    // What the edge says about a segment it sends.
    let r = edge.get("/live/lad/auto.m3u8");
    assert_eq!(r.status, 302);
    let location = r.header("location").expect("a redirect").to_string();
    assert!(location.starts_with("auto/index.m3u8?s="), "{location}");
    let playlist = edge.get(&format!("/live/lad/{location}")).text();
    let uri = segment_uris(&playlist).last().cloned().unwrap();
    assert!(uri.contains(".ts?s="), "segment URIs carry the session: {uri}");
    let seg = edge.get(&format!("/live/lad/auto/{uri}"));
    assert_eq!(seg.status, 200);
    let rendition = seg.header("relaycast-rendition").expect("Relaycast-Rendition").to_string();
    assert!(["270p", "180p", "90p"].contains(&rendition.as_str()), "{rendition}");
    let own = seg.header("content-location").expect("Content-Location").to_string();
    assert!(own.starts_with(&format!("/live/lad/{rendition}/")), "{own}");
    assert_eq!(edge.get(&own).body.len(), seg.body.len(), "Content-Location names the same segment");
    assert!(seg.header("cmsd-static").is_some_and(|v| v.starts_with("br=")), "{:?}", seg.headers);
    assert!(seg.header("cmsd-dynamic").is_some_and(|v| v.contains("mb=")), "{:?}", seg.headers);
    assert!(seg.header("cache-control").is_some_and(|v| v.contains("no-store")), "per-viewer bytes are not cached");
    // A browser page on another origin may read these headers (CORS).
    let out = run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "-H", "Origin: http://127.0.0.1:1"])
        .arg(edge.url(&format!("/live/lad/auto/{uri}"))));
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.contains("access-control-expose-headers:") && head.contains("relaycast-rendition"), "{head}");

    // Bad input gets reasons.
    assert_eq!(edge.get("/live/lad/auto/1.ts").status, 400, "no session id");
    assert_eq!(edge.get("/live/lad/auto/1.ts?s=zz").status, 400, "malformed session id");
    assert_eq!(edge.get("/live/lad/auto/x.ts?s=1").status, 400, "not a segment name");
    assert_eq!(edge.get("/live/nope/auto.m3u8").status, 404, "unknown channel");
    assert_eq!(edge.get("/live/lad/auto/1.ts?s=1").status, 404, "a segment not held");

    // Two players at once: ffmpeg (decoding, printing every frame's size) and hls.js.
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg
        .args(["-hide_banner", "-nostdin", "-loglevel", "info", "-i", &auto])
        .args(["-vf", "showinfo", "-f", "null", "-"])
        .stdout(Stdio::null());
    let ffmpeg = Proc::spawn("ffmpeg-auto", ffmpeg);
    let browser_url = auto.clone();
    let browser = std::thread::spawn(move || play_in_browser(&browser_url, 45, "{}"));

    let mine = location.rsplit("s=").next().unwrap().to_string();
    let top = all_on(&edge, "270p", "both players on 270p", &mine);
    set_egress(&edge, 150);
    let low = all_on(&edge, "90p", "both players down to 90p", &mine);
    assert!(low > top);
    wait_until(MEDIA_WAIT, "three more segments at 90p", || {
        sessions(&edge).iter().filter_map(|(_, _, q)| *q).max().is_some_and(|q| q >= low + 3).then_some(())
    });
    set_egress(&edge, 8000);
    let back = all_on(&edge, "270p", "both players back up on 270p", &mine);
    wait_until(MEDIA_WAIT, "two more segments at 270p", || {
        sessions(&edge).iter().filter_map(|(_, _, q)| *q).max().is_some_and(|q| q >= back + 2).then_some(())
    });
    run(Command::new("kill").args(["-INT", &ffmpeg.id().to_string()]));
    let log = wait_until(Duration::from_secs(20), "ffmpeg to finish", || {
        let log = ffmpeg.log();
        log.contains("video:").then_some(log)
    });

    let runs = size_runs(&log);
    let pos = |size: &str, from: usize| runs.iter().skip(from).position(|s| s == size).map(|p| p + from);
    let first = pos("480x270", 0).unwrap_or_else(|| panic!("ffmpeg never decoded 480x270: {runs:?}"));
    let small = pos("160x90", first).unwrap_or_else(|| panic!("no switch down to 160x90: {runs:?}"));
    pos("480x270", small).unwrap_or_else(|| panic!("no switch back up to 480x270: {runs:?}"));
    let bad = problems(&log);
    assert!(bad.is_empty(), "ffmpeg reported problems across the switches: {bad:#?}");

    followed_down_and_up(&browser.join().expect("browser thread"));
}

#[test]
fn raw_renditions_spliced_without_renumbering_are_corrupt() {
    // The control for the test above: what the edge's continuity renumbering prevents.
    support::require_ffmpeg();
    let dir = TempDir::new("auto-raw");
    let origin = ladder_origin(&dir, &[]);
    let seqs = wait_until(MEDIA_WAIT, "four segments in 270p and 90p", || {
        let listing = |r: &str| {
            let resp = origin.get(&format!("/live/lad/{r}/index.m3u8"));
            (resp.status == 200).then(|| segment_uris(&resp.text()))
        };
        let (a, b) = (listing("270p")?, listing("90p")?);
        let common: Vec<u64> =
            a.iter().map(|u| support::seq_of(u)).filter(|s| b.iter().any(|u| support::seq_of(u) == *s)).collect();
        (common.len() >= 4).then_some(common)
    });
    let mut spliced = Vec::new();
    for (i, seq) in seqs.iter().take(4).enumerate() {
        let r = if i % 2 == 0 { "270p" } else { "90p" };
        spliced.extend(origin.get(&format!("/live/lad/{r}/{seq}.ts")).body);
    }
    let path = dir.join("spliced.ts");
    std::fs::write(&path, &spliced).unwrap();
    let out = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "warning", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("corrupt"), "splicing renditions raw breaks continuity: {stderr}");
}

/// The same at low latency: the origin packages the ladder as CMAF parts (`--low-latency`), the
/// edge's auto playlist is LL-HLS with each segment in its chosen rendition's folder, and hls.js
/// in low-latency mode follows the switches down and up (a new `EXT-X-MAP` at each) with no
/// fatal error.
#[test]
fn low_latency_auto_playlist_switches_renditions_per_segment() {
    support::require_ffmpeg();
    let dir = TempDir::new("auto-ll");
    let origin = ladder_origin(&dir, &["--low-latency"]);
    let parent = origin.quic.unwrap().to_string();
    let edge = Node::start(
        "edge",
        &[
            "relay",
            "--name",
            "edge",
            "--parent",
            &parent,
            "--http",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--egress-kbps",
            "8000",
        ],
        false,
    );
    let playlist = wait_until(MEDIA_WAIT, "the auto playlist lists parts", || {
        let r = http_get(&edge.url("/live/lad/auto/index.m3u8?s=1")).ok()?;
        let text = r.text();
        (r.status == 200 && text.contains("#EXT-X-PART:") && text.contains("#EXT-X-PRELOAD-HINT")).then_some(text)
    });
    // Every rendition is low latency too, and the master keeps the ladder's rates.
    wait_until(MEDIA_WAIT, "the 90p rendition's own LL playlist", || {
        let own = edge.get("/live/lad/90p/index.m3u8").text();
        (own.contains("#EXT-X-PART:") && own.contains("#EXT-X-MAP:URI=\"init.mp4\"")).then_some(())
    });
    let master = edge.get("/live/lad/index.m3u8").text();
    assert_eq!(master.matches("BANDWIDTH=").count(), 3, "{master}");
    assert!(origin.get("/api/v1/channels").text().contains("ladder · low latency"));

    let map = playlist.lines().find(|l| l.starts_with("#EXT-X-MAP:URI=\"")).expect("an EXT-X-MAP");
    assert!(map.ends_with("/init.mp4?s=1\""), "the init is the chosen rendition's: {map}");
    let part = playlist.lines().rev().find_map(|l| l.split("URI=\"").nth(1)).unwrap().trim_end_matches('"');
    let part = part.split('"').next().unwrap();
    let r = edge.get(&format!("/live/lad/auto/{part}"));
    assert_eq!(r.status, 200, "{part}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    assert!(r.header("relaycast-rendition").is_some() && r.header("relaycast-origin-time").is_some());
    assert_eq!(edge.get("/live/lad/auto/90p/x.m4s?s=1").status, 400, "not a part name");
    assert_eq!(edge.get("/live/lad/auto/90p/init.mp4").status, 400, "no session id");
    assert_eq!(edge.get("/live/lad/auto/index.m3u8?s=1&_HLS_msn=nope").status, 400, "bad directive");

    let auto = edge.url("/live/lad/auto.m3u8");
    let config = r#"{"lowLatencyMode": true}"#;
    let browser = std::thread::spawn(move || play_in_browser(&auto, 45, config));
    let on = |rendition: &str, what: &str| {
        wait_until(MEDIA_WAIT, what, || {
            let s = sessions(&edge);
            s.iter().any(|(id, r, _)| id != "1" && r.as_deref() == Some(rendition)).then_some(())
        })
    };
    on("270p", "the browser on 270p");
    set_egress(&edge, 150);
    on("90p", "the browser down to 90p");
    std::thread::sleep(Duration::from_secs(4));
    set_egress(&edge, 8000);
    on("270p", "the browser back up on 270p");

    followed_down_and_up(&browser.join().expect("browser thread"));
}

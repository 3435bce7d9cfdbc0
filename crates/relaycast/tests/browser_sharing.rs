//! Browsers share (issue 20, F51/F53/F54): the node's own player page — hls.js with
//! p2p-media-loader, pointed at the tracker's WebTorrent side — in headless Chromium pages that
//! talk WebRTC over loopback, behind an edge whose egress is capped below what they need. Four
//! pages watch a running stream with sharing off, then on: most bytes come from peers and no
//! page stalls more than without. Then two pages and one that lies to them (a test hook alters
//! what it sends): the liar is caught by the signature check, reported and left out by the
//! tracker. Every segment an honest page played is the origin's.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{Node, TempDir, sha256_hex};

const TOKEN: &str = "browser-token";
/// The edge's viewer egress cap: about two and a half times the sample stream's ~0.4 Mbit/s,
/// less than four pages need.
const EDGE_KBPS: &str = "1000";
const PAGES: usize = 4;

/// `web/sharing-check.mjs` on the edge's page: one JSON object with a report per page.
fn pages(edge: &Node, args: &[&str]) -> Vec<Value> {
    let url = edge.url("/#channel=demo");
    let out = support::browser_script("sharing-check.mjs", &url, args);
    // What the pages logged (warnings, restarts) shows with a failing test.
    eprintln!("sharing-check {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("sharing-check printed no report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(out.status.success(), "a page did not play: {report}\n{}", String::from_utf8_lossy(&out.stderr));
    report["pages"].as_array().expect("pages").clone()
}

fn num(page: &Value, key: &str) -> u64 {
    page[key].as_u64().unwrap_or_else(|| panic!("no {key} in {page}"))
}

/// Every segment the pages played is byte for byte the origin's (asked while the origin still
/// holds them).
fn played_the_origins_bytes<'a>(origin: &Node, pages: impl Iterator<Item = &'a Value>) {
    let mut origin_digest: BTreeMap<u64, String> = BTreeMap::new();
    for p in pages {
        let played = p["played"].as_array().unwrap();
        let i = &p["index"];
        assert!(played.len() >= 8, "page {i} played only {} segments", played.len());
        for seg in played {
            let sn = seg["sn"].as_u64().unwrap();
            let digest = origin_digest.entry(sn).or_insert_with(|| {
                let r = origin.get(&format!("/live/demo/src/{sn}.ts"));
                assert_eq!(r.status, 200, "the origin still has segment {sn}");
                sha256_hex(&r.body)
            });
            assert_eq!(
                seg["sha256"].as_str().unwrap(),
                digest,
                "page {i} played segment {sn} that is not the origin's"
            );
        }
    }
}

#[test]
fn browsers_take_most_bytes_from_each_other_and_never_play_a_liars_segment() {
    support::require_ffmpeg();
    let dir = TempDir::new("browser-sharing");
    let (origin, tracker, tracker_url) = support::signing_origin_and_tracker(&dir, TOKEN, "eu", &[]);
    let edge = support::capped_edge("edge", "eu", &tracker_url, TOKEN, EDGE_KBPS);
    let sharing: Value = serde_json::from_slice(&edge.get("/api/v1/p2p").body).expect("the edge names its tracker");
    assert!(sharing["announce"].as_str().is_some_and(|a| a.starts_with("ws://")), "{sharing}");

    // Sharing off: the capped edge alone.
    let pages_arg = PAGES.to_string();
    let off = pages(&edge, &["--pages", &pages_arg, "--seconds", "30", "--p2p", "off"]);
    let worst_off = off.iter().map(|p| num(p, "stalls")).max().unwrap();

    // Sharing on, the same pages.
    let on = pages(&edge, &["--pages", &pages_arg, "--seconds", "40"]);
    for p in &on {
        assert!(p["note"].as_str().unwrap_or("").starts_with("Sharing with other viewers"), "{p}");
    }
    let from_peers: u64 = on.iter().map(|p| num(p, "p2p")).sum();
    let from_edge: u64 = on.iter().map(|p| num(p, "http")).sum();
    let offload = from_peers as f64 / (from_peers + from_edge).max(1) as f64;
    let stalls = |pages: &[Value]| pages.iter().map(|p| num(p, "stalls")).collect::<Vec<_>>();
    eprintln!("offload {:.0} %, stalls with sharing {:?}, without {:?}", 100.0 * offload, stalls(&on), stalls(&off));
    assert!(offload >= 0.5, "only {:.0} % of the pages' bytes came from peers: {on:?}", 100.0 * offload);
    let worst_on = stalls(&on).into_iter().max().unwrap();
    assert!(worst_on <= worst_off, "a sharing page stalled {worst_on} times, the worst without sharing {worst_off}");
    played_the_origins_bytes(&origin, on.iter());

    // Two pages and one that lies to them (the machine's two cores run them all).
    let with_liar = pages(&edge, &["--pages", "3", "--seconds", "30", "--liar", "2"]);
    let honest: Vec<&Value> = with_liar.iter().filter(|p| p["liar"] != true).collect();
    assert_eq!(honest.len(), 2);
    // The liar is caught by the signature check, reported, and left out by the tracker.
    let rejected: u64 = honest.iter().map(|p| num(p, "rejected")).sum();
    assert!(rejected >= 1, "no page rejected the liar's bytes: {with_liar:?}");
    assert!(tracker.metric("relaycast_wt_reports_total") >= 2.0, "the tracker counted the pages' reports");
    assert_eq!(tracker.metric("relaycast_wt_peers_excluded_total"), 1.0, "exactly the liar is left out");
    played_the_origins_bytes(&origin, honest.into_iter());
}

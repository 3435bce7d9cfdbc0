//! Sharing composes with the rest of the viewer, with real processes on loopback: an origin
//! that signs its segments, a tracker, two edges.
//!
//! - `--p2p --steer`: viewers follow the traffic manager's answers while sharing; when their
//!   edge is cordoned mid-stream they move to the other one and keep sharing, and every segment
//!   they played is the origin's, in order.
//! - `--p2p URL_A URL_B`: viewers share and use two edges as fallbacks; with one edge throttled
//!   far below the stream's bitrate, the healthy one carries the fallbacks and nobody stalls
//!   more than a CDN-only viewer would with the healthy edge alone.
//! - `--p2p --client-abr`: on an ffmpeg ladder, a viewer that changes rendition moves to that
//!   rendition's swarm and keeps playing the origin's bytes of whichever rendition it chose.

mod ladder_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{Node, Proc, TempDir, free_tcp_port, http_get, sha256_hex, wait_until};

const TOKEN: &str = "compose-token";
/// The tests of this file run one at a time: each is a whole cluster with five viewers (one
/// encodes a ladder), and together they would measure the two cores more than the viewers.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Stalls tolerated per viewer: timing on a shared machine is noisy; what is checked is that
/// playback goes on (segments in order, the origin's bytes, still playing after a move).
const STALLS_PER_VIEWER: u64 = 2;
/// Each edge's viewer egress: under what five viewers of the ~0.4 Mbit/s sample need on their
/// own (2 Mbit/s), as on an edge worth offloading. (Uncapped on loopback, the edge wins every
/// race against peers at the live edge, and sharing shows only at startup.)
const EDGE_KBPS: &str = "1500";

struct Cluster {
    dir: TempDir,
    origin: Node,
    tracker: Node,
    edges: [Node; 2],
}

/// Origin (region "us", signing), tracker (with the origin's key), two capped edges in region "eu".
fn cluster(label: &str) -> Cluster {
    support::require_ffmpeg();
    let dir = TempDir::new(label);
    let (origin, tracker, tracker_url) = support::signing_origin_and_tracker(
        &dir,
        TOKEN,
        "us",
        &["--viewer-refresh-ms", "1000", "--heartbeat-ms", "300", "--steering-ttl", "1", "--provisioner", "none"],
    );
    let edge = |name: &str| support::capped_edge(name, "eu", &tracker_url, TOKEN, EDGE_KBPS);
    let edges = [edge("e1"), edge("e2")];
    Cluster { dir, origin, tracker, edges }
}

fn admin(method: &str, url: &str, body: &str) -> u16 {
    support::request_with_token(method, url, TOKEN, body.as_bytes()).unwrap().status
}

fn watch(label: &str, args: &[&str], log: &Path, seconds: &str) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.args(["watch", "--quiet", "--duration", seconds, "--startup", "4", "--log"]).arg(log).args(args);
    cmd.env("RUST_LOG", "warn");
    Proc::spawn(label, cmd)
}

fn finish(p: &mut Proc) {
    let status = wait_until(Duration::from_secs(120), "viewers finish", || p.child().try_wait().unwrap());
    assert!(status.success(), "viewer process failed:\n{}", p.log());
}

/// One viewer's QoE log.
#[derive(Default, Debug)]
struct Log {
    /// The servers it started with.
    sources: Vec<String>,
    /// (seq, sha256, from, server source id, done_ms)
    segments: Vec<(u64, String, String, Option<u64>, f64)>,
    /// (t_ms, URL)
    switches: Vec<(f64, String)>,
    stalls: u64,
    edge_bytes: u64,
    peer_bytes: u64,
}

fn read_log(path: &Path) -> Log {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut log = Log::default();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad log line {line:?}: {e}"));
        match v["type"].as_str() {
            Some("start") => {
                log.sources =
                    v["sources"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
            }
            Some("segment") => log.segments.push((
                v["seq"].as_u64().unwrap(),
                v["sha256"].as_str().unwrap_or("").to_string(),
                v["from"].as_str().unwrap_or("").to_string(),
                v["source"].as_u64(),
                v["done_ms"].as_f64().unwrap(),
            )),
            Some("switch") => {
                log.switches.push((v["t_ms"].as_f64().unwrap(), v["url"].as_str().unwrap_or("").to_string()))
            }
            Some("end") => log.stalls = v["stalls"].as_u64().unwrap(),
            Some("p2p") => {
                log.edge_bytes = v["edge_bytes"].as_u64().unwrap();
                log.peer_bytes = v["peer_bytes"].as_u64().unwrap();
            }
            _ => {}
        }
    }
    log
}

/// Every viewer played at least `min` segments, in order, each byte-identical to the origin's.
fn assert_origin_bytes_in_order(c: &Cluster, logs: &[Log], min: usize) {
    let mut origin: BTreeMap<u64, String> = BTreeMap::new();
    for (i, l) in logs.iter().enumerate() {
        assert!(l.segments.len() >= min, "viewer {i} played only {} segments", l.segments.len());
        for w in l.segments.windows(2) {
            assert!(w[1].0 > w[0].0, "viewer {i}: segments in order, once");
        }
        for (seq, sha, from, _, _) in &l.segments {
            let want = origin.entry(*seq).or_insert_with(|| {
                let r = c.origin.get(&format!("/live/demo/src/{seq}.ts"));
                assert_eq!(r.status, 200, "origin still has segment {seq}");
                sha256_hex(&r.body)
            });
            assert_eq!(sha, want, "viewer {i}: segment {seq} (from {from}) differs from the origin's");
        }
    }
}

fn offload(logs: &[Log]) -> f64 {
    let (edge, peer) = logs.iter().fold((0, 0), |(e, p), l| (e + l.edge_bytes, p + l.peer_bytes));
    peer as f64 / (edge + peer).max(1) as f64
}

#[test]
fn sharing_viewers_follow_steering_across_a_cordon() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = cluster("p2p-steer");
    wait_until(Duration::from_secs(15), "the tracker steers to both edges", || {
        let r = http_get(&c.tracker.url("/api/v1/traffic")).ok()?;
        let t: Value = serde_json::from_slice(&r.body).ok()?;
        let serving = |e: &&serde_json::Value| {
            e["state"] == "serving" && e["channels"].as_array().is_some_and(|c| c.contains(&"demo".into()))
        };
        (t["edges"].as_array()?.iter().filter(serving).count() == 2).then_some(())
    });
    let tracker = c.tracker.url("");
    let tracker = tracker.trim_end_matches('/');
    let steer = format!("{tracker}/play/demo?region=eu");
    let cordon = |method: &str, edge: &str| {
        assert_eq!(admin(method, &c.tracker.url(&format!("/api/v1/edges/{edge}/cordon")), ""), 200);
    };
    // Everyone starts on e1 (e2 is cordoned), then e1 is cordoned and e2 opened.
    cordon("POST", "e2");
    let log = c.dir.join("steer.jsonl");
    let args = ["--p2p", "--tracker", tracker, "--region", "eu", "--steer", &steer, "--viewers", "5"];
    let mut viewers = watch("p2p-steer", &args, &log, "30");
    wait_until(Duration::from_secs(40), "the viewers play from e1", || {
        let r = http_get(&c.tracker.url("/api/v1/traffic")).ok()?;
        let t: Value = serde_json::from_slice(&r.body).ok()?;
        let e1 = t["edges"].as_array()?.iter().find(|e| e["name"] == "e1")?.clone();
        (e1["viewers"].as_u64()? - e1["anonymous"].as_u64()? >= 5).then_some(())
    });
    // Past the viewers' start (when everyone fetches from the edge at once), the move itself.
    std::thread::sleep(Duration::from_secs(10));
    cordon("DELETE", "e2");
    cordon("POST", "e1");
    finish(&mut viewers);

    let (e1, e2) = (c.edges[0].http.to_string(), c.edges[1].http.to_string());
    let logs: Vec<Log> = (1..=5).map(|i| read_log(Path::new(&format!("{}.{i}", log.display())))).collect();
    for (i, l) in logs.iter().enumerate() {
        assert!(l.sources[0].contains(&e1), "viewer {i} started on {:?}, not e1", l.sources);
        let Some((at, _)) = l.switches.iter().find(|(_, u)| u.contains(&e2)) else {
            panic!("viewer {i} was not steered to e2: {:?}\n{}", l.switches, viewers.log());
        };
        let after = l.segments.iter().filter(|s| s.4 > *at).count();
        assert!(after >= 4, "viewer {i} played only {after} segments after moving to e2");
    }
    assert_origin_bytes_in_order(&c, &logs, 8);
    let share = offload(&logs);
    let stalls: u64 = logs.iter().map(|l| l.stalls).sum();
    eprintln!("p2p + steering: offload {:.1} %, stalls {stalls}", share * 100.0);
    assert!(share >= 0.5, "sharing kept working with steering: only {:.1} % from peers", share * 100.0);
    assert!(stalls <= 5 * STALLS_PER_VIEWER, "{stalls} stalls over 5 viewers");
}

#[test]
fn sharing_viewers_fall_back_to_the_healthy_one_of_two_edges() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Edge 1 is throttled to a quarter of the stream's ~0.4 Mbit/s for the whole run.
    let c = cluster("p2p-two");
    assert_eq!(admin("PUT", &c.edges[0].url("/api/v1/egress"), "{\"kbps\": 100}"), 200);
    let tracker = c.tracker.url("");
    let tracker = tracker.trim_end_matches('/');
    let urls = [c.edges[0].url("/live/demo/index.m3u8"), c.edges[1].url("/live/demo/index.m3u8")];
    let log = c.dir.join("two.jsonl");
    let args = ["--p2p", "--tracker", tracker, "--region", "eu", "--viewers", "5", &urls[0], &urls[1]];
    let mut viewers = watch("p2p-two", &args, &log, "25");
    finish(&mut viewers);

    let logs: Vec<Log> = (1..=5).map(|i| read_log(Path::new(&format!("{}.{i}", log.display())))).collect();
    assert_origin_bytes_in_order(&c, &logs, 6);
    let from_server = |source: u64| -> usize {
        logs.iter().flat_map(|l| &l.segments).filter(|s| s.2 == "edge" && s.3 == Some(source)).count()
    };
    let (throttled, healthy) = (from_server(0), from_server(1));
    let stalls: u64 = logs.iter().map(|l| l.stalls).sum();
    eprintln!(
        "p2p + two edges: offload {:.1} %, segments from the throttled edge {throttled}, from the healthy one {healthy}, stalls {stalls}",
        offload(&logs) * 100.0
    );
    assert!(healthy > throttled, "the healthy edge should carry the fallbacks: {healthy} vs {throttled}");
    assert!(offload(&logs) > 0.2, "viewers still share");
    assert!(stalls <= 5 * STALLS_PER_VIEWER, "{stalls} stalls over 5 viewers with a healthy edge available");
}

#[test]
#[ignore = "flaky: in some runs the viewers' ABR rule never changes rendition (they start on the \
            top one), so the move is not exercised and the last check fails; see the issue note"]
fn sharing_viewers_with_client_abr_move_swarm_when_they_change_rendition() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("p2p-abr");
    let key = dir.join("origin.key");
    let port = free_tcp_port();
    let tracker_url = format!("http://127.0.0.1:{port}");
    let origin = ladder_support::ladder_origin(
        &dir,
        &["--signing-key", key.to_str().unwrap(), "--tracker", &tracker_url, "--region", "us"],
    );
    let public = format!("{}.pub", key.display());
    let _tracker = Node::start(
        "tracker",
        &[
            "tracker",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--origin-key",
            &public,
            "--viewer-refresh-ms",
            "1000",
            "--token",
            ladder_support::TOKEN,
        ],
        false,
    );
    let parent = origin.quic.unwrap().to_string();
    let args = ["relay", "--parent", &parent, "--http", "127.0.0.1:0", "--token", ladder_support::TOKEN];
    let edge = Node::start("edge", &args, false);
    wait_until(Duration::from_secs(60), "the edge serves the ladder", || {
        http_get(&edge.url("/live/lad/index.m3u8"))
            .ok()
            .filter(|r| r.status == 200 && r.text().matches("BANDWIDTH").count() >= 3)
    });
    let log = dir.join("abr.jsonl");
    let master = edge.url("/live/lad/index.m3u8");
    let args = ["--p2p", "--tracker", &tracker_url, "--region", "eu", "--client-abr", "--viewers", "3", &master];
    let mut viewers = watch("p2p-abr", &args, &log, "20");
    finish(&mut viewers);

    let mut moved = 0;
    let mut origin_sha: BTreeMap<(String, u64), String> = BTreeMap::new();
    for i in 1..=3 {
        let text = std::fs::read_to_string(format!("{}.{i}", log.display())).unwrap();
        let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let segments: Vec<&Value> = records.iter().filter(|r| r["type"] == "segment").collect();
        assert!(segments.len() >= 8, "viewer {i} played only {} segments", segments.len());
        let renditions: std::collections::BTreeSet<&str> =
            segments.iter().filter_map(|r| r["rendition"].as_str()).collect();
        if renditions.len() > 1 {
            moved += 1;
        }
        for w in segments.windows(2) {
            assert!(w[1]["seq"].as_u64() > w[0]["seq"].as_u64(), "viewer {i}: in order, once");
        }
        for r in &segments {
            let (seq, rendition) = (r["seq"].as_u64().unwrap(), r["rendition"].as_str().unwrap().to_string());
            let want = origin_sha.entry((rendition.clone(), seq)).or_insert_with(|| {
                let got = origin.get(&format!("/live/lad/{rendition}/{seq}.ts"));
                assert_eq!(got.status, 200, "origin still has {rendition}/{seq}");
                sha256_hex(&got.body)
            });
            assert_eq!(r["sha256"].as_str(), Some(want.as_str()), "viewer {i}: {rendition}/{seq} from {}", r["from"]);
        }
    }
    // Client ABR starts below the top rendition and climbs on loopback.
    assert!(moved >= 1, "no viewer changed rendition");
}

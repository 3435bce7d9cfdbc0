//! The self-organising tree with real processes on loopback: a tracker, an origin that takes at
//! most two children, and six relays that get their neighbours automatically from the tracker.
//! The relays build a tree of depth ≥ 2 by themselves; then the parent of a viewer's edge is
//! killed mid-stream. The edge moves to a backup parent, and the viewer (`relaycast watch`)
//! receives every segment with no gap in sequence numbers.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Node, Proc, TempDir, http_get, require_ffmpeg, wait_until};

const TOKEN: &str = "tree-token";

fn node_info(node: &Node) -> Option<serde_json::Value> {
    let r = http_get(&node.url("/api/v1/node")).ok()?;
    (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?
}

#[test]
fn killing_a_parent_mid_stream_loses_no_segment() {
    require_ffmpeg();
    let dir = TempDir::new("tree");
    let tracker_port = support::free_tcp_port();
    let tracker_url = format!("http://127.0.0.1:{tracker_port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.args(["tracker", "--http", &format!("127.0.0.1:{tracker_port}"), "--k", "3", "--heartbeat-ms", "300"])
        .args(["--token", TOKEN]);
    let _tracker = Proc::spawn("tracker", cmd);
    wait_until(Duration::from_secs(20), "tracker answers", || {
        http_get(&format!("{tracker_url}/api/v1/nodes")).ok().filter(|r| r.status == 200)
    });

    let origin = Node::origin("origin", TOKEN, &["--sample", "--max-children", "2", "--tracker", &tracker_url]);
    let mut relays: Vec<Option<Node>> = (1..=6)
        .map(|i| {
            let name = format!("r{i}");
            let args = [
                "relay",
                "--name",
                &name,
                "--tracker",
                &tracker_url,
                "--http",
                "127.0.0.1:0",
                "--quic",
                "127.0.0.1:0",
                "--token",
                TOKEN,
            ];
            Some(Node::start(&name, &args, true))
        })
        .collect();

    // Every relay finds a parent; with the origin full, some sit two or more hops down.
    let (edge_index, parent_name) = wait_until(Duration::from_secs(40), "a tree of depth ≥ 2 with backups", || {
        let infos: Vec<serde_json::Value> =
            relays.iter().map(|r| node_info(r.as_ref().unwrap())).collect::<Option<_>>()?;
        if infos.iter().any(|i| i["parent"].is_null()) {
            return None;
        }
        infos.iter().enumerate().find_map(|(i, info)| {
            let parent = info["parent"].as_str()?;
            let has_backup = !info["backups"].as_array()?.is_empty();
            (parent != "origin" && has_backup && info["hops"].as_u64()? >= 2).then(|| (i, parent.to_string()))
        })
    });
    let origin_children = node_info(&origin).unwrap()["children"].as_array().unwrap().len();
    assert!(origin_children <= 2, "the origin's capacity is respected: {origin_children} children");

    let edge_url = relays[edge_index].as_ref().unwrap().url("/live/demo/index.m3u8");
    wait_until(Duration::from_secs(30), "the edge serves the channel", || {
        http_get(&edge_url).ok().filter(|r| r.status == 200 && r.text().contains(".ts"))
    });
    let log = dir.join("viewer.jsonl");
    let mut viewer_cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    viewer_cmd.args(["watch", "--quiet", "--duration", "30", "--startup", "4", "--log"]).arg(&log).arg(&edge_url);
    let mut viewer = Proc::spawn("viewer", viewer_cmd);

    std::thread::sleep(Duration::from_secs(8));
    let parent_index: usize = parent_name.trim_start_matches('r').parse::<usize>().unwrap() - 1;
    eprintln!("killing {parent_name}, parent of r{}", edge_index + 1);
    relays[parent_index] = None; // dropping the process handle kills it

    let edge = relays[edge_index].as_ref().unwrap();
    let new_parent = wait_until(Duration::from_secs(10), "the edge re-attaches", || {
        let p = node_info(edge)?["parent"].as_str()?.to_string();
        (p != parent_name).then_some(p)
    });
    eprintln!("r{} moved to {new_parent}", edge_index + 1);

    let status = wait_until(Duration::from_secs(60), "the viewer finishes", || viewer.child().try_wait().unwrap());
    assert!(status.success(), "viewer failed:\n{}", viewer.log());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut seqs = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["type"].as_str() {
            Some("segment") => seqs.push(v["seq"].as_u64().unwrap()),
            Some("skip") => panic!("the viewer had to skip a segment: {line}"),
            _ => {}
        }
    }
    assert!(seqs.len() >= 10, "only {} segments in 30 s", seqs.len());
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "no gap in sequence numbers across the repair: {seqs:?}");
    }
    let gaps = edge.metric("relaycast_segments_lost_total");
    assert_eq!(gaps, 0.0, "the edge never gave up on a segment");
}

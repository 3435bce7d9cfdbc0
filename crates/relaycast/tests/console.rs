//! The tracker's operator console, opened in headless Chromium on a running cluster (tracker,
//! origin, two edges, one viewer): the tree it draws matches what each node says of itself at
//! `/api/v1/node`, and its cordon button (token-protected) really cordons an edge.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{MEDIA_WAIT, Node, TempDir, http_get, require_ffmpeg, wait_until};

const TOKEN: &str = "console-test-token";

/// Runs web/console-check.mjs; returns its exit code and what it printed.
fn console_check(url: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "web/node_modules is missing: run `npm ci --prefix web`"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let out = Command::new("node")
        .arg(web.join("console-check.mjs"))
        .arg(url)
        .args(["--nodes", "3", "--seconds", "40", "--chromium", &chromium])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(2), "console-check could not run: {stderr}");
    let shown = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (out.status.code(), shown, stderr)
}

#[test]
fn the_console_draws_the_live_tree_and_cordons_an_edge() {
    require_ffmpeg();
    let tracker = Node::tracker(&["--token", TOKEN, "--provisioner", "none", "--heartbeat-ms", "300"]);
    let t = format!("http://{}", tracker.http);
    let origin = Node::origin("origin", TOKEN, &["--name", "origin", "--sample", "--tracker", &t]);
    let parent = origin.quic.unwrap().to_string();
    let edge = |name: &str| {
        Node::start(
            name,
            &["relay", "--name", name, "--parent", &parent, "--http", "127.0.0.1:0", "--token", TOKEN, "--tracker", &t],
            false,
        )
    };
    let edges = [edge("edge-1"), edge("edge-2")];
    for e in &edges {
        wait_until(MEDIA_WAIT, "each edge to serve the sample", || {
            (e.get("/live/demo/index.m3u8").status == 200).then_some(())
        });
    }
    // One viewer on edge-1 for the whole test.
    let watching = Arc::new(AtomicBool::new(true));
    let viewer = {
        let (url, watching) = (edges[0].url("/live/demo/index.m3u8"), watching.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let _ = http_get(&url);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    let tmp = TempDir::new("console");
    let screenshot =
        std::env::var("RELAYCAST_CONSOLE_SCREENSHOT").unwrap_or_else(|_| tmp.join("console.png").display().to_string());
    let url = format!("{t}/dashboard");
    let (code, shown, stderr) =
        console_check(&url, &["--cordon", "edge-2", "--token", TOKEN, "--screenshot", &screenshot]);
    assert_eq!(code, Some(0), "the console did not show the tree or the cordon: {shown}\n{stderr}");
    assert!(Path::new(&screenshot).exists());

    // What the page drew is what the nodes say.
    for node in [&origin, &edges[0], &edges[1]] {
        let me: serde_json::Value = serde_json::from_slice(&node.get("/api/v1/node").body).unwrap();
        let name = me["name"].as_str().unwrap();
        let drawn = shown["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name);
        let drawn = drawn.unwrap_or_else(|| panic!("{name} is not in the console's tree: {shown}"));
        assert_eq!(drawn["role"], me["role"], "{drawn}");
        assert_eq!(drawn["parent"], me["parent"], "{name}'s parent: {drawn} vs {me}");
        assert_eq!(drawn["health"], "ok", "{drawn}");
        assert_eq!(drawn["children"].as_u64(), me["children"].as_array().map(|c| c.len() as u64), "{drawn}");
    }
    let shown_viewers =
        |name: &str| shown["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap()["viewers"].as_u64();
    assert!(shown_viewers("edge-1") >= Some(1), "edge-1 has a viewer: {shown}");

    // The click cordoned edge-2 at the tracker; a wrong token changes nothing.
    let traffic: serde_json::Value = serde_json::from_slice(&tracker.get("/api/v1/traffic").body).unwrap();
    let cordoned = |v: &serde_json::Value, name: &str| {
        v["edges"].as_array().unwrap().iter().find(|e| e["name"] == name).map(|e| e["cordoned"] == true)
    };
    assert_eq!(cordoned(&traffic, "edge-2"), Some(true), "{traffic}");
    let (code, shown, _) = console_check(&url, &["--cordon", "edge-1", "--token", "wrong", "--seconds", "8"]);
    assert_eq!(code, Some(1), "a wrong token must not cordon: {shown}");
    assert!(shown["message"].as_str().unwrap_or("").contains("401"), "the page says why: {shown}");
    let traffic: serde_json::Value = serde_json::from_slice(&tracker.get("/api/v1/traffic").body).unwrap();
    assert_eq!(cordoned(&traffic, "edge-1"), Some(false), "{traffic}");

    watching.store(false, Ordering::Relaxed);
    viewer.join().unwrap();
}

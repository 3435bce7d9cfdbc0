//! The tracker as an outsider meets it: calls that change its state need the cluster token;
//! the open, viewer-facing ones (steering, the P2P announce and report) keep bounded state
//! however many made-up ids arrive, and a report counts only from a live viewer of the
//! reported peer's swarm.

mod support;

use support::{Node, http_get, request, request_with_token};

const TOKEN: &str = "bounds-token";

fn json(url: &str) -> serde_json::Value {
    serde_json::from_slice(&http_get(url).unwrap().body).unwrap()
}

fn announce_p2p(tracker: &Node, id: u64) -> u16 {
    let body = format!(
        r#"{{"id":{id},"channel":"demo","rendition":"src","region":"eu","addr":"127.0.0.1:{}"}}"#,
        1000 + id % 50_000
    );
    request("POST", &tracker.url("/api/v1/p2p/announce"), body.as_bytes()).unwrap().status
}

#[test]
fn open_calls_keep_bounded_state_and_closed_ones_need_the_token() {
    let tracker = Node::tracker(&[
        "--provisioner",
        "none",
        "--token",
        TOKEN,
        "--max-sessions",
        "200",
        "--max-p2p-viewers",
        "300",
        "--viewer-refresh-ms",
        "60000",
        // The floods below come from one address; the rate limit is checked on its own.
        "--viewer-rate",
        "0",
    ]);
    // A node announces itself with the token; a stranger's announcement changes nothing.
    let edge = br#"{"name":"e1","role":"relay","region":"eu","quic":"127.0.0.1:9","http":"127.0.0.1:9"}"#;
    let intruder = br#"{"name":"intruder","role":"relay","region":"eu","quic":"127.0.0.1:9","http":"127.0.0.1:9"}"#;
    assert_eq!(request_with_token("POST", &tracker.url("/api/v1/announce"), TOKEN, edge).unwrap().status, 200);
    let refused = request("POST", &tracker.url("/api/v1/announce"), intruder).unwrap();
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(refused.text().contains("cluster token"), "the refusal says what is missing: {}", refused.text());
    let report = br#"{"name":"e1","viewers":100000,"anonymous":0,"egress_bps":0}"#;
    assert_eq!(request("POST", &tracker.url("/api/v1/edge-report"), report).unwrap().status, 401);
    let nodes = http_get(&tracker.url("/api/v1/nodes")).unwrap().text();
    assert!(nodes.contains("\"e1\"") && !nodes.contains("intruder"), "{nodes}");

    // The node reports that it serves channel `demo`, so viewers of it are steered there.
    let serving = br#"{"name":"e1","viewers":0,"anonymous":0,"egress_bps":0,"channels":["demo"]}"#;
    assert_eq!(request_with_token("POST", &tracker.url("/api/v1/edge-report"), TOKEN, serving).unwrap().status, 200);

    // 1 000 made-up steering sessions: each is answered, at most 200 are remembered.
    for i in 0..1_000 {
        let r = http_get(&tracker.url(&format!("/api/v1/steering/demo?session=flood{i}&region=eu"))).unwrap();
        assert_eq!(r.status, 200, "session {i}: {}", r.text());
    }
    let traffic = json(&tracker.url("/api/v1/traffic"));
    let sessions = traffic["sessions"].as_u64().unwrap();
    assert!((1..=200).contains(&sessions), "sessions remembered: {sessions}");

    // 600 made-up P2P viewers: 300 are tracked, the rest are told to play from the CDN.
    let statuses: Vec<u16> = (1..=600).map(|id| announce_p2p(&tracker, id)).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 300, "{statuses:?}");
    assert!(statuses[300..].iter().all(|s| *s == 503), "{statuses:?}");
    let swarms = json(&tracker.url("/api/v1/p2p/swarms"));
    let tracked: usize =
        swarms["swarms"].as_array().unwrap().iter().map(|s| s["viewers"].as_array().unwrap().len()).sum();
    assert_eq!(tracked, 300);
    assert_eq!(announce_p2p(&tracker, 7), 200, "a tracked viewer keeps announcing");

    // Reports: only from a live viewer of the peer's swarm.
    let report = |reporter: u64, peer: u64| {
        let body = format!(r#"{{"reporter":{reporter},"peer":{peer},"reason":"bad bytes"}}"#);
        request("POST", &tracker.url("/api/v1/p2p/report"), body.as_bytes()).unwrap()
    };
    let stranger = report(999_999, 1);
    assert_eq!(stranger.status, 422, "{}", stranger.text());
    assert_eq!(report(2, 1).status, 200);
    let reported = json(&tracker.url("/api/v1/p2p/swarms"));
    assert_eq!(reported["reported"][0]["reporters"].as_array().unwrap().len(), 1, "{reported}");
}

#[test]
fn one_address_flooding_the_open_routes_is_slowed_to_its_rate() {
    let tracker = Node::tracker(&["--provisioner", "none", "--token", TOKEN, "--viewer-rate", "5"]);
    // 40 requests as fast as one client can send them: the burst (10) passes, then 429s with a reason.
    let answers: Vec<support::Response> =
        (0..40).map(|i| http_get(&tracker.url(&format!("/api/v1/steering/demo?session=s{i}"))).unwrap()).collect();
    let limited: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert!(answers.iter().filter(|r| r.status != 429).count() >= 10, "the burst is served");
    assert!(limited.len() >= 20, "the rest is refused: {} of 40", limited.len());
    assert!(limited[0].text().contains("requests per second") && limited[0].header("retry-after") == Some("1"));
    // Node calls are not viewer routes: never rate limited.
    assert_eq!(http_get(&tracker.url("/api/v1/nodes")).unwrap().status, 200);
}

//! The traffic manager with real processes on loopback (F20–F23): a tracker with a threshold of
//! 20 viewers per edge, an origin, one primary edge in region `eu`. 60 viewers
//! (`relaycast watch --steer`, two processes) arrive: the tracker starts a secondary *process*,
//! which re-streams from the primary and takes the excess. Then 55 leave: the 5 left on the secondary are moved back to the
//! primary, the secondary drains, is retired and its process exits — and no viewer, moved
//! either way, sees a gap in segment sequence numbers.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{Node, Proc, TempDir, http_get, wait_until};

const TOKEN: &str = "traffic-token";

fn traffic(tracker: &Node) -> Option<Value> {
    let r = http_get(&tracker.url("/api/v1/traffic")).ok()?;
    (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?
}

fn edge<'a>(t: &'a Value, name: &str) -> Option<&'a Value> {
    t["edges"].as_array()?.iter().find(|e| e["name"] == name)
}

fn secondaries(t: &Value) -> Vec<Value> {
    t["edges"].as_array().map(|a| a.iter().filter(|e| e["kind"] == "secondary").cloned().collect()).unwrap_or_default()
}

fn pid_alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn viewers(label: &str, steer: &str, n: usize, seconds: u32, log: &std::path::Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.args(["watch", "--quiet", "--steer", steer, "--viewers", &n.to_string()])
        .args(["--duration", &seconds.to_string(), "--startup", "2", "--log"])
        .arg(log);
    Proc::spawn(label, cmd)
}

/// Every viewer log `base.1..=n`: segment sequence numbers without a gap, no skip; how many
/// viewers switched edge.
fn check_logs(base: &std::path::Path, n: usize) -> usize {
    let mut switched = 0;
    for i in 1..=n {
        let path = format!("{}.{i}", base.display());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut seqs = Vec::new();
        let mut switches = 0;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            match v["type"].as_str() {
                Some("segment") => seqs.push(v["seq"].as_u64().unwrap()),
                Some("skip") => panic!("{path}: the viewer had to skip a segment: {line}"),
                Some("switch") => switches += 1,
                _ => {}
            }
        }
        assert!(seqs.len() >= 8, "{path}: only {} segments", seqs.len());
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{path}: gap in segment sequence: {seqs:?}");
        }
        if switches > 0 {
            switched += 1;
        }
    }
    switched
}

#[test]
fn a_secondary_process_takes_the_peak_then_drains_and_exits_without_gaps() {
    support::require_ffmpeg();
    let dir = TempDir::new("traffic");
    let tracker = Node::tracker(&[
        "--heartbeat-ms",
        "300",
        "--threshold",
        "20",
        "--secondary-capacity",
        "50",
        "--grace-ms",
        "4000",
        "--steering-ttl",
        "1",
        "--token",
        TOKEN,
    ]);
    let tracker_url = format!("http://{}", tracker.http);
    let _origin = Node::origin("origin", TOKEN, &["--sample", "--tracker", &tracker_url, "--region", "eu"]);
    let p1 = Node::start(
        "p1",
        &[
            "relay",
            "--name",
            "p1",
            "--region",
            "eu",
            "--tracker",
            &tracker_url,
            "--http",
            "127.0.0.1:0",
            "--quic",
            "127.0.0.1:0",
            "--token",
            TOKEN,
        ],
        true,
    );
    wait_until(Duration::from_secs(40), "the primary edge serves the channel", || {
        http_get(&p1.url("/live/demo/index.m3u8")).ok().filter(|r| r.status == 200 && r.text().contains(".ts"))
    });
    wait_until(Duration::from_secs(10), "the tracker knows the primary", || {
        let serves = |e: &&Value| e["channels"].as_array().is_some_and(|c| c.contains(&"demo".into()));
        edge(&traffic(&tracker)?, "p1").filter(|e| e["state"] == "serving").filter(serves).cloned()
    });

    // The peak: 55 viewers, then 5 more once the secondary serves.
    let steer = format!("{tracker_url}/play/demo?region=eu");
    let log_a = dir.join("a.jsonl");
    let log_b = dir.join("b.jsonl");
    let mut crowd = viewers("crowd", &steer, 55, 40, &log_a);
    let (name, pid) = wait_until(Duration::from_secs(40), "a secondary serving ≥ 30 viewers", || {
        let t = traffic(&tracker)?;
        let s = secondaries(&t).into_iter().find(|s| s["state"] == "serving")?;
        // Its own report, not only the tracker's assignment: the viewers really moved.
        (s["viewers"].as_u64()? >= 30).then(|| (s["name"].as_str().unwrap().to_string(), s["pid"].as_u64().unwrap()))
    });
    assert!(pid_alive(pid), "the secondary is a live process (pid {pid})");
    let t = traffic(&tracker).unwrap();
    assert_eq!(secondaries(&t).len(), 1, "one secondary for 55 viewers: {}", t["edges"]);
    let primary = edge(&t, "p1").unwrap()["load"].as_u64().unwrap();
    assert!(primary <= 20, "the primary keeps at most its threshold: {primary}");
    wait_until(Duration::from_secs(10), "the secondary re-streams from the primary", || {
        let t = traffic(&tracker)?;
        t["tree"].as_array()?.iter().find(|n| n["name"] == name.as_str() && n["parent"] == "p1").map(|_| ())
    });
    let mut late = viewers("late", &steer, 5, 60, &log_b);
    wait_until(Duration::from_secs(20), "the 5 late viewers are on the secondary", || {
        let t = traffic(&tracker)?;
        (edge(&t, &name)?["load"].as_u64()? >= 35 + 5).then_some(())
    });

    // The crowd leaves (its --duration ends); the late viewers are moved back, the secondary
    // drains, is retired and its process exits.
    let status = wait_until(Duration::from_secs(60), "the crowd finishes", || crowd.child().try_wait().unwrap());
    assert!(status.success(), "crowd failed:\n{}", crowd.log());
    wait_until(Duration::from_secs(50), "the secondary process exits", || (!pid_alive(pid)).then_some(()));
    let t = traffic(&tracker).unwrap();
    let events: Vec<String> =
        t["events"].as_array().unwrap().iter().map(|e| format!("{} {}", e["event"], e["name"])).collect();
    for phase in ["serving", "draining", "retired"] {
        assert!(events.iter().any(|e| e.contains(phase)), "the secondary went through {phase}: {events:?}");
    }
    assert_eq!(edge(&t, "p1").unwrap()["load"].as_u64(), Some(5), "the 5 are on the primary");

    let status = wait_until(Duration::from_secs(60), "the late viewers finish", || late.child().try_wait().unwrap());
    assert!(status.success(), "late viewers failed:\n{}", late.log());
    let moved_out = check_logs(&log_a, 55);
    assert!(moved_out >= 30, "at least 30 of the crowd were moved to the secondary, seamlessly: {moved_out}");
    let moved_back = check_logs(&log_b, 5);
    assert_eq!(moved_back, 5, "all 5 late viewers were moved back to the primary, seamlessly");
}

//! Graceful stop (issue 19): SIGTERM on an edge drains it. Viewers already watching are served
//! on, a new viewer gets 503 + Retry-After, the tracker stops sending viewers there, and the
//! edge exits once its viewers have left (well before its --drain-timeout).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Node, http_get, wait_until};

const TOKEN: &str = "drain-token";

fn edge(name: &str, tracker: &str) -> Node {
    let args = ["relay", "--name", name, "--region", "eu", "--tracker", tracker, "--http", "127.0.0.1:0"];
    let rest = ["--token", TOKEN, "--drain-timeout", "60"];
    Node::start(name, &args.into_iter().chain(rest).collect::<Vec<_>>(), false)
}

#[test]
fn sigterm_drains_an_edge_then_it_exits() {
    let tracker = Node::tracker(&["--heartbeat-ms", "300", "--token", TOKEN]);
    let tracker_url = format!("http://{}", tracker.http);
    let _origin = Node::origin("origin", TOKEN, &["--sample", "--tracker", &tracker_url, "--region", "eu"]);
    let mut leaving = edge("leaving", &tracker_url);
    let staying = edge("staying", &tracker_url);
    let playlist =
        |node: &Node, session: &str| http_get(&node.url(&format!("/live/demo/index.m3u8?session={session}")));
    wait_until(support::MEDIA_WAIT, "both edges serve", || {
        (playlist(&leaving, "watching").ok()?.status == 200 && playlist(&staying, "x").ok()?.status == 200)
            .then_some(())
    });
    let play = format!("{tracker_url}/play/demo?region=eu");
    wait_until(Duration::from_secs(20), "the tracker steers to the edge that will leave", || {
        let r = http_get(&play).ok()?;
        r.header("location")?.contains(&leaving.http.to_string()).then_some(())
    });

    let pid = leaving.proc.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // Ask as a newcomer only once the signal has been taken (before it, a newcomer is welcome
    // and would then count as watching).
    wait_until(Duration::from_secs(10), "the edge starts draining", || {
        leaving.log().contains("draining: no new viewers").then_some(())
    });
    let refused = wait_until(Duration::from_secs(10), "a new viewer is turned away", || {
        let r = playlist(&leaving, "newcomer").ok()?;
        (r.status == 503).then_some(r)
    });
    assert!(refused.header("retry-after").is_some(), "the refusal says when to retry");
    assert!(refused.text().contains("shutting down"), "{}", refused.text());
    assert_eq!(playlist(&leaving, "watching").unwrap().status, 200, "a viewer already watching is served on");
    wait_until(Duration::from_secs(10), "the tracker sends viewers only to the other edge", || {
        let all_elsewhere = (0..5).all(|_| {
            http_get(&play).ok().and_then(|r| r.header("location").map(|l| l.contains(&staying.http.to_string())))
                == Some(true)
        });
        all_elsewhere.then_some(())
    });
    // The watching viewer keeps going a while; the edge waits for it.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(playlist(&leaving, "watching").unwrap().status, 200);
    }
    assert!(leaving.proc.is_alive(), "the edge waits while a viewer watches");
    // Once it stops asking (6 s without a playlist request = left), the edge exits by itself.
    let stopped = Instant::now();
    let status =
        wait_until(Duration::from_secs(20), "the drained edge exits", || leaving.proc.child().try_wait().unwrap());
    assert!(status.success(), "a drained edge exits cleanly: {status}");
    assert!(stopped.elapsed() < Duration::from_secs(15), "it left long before its 60 s drain timeout");
    assert!(leaving.log().contains("drained: no viewer left"), "{}", leaving.log());
}

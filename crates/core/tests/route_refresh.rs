//! Route refreshes (issue 21, control bytes): a node sends a neighbour its whole route path only
//! when the path is news to that neighbour; later floods over the same path go as a 24-byte
//! `RouteRefresh`, which the receiver applies to the path it holds, and a refresh for a path the
//! receiver never got closes the connection.

use std::time::{Duration, Instant};

use relaycast_core::node::node_id;
use relaycast_core::wire::{Message, Route, path_digest};
use relaycast_core::{Node, NodeConfig, Output, PeerId, Role};

/// Relay `x` with two neighbours it dialed: `p` (peer 1, its parent once routed) and `c` (peer 2).
fn relay() -> (Instant, Node) {
    // The test's one real clock read: the epoch of its virtual clock.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let config = NodeConfig { role: Role::Relay, name: "x".into(), id: node_id("x"), ..NodeConfig::default() };
    let mut x = Node::new(config);
    for (peer, name) in [(1, "p"), (2, "c")] {
        x.peer_dialed(now, PeerId(peer));
        x.handle_message(now, PeerId(peer), Message::Welcome { node: name.into(), id: node_id(name) });
        x.peer_rtt(now, PeerId(peer), Duration::from_millis(2));
    }
    drain(&mut x);
    (now, x)
}

fn drain(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

fn route(flood: u64, path: &[&str]) -> Route {
    Route { flood, latency_us: 10_000, hops: path.len() as u32 - 1, path: path.iter().map(|n| node_id(n)).collect() }
}

/// What `x` told `c` (peer 2) about its route.
fn told_c(out: &[Output]) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { peer: PeerId(2), msg: m @ (Message::Route(_) | Message::RouteRefresh { .. }) } => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_flood_over_the_same_path_is_a_refresh_and_a_new_path_is_whole() {
    let (now, mut x) = relay();
    x.handle_message(now, PeerId(1), Message::Route(route(1, &["o", "p"])));
    x.handle_message(now, PeerId(1), Message::Attached);
    let out = drain(&mut x);
    assert!(matches!(told_c(&out)[..], [Message::Route(r)] if r.path.len() == 3), "whole at first: {out:?}");

    // The parent's next flood comes as a refresh; x applies it and refreshes c in turn.
    let digest = path_digest(&route(2, &["o", "p"]).path);
    x.handle_message(now, PeerId(1), Message::RouteRefresh { flood: 2, latency_us: 10_000, path_digest: digest });
    assert_eq!(x.route().map(|r| r.flood), Some(2), "x took flood 2 from the refresh");
    let out = drain(&mut x);
    let own = path_digest(&x.route().unwrap().path);
    assert!(
        matches!(told_c(&out)[..], [Message::RouteRefresh { flood: 2, path_digest, .. }] if *path_digest == own),
        "a refresh to c: {out:?}"
    );

    // The parent's path changed (q joined above it): c gets the whole new path.
    x.handle_message(now, PeerId(1), Message::Route(route(3, &["o", "q", "p"])));
    let out = drain(&mut x);
    assert!(matches!(told_c(&out)[..], [Message::Route(r)] if r.path.len() == 4), "whole again: {out:?}");
}

#[test]
fn a_refresh_for_a_path_never_sent_closes_the_connection() {
    let (now, mut x) = relay();
    x.handle_message(now, PeerId(1), Message::Route(route(1, &["o", "p"])));
    drain(&mut x);
    // c never sent a route: its refresh refers to nothing x holds.
    x.handle_message(now, PeerId(2), Message::RouteRefresh { flood: 1, latency_us: 5, path_digest: 7 });
    let out = drain(&mut x);
    assert!(out.iter().any(|o| matches!(o, Output::Close { peer: PeerId(2), .. })), "{out:?}");
    // p's refresh with the digest of another path is refused the same way, and x stays sane.
    x.handle_message(now, PeerId(1), Message::RouteRefresh { flood: 2, latency_us: 5, path_digest: 7 });
    let out = drain(&mut x);
    assert!(out.iter().any(|o| matches!(o, Output::Close { peer: PeerId(1), .. })), "{out:?}");
    assert!(x.route().is_none(), "no route through a peer that lied");
}

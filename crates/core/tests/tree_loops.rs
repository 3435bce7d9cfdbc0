//! Regression tests for parent-loop races found by the simulator (`crates/sim`, 1 000 relays, 10 %
//! crashed): a relay must not take as parent a neighbour whose route, stale while updates are in
//! flight, actually runs through its own subtree. Each test drives one relay by hand, feeding it
//! the exact messages of the race, and fails if the relay sends the `Attach` that closed a loop.

use std::time::{Duration, Instant};

use relaycast_core::node::node_id;
use relaycast_core::wire::{Message, PROTOCOL_VERSION, Route};
use relaycast_core::{Node, NodeConfig, Output, PeerId, Role};

const TOKEN: &str = "t";

/// A node named `name` in the test's cluster.
fn config(role: Role, name: &str) -> NodeConfig {
    NodeConfig { role, name: name.into(), id: node_id(name), token: TOKEN.into(), ..NodeConfig::default() }
}

struct Relay {
    now: Instant,
    node: Node,
}

impl Relay {
    fn new() -> Self {
        // The test's one real clock read: the epoch of its virtual clock.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self { now, node: Node::new(config(Role::Relay, "x")) }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.node.poll_output()).collect()
    }

    /// A neighbour we dialed, handshake done, with a known RTT.
    fn dial(&mut self, peer: u64, name: &str) {
        let now = self.now;
        self.node.peer_dialed(now, PeerId(peer));
        self.node.handle_message(now, PeerId(peer), Message::Welcome { node: name.into(), id: node_id(name) });
        self.node.peer_rtt(now, PeerId(peer), Duration::from_millis(2));
        self.drain();
    }

    /// A neighbour that dialed us, handshake done.
    fn accept(&mut self, peer: u64, name: &str) {
        let now = self.now;
        self.node.peer_accepted(now, PeerId(peer));
        let hello =
            Message::Hello { version: PROTOCOL_VERSION, node: name.into(), id: node_id(name), token: TOKEN.into() };
        self.node.handle_message(now, PeerId(peer), hello);
        self.node.peer_rtt(now, PeerId(peer), Duration::from_millis(2));
        self.drain();
    }

    fn route(&mut self, peer: u64, flood: u64, latency_ms: u64, path: &[&str]) -> Vec<Output> {
        let route = Route {
            flood,
            latency_us: latency_ms * 1000,
            hops: path.len() as u32 - 1,
            path: path.iter().map(|n| node_id(n)).collect(),
        };
        let now = self.now;
        self.node.handle_message(now, PeerId(peer), Message::Route(route));
        self.drain()
    }

    fn msg(&mut self, peer: u64, msg: Message) -> Vec<Output> {
        let now = self.now;
        self.node.handle_message(now, PeerId(peer), msg);
        self.drain()
    }

    /// Time passes beyond the repair hold, and the node's timer fires.
    fn after_the_hold(&mut self) -> Vec<Output> {
        let deadline = self.node.poll_timeout().expect("a timer");
        assert!(deadline <= self.now + Duration::from_millis(100), "the hold is short");
        self.now = deadline;
        self.node.handle_timeout(deadline);
        self.drain()
    }

    fn lose(&mut self, peer: u64) -> Vec<Output> {
        let now = self.now;
        self.node.peer_lost(now, PeerId(peer), "keep-alive");
        self.drain()
    }

    /// `x` is attached to `p` (peer 1), whose route is origin -> p.
    fn attached_below_p() -> Self {
        let mut x = Self::new();
        x.dial(1, "p");
        let out = x.route(1, 1, 10, &["o", "p"]);
        assert!(attaches(&out, 1), "{out:?}");
        x.msg(1, Message::Attached);
        assert_eq!(x.node.parent().map(|(_, n)| n.to_string()), Some("p".into()));
        x
    }
}

fn attaches(out: &[Output], peer: u64) -> bool {
    out.iter().any(|o| matches!(o, Output::Send { peer: p, msg: Message::Attach } if *p == PeerId(peer)))
}

fn any_attach(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::Send { msg: Message::Attach, .. }))
}

/// The race (seed 6 of `tree-1k`): `d` attaches to `x`; before `d`'s new route reaches `y` (a child
/// of `d`), `x` loses its parent and sees `y`'s stale route `o, q, d, y`, which does not contain
/// `x`. Attaching to `y` would close the loop x -> y -> d -> x.
#[test]
fn a_route_through_our_own_child_is_not_a_candidate() {
    let mut x = Relay::attached_below_p();
    x.accept(2, "d");
    let out = x.msg(2, Message::Attach);
    assert!(out.iter().any(|o| matches!(o, Output::Send { msg: Message::Attached, .. })), "{out:?}");
    x.accept(3, "y");
    let out = x.route(3, 1, 14, &["o", "q", "d", "y"]);
    assert!(!any_attach(&out), "{out:?}");
    assert!(x.node.route_view(x.now).backups.is_empty(), "y's route runs through our child d");
    let out = x.lose(1);
    assert!(!attaches(&out, 3), "attaching to y would make the loop x -> y -> d -> x: {out:?}");
    assert!(x.node.parent().is_none());
}

/// Two siblings orphaned by the same crash: `s`'s route `o, p, s` still runs through the dead
/// parent `p` (`s` has not noticed yet). Taking it would not reconnect `x`, and while `s` repairs
/// below `x`'s subtree it can close a loop. Once `s` advertises a route of a newer flood that
/// avoids `p`, it is a fine parent.
#[test]
fn a_route_through_a_lost_neighbour_is_stale_until_a_newer_flood() {
    let mut x = Relay::attached_below_p();
    x.accept(2, "s");
    x.route(2, 1, 12, &["o", "p", "s"]);
    let out = x.lose(1);
    assert!(!attaches(&out, 2), "s's route runs through the parent we just lost: {out:?}");
    let out = x.route(2, 2, 30, &["o", "q", "s"]);
    assert!(attaches(&out, 2), "a newer flood through q is usable: {out:?}");
}

/// The same race when the parent bounces (crash and immediate restart: the old connection is
/// reset, a new one comes up at once). The restarted `p` is welcome as a parent again once it
/// has a route, but `s`'s old route through the previous `p` stays stale until a newer flood.
#[test]
fn a_bounced_neighbour_is_trusted_for_its_own_route_only() {
    let mut x = Relay::attached_below_p();
    x.accept(2, "s");
    x.route(2, 1, 12, &["o", "p", "s"]);
    x.lose(1);
    x.dial(3, "p");
    let out = x.msg(3, Message::NoRoute);
    assert!(!any_attach(&out), "s's route runs through the p that was lost: {out:?}");
    let out = x.route(3, 1, 10, &["o", "p"]);
    assert!(attaches(&out, 3), "the restarted p's own route is current: {out:?}");
}

/// An optional switch (leaving a working parent for a better route) only goes to a feasible
/// route: a newer flood, or lower latency than any we advertised in this flood. When our route
/// worsens (an ancestor repaired to a slower backup), a neighbour's route that looks better may
/// be our own descendant's, stale; it only becomes a candidate with the next flood. A repair
/// (no usable parent) still takes the best candidate at once.
#[test]
fn optional_switches_need_a_feasible_route_repairs_do_not() {
    let mut x = Relay::attached_below_p();
    x.accept(2, "w");
    // p's route worsens from 10 ms to 50 ms within flood 1; w offers 20 ms, also flood 1.
    x.route(2, 1, 20, &["o", "a", "w"]);
    let out = x.route(1, 1, 50, &["o", "p"]);
    assert!(!any_attach(&out), "20 ms is worse than the 11 ms we advertised in flood 1: {out:?}");
    // The next flood makes w's route feasible.
    x.route(1, 2, 50, &["o", "p"]);
    let out = x.route(2, 2, 20, &["o", "a", "w"]);
    assert!(attaches(&out, 2), "{out:?}");
    x.msg(2, Message::Attached);
    assert_eq!(x.node.parent().map(|(_, n)| n.to_string()), Some("w".into()));
    // Repair: lose w; p (infeasible: 50 ms, flood 2) is still taken, after a short wait for a
    // newer flood.
    let out = x.lose(2);
    assert!(!any_attach(&out), "{out:?}");
    let out = x.after_the_hold();
    assert!(attaches(&out, 1), "a repair takes the best candidate: {out:?}");
}

/// The switch race (`chaos.toml` seed 223): `x` leaves a working parent `p` for `b`, whose
/// route is of flood 1. While the answer is in flight, `p` brings flood 2, which `x` advertises,
/// and `c` attaches to `x` because of it. `b` meanwhile moved below `c` (its update is queued
/// behind a lost frame), then answers `Attached`. Taking `b` now would move `x` back to a flood-1
/// route, which is no longer feasible, and close the loop x -> b -> c -> x: `x` declines.
#[test]
fn a_switch_that_became_infeasible_while_in_flight_is_declined() {
    let mut x = Relay::attached_below_p();
    x.accept(2, "b");
    let out = x.route(2, 1, 10, &["o", "q", "b"]);
    assert!(!any_attach(&out), "no better than p yet: {out:?}");
    // p's route worsens within flood 1: b (10 ms, below the 11 ms we advertised) is feasible
    // and now clearly better.
    let out = x.route(1, 1, 30, &["o", "p"]);
    assert!(attaches(&out, 2), "{out:?}");
    // Flood 2 arrives through p; c attaches to x.
    x.route(1, 2, 30, &["o", "p"]);
    x.accept(3, "c");
    let out = x.msg(3, Message::Attach);
    assert!(out.iter().any(|o| matches!(o, Output::Send { peer: PeerId(3), msg: Message::Attached })), "{out:?}");
    // b's answer arrives before its newer route.
    let out = x.msg(2, Message::Attached);
    assert!(
        out.iter().any(|o| matches!(o, Output::Send { peer: PeerId(2), msg: Message::Detach })),
        "b's flood-1 route is not feasible against the flood 2 we advertised: {out:?}"
    );
    assert_eq!(x.node.parent().map(|(_, n)| n.to_string()), Some("p".into()));
}

/// The withdrawal race (`chaos.toml` seed 117): `x` and `s` are children of `p`. `p` loses its
/// own route and withdraws it (`NoRoute`). `s` has not heard yet: its route `o, p, s` is stale,
/// and `s` is about to repair too. Taking it would let `x` and `s` take each other's routes
/// through `p`. Like a lost neighbour's, routes through `p` from before are stale until a newer
/// flood; `p`'s own new route is current.
#[test]
fn a_route_through_a_neighbour_that_withdrew_is_stale() {
    let mut x = Relay::attached_below_p();
    x.accept(2, "s");
    x.route(2, 1, 12, &["o", "p", "s"]);
    let out = x.msg(1, Message::NoRoute);
    assert!(!attaches(&out, 2), "s's route runs through p, which just withdrew it: {out:?}");
    assert!(x.node.parent().is_some_and(|(_, n)| n == "p"), "still attached, without a route");
    let out = x.route(2, 2, 30, &["o", "q", "s"]);
    assert!(attaches(&out, 2), "a newer flood through q is usable: {out:?}");
}

/// The repair race (`chaos.toml` seed 15, with route refreshes): `x` loses its parent just after
/// `y` moved below one of `x`'s children, which `x` cannot see yet. `y`'s route from before the
/// move is infeasible for `x` (slower than the route `x` advertised in that flood) and stale;
/// taking it closes a loop. `z` offers a newer flood, which is feasible however slow. A repair
/// takes the feasible route when there is one, and the best usable one only when there is none.
#[test]
fn a_repair_takes_a_feasible_route_when_there_is_one() {
    let mut x = Relay::attached_below_p();
    x.accept(2, "y");
    x.accept(3, "z");
    x.route(2, 1, 12, &["o", "q", "y"]);
    x.route(3, 2, 40, &["o", "s", "z"]);
    let out = x.lose(1);
    assert!(attaches(&out, 3), "z's newer flood is feasible, y's 12 ms in flood 1 is not: {out:?}");
    // Without a feasible candidate, the repair asks for a newer flood, and takes the best usable
    // route when none came within the hold.
    let mut x = Relay::attached_below_p();
    x.accept(2, "y");
    x.route(2, 1, 12, &["o", "q", "y"]);
    let out = x.lose(1);
    assert!(!any_attach(&out), "{out:?}");
    let out = x.after_the_hold();
    assert!(attaches(&out, 2), "{out:?}");
}

/// Relays orphaned by one fault (`chaos.toml`: 30 % of the links cut at once) used to repair at
/// the same instant, each on routes the others were about to make stale: transient loops in
/// ~2.5 % of seeds. An orphan with no feasible route now asks for a newer flood
/// (`RouteRequest`, Babel's seqno request) and waits briefly; a route of that flood is feasible
/// and comes only through relays still connected to the origin.
#[test]
fn a_repair_with_no_feasible_route_asks_for_a_newer_flood() {
    let mut x = Relay::attached_below_p();
    x.accept(2, "y");
    x.route(2, 1, 12, &["o", "q", "y"]);
    let out = x.lose(1);
    assert!(
        out.iter().any(|o| matches!(o, Output::Send { peer: PeerId(2), msg: Message::RouteRequest { flood: 1 } })),
        "asks y for a flood newer than 1: {out:?}"
    );
    assert!(!any_attach(&out), "y's route is infeasible: wait for a newer one: {out:?}");
    let out = x.route(2, 2, 30, &["o", "q", "y"]);
    assert!(attaches(&out, 2), "flood 2 is feasible, taken at once: {out:?}");
}

/// The origin answers a request with a new flood at once; a relay with no newer route passes
/// the request to its parent, once.
#[test]
fn requests_for_a_newer_flood_go_up_to_the_origin_which_starts_one() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut o = Node::new(config(Role::Origin, "o"));
    o.peer_accepted(now, PeerId(1));
    let hello = Message::Hello { version: PROTOCOL_VERSION, node: "p".into(), id: node_id("p"), token: TOKEN.into() };
    o.handle_message(now, PeerId(1), hello);
    o.handle_timeout(now);
    let flood_of = |out: &[Output]| {
        out.iter().find_map(|o| match o {
            Output::Send { msg: Message::Route(r), .. } => Some(r.flood),
            Output::Send { msg: Message::RouteRefresh { flood, .. }, .. } => Some(*flood),
            _ => None,
        })
    };
    let first = flood_of(&std::iter::from_fn(|| o.poll_output()).collect::<Vec<_>>()).expect("a first flood");
    o.handle_message(now + Duration::from_millis(200), PeerId(1), Message::RouteRequest { flood: first });
    let out: Vec<Output> = std::iter::from_fn(|| o.poll_output()).collect();
    assert_eq!(flood_of(&out), Some(first + 1), "a new flood at once: {out:?}");

    let mut x = Relay::attached_below_p();
    x.accept(2, "c");
    let out = x.msg(2, Message::RouteRequest { flood: 1 });
    assert!(
        out.iter().any(|o| matches!(o, Output::Send { peer: PeerId(1), msg: Message::RouteRequest { flood: 1 } })),
        "passed up to p: {out:?}"
    );
    let out = x.msg(2, Message::RouteRequest { flood: 1 });
    assert!(!out.iter().any(|o| matches!(o, Output::Send { msg: Message::RouteRequest { .. }, .. })), "once: {out:?}");
}

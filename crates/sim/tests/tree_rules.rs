//! The tree's rules on small hand-built topologies, with exact expectations, driven through the
//! simulator (real latencies, keep-alives and timers): parent choice (lowest latency, then fewest
//! hops), flood de-duplication in a clique, capacity refusal, subscription propagation and
//! release hop by hop, and keep-alive detection of a crashed parent with a gap-free repair.

use std::time::Duration;

use relaycast_core::node::ChannelStatus;
use relaycast_core::{Event, Name};
use relaycast_sim::{Action, Scenario, Sim, Topology};

/// No viewers, no faults; unlimited bandwidth so that RTTs are exactly twice the link latency.
fn scenario() -> Scenario {
    let mut s = Scenario::default();
    s.links.bandwidth_mbps = 0.0;
    s.workload.viewer_fraction = 0.0;
    s
}

fn sim(s: &Scenario, links: &[(&str, &str, f64)]) -> Sim {
    Sim::with_topology(s, Topology::from_links("origin", links), 1).expect("valid scenario")
}

fn idx(sim: &Sim, name: &str) -> usize {
    sim.topology().index(name).expect("node exists")
}

fn parent(sim: &Sim, name: &str) -> Option<String> {
    sim.parent_of(idx(sim, name)).map(|p| sim.topology().name(p).to_string())
}

fn live() -> Name {
    Name::new("live").expect("valid name")
}

fn carries(sim: &Sim, name: &str) -> bool {
    sim.node(idx(sim, name)).and_then(|n| n.channel(&live())).is_some()
}

#[test]
fn the_lower_latency_branch_wins_whichever_route_arrives_first() {
    for (a, b, want) in [(5.0, 3.0, "b"), (3.0, 5.0, "a")] {
        let mut sim = sim(&scenario(), &[("origin", "a", a), ("a", "d", a), ("origin", "b", b), ("b", "d", b)]);
        sim.run_until(Duration::from_secs(10));
        assert_eq!(parent(&sim, "d").as_deref(), Some(want), "branches {a} ms vs {b} ms");
        assert!(sim.report().ok());
    }
}

#[test]
fn equal_latency_goes_to_the_route_with_fewer_hops() {
    // d's parent p dies; its two backups both give 18 ms: a (2 hops: origin, a) and b (3 hops:
    // origin, c, b). b's connection to d is older, so it has the lower peer id: without the hop
    // rule the tie would go to b.
    let links = [
        ("origin", "p", 1.0),
        ("p", "d", 1.0),
        ("origin", "c", 3.0),
        ("c", "b", 5.0),
        ("b", "d", 10.0),
        ("origin", "a", 8.0),
        ("a", "d", 10.0),
    ];
    let mut sim = sim(&scenario(), &links);
    sim.run_until(Duration::from_secs(5));
    assert_eq!(parent(&sim, "d").as_deref(), Some("p"));
    assert_eq!(parent(&sim, "b").as_deref(), Some("c"));
    let d = idx(&sim, "d");
    let backups = sim.node(d).expect("alive").route_view(sim.clock()).backups;
    assert_eq!(backups, vec![("a".to_string(), 18_000), ("b".to_string(), 18_000)], "both at 18 ms, a first");
    let p = idx(&sim, "p");
    sim.schedule(Duration::from_secs(5), Action::Crash(p));
    sim.run_until(Duration::from_secs(10));
    assert_eq!(parent(&sim, "d").as_deref(), Some("a"));
    assert!(sim.report().ok());
}

#[test]
fn floods_are_deduplicated_in_a_clique_and_settle_between_rounds() {
    let relays = ["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"];
    let mut links = vec![("origin", "r1", 4.0), ("origin", "r2", 6.0)];
    for (i, a) in relays.iter().enumerate() {
        for (j, b) in relays.iter().enumerate().skip(i + 1) {
            links.push((a, b, 1.0 + ((i * 7 + j * 3) % 5) as f64));
        }
    }
    let mut sim = sim(&scenario(), &links);
    let n_links = sim.topology().edges().len() as u64;
    assert_eq!(n_links, 30);
    // Floods leave the origin every 2 s, from t = 0; measure rounds 5..15 in steady state.
    sim.run_until(Duration::from_millis(9_000));
    // A flood goes as whole `Route`s where a path is news to a neighbour, else as refreshes.
    let routes = |sim: &Sim| sim.messages_sent("Route") + sim.messages_sent("RouteRefresh");
    let (before, whole_before) = (routes(&sim), sim.messages_sent("Route"));
    let mut per_round = Vec::new();
    for round in 5..15u64 {
        let start = Duration::from_secs(2 * round);
        sim.run_until(start + Duration::from_millis(1000));
        let settled = routes(&sim);
        sim.run_until(start + Duration::from_millis(1999));
        assert_eq!(routes(&sim), settled, "round {round} went quiet within 1 s");
        per_round.push(settled);
    }
    let total = routes(&sim) - before;
    let rounds = per_round.len() as u64;
    assert!(total <= 2 * n_links * rounds, "{total} route messages in {rounds} floods over {n_links} links");
    assert!(total >= n_links * rounds, "every flood reaches the whole clique: {total}");
    let whole = sim.messages_sent("Route") - whole_before;
    assert!(whole * 10 <= total, "paths settled: {whole} of {total} route messages carried a whole path");
    assert!(sim.report().ok());
}

#[test]
fn a_full_origin_refuses_children_and_they_attach_below_its_children() {
    let mut s = scenario();
    s.node.origin_max_children = Some(2);
    let relays = ["r1", "r2", "r3", "r4"];
    let mut links: Vec<(&str, &str, f64)> = relays.iter().map(|r| ("origin", *r, 5.0)).collect();
    for (i, a) in relays.iter().enumerate() {
        for b in relays.iter().skip(i + 1) {
            links.push((a, b, 1.0));
        }
    }
    let mut sim = sim(&s, &links);
    sim.run_until(Duration::from_secs(10));
    let origin_children: Vec<String> =
        sim.children_of(0).into_iter().map(|c| sim.topology().name(c).to_string()).collect();
    assert_eq!(origin_children.len(), 2, "{origin_children:?}");
    for r in relays {
        let p = parent(&sim, r).expect("every relay has a parent");
        if !origin_children.iter().any(|c| c == r) {
            assert!(origin_children.contains(&p), "{r} attached below the origin's children, not to {p}");
        }
    }
    assert!(sim.messages_sent("AttachRefused") >= 2);
    assert!(sim.report().ok());
}

#[test]
fn a_viewer_pulls_the_channel_along_its_path_only_and_releases_it_hop_by_hop() {
    let mut s = scenario();
    s.node.idle_timeout_s = 5.0;
    let links = [("origin", "a", 2.0), ("a", "b", 2.0), ("b", "c", 2.0), ("a", "x", 2.0), ("origin", "y", 2.0)];
    let mut sim = sim(&s, &links);
    let c = idx(&sim, "c");
    sim.schedule(Duration::from_secs(1), Action::Viewer { node: c, on: true });
    sim.schedule(Duration::from_secs(20), Action::Viewer { node: c, on: false });
    sim.run_until(Duration::from_secs(15));
    for on_path in ["a", "b", "c"] {
        let status = sim.node(idx(&sim, on_path)).and_then(|n| n.channel(&live())).map(|ch| ch.status.clone());
        assert_eq!(status, Some(ChannelStatus::Upstream { live: true }), "{on_path} carries the channel");
    }
    assert!(!carries(&sim, "x") && !carries(&sim, "y"), "nodes off the path carry nothing");
    let origin_subs = sim.node(0).and_then(|n| n.channel(&live())).map(|ch| ch.subscribers.len());
    assert_eq!(origin_subs, Some(1));
    // The viewer leaves at 20 s: c lets go after the idle timeout, then b, then a.
    let mut released = Vec::new();
    let mut t = Duration::from_secs(20);
    while t < Duration::from_secs(45) && released.len() < 3 {
        t += Duration::from_millis(50);
        sim.run_until(t);
        for n in ["c", "b", "a"] {
            if !carries(&sim, n) && !released.iter().any(|(m, _)| *m == n) {
                released.push((n, t));
            }
        }
    }
    let order: Vec<&str> = released.iter().map(|(n, _)| *n).collect();
    assert_eq!(order, vec!["c", "b", "a"], "{released:?}");
    for w in released.windows(2) {
        assert!(w[1].1 - w[0].1 >= Duration::from_millis(4_900), "{released:?}");
    }
    // Viewers ask every second: the last request was at 19 s.
    assert!(released[0].1 >= Duration::from_secs(24), "not before the idle timeout: {released:?}");
    // Let a's Unsubscribe cross its link to the origin.
    sim.run_until(t + Duration::from_secs(1));
    let origin = sim.node(0).and_then(|n| n.channel(&live())).expect("origin keeps its channel");
    assert!(origin.subscribers.is_empty());
    assert_eq!(origin.status, ChannelStatus::Local);
    assert!(sim.report().ok());
}

#[test]
fn a_crashed_parent_is_detected_within_three_keepalives_and_the_window_has_no_gap() {
    let s = scenario();
    let keepalive = Duration::from_millis(s.node.keepalive_ms);
    let links = [("origin", "p", 2.0), ("p", "c", 2.0), ("origin", "b", 5.0), ("b", "c", 5.0)];
    let mut sim = sim(&s, &links);
    sim.record_events();
    let (c, p) = (idx(&sim, "c"), idx(&sim, "p"));
    sim.schedule(Duration::ZERO, Action::Viewer { node: c, on: true });
    let crash = Duration::from_millis(10_300);
    sim.schedule(crash, Action::Crash(p));
    sim.run_until(Duration::from_secs(10));
    assert_eq!(parent(&sim, "c").as_deref(), Some("p"));
    sim.run_until(Duration::from_secs(30));
    let lost = sim
        .log()
        .iter()
        .find(|l| l.node == c && l.at > crash && matches!(l.event, Event::ParentLost { .. }))
        .map(|l| l.at)
        .expect("c noticed");
    assert!(lost - crash <= keepalive * 3, "detected after {:?}", lost - crash);
    let changed = sim
        .log()
        .iter()
        .find(|l| l.node == c && l.at > crash && matches!(l.event, Event::ParentChanged { .. }))
        .map(|l| l.at)
        .expect("c re-attached");
    assert!(changed - crash <= keepalive * 3 + Duration::from_millis(20), "repaired after {:?}", changed - crash);
    assert_eq!(parent(&sim, "c").as_deref(), Some("b"));
    let window =
        &sim.node(c).and_then(|n| n.channel(&live())).expect("c carries").renditions[&Name::new("src").unwrap()].window;
    let seqs: Vec<u64> = window.iter().map(|seg| seg.meta.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "no gap: {seqs:?}");
    assert_eq!(seqs.last(), Some(&14), "everything up to the segment published at 28 s: {seqs:?}");
    let report = sim.report();
    assert!(report.ok(), "{report}");
    assert_eq!(report.repairs.count, 1);
    assert_eq!(report.delivery.ratio, 1.0);
}

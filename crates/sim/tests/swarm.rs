//! The simulator test: 10 000 viewers sharing segments with the core's Swarm policy,
//! against a CDN-only baseline on the same capped edge (`scenarios/swarm-10k.toml`).

use std::path::Path;

use relaycast_sim::swarm::{SwarmScenario, run_swarm};

#[test]
fn ten_thousand_viewers_offload_the_edge_without_adding_stalls() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/swarm-10k.toml");
    let s = SwarmScenario::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(s.viewers, 10_000);
    let (p2p, cdn) = run_swarm(&s);
    println!("{p2p}\n{cdn}");
    // Everyone played: about (duration − join time) / segment per viewer, at the very least.
    assert!(p2p.segments_played > 10_000 * 10, "{}", p2p.segments_played);
    // The CDN-only baseline is overloaded (that is the point of the scenario)...
    assert!(cdn.stall_ratio > 0.05, "the baseline must be overloaded: {cdn}");
    // ...sharing takes most of the load off the edge and adds no stalls.
    assert!(p2p.offload >= 0.7, "{p2p}");
    assert!(p2p.stalls <= cdn.stalls && p2p.stall_ratio <= cdn.stall_ratio, "{p2p}\n{cdn}");
    // Liars are caught by their victims and reported.
    assert!(p2p.bad_pieces > 0 && p2p.liars_reported == p2p.liars, "{p2p}");
}

#[test]
fn one_seed_one_result() {
    let s = SwarmScenario { viewers: 300, duration_s: 30.0, edge_mbps: 30.0, ..SwarmScenario::default() };
    let (a, _) = run_swarm(&s);
    let (b, _) = run_swarm(&s);
    assert_eq!((a.segments_played, a.peer_bytes, a.stalls), (b.segments_played, b.peer_bytes, b.stalls));
    let (c, _) = run_swarm(&SwarmScenario { seed: 2, ..s });
    assert_ne!((a.peer_bytes, a.edge_sent_bytes), (c.peer_bytes, c.edge_sent_bytes));
}

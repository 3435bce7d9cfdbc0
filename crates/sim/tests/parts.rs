//! Low-latency parts in the simulator: the same chain of relays over slow links carries a stream
//! either as whole segments (store-and-forward: every hop waits for the whole segment) or as
//! parts forwarded cut-through. Every segment still arrives whole everywhere, and the segment's
//! delay at the end of the chain shrinks from about one segment transmission per hop to about
//! one part transmission per hop.

use std::time::Duration;

use relaycast_sim::{Scenario, Sim, Topology};

/// origin -> a -> b -> c -> d, 5 ms per link, 10 Mbit/s: a 250 kB segment takes 200 ms per hop.
fn run(parts: u32) -> relaycast_sim::Report {
    let mut s = Scenario::default();
    s.links.bandwidth_mbps = 10.0;
    s.workload.parts_per_segment = parts;
    s.workload.viewer_fraction = 1.0;
    let links = [("origin", "a", 5.0), ("a", "b", 5.0), ("b", "c", 5.0), ("c", "d", 5.0)];
    let mut sim = Sim::with_topology(&s, Topology::from_links("origin", &links), 7).expect("valid scenario");
    sim.run_until(Duration::from_secs(60));
    sim.report()
}

#[test]
fn parts_cut_through_the_chain_and_every_segment_still_arrives_whole() {
    let whole = run(0);
    let parts = run(10);
    for r in [&whole, &parts] {
        assert!(r.ok(), "violations: {:?}", r.violations);
        assert_eq!(r.delivery.ratio, 1.0, "{:?}", r.delivery);
    }
    // At the end of the chain (the worst delay): four hops of 200 ms store-and-forward, against
    // four hops of a 20 ms part (a segment is whole when its last part is in).
    assert!(whole.delay.max_ms > 800.0, "whole segments: {:?}", whole.delay);
    assert!(parts.delay.max_ms < 0.25 * whole.delay.max_ms, "parts {:?} vs whole {:?}", parts.delay, whole.delay);
    assert!(parts.traffic.segment_frames > 5 * whole.traffic.segment_frames, "parts travel as frames");
    // Deterministic: the same seed gives the same trace.
    assert_eq!(run(10).trace_hash, parts.trace_hash);
}

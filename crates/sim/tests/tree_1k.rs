//! The simulator test, on the committed scenario `scenarios/tree-1k.toml`: 1 000 relays on
//! a random geometric graph, one channel, viewers on 30 % of relays, 10 % of relays crashed at
//! random times (nobody told). It proves that the parent graph never has a cycle (checked at
//! every parent change and at every publish and crash), that every live viewer relay connected
//! to the origin receives every segment published after its first one (delivery ratio 1.0),
//! that every orphan finds a new parent within 3 keep-alive intervals + 1 RTT, and that one seed
//! gives one trace hash (two runs) while another seed gives another.

use std::path::Path;

use relaycast_sim::{Report, Scenario, Sim};

fn run(seed: u64) -> Report {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tree-1k.toml");
    let scenario = Scenario::load(&path).expect("scenario loads");
    assert_eq!(scenario.topology.relays, 1000);
    Sim::from_scenario(&scenario, seed).expect("scenario builds").run()
}

#[test]
fn a_thousand_relays_with_ten_percent_crashing() {
    let report = run(1);
    println!("{report}");
    assert!(report.ok(), "invariants violated:\n{report}");
    // The run exercised what it claims to.
    assert_eq!(report.faults.crashes, 100);
    assert_eq!(report.delivery.viewer_relays, 300);
    assert!(report.delivery.checked_relays >= 250, "{}", report.delivery.checked_relays);
    assert!(report.tree.checks >= 150, "a check at every publish and crash");
    assert!(report.repairs.count >= 50, "crashes orphaned relays: {}", report.repairs.count);
    // (a) no cycle, ever.
    assert_eq!(report.tree.cycles, 0);
    // (b) delivery ratio 1.0 for live, connected viewer relays.
    assert!(report.delivery.expected > 10_000);
    assert_eq!(report.delivery.received, report.delivery.expected);
    assert_eq!(report.delivery.starved, 0);
    // (c) every repair within 3 keep-alives + 1 RTT (the bound adds each new parent's RTT).
    assert_eq!(report.repairs.over_bound, 0);
    assert_eq!(report.repairs.unrepaired, 0);
    assert!(report.repairs.max_ms <= report.repairs.bound_base_ms + 50.0, "{}", report.repairs.max_ms);
    // (g) same seed, same trace; another seed, another trace.
    let again = run(1);
    assert_eq!(again.trace_hash, report.trace_hash);
    assert_eq!(again.events, report.events);
    assert_ne!(run(2).trace_hash, report.trace_hash);
}

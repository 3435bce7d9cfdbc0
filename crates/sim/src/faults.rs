//! Faults and other scheduled actions, and how a scenario's `[faults]` become a timed plan.
//!
//! The vocabulary follows turmoil's: crash (the node stops, nobody is told), restart (fresh
//! state, redials its neighbours), bounce (both at once), partition (links silently drop frames
//! for an interval, then heal).

use std::time::Duration;

use rand::Rng;
use rand::seq::index;

use crate::scenario::{FaultAction, Scenario, ScenarioError};
use crate::topology::Topology;

/// Something the engine does at a scheduled time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The node stops; its neighbours are not told (they find out by keep-alive).
    Crash(usize),
    /// A crashed node comes back as a fresh `Node` and reconnects to its neighbours.
    Restart(usize),
    /// Crash and restart in the same instant.
    Bounce(usize),
    /// These links (edge indices) silently drop every frame for `duration`.
    Partition { edges: Vec<usize>, duration: Duration },
    /// End of a partition: links come back and broken connections are re-established.
    Heal(Vec<usize>),
    /// Viewers at this relay start (or stop) asking for the channel.
    Viewer { node: usize, on: bool },
}

/// The scenario's faults as `(time, action)`, in time order (ties: in the order planned).
pub fn plan(s: &Scenario, topo: &Topology, rng: &mut impl Rng) -> Result<Vec<(Duration, Action)>, ScenarioError> {
    let relays = topo.len().saturating_sub(1);
    let mut out = Vec::new();
    let kills = (s.faults.kill_fraction * relays as f64).round() as usize;
    if kills > 0 {
        let [from, to] = s.faults.kill_window_s.unwrap_or([0.1 * s.duration_s, 0.9 * s.duration_s]);
        if !(0.0 <= from && from < to) {
            return Err(ScenarioError::Invalid("faults.kill_window_s must be [from, to] with from < to".into()));
        }
        for i in index::sample(rng, relays, kills).into_vec() {
            let node = i + 1;
            let at = rng.random_range(from..to);
            out.push((Duration::from_secs_f64(at), Action::Crash(node)));
            if let Some(after) = s.faults.restart_after_s {
                out.push((Duration::from_secs_f64(at + after), Action::Restart(node)));
            }
        }
    }
    for p in &s.faults.partition {
        let mut edges: Vec<usize> = Vec::new();
        let cut = (p.links_fraction * topo.edges().len() as f64).round() as usize;
        if cut > 0 {
            edges.extend(index::sample(rng, topo.edges().len(), cut.min(topo.edges().len())).into_vec());
        }
        for name in &p.isolate {
            let n = node(topo, name)?;
            edges.extend(topo.neighbours(n).iter().map(|&(_, e)| e));
        }
        edges.sort_unstable();
        edges.dedup();
        let duration = Duration::from_secs_f64(p.duration_s.max(0.0));
        out.push((Duration::from_secs_f64(p.at_s), Action::Partition { edges, duration }));
    }
    for e in &s.faults.event {
        let n = node(topo, &e.node)?;
        let action = match e.action {
            FaultAction::Crash => Action::Crash(n),
            FaultAction::Restart => Action::Restart(n),
            FaultAction::Bounce => Action::Bounce(n),
            FaultAction::Isolate => {
                let Some(d) = e.duration_s else {
                    return Err(ScenarioError::Invalid(format!("isolate {} needs duration_s", e.node)));
                };
                let edges = topo.neighbours(n).iter().map(|&(_, e)| e).collect();
                Action::Partition { edges, duration: Duration::from_secs_f64(d) }
            }
        };
        if n == 0 && matches!(action, Action::Crash(_) | Action::Restart(_) | Action::Bounce(_)) {
            return Err(ScenarioError::Invalid("the origin cannot crash in this simulator".into()));
        }
        out.push((Duration::from_secs_f64(e.at_s.max(0.0)), action));
    }
    out.sort_by_key(|(t, _)| *t);
    Ok(out)
}

/// The relays with viewers: `fraction` of them, chosen at random.
pub fn pick_viewers(relays: usize, fraction: f64, rng: &mut impl Rng) -> Vec<usize> {
    let n = (fraction * relays as f64).round() as usize;
    let mut v: Vec<usize> = index::sample(rng, relays, n.min(relays)).into_iter().map(|i| i + 1).collect();
    v.sort_unstable();
    v
}

fn node(topo: &Topology, name: &str) -> Result<usize, ScenarioError> {
    topo.index(name).ok_or_else(|| ScenarioError::Invalid(format!("no node named {name:?} in the topology")))
}

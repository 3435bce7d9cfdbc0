//! Invariants and measurements, fed by the engine as the run goes.
//!
//! - (a) no cycle in the parent graph: checked at every parent change (walking up from the node
//!   that changed) and over the whole graph at every publish and fault;
//! - (b) delivery: per node incarnation, which segments arrived; at the end, every live viewer
//!   relay connected to the origin must hold every segment published after its first one
//!   (except while it was cut off, and the last `delivery_slack_s`);
//! - (c) repair time from a parent's crash to each orphan's next `ParentChanged`;
//! - (d) per-chunk delay and its ratio to the shortest path;
//! - (e) tree depth, origin fan-out, children per node.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::link::Nanos;
use crate::report::{Delay, Delivery, Repairs, Tree};

const MS: f64 = 1e6;
/// Ratios are recorded in thousandths.
const RATIO_SCALE: f64 = 1000.0;
/// Violations listed in full (all are counted).
const MAX_LISTED: usize = 50;

/// What one node incarnation received.
#[derive(Clone, Debug, Default)]
struct Received {
    alive_since: Nanos,
    /// First segment stored: (seq, time).
    first: Option<(u64, Nanos)>,
    /// When the node last started carrying the channel: segments published before were
    /// backfilled (old by design) and do not count as delay samples.
    session_since: Nanos,
    seqs: Vec<u64>,
    /// Segments published while this node was cut off from the origin.
    cut_off: Vec<u64>,
}

impl Received {
    fn set(&mut self, seq: u64) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.seqs.len() <= w {
            self.seqs.resize(w + 1, 0);
        }
        self.seqs[w] |= 1 << b;
    }

    fn has(&self, seq: u64) -> bool {
        self.seqs.get((seq / 64) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

/// A node that lost its parent to a crash and has not found a new one yet.
#[derive(Clone, Copy, Debug)]
struct Orphan {
    since: Nanos,
    dead_parent: usize,
    detected: bool,
    /// When it noticed, no neighbour was a valid parent candidate: it had to wait for one (for
    /// instance for a child to find another route first). Still held to the bound; counted.
    no_backup: bool,
    /// A later fault (a partition elsewhere) cut it off from the origin while it repaired:
    /// the bound, which assumes a single failure, does not apply.
    cut_off_later: bool,
}

/// The parent graph at one instant, as the engine sees it.
pub struct Snapshot<'a> {
    pub now: Nanos,
    /// Per node: its parent, if it has one that is alive (`None` for dead nodes).
    pub parents: &'a [Option<usize>],
    /// Per node: alive and connected to the origin over live links.
    pub connected: &'a [bool],
    pub alive: &'a [bool],
    pub children: &'a [usize],
    pub origin_subscribers: usize,
    /// The segment just published, if this check follows a publish.
    pub published: Option<u64>,
}

pub struct Metrics {
    names: Vec<String>,
    viewers: Vec<bool>,
    /// Per node: (latency-shortest path bound, strict bound), for delay ratios.
    bounds: Vec<Option<(Nanos, Nanos)>>,
    published: Vec<Nanos>,
    received: Vec<Received>,
    delay_us: Histogram<u64>,
    ratio: Histogram<u64>,
    strict_ratio: Histogram<u64>,
    orphans: BTreeMap<usize, Orphan>,
    repair_us: Histogram<u64>,
    detect_us: Histogram<u64>,
    repair_bound_base: Nanos,
    over_bound: u64,
    overlapping: u64,
    overlapping_max: Nanos,
    no_backup: u64,
    no_backup_max: Nanos,
    cut_off_orphans: u64,
    tree: Tree,
    violations: Vec<String>,
    violation_count: usize,
}

impl Metrics {
    pub fn new(
        names: Vec<String>,
        viewers: Vec<bool>,
        bounds: Vec<Option<(Nanos, Nanos)>>,
        repair_bound_base: Nanos,
    ) -> Self {
        let n = names.len();
        // Invariant: 3 significant figures is a valid precision for an auto-resizing histogram.
        let hist = || Histogram::<u64>::new(3).expect("valid histogram precision");
        Self {
            names,
            viewers,
            bounds,
            published: Vec::new(),
            received: vec![Received::default(); n],
            delay_us: hist(),
            ratio: hist(),
            strict_ratio: hist(),
            orphans: BTreeMap::new(),
            repair_us: hist(),
            detect_us: hist(),
            repair_bound_base,
            over_bound: 0,
            overlapping: 0,
            overlapping_max: 0,
            no_backup: 0,
            no_backup_max: 0,
            cut_off_orphans: 0,
            tree: Tree::default(),
            violations: Vec::new(),
            violation_count: 0,
        }
    }

    pub fn set_viewer(&mut self, node: usize, on: bool) {
        self.viewers[node] = on;
    }

    pub fn violation(&mut self, v: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_LISTED {
            self.violations.push(v);
        }
    }

    pub fn violation_count(&self) -> usize {
        self.violation_count
    }

    pub fn on_publish(&mut self, seq: u64, now: Nanos) {
        debug_assert_eq!(seq as usize, self.published.len(), "segments are numbered from 0");
        self.published.push(now);
    }

    pub fn published(&self) -> usize {
        self.published.len()
    }

    /// A relay stored segment `seq`; returns its delay (for the trace).
    pub fn on_store(&mut self, node: usize, seq: u64, now: Nanos) -> Option<Nanos> {
        let published = *self.published.get(seq as usize)?;
        let delay = now.saturating_sub(published);
        let r = &mut self.received[node];
        r.first.get_or_insert((seq, now));
        r.set(seq);
        // Only segments published after the relay subscribed: a join backfill is old by design.
        if published >= r.session_since {
            let _ = self.delay_us.record((delay / 1000).max(1));
            if let Some((bound, strict)) = self.bounds[node] {
                let _ = self.ratio.record((delay as f64 / bound.max(1) as f64 * RATIO_SCALE) as u64);
                let _ = self.strict_ratio.record((delay as f64 / strict.max(1) as f64 * RATIO_SCALE) as u64);
            }
        }
        Some(delay)
    }

    /// `node` crashed; `orphans` are the live nodes whose parent it was and which still have a
    /// path to the origin; `cut_off` more have none (they cannot repair; not timed).
    pub fn on_crash(&mut self, node: usize, now: Nanos, orphans: &[usize], cut_off: usize) {
        self.cut_off_orphans += cut_off as u64;
        self.orphans.remove(&node);
        for &o in orphans {
            self.orphans.insert(
                o,
                Orphan { since: now, dead_parent: node, detected: false, no_backup: false, cut_off_later: false },
            );
        }
    }

    pub fn on_restart(&mut self, node: usize, now: Nanos) {
        self.received[node] = Received { alive_since: now, ..Received::default() };
    }

    /// `node` started carrying the channel (subscribed upstream).
    pub fn on_subscribed(&mut self, node: usize, now: Nanos) {
        self.received[node].session_since = now;
    }

    /// When `node` was orphaned and by whose crash, if it is still looking for a parent.
    pub fn orphan(&self, node: usize) -> Option<(Nanos, usize)> {
        self.orphans.get(&node).map(|o| (o.since, o.dead_parent))
    }

    /// `node` noticed it lost its parent; `has_backup`: it had a valid candidate to move to.
    pub fn on_parent_lost(&mut self, node: usize, now: Nanos, has_backup: bool) {
        if let Some(o) = self.orphans.get_mut(&node)
            && !o.detected
        {
            o.detected = true;
            o.no_backup = !has_backup;
            let _ = self.detect_us.record((now - o.since) / 1000);
        }
    }

    /// `node` attached to a new parent whose link has round-trip time `rtt`. `overlapping`: another
    /// fault hit a neighbour of the node around the same time, so the bound (which assumes a
    /// single failure) does not apply.
    pub fn on_parent_changed(&mut self, node: usize, now: Nanos, rtt: Nanos, overlapping: bool) {
        let Some(o) = self.orphans.remove(&node) else { return };
        let took = now - o.since;
        if overlapping || o.cut_off_later {
            self.overlapping += 1;
            self.overlapping_max = self.overlapping_max.max(took);
            return;
        }
        if o.no_backup {
            self.no_backup += 1;
            self.no_backup_max = self.no_backup_max.max(took);
        }
        let _ = self.repair_us.record((took / 1000).max(1));
        let bound = self.repair_bound_base + rtt;
        if took > bound {
            self.over_bound += 1;
            let (n, p) = (&self.names[node], &self.names[o.dead_parent]);
            self.violation(format!(
                "repair: {n} found a new parent {:.0} ms after {p} crashed (bound {:.0} ms)",
                took as f64 / MS,
                bound as f64 / MS
            ));
        }
    }

    /// A cycle was found; `path` lists it.
    pub fn on_cycle(&mut self, now: Nanos, path: &[usize]) {
        self.tree.cycles += 1;
        let names: Vec<&str> = path.iter().map(|&i| self.names[i].as_str()).collect();
        self.violation(format!("cycle in the parent graph at {:.3} s: {}", now as f64 / 1e9, names.join(" -> ")));
    }

    /// Whole-graph checks and tree shape.
    pub fn on_check(&mut self, s: &Snapshot<'_>) {
        self.tree.checks += 1;
        if let Some(cycle) = find_cycle(s.parents) {
            self.on_cycle(s.now, &cycle);
        }
        let depth = depths(s.parents);
        let max_depth = depth.iter().flatten().copied().max().unwrap_or(0);
        self.tree.max_depth = self.tree.max_depth.max(max_depth);
        self.tree.final_depth = max_depth;
        self.tree.final_in_tree = depth.iter().skip(1).filter(|d| d.is_some()).count();
        self.tree.final_live_relays = s.alive.iter().skip(1).filter(|a| **a).count();
        self.tree.origin_fanout = s.children[0];
        self.tree.origin_fanout_max = self.tree.origin_fanout_max.max(s.children[0]);
        self.tree.origin_subscribers = s.origin_subscribers;
        self.tree.origin_subscribers_max = self.tree.origin_subscribers_max.max(s.origin_subscribers);
        self.tree.max_children = self.tree.max_children.max(s.children.iter().copied().max().unwrap_or(0));
        for (&n, o) in &mut self.orphans {
            o.cut_off_later |= s.alive[n] && !s.connected[n];
        }
        if let Some(seq) = s.published {
            for (i, r) in self.received.iter_mut().enumerate() {
                if self.viewers[i] && s.alive[i] && !s.connected[i] {
                    r.cut_off.push(seq);
                }
            }
        }
    }

    /// End-of-run checks: delivery and unrepaired orphans.
    pub fn finish(
        &mut self,
        s: &Snapshot<'_>,
        slack: Nanos,
        starved_after: Nanos,
        bitrate_mbps: f64,
    ) -> (Delivery, Delay, Repairs, Tree) {
        self.on_check(s);
        let last_ok = self.published.iter().rposition(|&t| t + slack <= s.now);
        let mut d = Delivery { viewer_relays: self.viewers.iter().filter(|v| **v).count(), ..Delivery::default() };
        let mut found = Vec::new();
        for i in 1..self.received.len() {
            if !self.viewers[i] || !s.alive[i] || !s.connected[i] {
                continue;
            }
            d.checked_relays += 1;
            let r = &self.received[i];
            let Some((first, _)) = r.first else {
                if s.now.saturating_sub(r.alive_since) > starved_after {
                    d.starved += 1;
                    found.push(format!("delivery: viewer relay {} never received a segment", self.names[i]));
                }
                continue;
            };
            let Some(last) = last_ok else { continue };
            let mut missing = Vec::new();
            for seq in first..=last as u64 {
                if r.cut_off.contains(&seq) {
                    d.excused += 1;
                    continue;
                }
                d.expected += 1;
                if r.has(seq) {
                    d.received += 1;
                } else {
                    missing.push(seq);
                }
            }
            if !missing.is_empty() {
                found.push(format!(
                    "delivery: viewer relay {} is missing segments {:?} (has from {first})",
                    self.names[i], missing
                ));
            }
        }
        for v in found {
            self.violation(v);
        }
        d.ratio = if d.expected == 0 { 1.0 } else { d.received as f64 / d.expected as f64 };
        let orphans: Vec<(usize, Orphan)> = self.orphans.iter().map(|(k, v)| (*k, *v)).collect();
        let (mut unrepaired, mut unfinished) = (0, 0);
        for (n, o) in orphans {
            // The run ended before the bound ran out: too soon to judge.
            if s.now.saturating_sub(o.since) <= self.repair_bound_base {
                unfinished += 1;
                continue;
            }
            if s.alive[n] && s.connected[n] {
                unrepaired += 1;
                let (name, parent) = (self.names[n].clone(), self.names[o.dead_parent].clone());
                self.violation(format!(
                    "repair: {name} never found a new parent after {parent} crashed at {:.3} s",
                    o.since as f64 / 1e9
                ));
            }
        }
        let q = |h: &Histogram<u64>, p: f64, scale: f64| {
            if h.is_empty() { 0.0 } else { h.value_at_quantile(p) as f64 / scale }
        };
        let delay = Delay {
            samples: self.delay_us.len(),
            p50_ms: q(&self.delay_us, 0.5, 1e3),
            p99_ms: q(&self.delay_us, 0.99, 1e3),
            max_ms: q(&self.delay_us, 1.0, 1e3),
            ratio_p50: q(&self.ratio, 0.5, RATIO_SCALE),
            ratio_p99: q(&self.ratio, 0.99, RATIO_SCALE),
            ratio_max: q(&self.ratio, 1.0, RATIO_SCALE),
            strict_ratio_p50: q(&self.strict_ratio, 0.5, RATIO_SCALE),
            strict_ratio_p99: q(&self.strict_ratio, 0.99, RATIO_SCALE),
        };
        let repairs = Repairs {
            count: self.repair_us.len(),
            p50_ms: q(&self.repair_us, 0.5, 1e3),
            p99_ms: q(&self.repair_us, 0.99, 1e3),
            max_ms: q(&self.repair_us, 1.0, 1e3),
            detect_p50_ms: q(&self.detect_us, 0.5, 1e3),
            detect_max_ms: q(&self.detect_us, 1.0, 1e3),
            bound_base_ms: self.repair_bound_base as f64 / MS,
            over_bound: self.over_bound,
            overlapping: self.overlapping,
            overlapping_max_ms: self.overlapping_max as f64 / MS,
            cut_off: self.cut_off_orphans,
            no_backup: self.no_backup,
            no_backup_max_ms: self.no_backup_max as f64 / MS,
            unrepaired,
            unfinished,
        };
        let mut tree = self.tree.clone();
        tree.origin_egress_mbps = tree.origin_subscribers as f64 * bitrate_mbps;
        (d, delay, repairs, tree)
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }
}

/// A cycle in a parent graph, as the list of its nodes, if there is one.
pub fn find_cycle(parents: &[Option<usize>]) -> Option<Vec<usize>> {
    // 0: unvisited; otherwise the walk that first reached the node (1-based), or DONE.
    const DONE: usize = usize::MAX;
    let mut mark = vec![0usize; parents.len()];
    for start in 0..parents.len() {
        if mark[start] != 0 {
            continue;
        }
        let walk = start + 1;
        let mut n = start;
        loop {
            if mark[n] == walk {
                // Back on our own walk: n is on a cycle.
                let mut cycle = vec![n];
                let mut m = parents[n]?;
                while m != n {
                    cycle.push(m);
                    m = parents[m]?;
                }
                cycle.push(n);
                return Some(cycle);
            }
            if mark[n] != 0 {
                break;
            }
            mark[n] = walk;
            match parents[n] {
                Some(p) => n = p,
                None => break,
            }
        }
        let mut n = start;
        while mark[n] == walk {
            mark[n] = DONE;
            match parents[n] {
                Some(p) => n = p,
                None => break,
            }
        }
    }
    None
}

/// Hops from the origin (node 0) along parent links; `None` when the chain does not reach it.
pub fn depths(parents: &[Option<usize>]) -> Vec<Option<u32>> {
    #[derive(Clone, Copy)]
    enum State {
        Unknown,
        OnWalk,
        Known(Option<u32>),
    }
    let n = parents.len();
    let mut state = vec![State::Unknown; n];
    if n > 0 {
        state[0] = State::Known(Some(0));
    }
    let mut walk = Vec::new();
    for start in 0..n {
        let mut v = start;
        let base = loop {
            match state[v] {
                State::Known(d) => break d,
                // Back on the current walk: a cycle, which never reaches the origin.
                State::OnWalk => break None,
                State::Unknown => {
                    state[v] = State::OnWalk;
                    walk.push(v);
                    match parents[v] {
                        Some(p) => v = p,
                        None => break None,
                    }
                }
            }
        };
        let mut d = base;
        while let Some(u) = walk.pop() {
            d = d.map(|x| x + 1);
            state[u] = State::Known(d);
        }
    }
    state.into_iter().map(|s| if let State::Known(d) = s { d } else { None }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_and_only_cycles() {
        assert_eq!(find_cycle(&[None, Some(0), Some(1), Some(1)]), None);
        let c = find_cycle(&[None, Some(2), Some(3), Some(1), Some(3)]).unwrap();
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 4);
        assert!(find_cycle(&[None, Some(1)]).is_some(), "a self-loop is a cycle");
    }

    #[test]
    fn depths_follow_parent_chains() {
        let d = depths(&[None, Some(0), Some(1), Some(2), None, Some(4), Some(6), Some(5)]);
        assert_eq!(d, vec![Some(0), Some(1), Some(2), Some(3), None, None, None, None]);
        // A cycle has no depth and does not hang.
        let d = depths(&[None, Some(2), Some(1)]);
        assert_eq!(d, vec![Some(0), None, None]);
    }

    const S: Nanos = 1_000_000_000;

    /// origin <- r1 <- r2, repair bound 1.5 s: r1 crashes at 10 s, leaving r2 an orphan.
    fn orphan_at_ten_seconds() -> Metrics {
        let names = ["origin", "r1", "r2"].map(String::from).to_vec();
        let mut m = Metrics::new(names, vec![false; 3], vec![None; 3], S * 3 / 2);
        m.on_crash(1, 10 * S, &[2], 0);
        m
    }

    /// The three nodes at `now`, r1 dead, r2 connected to the origin or not.
    fn snapshot(now: Nanos, r2_connected: bool) -> Snapshot<'static> {
        let connected: &'static [bool] = if r2_connected { &[true, false, true] } else { &[true, false, false] };
        Snapshot {
            now,
            parents: &[None, None, None],
            connected,
            alive: &[true, false, true],
            children: &[0, 0, 0],
            origin_subscribers: 0,
            published: None,
        }
    }

    /// An orphan left without a parent is a violation once its repair bound has run out, and
    /// not before: a run cut short right after a crash is not a failed repair.
    #[test]
    fn an_orphan_is_judged_only_once_its_bound_has_run_out() {
        let unrepaired_at_end = |end: Nanos| {
            let mut m = orphan_at_ten_seconds();
            let (_, _, repairs, _) = m.finish(&snapshot(end, true), 0, S, 1.0);
            (repairs.unrepaired, repairs.unfinished, m.violation_count())
        };
        assert_eq!(unrepaired_at_end(11 * S), (0, 1, 0), "judged before its bound ran out");
        assert_eq!(unrepaired_at_end(12 * S), (1, 0, 1), "an orphan past its bound went unnoticed");
    }

    /// A slow repair is a violation, unless a later fault cut the orphan off from the origin
    /// meanwhile (a partition on its region's other way out): then it is counted apart.
    #[test]
    fn a_slow_repair_counts_apart_only_if_the_orphan_was_cut_off_meanwhile() {
        let slow_repair = |cut_off_meanwhile: bool| {
            let mut m = orphan_at_ten_seconds();
            m.on_check(&snapshot(10 * S + S / 5, !cut_off_meanwhile));
            m.on_parent_changed(2, 13 * S, 0, false);
            (m.over_bound, m.overlapping, m.violation_count())
        };
        assert_eq!(slow_repair(false), (1, 0, 1), "a 3 s repair against a 1.5 s bound went unnoticed");
        assert_eq!(slow_repair(true), (0, 1, 0), "a repair the partition made impossible was held to the bound");
    }
}

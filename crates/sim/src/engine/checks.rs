//! Invariant checks over the whole network, the final report, the trace file and progress.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{KINDS, Progress, Sim, secs};
use crate::link::Nanos;
use crate::metrics::{Snapshot, find_cycle};
use crate::report::{Report, Traffic};
use crate::trace::TraceRecord;

/// The parent graph and liveness at one instant.
struct Parts {
    parents: Vec<Option<usize>>,
    connected: Vec<bool>,
    alive: Vec<bool>,
    children: Vec<usize>,
    origin_subscribers: usize,
}

impl Parts {
    pub(super) fn snapshot(&self, now: Nanos, published: Option<u64>) -> Snapshot<'_> {
        Snapshot {
            now,
            parents: &self.parents,
            connected: &self.connected,
            alive: &self.alive,
            children: &self.children,
            origin_subscribers: self.origin_subscribers,
            published,
        }
    }
}

impl Sim {
    /// Walk up from a node whose parent just changed: a new cycle must pass through it.
    pub(super) fn check_cycle_from(&mut self, start: usize) {
        let mut path = vec![start];
        let mut n = start;
        while let Some(p) = self.parent_of(n) {
            path.push(p);
            if p == start {
                return self.metrics.on_cycle(self.now, &path);
            }
            if path.len() > self.slots.len() {
                break; // a cycle above us, already reported when it formed
            }
            n = p;
        }
    }

    fn parts(&self) -> Parts {
        let n = self.slots.len();
        let alive: Vec<bool> = (0..n).map(|i| self.is_alive(i)).collect();
        let parents: Vec<Option<usize>> = (0..n).map(|i| self.parent_of(i)).collect();
        let children: Vec<usize> =
            self.slots.iter().map(|s| s.node.as_ref().map_or(0, |node| node.children().count())).collect();
        let connected = self.connected();
        let subscribers =
            self.slots[0].node.as_ref().and_then(|o| o.channel(&self.channel)).map_or(0, |c| c.subscribers.len());
        Parts { parents, connected, alive, children, origin_subscribers: subscribers }
    }

    /// Per node: alive and connected to the origin over live links (breadth-first).
    pub(super) fn connected(&self) -> Vec<bool> {
        let mut connected = vec![false; self.slots.len()];
        let mut todo = VecDeque::new();
        if self.is_alive(0) {
            connected[0] = true;
            todo.push_back(0);
        }
        while let Some(v) = todo.pop_front() {
            for &(w, e) in self.topo.neighbours(v) {
                if !connected[w] && self.is_alive(w) && self.cuts[e] == 0 {
                    connected[w] = true;
                    todo.push_back(w);
                }
            }
        }
        connected
    }

    pub(super) fn global_check(&mut self, published: Option<u64>) {
        if !self.scenario.checks.global_checks && published.is_none() {
            return;
        }
        let parts = self.parts();
        self.metrics.on_check(&parts.snapshot(self.now, published));
    }

    /// Whether the parent graph has a cycle right now.
    pub fn has_cycle(&self) -> bool {
        let parents: Vec<Option<usize>> = (0..self.slots.len()).map(|i| self.parent_of(i)).collect();
        find_cycle(&parents).is_some()
    }

    /// End-of-run checks and figures.
    pub fn report(&mut self) -> Report {
        let parts = self.parts();
        let s = parts.snapshot(self.now, None);
        let c = &self.scenario.checks;
        let bitrate_mbps = self.scenario.workload.bitrate_kbps as f64 / 1000.0;
        let (delivery, delay, repairs, tree) =
            self.metrics.finish(&s, secs(c.delivery_slack_s), secs(c.starved_after_s), bitrate_mbps);
        let wall = self.wall_start.elapsed().as_secs_f64();
        let traffic = Traffic {
            segments_published: self.next_seq,
            segment_bytes: self.segment_bytes,
            messages: KINDS.iter().zip(self.sent).filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect(),
            control_bytes: self.sent_bytes.iter().sum(),
            keepalive_bytes: KINDS
                .iter()
                .zip(self.sent_bytes)
                .filter(|(k, _)| matches!(**k, "Ping" | "Pong" | "Alive"))
                .map(|(_, b)| b)
                .sum(),
            segment_frames: self.segment_frames,
            bytes: self.bytes,
            dropped_frames: self.dropped,
            retransmissions: self.retransmissions,
            parent_changes: self.parent_changes,
            gaps_skipped: self.gaps_skipped,
            misbehaved: self.misbehaved,
        };
        Report {
            scenario: self.scenario.name.clone(),
            seed: self.seed,
            nodes: self.topo.len(),
            links: self.topo.edges().len(),
            simulated_s: self.now as f64 / 1e9,
            wall_s: wall,
            events: self.events,
            events_per_s: self.events as f64 / wall.max(1e-9),
            trace_hash: format!("{:016x}", self.hash.value()),
            traffic,
            delivery,
            delay,
            repairs,
            tree,
            faults: self.fault_counts.clone(),
            violations: self.metrics.violations().to_vec(),
            violation_count: self.metrics.violation_count(),
        }
    }

    pub(super) fn trace_line(
        &mut self,
        node: usize,
        kind: &'static str,
        seq: Option<u64>,
        delay_ms: Option<f64>,
        detail: &str,
    ) {
        if let Some(t) = &mut self.trace {
            let rec = TraceRecord { t: self.now as f64 / 1e9, node: self.topo.name(node), kind, seq, delay_ms, detail };
            t.record(&rec);
        }
    }

    /// A trace line about the network rather than one node (node `*`).
    pub(super) fn trace_global(&mut self, kind: &'static str, detail: &str) {
        if let Some(t) = &mut self.trace {
            t.record(&TraceRecord { t: self.now as f64 / 1e9, node: "*", kind, seq: None, delay_ms: None, detail });
        }
    }

    pub(super) fn tick_progress(&mut self, until: Duration) {
        let Some(mut f) = self.progress.take() else { return };
        #[allow(clippy::disallowed_methods)] // wall time, for the progress line only
        let wall_now = Instant::now();
        if wall_now.duration_since(self.last_progress) >= Duration::from_secs(1) {
            self.last_progress = wall_now;
            let p = Progress {
                simulated: Duration::from_nanos(self.now),
                end: until,
                events: self.events,
                wall: wall_now.duration_since(self.wall_start),
                live_nodes: self.slots.iter().filter(|s| s.node.is_some()).count(),
                pending: self.queue.len(),
            };
            f(&p);
        }
        self.progress = Some(f);
    }
}

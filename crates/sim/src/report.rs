//! The summary of a run: figures, invariant results and violations, printable as a table and
//! serialisable as JSON.

use std::fmt;

use serde::Serialize;

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    /// Relays plus the origin.
    pub nodes: usize,
    pub links: usize,
    pub simulated_s: f64,
    pub wall_s: f64,
    /// Events processed by the event loop.
    pub events: u64,
    pub events_per_s: f64,
    /// Hash folded over every processed event (hex): same seed, same hash.
    pub trace_hash: String,
    pub traffic: Traffic,
    pub delivery: Delivery,
    pub delay: Delay,
    pub repairs: Repairs,
    pub tree: Tree,
    pub faults: FaultCounts,
    /// Invariant violations (the first ones; `violation_count` has them all).
    pub violations: Vec<String>,
    pub violation_count: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Traffic {
    pub segments_published: u64,
    pub segment_bytes: usize,
    /// Control messages sent, by kind.
    pub messages: Vec<(String, u64)>,
    /// Estimated bytes of all control messages, and of the keep-alive (ping, pong) among them.
    pub control_bytes: u64,
    pub keepalive_bytes: u64,
    pub segment_frames: u64,
    pub bytes: u64,
    /// Frames lost for good: to a crashed node, over a cut link, on a closed connection.
    pub dropped_frames: u64,
    pub retransmissions: u64,
    pub parent_changes: u64,
    pub gaps_skipped: u64,
    /// Peers dropped or refused (keep-alive timeouts, capacity refusals, ...).
    pub misbehaved: u64,
}

/// (b) Every live, connected relay with viewers gets every segment published after its first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Delivery {
    pub viewer_relays: usize,
    /// Viewer relays alive and connected to the origin at the end (the ones checked).
    pub checked_relays: usize,
    pub expected: u64,
    pub received: u64,
    pub ratio: f64,
    /// Segments not expected because the relay was cut off from the origin when they were
    /// published.
    pub excused: u64,
    /// Checked relays that never received a segment.
    pub starved: usize,
}

/// (d) Per-chunk delay at every receiving relay (store time − publish time), and its ratio to
/// the relay's shortest path.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Delay {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Delay / (latency-shortest path + one serialisation of the segment per hop on it).
    pub ratio_p50: f64,
    pub ratio_p99: f64,
    pub ratio_max: f64,
    /// Delay / the least possible store-and-forward delay (shortest path by latency +
    /// serialisation per hop together).
    pub strict_ratio_p50: f64,
    pub strict_ratio_p99: f64,
}

/// (c) From a parent's crash to its child's next `ParentChanged`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Repairs {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// From the crash to the child's `ParentLost` (keep-alive detection).
    pub detect_p50_ms: f64,
    pub detect_max_ms: f64,
    /// 3 keep-alive intervals; each repair's bound adds the RTT of its new parent's link.
    pub bound_base_ms: f64,
    pub over_bound: u64,
    /// Repairs while another fault (a crash, a restart, a cut or healed link) hit a neighbour of
    /// the orphan within the bound: excluded from the figures above, as the bound assumes a
    /// single failure.
    pub overlapping: u64,
    pub overlapping_max_ms: f64,
    /// Orphans the crash cut off from the origin (no repair possible; not timed).
    pub cut_off: u64,
    /// Of the timed repairs, those with no valid backup when the orphan noticed (every other
    /// neighbour was below it or routed through the dead parent): it waited for a neighbour to
    /// re-route first. Included in the figures and the bound above.
    pub no_backup: u64,
    pub no_backup_max_ms: f64,
    /// Orphans alive and connected at the end that never found a new parent.
    pub unrepaired: u64,
    /// Orphans whose bound had not run out when the run ended (not judged).
    pub unfinished: u64,
}

/// (a), (e) The parent graph.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tree {
    pub checks: u64,
    pub cycles: u64,
    pub max_depth: u32,
    pub final_depth: u32,
    /// Live relays whose parent chain reaches the origin, at the end.
    pub final_in_tree: usize,
    pub final_live_relays: usize,
    pub origin_fanout: usize,
    pub origin_fanout_max: usize,
    /// Children of the origin subscribed to the channel (origin egress = this × bitrate).
    pub origin_subscribers: usize,
    pub origin_subscribers_max: usize,
    pub origin_egress_mbps: f64,
    pub max_children: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FaultCounts {
    pub crashes: u64,
    pub restarts: u64,
    pub partitions: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violation_count == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "  {k:<28} {v}");
        writeln!(f, "scenario {} (seed {})", self.scenario, self.seed)?;
        row(f, "nodes / links", format!("{} / {}", self.nodes, self.links))?;
        row(f, "simulated", format!("{:.1} s", self.simulated_s))?;
        row(f, "wall time", format!("{:.2} s ({:.1}x real time)", self.wall_s, self.simulated_s / self.wall_s))?;
        row(f, "events", format!("{} ({:.2} M/s)", self.events, self.events_per_s / 1e6))?;
        row(f, "trace hash", self.trace_hash.clone())?;
        writeln!(f, "traffic")?;
        let t = &self.traffic;
        row(f, "segments published", format!("{} x {} B", t.segments_published, t.segment_bytes))?;
        let msgs: u64 = t.messages.iter().map(|(_, n)| n).sum();
        row(f, "control messages", format!("{msgs}"))?;
        let kinds: Vec<String> = t.messages.iter().map(|(k, n)| format!("{k} {n}")).collect();
        row(f, "  by kind", kinds.join(", "))?;
        let per_relay_s = |b: u64| b as f64 / (self.nodes.saturating_sub(1).max(1) as f64 * self.simulated_s.max(1e-9));
        row(
            f,
            "control B/relay/s",
            format!("{:.0} (keep-alive {:.0})", per_relay_s(t.control_bytes), per_relay_s(t.keepalive_bytes)),
        )?;
        row(f, "segment frames", format!("{}", t.segment_frames))?;
        row(f, "bytes on links", format!("{:.1} MB", t.bytes as f64 / 1e6))?;
        row(f, "dropped / retransmitted", format!("{} / {}", t.dropped_frames, t.retransmissions))?;
        row(f, "parent changes", format!("{}", t.parent_changes))?;
        row(f, "gaps skipped", format!("{}", t.gaps_skipped))?;
        row(f, "peers dropped or refused", format!("{}", t.misbehaved))?;
        writeln!(f, "delivery (viewer relays alive and connected at the end)")?;
        let d = &self.delivery;
        row(f, "viewer relays / checked", format!("{} / {}", d.viewer_relays, d.checked_relays))?;
        row(f, "ratio", format!("{:.6} ({} of {} segments)", d.ratio, d.received, d.expected))?;
        row(f, "excused (cut off)", format!("{}", d.excused))?;
        row(f, "starved relays", format!("{}", d.starved))?;
        writeln!(f, "per-chunk delay ({} samples)", self.delay.samples)?;
        let y = &self.delay;
        row(f, "delay p50 / p99 / max", format!("{:.1} / {:.1} / {:.1} ms", y.p50_ms, y.p99_ms, y.max_ms))?;
        row(
            f,
            "ratio to shortest path",
            format!("p50 {:.3}  p99 {:.3}  max {:.3}", y.ratio_p50, y.ratio_p99, y.ratio_max),
        )?;
        row(f, "ratio to strict bound", format!("p50 {:.3}  p99 {:.3}", y.strict_ratio_p50, y.strict_ratio_p99))?;
        writeln!(f, "repairs (parent crash -> next ParentChanged)")?;
        let r = &self.repairs;
        row(f, "count", format!("{}", r.count))?;
        row(f, "p50 / p99 / max", format!("{:.0} / {:.0} / {:.0} ms", r.p50_ms, r.p99_ms, r.max_ms))?;
        row(f, "  of which had no backup", format!("{} (max {:.0} ms)", r.no_backup, r.no_backup_max_ms))?;
        row(f, "detection p50 / max", format!("{:.0} / {:.0} ms", r.detect_p50_ms, r.detect_max_ms))?;
        row(f, "bound", format!("{:.0} ms + RTT", r.bound_base_ms))?;
        row(f, "over bound / unrepaired", format!("{} / {}", r.over_bound, r.unrepaired))?;
        row(f, "during other faults (excl.)", format!("{} (max {:.0} ms)", r.overlapping, r.overlapping_max_ms))?;
        row(f, "orphans cut off (excluded)", format!("{}", r.cut_off))?;
        if r.unfinished > 0 {
            row(f, "still repairing at the end", format!("{} (not judged)", r.unfinished))?;
        }
        writeln!(f, "tree ({} checks)", self.tree.checks)?;
        let g = &self.tree;
        row(f, "cycles", format!("{}", g.cycles))?;
        row(f, "depth max / final", format!("{} / {} hops", g.max_depth, g.final_depth))?;
        row(f, "relays in tree (final)", format!("{} of {} live", g.final_in_tree, g.final_live_relays))?;
        row(f, "origin fan-out final / max", format!("{} / {}", g.origin_fanout, g.origin_fanout_max))?;
        row(
            f,
            "origin subscribers / egress",
            format!("{} (max {}) / {:.1} Mbit/s", g.origin_subscribers, g.origin_subscribers_max, g.origin_egress_mbps),
        )?;
        row(f, "max children of a node", format!("{}", g.max_children))?;
        let c = &self.faults;
        row(f, "faults", format!("{} crashes, {} restarts, {} partitions", c.crashes, c.restarts, c.partitions))?;
        if self.ok() {
            writeln!(f, "invariants: all held")?;
        } else {
            writeln!(f, "invariants: {} VIOLATIONS", self.violation_count)?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
            if self.violation_count > self.violations.len() {
                writeln!(f, "  ... and {} more", self.violation_count - self.violations.len())?;
            }
        }
        Ok(())
    }
}

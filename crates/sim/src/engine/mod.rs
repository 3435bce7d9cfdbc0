//! The discrete-event loop that drives `relaycast_core::Node` state machines over simulated links.
//!
//! Time is virtual: a fixed base `Instant` plus a nanosecond offset that jumps from one event to
//! the next. After every input to a node the engine drains all its outputs (messages become
//! frames on links, events feed the metrics) and re-arms its timer at `poll_timeout()`.
//!
//! Connections: each topology edge carries at most one connection at a time, with one `PeerId`
//! at each end. A connection end is *open* while its node's core knows the peer. A crash closes
//! the crashed end silently (the other end finds out by keep-alive); a `Close` output closes one
//! end and sends a close notice over the link; a closed connection between two live nodes is
//! redialled after `redial_ms`; a restart or a healed partition resets half-open connections
//! (as a QUIC stateless reset would) and dials afresh.

mod checks;
mod net;
mod workload;

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use relaycast_core::node::node_id;
use relaycast_core::{Event, Name, Node, NodeConfig, Output, PeerId, RenditionInfo, Role};

use crate::faults::{self, Action};
use crate::frame::{self, KINDS, PartFrame, Payload, SegmentFrame};
use crate::link::{Link, Medium, Nanos};
use crate::metrics::Metrics;
use crate::prefetch::{prefetch, prefetch_bytes};
use crate::queue::Queue;
use crate::report::{FaultCounts, Report};
use crate::scenario::{Scenario, ScenarioError};
use crate::topology::Topology;
use crate::trace::{TraceHash, TraceWriter};

const MS: Nanos = 1_000_000;
/// Cluster token every simulated node presents.
const TOKEN: &str = "sim";
/// Unix time (ms) of simulated time zero, for segments' origin timestamps.
const EPOCH_MS: u64 = 1_700_000_000_000;
/// `Sim::live` of a crashed node.
const DEAD: u32 = u32::MAX;

/// A core event, when and where it happened (recorded only when asked, for tests).
#[derive(Clone, Debug)]
pub struct Logged {
    pub at: Duration,
    pub node: usize,
    pub event: Event,
}

/// Where a run stands, for progress lines.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub simulated: Duration,
    pub end: Duration,
    pub events: u64,
    pub wall: Duration,
    pub live_nodes: usize,
    /// Events scheduled and not yet processed.
    pub pending: usize,
}

type ProgressFn = Box<dyn FnMut(&Progress)>;

/// A simulation run.
pub struct Sim {
    scenario: Scenario,
    seed: u64,
    base: Instant,
    wall_start: Instant,
    now: Nanos,
    queue: Queue<Ev>,
    /// Link loss and redial jitter (other random choices are made up front).
    rng: ChaCha8Rng,
    topo: Topology,
    /// Two per edge: `2e` from `edges[e].a` to `b`, `2e + 1` back.
    links: Vec<Link>,
    medium: Medium,
    bytes: u64,
    retransmissions: u64,
    /// Partitions currently covering each edge (up when zero).
    cuts: Vec<u32>,
    redial_pending: Vec<bool>,
    slots: Vec<Slot>,
    /// Per node, its pending timer (apart from `slots`: checked on every event, and compact
    /// enough to stay in cache at 100 000 nodes).
    timers: Vec<Timer>,
    conns: Vec<Conn>,
    edge_conn: Vec<Option<usize>>,
    /// Per node: its incarnation while alive, `DEAD` while crashed (compact, for hot checks).
    live: Vec<u32>,
    /// Per node: when it last crashed or restarted, or one of its links was cut or healed.
    last_fault: Vec<Option<Nanos>>,
    viewers: Vec<usize>,
    channel: Name,
    rendition: Name,
    segment_bytes: usize,
    next_seq: u64,
    /// Next part of segment `next_seq` (low-latency workloads).
    next_part: u32,
    metrics: Metrics,
    hash: TraceHash,
    trace: Option<TraceWriter>,
    log: Option<Vec<Logged>>,
    progress: Option<ProgressFn>,
    last_progress: Instant,
    events: u64,
    sent: [u64; KINDS.len()],
    /// Estimated bytes of control messages sent, by kind.
    sent_bytes: [u64; KINDS.len()],
    segment_frames: u64,
    dropped: u64,
    parent_changes: u64,
    gaps_skipped: u64,
    misbehaved: u64,
    fault_counts: FaultCounts,
}

struct Slot {
    config: NodeConfig,
    node: Option<Node>,
    incarnation: u32,
}

#[derive(Clone, Copy, Default)]
struct Timer {
    /// The earliest pending timer event of this node...
    at: Option<Nanos>,
    /// ... and the deadline it was armed for.
    instant: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    edge: usize,
    /// `[dialer, acceptor]`.
    ends: [End; 2],
}

#[derive(Clone, Copy, Debug)]
struct End {
    node: usize,
    peer: PeerId,
    incarnation: u32,
    /// The link frames from this end take (see `Sim::link_index`), kept here so a send need
    /// not look up the topology's edge.
    link: u32,
    open: bool,
    /// The node crashed at this time (frames it had not finished sending are lost).
    dead_at: Option<Nanos>,
}

enum Ev {
    Timer(usize),
    Frame { conn: usize, to: usize, depart: Nanos, payload: Payload },
    Closed { conn: usize, to: usize },
    Dial(usize),
    Publish,
    Viewers,
    Act(Action),
}

impl Sim {
    /// A run of `scenario`: its topology (random or from its file), viewers and faults are all
    /// drawn from `seed`.
    pub fn from_scenario(scenario: &Scenario, seed: u64) -> Result<Self, ScenarioError> {
        scenario.validate()?;
        let topo = match &scenario.topology.file {
            Some(f) => Topology::from_file(f)?,
            None => Topology::geometric(&scenario.topology, &mut stream(seed, 0)),
        };
        Self::with_topology(scenario, topo, seed)
    }

    /// A run of `scenario` over a given topology (its `[topology]` section is ignored).
    pub fn with_topology(scenario: &Scenario, topo: Topology, seed: u64) -> Result<Self, ScenarioError> {
        scenario.validate()?;
        #[allow(clippy::disallowed_methods)] // the wall clock: only for wall-time figures
        let wall_start = Instant::now();
        let relays = topo.len().saturating_sub(1);
        let viewers = faults::pick_viewers(relays, scenario.workload.viewer_fraction, &mut stream(seed, 1));
        let plan = faults::plan(scenario, &topo, &mut stream(seed, 2))?;
        let ls = &scenario.links;
        let medium =
            Medium::new(ls.bandwidth_mbps * 1e6, ls.loss, ls.rto_latency_factor, (ls.rto_min_ms * 1e6) as Nanos);
        let mut links = Vec::with_capacity(topo.edges().len() * 2);
        for e in topo.edges() {
            links.push(Link::new(e.latency.as_nanos() as Nanos));
            links.push(Link::new(e.latency.as_nanos() as Nanos));
        }
        // Invariant: validate() checked both names.
        let channel = Name::new(scenario.workload.channel.clone()).expect("validated channel name");
        let rendition = Name::new(scenario.workload.rendition.clone()).expect("validated rendition name");
        let segment_bytes = scenario.segment_bytes();
        let per_hop = medium.serialisation(frame::segment_size(&channel, &rendition, segment_bytes));
        let by_latency = topo.shortest_paths(0, Duration::ZERO);
        let strict = topo.shortest_paths(0, Duration::from_nanos(per_hop));
        let bounds = by_latency
            .iter()
            .zip(&strict)
            .map(|(a, b)| {
                let a = (*a)?;
                let b = (*b)?;
                Some((
                    a.latency.as_nanos() as Nanos + u64::from(a.hops) * per_hop,
                    b.latency.as_nanos() as Nanos + u64::from(b.hops) * per_hop,
                ))
            })
            .collect();
        let names: Vec<String> = (0..topo.len()).map(|i| topo.name(i).to_string()).collect();
        let mut is_viewer = vec![false; topo.len()];
        for &v in &viewers {
            is_viewer[v] = true;
        }
        let metrics = Metrics::new(names, is_viewer, bounds, scenario.repair_bound_base().as_nanos() as Nanos);
        let slots = (0..topo.len())
            .map(|i| {
                let config = node_config(scenario, i, topo.name(i));
                Slot { node: Some(Node::new(config.clone())), config, incarnation: 0 }
            })
            .collect();
        let edges = topo.edges().len();
        let n = topo.len();
        let mut sim = Self {
            scenario: scenario.clone(),
            seed,
            #[allow(clippy::disallowed_methods)] // the virtual clock's epoch; only offsets matter
            base: Instant::now(),
            wall_start,
            now: 0,
            queue: Queue::default(),
            rng: stream(seed, 3),
            topo,
            links,
            medium,
            bytes: 0,
            retransmissions: 0,
            cuts: vec![0; edges],
            redial_pending: vec![false; edges],
            slots,
            timers: vec![Timer::default(); n],
            conns: Vec::new(),
            edge_conn: vec![None; edges],
            live: vec![0; n],
            last_fault: vec![None; n],
            viewers,
            channel,
            rendition,
            segment_bytes,
            next_seq: 0,
            next_part: 0,
            metrics,
            hash: TraceHash::default(),
            trace: None,
            log: None,
            progress: None,
            last_progress: wall_start,
            events: 0,
            sent: [0; KINDS.len()],
            sent_bytes: [0; KINDS.len()],
            segment_frames: 0,
            dropped: 0,
            parent_changes: 0,
            gaps_skipped: 0,
            misbehaved: 0,
            fault_counts: FaultCounts::default(),
        };
        sim.start(plan);
        Ok(sim)
    }

    fn start(&mut self, plan: Vec<(Duration, Action)>) {
        let info = RenditionInfo {
            bandwidth: Some((self.scenario.workload.bitrate_kbps * 1000).min(u64::from(u32::MAX)) as u32),
            ..RenditionInfo::named(self.rendition.clone())
        };
        let channel = self.channel.clone();
        self.input(0, |n, now| n.set_local_channel(now, channel, "sim", vec![info]));
        for e in 0..self.topo.edges().len() {
            let edge = self.topo.edges()[e];
            self.dial(e, edge.a.max(edge.b));
        }
        let w = &self.scenario.workload;
        let (publish_at, viewers_at) = (secs(w.publish_from_s), secs(w.viewers_from_s));
        self.queue.push(publish_at, Ev::Publish);
        self.queue.push(viewers_at, Ev::Viewers);
        for (at, action) in plan {
            self.schedule(at, action);
        }
    }

    // ----- driving the run -----

    /// Run to the scenario's end and report.
    pub fn run(&mut self) -> Report {
        self.run_until(self.scenario.duration());
        self.report()
    }

    /// Process every event up to `until` (simulated time since the start).
    pub fn run_until(&mut self, until: Duration) {
        let end = until.as_nanos() as Nanos;
        while self.queue.peek_time().is_some_and(|t| t <= end) {
            // Invariant: peek_time just returned an event.
            let (t, ev) = self.queue.pop().expect("peeked event");
            self.now = t;
            self.events += 1;
            self.prefetch_ahead();
            self.step(ev);
            if self.events & 0xffff == 0 {
                self.tick_progress(until);
            }
        }
        self.now = self.now.max(end);
    }

    /// Do `action` at `at` (simulated time since the start).
    pub fn schedule(&mut self, at: Duration, action: Action) {
        self.queue.push((at.as_nanos() as Nanos).max(self.now), Ev::Act(action));
    }

    /// Call `f` about once a second of wall time with where the run stands.
    pub fn on_progress(&mut self, f: impl FnMut(&Progress) + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// Write segment, parent and fault events to a trace file.
    pub fn trace_to(&mut self, writer: TraceWriter) {
        self.trace = Some(writer);
    }

    /// The trace writer, to finish it.
    pub fn take_trace(&mut self) -> Option<TraceWriter> {
        self.trace.take()
    }

    /// Keep every core event in memory (for tests; see [`Sim::log`]).
    pub fn record_events(&mut self) {
        self.log.get_or_insert_with(Vec::new);
    }

    // ----- getters -----

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    /// The virtual clock as the nodes see it (for getters that take `now`).
    pub fn clock(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    pub fn node(&self, i: usize) -> Option<&Node> {
        self.slots[i].node.as_ref()
    }

    pub fn is_alive(&self, i: usize) -> bool {
        self.live[i] != DEAD
    }

    /// The node index behind `peer` at node `i`.
    pub fn peer_node(&self, i: usize, peer: PeerId) -> Option<usize> {
        let (c, side) = self.conn_of(peer)?;
        let conn = &self.conns[c];
        (conn.ends[side].node == i).then_some(conn.ends[1 - side].node)
    }

    /// Node `i`'s parent, if it has one and it is alive.
    pub fn parent_of(&self, i: usize) -> Option<usize> {
        let node = self.slots[i].node.as_ref()?;
        let (peer, _) = node.parent()?;
        let (c, side) = self.conn_of(peer)?;
        let other = self.conns[c].ends[1 - side];
        self.is_live(other.node, other.incarnation).then_some(other.node)
    }

    /// Node `i`'s attached children (node indices).
    pub fn children_of(&self, i: usize) -> Vec<usize> {
        let Some(node) = self.slots[i].node.as_ref() else { return Vec::new() };
        node.children().filter_map(|(p, _)| self.peer_node(i, p)).collect()
    }

    /// Core events so far, if [`Sim::record_events`] was called.
    pub fn log(&self) -> &[Logged] {
        self.log.as_deref().unwrap_or(&[])
    }

    /// Control messages of this kind (e.g. `"Route"`) sent so far.
    pub fn messages_sent(&self, kind: &str) -> u64 {
        KINDS.iter().position(|k| *k == kind).map_or(0, |i| self.sent[i])
    }

    pub fn trace_hash(&self) -> u64 {
        self.hash.value()
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Invariant violations found so far.
    pub fn violations(&self) -> &[String] {
        self.metrics.violations()
    }

    // ----- the event loop -----

    fn step(&mut self, ev: Ev) {
        self.hash.word(self.now);
        match ev {
            Ev::Timer(i) => {
                self.hash.word(1 | (i as u64) << 8);
                if self.timers[i].at != Some(self.now) {
                    return; // superseded by an earlier timer
                }
                self.timers[i].at = None;
                self.input(i, |n, now| n.handle_timeout(now));
            }
            Ev::Frame { conn, to, depart, payload } => self.deliver(conn, to, depart, payload),
            Ev::Closed { conn, to } => {
                self.hash.word(3 | (conn as u64) << 8);
                let end = self.conns[conn].ends[to];
                if !end.open || !self.is_live(end.node, end.incarnation) {
                    return;
                }
                self.conns[conn].ends[to].open = false;
                self.input(end.node, |n, now| n.peer_lost(now, end.peer, "connection closed by peer"));
                self.maybe_redial(self.conns[conn].edge);
            }
            Ev::Dial(e) => {
                self.hash.word(4 | (e as u64) << 8);
                self.redial_pending[e] = false;
                self.reconnect(e, None);
            }
            Ev::Publish => {
                self.hash.word(5);
                self.publish();
            }
            Ev::Viewers => {
                self.hash.word(6);
                let channel = self.channel.clone();
                for k in 0..self.viewers.len() {
                    let i = self.viewers[k];
                    self.input(i, |n, now| {
                        n.viewer_request(now, &channel);
                    });
                }
                let next = self.now + secs(self.scenario.workload.viewer_interval_s);
                self.queue.push(next, Ev::Viewers);
            }
            Ev::Act(action) => {
                self.hash.word(7);
                self.act(action);
            }
        }
    }

    /// Ask the CPU to fetch what the next events will touch while this one runs: at 10 000
    /// nodes and more, most of an event's time is cache misses. In stages, each reading only
    /// what the one before fetched (a read that misses would stall as long as the miss it
    /// hides): the connection of the event four ahead, the node of the one three ahead, the
    /// neighbour table and output queue of the one two ahead, then the connections and timer
    /// of the next event's node, which it sends on and re-arms. No effect on results.
    fn prefetch_ahead(&self) {
        if let Some(Ev::Frame { conn, .. }) = self.queue.peek_ahead(3) {
            prefetch(&self.conns[*conn]);
        }
        if let Some(i) = self.queue.peek_ahead(2).and_then(|ev| self.target(ev)) {
            prefetch(&self.slots[i].node);
        }
        if let Some(node) =
            self.queue.peek_ahead(1).and_then(|ev| self.target(ev)).and_then(|i| self.slots[i].node.as_ref())
        {
            prefetch(node.peer_table_memory());
            prefetch_bytes(node.output_queue_address(), 256);
        }
        if let Some(i) = self.queue.peek_ahead(0).and_then(|ev| self.target(ev)) {
            prefetch(&self.timers[i]);
            for (peer, _, _) in self.slots[i].node.iter().flat_map(Node::neighbours) {
                if let Some((c, _)) = self.conn_of(peer) {
                    prefetch(&self.conns[c]);
                }
            }
        }
    }

    /// The node an event is for, if it is a timer or frame.
    fn target(&self, ev: &Ev) -> Option<usize> {
        match ev {
            Ev::Frame { conn, to, .. } => Some(self.conns[*conn].ends[*to].node),
            Ev::Timer(i) => Some(*i),
            _ => None,
        }
    }

    fn deliver(&mut self, conn: usize, to: usize, depart: Nanos, payload: Payload) {
        let c = self.conns[conn];
        let (end, from) = (c.ends[to], c.ends[1 - to]);
        let code = match &payload {
            Payload::Msg(m) => frame::kind(m) as u64,
            Payload::Segment(f) => 100 + f.segment.meta.seq,
            Payload::Part(f) => 100 + f.part.meta.seq + (u64::from(f.part.meta.index) << 20),
        };
        self.hash.word(2 | (conn as u64) << 8 | code << 40);
        let ok = self.cuts[c.edge] == 0
            && end.open
            && self.is_live(end.node, end.incarnation)
            && from.dead_at.is_none_or(|d| d >= depart);
        if !ok {
            self.dropped += 1;
            return;
        }
        match payload {
            Payload::Msg(m) => self.input(end.node, |n, now| n.handle_message(now, end.peer, m)),
            Payload::Segment(f) => {
                let SegmentFrame { channel, rendition, segment } = *f;
                self.input(end.node, |n, now| n.handle_segment(now, end.peer, channel, rendition, segment))
            }
            Payload::Part(f) => {
                let PartFrame { channel, rendition, part } = *f;
                self.input(end.node, |n, now| n.handle_part(now, end.peer, channel, rendition, part))
            }
        }
    }

    /// Feed one input to node `i` (if alive), then drain its outputs and re-arm its timer.
    fn input(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant)) {
        let now = self.clock();
        let Some(node) = self.slots[i].node.as_mut() else { return };
        f(node, now);
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        while let Some(out) = self.slots[i].node.as_mut().and_then(Node::poll_output) {
            match out {
                Output::Send { peer, msg } => self.send_message(i, peer, msg),
                Output::SendSegments { peer, channel, rendition, segments } => {
                    self.send_segments(i, peer, channel, rendition, segments)
                }
                Output::SendPart { peer, channel, rendition, part } => {
                    self.send_part(i, peer, channel, rendition, *part)
                }
                Output::Close { peer, .. } => self.close(i, peer),
                Output::Event(e) => self.core_event(i, e),
            }
        }
        self.arm_timer(i);
    }

    fn arm_timer(&mut self, i: usize) {
        let Some(at) = self.slots[i].node.as_ref().and_then(Node::poll_timeout) else { return };
        let timer = &mut self.timers[i];
        if timer.at.is_some() && timer.instant == Some(at) {
            return; // already scheduled (the common case)
        }
        let t = (at.saturating_duration_since(self.base).as_nanos() as Nanos).max(self.now);
        if timer.at.is_none_or(|cur| t < cur) {
            timer.at = Some(t);
            timer.instant = Some(at);
            self.queue.push(t, Ev::Timer(i));
        }
    }

    fn core_event(&mut self, i: usize, e: Event) {
        match &e {
            Event::SegmentStored { meta, .. } => {
                self.hash.word(8 | (i as u64) << 8 | meta.seq << 40);
                if i != 0 {
                    let delay = self.metrics.on_store(i, meta.seq, self.now);
                    let delay_ms = delay.map(|d| d as f64 / MS as f64);
                    self.trace_line(i, "SegmentStored", Some(meta.seq), delay_ms, "");
                }
            }
            Event::ParentChanged { peer, node, .. } => {
                self.hash.word(9 | (i as u64) << 8);
                self.parent_changes += 1;
                let rtt = self
                    .conn_of(*peer)
                    .map_or(0, |(c, _)| 2 * self.topo.edges()[self.conns[c].edge].latency.as_nanos() as Nanos);
                let bound = self.scenario.repair_bound_base().as_nanos() as Nanos + rtt;
                let overlapping = self.metrics.orphan(i).is_some_and(|(since, dead)| {
                    self.topo
                        .neighbours(i)
                        .iter()
                        .any(|&(j, _)| j != dead && self.last_fault[j].is_some_and(|t| t + bound >= since))
                });
                self.metrics.on_parent_changed(i, self.now, rtt, overlapping);
                self.check_cycle_from(i);
                let node = node.clone();
                self.trace_line(i, "ParentChanged", None, None, &node);
            }
            Event::ParentLost { reason } => {
                self.hash.word(10 | (i as u64) << 8);
                let clock = self.clock();
                let has_backup = self.slots[i].node.as_ref().is_some_and(|n| !n.route_view(clock).backups.is_empty());
                self.metrics.on_parent_lost(i, self.now, has_backup);
                let reason = reason.clone();
                self.trace_line(i, "ParentLost", None, None, &reason);
            }
            Event::GapSkipped { lost, .. } => {
                self.hash.word(11 | (i as u64) << 8);
                self.gaps_skipped += 1;
                let detail = format!("{}..{}", lost.start, lost.end);
                self.trace_line(i, "GapSkipped", Some(lost.start), None, &detail);
            }
            Event::PartStored { meta, .. } => {
                self.hash.word(13 | (i as u64) << 8 | meta.seq << 40 | u64::from(meta.index) << 24);
            }
            Event::PartRefused { .. } => self.hash.word(14 | (i as u64) << 8),
            Event::PeerMisbehaved { .. } => {
                self.hash.word(12 | (i as u64) << 8);
                self.misbehaved += 1;
            }
            Event::ChannelChanged { channel } => {
                self.hash.word(16 | (i as u64) << 8);
                let subscribing =
                    self.slots[i].node.as_ref().and_then(|n| n.channel(channel)).is_some_and(|c| {
                        matches!(c.status, relaycast_core::node::ChannelStatus::Upstream { live: false })
                    });
                if i != 0 && *channel == self.channel && subscribing {
                    self.metrics.on_subscribed(i, self.now);
                }
            }
            Event::ChildAttached { .. } => self.hash.word(13 | (i as u64) << 8),
            Event::ChildGone { .. } => self.hash.word(14 | (i as u64) << 8),
            Event::PeerUp { .. } => self.hash.word(15 | (i as u64) << 8),
        }
        if let Some(log) = &mut self.log {
            log.push(Logged { at: Duration::from_nanos(self.now), node: i, event: e });
        }
    }
}

/// Independent random streams from one seed: 0 topology, 1 viewers, 2 faults, 3 links.
fn stream(seed: u64, n: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(n);
    r
}

fn secs(s: f64) -> Nanos {
    (s.max(0.0) * 1e9) as Nanos
}

fn node_config(s: &Scenario, i: usize, name: &str) -> NodeConfig {
    let n = &s.node;
    let max_children = if i == 0 { n.origin_max_children.unwrap_or(n.max_children) } else { n.max_children };
    NodeConfig {
        role: if i == 0 { Role::Origin } else { Role::Relay },
        name: name.to_string(),
        id: node_id(name),
        token: TOKEN.into(),
        window_len: n.window_len,
        join_backfill: n.join_backfill,
        keepalive: Duration::from_millis(n.keepalive_ms),
        flood_interval: Duration::from_millis(n.flood_interval_ms),
        max_children,
        idle_timeout: Duration::from_secs_f64(n.idle_timeout_s),
        gap_timeout: Duration::from_millis(n.gap_timeout_ms),
        // Links tell their latency at connect (`peer_rtt`), as QUIC does in the shell.
        rtt_from_transport: true,
        ..NodeConfig::default()
    }
}

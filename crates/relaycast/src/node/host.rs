//! The host: owns one core [`Node`] behind a mutex and carries out its outputs.
//!
//! Every input goes through [`Host::input`], which runs the state machine, drains all of its
//! outputs while holding the lock (the single-mutation rule), and then performs them outside
//! the lock: control messages and segments go to the peer's writer tasks, closes go to the
//! QUIC connection, events are logged, counted and wake HTTP requests waiting for data.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use relaycast_core::wire::{Message, SegmentHeader};
use relaycast_core::{Event, Node, NodeConfig, Output, PeerId, Role};
use tokio::sync::{Notify, mpsc};

use crate::common::wall_ms;

/// What the host can do with a connected peer.
pub struct PeerLink {
    pub control: mpsc::UnboundedSender<Message>,
    /// Each item goes out on its own unidirectional stream: (header, payload) frames in order,
    /// at a priority ([`PART_PRIORITY`], [`SEGMENT_PRIORITY`]).
    pub segments: mpsc::UnboundedSender<(Vec<(Bytes, Bytes)>, i32)>,
    pub connection: quinn::Connection,
}

/// Parts are live: on a congested link they go before whole segments, which at low latency are
/// only a new child's catch-up on the window (it assembles later segments from the parts).
pub const PART_PRIORITY: i32 = 0;
/// Whole segments (MPEG-TS channels, and a new child's window).
pub const SEGMENT_PRIORITY: i32 = -1;

/// Per-chunk delay at this node: time it had the whole segment minus the origin timestamp.
pub struct DelayStats {
    pub histogram: Histogram<u64>,
    pub segments: u64,
}

impl DelayStats {
    fn new() -> Self {
        // Invariant: 1 ms .. 1 hour with 3 significant digits is a valid histogram range.
        let histogram = Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid histogram bounds");
        Self { histogram, segments: 0 }
    }
}

/// Segments remembered in [`Host::arrivals`].
const ARRIVALS_KEPT: usize = 512;

/// One segment's arrival at this node.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Arrival {
    pub channel: String,
    pub rendition: String,
    pub seq: u64,
    /// When the origin had the whole segment, Unix ms.
    pub origin_ms: u64,
    /// When this node had it, Unix ms.
    pub stored_ms: u64,
}

pub struct Host {
    node: Mutex<Node>,
    peers: Mutex<BTreeMap<PeerId, PeerLink>>,
    next_peer: AtomicU64,
    /// Woken whenever a segment is stored or a channel changes.
    pub changed: Notify,
    pub delay: Mutex<DelayStats>,
    /// Per-part delay at this node (low-latency renditions): time it had the part minus the
    /// origin timestamp of the part.
    pub part_delay: Mutex<DelayStats>,
    /// HTTP requests held open waiting for a part, segment or playlist (blocking reload).
    pub held: AtomicUsize,
    /// When this node had each of the latest segments, for latency budgets (`/api/v1/arrivals`).
    pub arrivals: Mutex<VecDeque<Arrival>>,
    pub name: String,
    pub role: Role,
    /// Largest segment accepted from a peer or a source.
    pub max_segment_bytes: usize,
    /// Parts whose bytes are arriving from the parent right now (cut-through to viewers).
    pub arriving: Arc<crate::node::arriving::Arriving>,
    /// When this node lost its parent, until it has one again (a repair, F13).
    orphaned_at: Mutex<Option<Instant>>,
}

/// A connected neighbour and what its QUIC connection has measured.
pub struct LinkStats {
    pub peer: PeerId,
    pub name: String,
    pub rtt: Duration,
    pub stats: quinn::ConnectionStats,
}

impl Host {
    pub fn new(config: NodeConfig, max_segment_bytes: usize) -> Arc<Self> {
        let name = config.name.clone();
        let role = config.role;
        Arc::new(Self {
            node: Mutex::new(Node::new(config)),
            peers: Mutex::new(BTreeMap::new()),
            next_peer: AtomicU64::new(1),
            changed: Notify::new(),
            delay: Mutex::new(DelayStats::new()),
            part_delay: Mutex::new(DelayStats::new()),
            held: AtomicUsize::new(0),
            arrivals: Mutex::new(VecDeque::with_capacity(ARRIVALS_KEPT)),
            name,
            role,
            max_segment_bytes,
            arriving: Arc::default(),
            orphaned_at: Mutex::new(None),
        })
    }

    pub fn next_peer_id(&self) -> PeerId {
        PeerId(self.next_peer.fetch_add(1, Ordering::Relaxed))
    }

    pub fn add_peer(&self, id: PeerId, link: PeerLink) {
        self.peers.lock().expect("peers lock").insert(id, link);
    }

    /// Every neighbour the node counts as up, with its connection's statistics.
    pub fn links(&self) -> Vec<LinkStats> {
        let names: BTreeMap<PeerId, String> =
            self.read(|n| n.neighbours().map(|(id, name, _)| (id, name.to_string())).collect());
        let peers = self.peers.lock().expect("peers lock");
        peers
            .iter()
            .filter_map(|(id, link)| {
                let name = names.get(id)?.clone();
                Some(LinkStats { peer: *id, name, rtt: link.connection.rtt(), stats: link.connection.stats() })
            })
            .collect()
    }

    /// Read the node without changing it.
    pub fn read<T>(&self, f: impl FnOnce(&Node) -> T) -> T {
        f(&self.node.lock().expect("node lock"))
    }

    /// Feed one input to the node and carry out everything it asks for.
    pub fn input<T>(&self, f: impl FnOnce(&mut Node, Instant) -> T) -> T {
        let (result, outputs) = {
            let mut node = self.node.lock().expect("node lock");
            let result = f(&mut node, Instant::now());
            let mut outputs = Vec::new();
            while let Some(o) = node.poll_output() {
                outputs.push(o);
            }
            (result, outputs)
        };
        for o in outputs {
            self.perform(o);
        }
        result
    }

    /// The connection to `peer` ended; tell the node and forget the link.
    pub fn peer_closed(&self, peer: PeerId, reason: &str) {
        self.peers.lock().expect("peers lock").remove(&peer);
        self.input(|n, now| n.peer_lost(now, peer, reason));
    }

    /// Run the node's timers until the process ends. Each time, the node first hears QUIC's
    /// RTT estimate of every link (it does not ping to measure them: `rtt_from_transport`).
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = self.read(|n| n.poll_timeout());
            let wait = next.map_or(Duration::from_millis(500), |t| t.saturating_duration_since(Instant::now()));
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
            let rtts: Vec<(PeerId, Duration)> =
                self.peers.lock().expect("peers lock").iter().map(|(p, l)| (*p, l.connection.rtt())).collect();
            self.input(|n, now| {
                n.peer_rtts(now, rtts);
                n.handle_timeout(now)
            });
        }
    }

    /// Re-run `check` whenever the node changes, until it returns `Some` or `timeout` passes.
    pub async fn wait_for<T>(&self, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so a change between the two is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(v) = check() {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    fn perform(&self, output: Output) {
        match output {
            Output::Send { peer, msg } => {
                if let Some(link) = self.peers.lock().expect("peers lock").get(&peer) {
                    let _ = link.control.send(msg);
                }
            }
            Output::SendSegments { peer, channel, rendition, segments } => {
                metrics::counter!("relaycast_segments_sent_total", "node" => self.name.clone(), "channel" => channel.to_string(), "to" => "child")
                    .increment(segments.len() as u64);
                if let Some(link) = self.peers.lock().expect("peers lock").get(&peer) {
                    let frames = segments
                        .into_iter()
                        .map(|s| (SegmentHeader::for_segment(&channel, &rendition, &s).encode(), s.data))
                        .collect();
                    let _ = link.segments.send((frames, SEGMENT_PRIORITY));
                }
            }
            Output::SendPart { peer, channel, rendition, part } => {
                if let Some(link) = self.peers.lock().expect("peers lock").get(&peer) {
                    let header = SegmentHeader::for_part(&channel, &rendition, &part).encode();
                    let _ = link.segments.send((vec![(header, part.data)], PART_PRIORITY));
                }
            }
            Output::Close { peer, reason } => {
                if let Some(link) = self.peers.lock().expect("peers lock").remove(&peer) {
                    tracing::warn!(node = %self.name, peer = peer.0, %reason, "closing peer connection");
                    let mut bytes = reason.into_bytes();
                    bytes.truncate(200);
                    link.connection.close(quinn::VarInt::from_u32(1), &bytes);
                }
            }
            Output::Event(e) => self.on_event(e),
        }
    }

    fn on_event(&self, e: Event) {
        let node = self.name.clone();
        match e {
            Event::SegmentStored { channel, rendition, meta, bytes, newest } => {
                let now = wall_ms();
                let delay = now.saturating_sub(meta.origin_ms);
                {
                    let mut a = self.arrivals.lock().expect("arrivals lock");
                    if a.len() == ARRIVALS_KEPT {
                        a.pop_front();
                    }
                    a.push_back(Arrival {
                        channel: channel.to_string(),
                        rendition: rendition.to_string(),
                        seq: meta.seq,
                        origin_ms: meta.origin_ms,
                        stored_ms: now,
                    });
                }
                if newest {
                    let mut d = self.delay.lock().expect("delay lock");
                    let _ = d.histogram.record(delay.max(1));
                    d.segments += 1;
                    metrics::histogram!("relaycast_segment_delay_seconds", "node" => node.clone())
                        .record(delay as f64 / 1000.0);
                }
                metrics::counter!("relaycast_segments_stored_total", "node" => node.clone(), "channel" => channel.to_string())
                    .increment(1);
                metrics::counter!("relaycast_segment_bytes_stored_total", "node" => node.clone())
                    .increment(bytes as u64);
                tracing::debug!(%channel, %rendition, seq = meta.seq, bytes, delay_ms = delay, "segment stored");
                self.changed.notify_waiters();
            }
            Event::PartStored { channel, rendition, meta, bytes } => {
                let delay = wall_ms().saturating_sub(meta.origin_ms);
                let mut d = self.part_delay.lock().expect("delay lock");
                let _ = d.histogram.record(delay.max(1));
                d.segments += 1;
                drop(d);
                metrics::histogram!("relaycast_part_delay_seconds", "node" => node).record(delay as f64 / 1000.0);
                tracing::trace!(%channel, %rendition, seq = meta.seq, part = meta.index, bytes, delay_ms = delay, "part stored");
                self.changed.notify_waiters();
            }
            Event::PartRefused { channel, rendition, reason } => {
                tracing::warn!(node = %self.name, %channel, %rendition, %reason, "part refused");
            }
            Event::ChannelChanged { channel } => {
                tracing::debug!(%channel, "channel changed");
                self.changed.notify_waiters();
            }
            Event::PeerUp { peer, node: neighbour } => {
                tracing::info!(node = %self.name, peer = peer.0, %neighbour, "neighbour up");
            }
            Event::ParentChanged { node: parent, previous, .. } => {
                tracing::info!(node = %self.name, %parent, previous = previous.as_deref().unwrap_or("none"), "attached to parent");
                metrics::counter!("relaycast_parent_changes_total", "node" => node.clone()).increment(1);
                if let Some(lost) = self.orphaned_at.lock().expect("orphan lock").take() {
                    metrics::counter!("relaycast_repairs_total", "node" => node.clone()).increment(1);
                    metrics::histogram!("relaycast_repair_seconds", "node" => node)
                        .record(lost.elapsed().as_secs_f64());
                }
            }
            Event::ParentLost { reason } => {
                tracing::warn!(node = %self.name, %reason, "lost parent");
                self.orphaned_at.lock().expect("orphan lock").get_or_insert_with(Instant::now);
                self.changed.notify_waiters();
            }
            Event::ChildAttached { peer, node: child } => {
                tracing::info!(node = %self.name, peer = peer.0, %child, "child attached");
            }
            Event::ChildGone { peer } => {
                tracing::info!(node = %self.name, peer = peer.0, "child left");
            }
            Event::GapSkipped { channel, rendition, lost } => {
                tracing::warn!(node = %self.name, %channel, %rendition, ?lost, "segments never arrived; playlist moved past them");
                metrics::counter!("relaycast_segments_lost_total", "node" => node).increment(lost.end - lost.start);
                self.changed.notify_waiters();
            }
            Event::PeerMisbehaved { peer, reason } => {
                tracing::warn!(node = %self.name, peer = peer.0, %reason, "peer refused or dropped");
                metrics::counter!("relaycast_peers_refused_total", "node" => node).increment(1);
            }
        }
    }
}

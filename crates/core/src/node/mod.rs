//! The node state machine: what an origin or a relay does, without any I/O.
//!
//! A [`Node`] is linked to neighbours (other nodes it has a connection with). The origin floods
//! its route through the neighbour graph; every relay picks one neighbour as its parent (lowest
//! latency, then fewest hops), keeps the others as backups, and attaches to the parent. Channels
//! flow down the resulting tree, pulled on demand (see `tree.rs` and `channels.rs`).
//!
//! The shell feeds it inputs and carries out its outputs:
//!
//! - **inputs** (`&mut self`, each takes `now`): [`Node::peer_dialed`], [`Node::peer_accepted`],
//!   [`Node::peer_lost`], [`Node::peer_rtt`], [`Node::handle_message`], [`Node::handle_segment`],
//!   [`Node::set_local_channel`], [`Node::publish`], [`Node::viewer_request`],
//!   [`Node::handle_timeout`];
//! - **outputs**: after every input, call [`Node::poll_output`] until it returns `None`
//!   (messages and segments to send to a [`PeerId`], connections to close, events to log or to
//!   wake waiting HTTP requests), then arm a timer for [`Node::poll_timeout`].
//!
//! Peers are named by [`PeerId`], never by address; the same code runs under the tokio shell and
//! under the simulator.

mod channels;
mod output_queue;
mod peer_table;
mod sequencer;
mod tree;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use channels::{Channel, ChannelStatus, Rendition};
pub use tree::RouteView;

use crate::media::{Name, SegmentMeta};
use crate::wire::{ChannelEntry, Message, PROTOCOL_VERSION, Playback, Route};
use output_queue::OutputQueue;
use peer_table::PeerTable;

/// Without RTT figures from the transport, one side of each link pings the other (for an RTT
/// sample) once per this many flood intervals.
const RTT_PROBE_FLOODS: u32 = 5;
/// The largest RTT a neighbour may report in its ping; larger figures are taken as this. A
/// peer that lies cannot make our keep-alive arithmetic overflow, nor hide for minutes.
const MAX_REPORTED_RTT: Duration = Duration::from_secs(10);

/// A connection to another node, numbered by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u64);

/// Whether a node is the root of the tree or pulls from a parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Channels come from local sources; the origin floods the tree.
    Origin,
    /// Channels come from the parent, on demand.
    Relay,
}

/// Tunables of a node. [`NodeConfig::default`] gives production defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub role: Role,
    /// Name reported to peers and in the API.
    pub name: String,
    /// Identity in route paths; unique in the cluster (the shell derives it from the name).
    pub id: u64,
    /// Shared cluster secret a peer must present in `Hello`.
    pub token: String,
    /// Segments kept per rendition (what a reconnecting child can resume from).
    pub window_len: usize,
    /// Segments sent to a new subscriber that has nothing yet (the live playlist length).
    pub join_backfill: usize,
    /// How often a parent tells each child it is alive (`Alive`), and the node's timer tick; a
    /// child drops a parent silent for 2.25 of them.
    pub keepalive: Duration,
    /// How often the origin floods the tree (F11).
    pub flood_interval: Duration,
    /// First flood id of an origin; the shell passes a clock-derived value so a restarted origin
    /// floods with newer ids than before. Ignored by relays: their flood counter only follows
    /// the floods they hear (a relay seeded from the clock would start ahead of an origin that
    /// has been flooding for a while — ids advance once per flood interval, the clock once per
    /// second — and would reject every route as stale).
    pub flood_base: u64,
    /// Children accepted at most; more are refused and choose another parent.
    pub max_children: usize,
    /// A relay releases a channel upstream when no viewer or child wanted it for this long.
    pub idle_timeout: Duration,
    /// How long a refused channel is remembered before asking upstream again.
    pub refusal_ttl: Duration,
    /// A peer that has not finished the handshake within this time is dropped.
    pub hello_timeout: Duration,
    /// A gap in a window (a segment lost upstream) is given up on after this long, so the
    /// playlist moves on past it.
    pub gap_timeout: Duration,
    /// Who may watch this origin's channels: `default_playback` unless `playback` names the
    /// channel. Relays ignore both and follow what the catalogue says.
    pub default_playback: Playback,
    pub playback: BTreeMap<Name, Playback>,
    /// This origin's AES-128 channels and, for each, the segments per key (F7).
    pub encrypted: BTreeMap<Name, u32>,
    /// The shell reports every peer's RTT as its transport measures it ([`Node::peer_rtt`]:
    /// QUIC's estimate, the simulator's link), so the node pings only to ask a quiet neighbour
    /// or an attach candidate whether it is there, never to measure.
    pub rtt_from_transport: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            role: Role::Relay,
            name: "node".into(),
            id: 0,
            token: String::new(),
            window_len: 30,
            join_backfill: 6,
            keepalive: Duration::from_millis(500),
            flood_interval: Duration::from_secs(2),
            flood_base: 0,
            max_children: 64,
            idle_timeout: Duration::from_secs(30),
            refusal_ttl: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(5),
            gap_timeout: Duration::from_secs(3),
            default_playback: Playback::Public,
            playback: BTreeMap::new(),
            encrypted: BTreeMap::new(),
            rtt_from_transport: false,
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send a control message on the peer's control stream.
    Send { peer: PeerId, msg: Message },
    /// Send segments, in this order, on one new unidirectional stream to the peer.
    SendSegments { peer: PeerId, channel: Name, rendition: Name, segments: Vec<crate::media::Segment> },
    /// Send one part on a new unidirectional stream to the peer (cut-through: at once). Boxed:
    /// the largest variant otherwise, and every output is moved through the node's queue.
    SendPart { peer: PeerId, channel: Name, rendition: Name, part: Box<crate::media::Part> },
    /// Close the connection to the peer, giving the reason.
    Close { peer: PeerId, reason: String },
    /// Something happened that the shell may log, count, or wake waiters for.
    Event(Event),
}

/// Things worth logging, counting or waking HTTP requests for.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A segment entered a window, from a local source or from upstream. `newest` when it
    /// advanced the live edge (not a backfilled or late segment): delay statistics use those.
    SegmentStored {
        channel: Name,
        rendition: Name,
        meta: SegmentMeta,
        bytes: usize,
        newest: bool,
    },
    /// A part of a low-latency rendition entered its part log (and went on to subscribers).
    PartStored {
        channel: Name,
        rendition: Name,
        meta: crate::media::PartMeta,
        bytes: usize,
    },
    /// A part was not taken (out of the log's range, after the segment's last part, ...).
    PartRefused {
        channel: Name,
        rendition: Name,
        reason: String,
    },
    /// A channel appeared, became live, was refused or was released.
    ChannelChanged {
        channel: Name,
    },
    /// A neighbour finished the handshake.
    PeerUp {
        peer: PeerId,
        node: String,
    },
    /// We attached to a new parent (`previous` is the one we left, if any).
    ParentChanged {
        peer: PeerId,
        node: String,
        previous: Option<String>,
    },
    /// We have no parent any more, and why.
    ParentLost {
        reason: String,
    },
    ChildAttached {
        peer: PeerId,
        node: String,
    },
    ChildGone {
        peer: PeerId,
    },
    /// Segments that never arrived were given up on; the playlist moved past them.
    GapSkipped {
        channel: Name,
        rendition: Name,
        lost: std::ops::Range<u64>,
    },
    /// A peer broke the protocol or was refused; the node carries on.
    PeerMisbehaved {
        peer: PeerId,
        reason: String,
    },
}

/// Whether a viewer's request for a channel can be served now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Segments are in the window.
    Ready,
    /// Asked upstream; wait for [`Event::SegmentStored`] or [`Event::ChannelChanged`].
    Pending,
    /// This channel cannot be delivered, and why.
    Unavailable(String),
}

/// Why a local source's segment was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("channel {0} is not a local channel of this node")]
    NotLocal(Name),
    #[error("rendition {rendition} is not declared for channel {channel}")]
    UnknownRendition { channel: Name, rendition: Name },
    #[error("part {index} published before part 0 of its segment")]
    PartOutOfOrder { index: u32 },
    #[error(
        "channel {0} is encrypted (AES-128 covers whole MPEG-TS segments): publish it as HLS segments, not low-latency parts"
    )]
    EncryptedParts(Name),
    #[error("channel {0} is encrypted but this node has no cipher")]
    NoCipher(Name),
}

/// One part of a low-latency rendition from a local source (see [`Node::publish_part`]).
#[derive(Clone, Debug)]
pub struct SourcePart {
    /// The source's number for the segment the part belongs to.
    pub source_seq: u64,
    pub index: u32,
    pub independent: bool,
    pub last: bool,
    /// A discontinuity precedes this segment (read on part 0).
    pub discontinuity: bool,
    pub duration_us: u32,
    pub data: bytes::Bytes,
}

/// A segment from a local source (file loop, pull, push), before the node numbers it.
#[derive(Clone, Debug)]
pub struct SourceSegment {
    /// The source's own sequence number, if it has one (HLS media sequence).
    pub source_seq: Option<u64>,
    /// The source says a discontinuity precedes this segment (loop, restart, new encoder).
    pub discontinuity: bool,
    pub duration_us: u32,
    pub data: bytes::Bytes,
}

/// What we know about one neighbour. `repr(C)` keeps what the keep-alive check reads on every
/// tick (the fields up to `route_through_us`) together in the first 80 bytes: at 10 000 nodes
/// it is a cache miss per cache line, and Rust's own layout spread it over four.
#[derive(Debug, Clone)]
#[repr(C)]
struct Peer {
    last_heard: Instant,
    since: Instant,
    /// Smoothed round-trip time, once measured.
    rtt: Option<Duration>,
    /// When we last pinged it.
    pinged_at: Option<Instant>,
    id: u64,
    /// We dialed it (and said `Hello`); otherwise it dialed us.
    dialed: bool,
    /// The handshake is complete.
    up: bool,
    /// It is attached to us as a child.
    child: bool,
    /// Whether `route`'s path holds our own id, worked out once per path: every flood
    /// refresh asks, and paths in a deep tree are long.
    route_through_us: bool,
    /// The neighbour's latest route to the origin (`None`: it has none, or has not said).
    route: Option<Route>,
    /// The digest of `route`'s path, to check refreshes without walking the path.
    route_digest: u64,
    /// It refused our `Attach`; not a parent candidate until then.
    refused_until: Option<Instant>,
    /// What `route`'s path says about us, worked out once per path (see [`tree::PathVerdict`]).
    verdict: std::cell::Cell<Option<tree::PathVerdict>>,
    /// The path of the last whole `Route` we sent it: floods over the same path go as
    /// `RouteRefresh` (`None`: it holds no route of ours).
    told_path: Option<std::sync::Arc<[u64]>>,
    /// Outstanding ping (nonce, sent at).
    ping: Option<(u64, Instant)>,
    name: String,
}

/// An origin or relay, as a sans-IO state machine. See the module docs for the calling contract.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    peers: PeerTable<Peer>,
    /// The attached parent.
    parent: Option<PeerId>,
    /// `Attach` sent, answer pending.
    attaching: Option<PeerId>,
    /// Our route to the origin as last advertised (the origin's is the root route).
    route: Option<Route>,
    /// The upstream path our route's path extends, to know a refresh over the same path
    /// without comparing the paths.
    route_extends: Option<std::sync::Arc<[u64]>>,
    /// The digest of our route's path, for the refreshes we send.
    route_digest: u64,
    /// Newest flood id seen (or, at the origin, sent).
    flood: u64,
    next_flood: Option<Instant>,
    channels: BTreeMap<Name, Channel>,
    /// What the parent said it can deliver (relays); `None` until the first catalogue arrives.
    upstream_catalog: Option<BTreeMap<Name, ChannelEntry>>,
    outputs: OutputQueue,
    /// The keep-alive tick: every `keepalive`, `Alive` to each child and a check of every peer
    /// and channel.
    next_tick: Option<Instant>,
    /// Before the next tick, the earliest moment a peer may turn dead or a gap stale (found at
    /// the last check; news only moves it later, so waking then is never too late).
    next_deadline: Option<Instant>,
    /// When the channels next need a look: a gap turning stale, an unwanted channel turning
    /// idle, a refusal running out (`None`: at the next wake). Whatever could bring that
    /// forward — a new gap, channel, refusal or lost subscriber — sets it back to `None`.
    channels_check_at: Option<Instant>,
    /// When the first gap turns stale, as of that look.
    gap_due: Option<Instant>,
    next_nonce: u64,
    /// Feasibility distance (flood, latency µs): the best route we advertised in our newest
    /// flood. An optional parent switch must beat it (see `tree.rs`).
    feasible: Option<(u64, u64)>,
    /// Neighbours we lost, or that withdrew their route or routed through us (node id, newest
    /// flood heard then; one entry per neighbour): routes through them from that flood or older
    /// are stale.
    lost: Vec<(u64, u64)>,
    /// The newest flood we asked a newer one than (`RouteRequest`), so each is asked once.
    requested: Option<u64>,
    /// Since when we have been repairing with no feasible route, waiting for a newer flood.
    holding_since: Option<Instant>,
    /// A repair's hold ran out with no usable route: the next usable one is taken at once.
    hold_over: bool,
    /// Bumped whenever our children or `lost` change: the cached path verdicts of older
    /// epochs are out of date.
    exclusions: u64,
    /// Origin: when it last started a flood (requests start one at most every 100 ms).
    last_flood: Option<Instant>,
    /// Signs published segments (origin with a signing key, F53).
    signer: Option<std::sync::Arc<dyn crate::p2p::signing::SegmentSigner>>,
    cipher: Option<std::sync::Arc<dyn crate::encryption::SegmentCipher>>,
}

impl Node {
    pub fn new(config: NodeConfig) -> Self {
        let flood = if config.role == Role::Origin { config.flood_base } else { 0 };
        Self {
            config,
            peers: PeerTable::default(),
            parent: None,
            attaching: None,
            route: None,
            route_extends: None,
            route_digest: 0,
            flood,
            next_flood: None,
            channels: BTreeMap::new(),
            upstream_catalog: None,
            outputs: OutputQueue::default(),
            next_tick: None,
            next_deadline: None,
            channels_check_at: None,
            gap_due: None,
            next_nonce: 1,
            feasible: None,
            lost: Vec::new(),
            requested: None,
            holding_since: None,
            hold_over: false,
            exclusions: 0,
            last_flood: None,
            signer: None,
            cipher: None,
        }
    }

    /// Sign every segment published from now on (F53); the signature travels down the tree.
    pub fn set_signer(&mut self, signer: std::sync::Arc<dyn crate::p2p::signing::SegmentSigner>) {
        self.signer = Some(signer);
    }

    // ----- getters -----

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn channel(&self, name: &Name) -> Option<&Channel> {
        self.channels.get(name)
    }

    pub fn channels(&self) -> impl Iterator<Item = (&Name, &Channel)> {
        self.channels.iter()
    }

    /// The attached parent and its name.
    pub fn parent(&self) -> Option<(PeerId, &str)> {
        let id = self.parent?;
        Some((id, self.peers.get(&id)?.name.as_str()))
    }

    /// Attached children and their names.
    pub fn children(&self) -> impl Iterator<Item = (PeerId, &str)> {
        self.peers.iter().filter(|(_, p)| p.child).map(|(id, p)| (*id, p.name.as_str()))
    }

    /// The neighbour table as it lies in memory, which nearly every input reads: for a host
    /// that prefetches what a node's next input will touch (the simulator does, at 10 000+
    /// nodes). Opaque: only its address and size mean anything outside.
    pub fn peer_table_memory(&self) -> &[impl Sized + '_] {
        self.peers.memory()
    }

    /// Where the node's next output will be written: for a host that prefetches what a node's
    /// next input will touch. Only an address; nothing is readable there.
    pub fn output_queue_address(&self) -> *const u8 {
        self.outputs.address()
    }

    /// Neighbours whose handshake is complete, with their names and measured RTT.
    pub fn neighbours(&self) -> impl Iterator<Item = (PeerId, &str, Option<Duration>)> {
        self.peers.iter().filter(|(_, p)| p.up).map(|(id, p)| (*id, p.name.as_str(), p.rtt))
    }

    /// The renditions a channel offers: as declared by its source (catalogue), plus any carried
    /// that the catalogue does not list yet.
    pub fn offered_renditions(&self, channel: &Name) -> Vec<crate::media::RenditionInfo> {
        let mut out: BTreeMap<Name, crate::media::RenditionInfo> = BTreeMap::new();
        if let Some(entry) = self.upstream_catalog.as_ref().and_then(|c| c.get(channel)) {
            out.extend(entry.renditions.iter().map(|r| (r.name.clone(), r.clone())));
        }
        if let Some(ch) = self.channels.get(channel) {
            for (name, r) in &ch.renditions {
                out.entry(name.clone()).or_insert_with(|| r.info.clone());
            }
        }
        out.into_values().collect()
    }

    /// Channels a viewer asking now would get: local channels that have segments and, while a
    /// parent is attached, every channel it offers (a relay subscribes on the first request).
    /// What an edge reports to the traffic manager, which steers viewers only where they can
    /// be served.
    pub fn servable_channels(&self) -> Vec<Name> {
        let mut out: std::collections::BTreeSet<Name> = self
            .channels
            .iter()
            .filter(|(_, ch)| ch.status == ChannelStatus::Local && ch.has_segments())
            .map(|(name, _)| name.clone())
            .collect();
        if self.parent.is_some() {
            out.extend(self.upstream_catalog.iter().flat_map(|c| c.keys().cloned()));
        }
        out.into_iter().collect()
    }

    /// Every channel this node can deliver: its local channels plus what its parent offers.
    pub fn catalog(&self) -> Vec<ChannelEntry> {
        let mut all: BTreeMap<Name, ChannelEntry> = self.upstream_catalog.clone().unwrap_or_default();
        for (name, ch) in &self.channels {
            if ch.status == ChannelStatus::Local {
                let mut entry = ch.entry(name);
                entry.playback = self.local_playback(name);
                entry.encryption = self.config.encrypted.get(name).copied();
                all.insert(name.clone(), entry);
            }
        }
        all.into_values().collect()
    }

    fn local_playback(&self, channel: &Name) -> Playback {
        self.config.playback.get(channel).copied().unwrap_or(self.config.default_playback)
    }

    /// Segments per key if `channel` is AES-128 encrypted (the origin's word, from the catalogue).
    pub fn encryption(&self, channel: &Name) -> Option<u32> {
        match self.channels.get(channel) {
            Some(ch) if ch.status == ChannelStatus::Local => self.config.encrypted.get(channel).copied(),
            _ => self.upstream_catalog.as_ref().and_then(|c| c.get(channel)).and_then(|e| e.encryption),
        }
    }

    /// Set the cipher an origin encrypts its AES-128 channels with.
    pub fn set_cipher(&mut self, cipher: std::sync::Arc<dyn crate::encryption::SegmentCipher>) {
        self.cipher = Some(cipher);
    }

    /// Who may watch `channel` here: the origin's own policy for its channels, the catalogue's
    /// for channels from upstream. A channel not known yet gets this node's default, so an edge
    /// configured `signed` never serves unknown channels openly.
    pub fn playback(&self, channel: &Name) -> Playback {
        self.declared_playback(channel).unwrap_or(self.config.default_playback)
    }

    /// Who may watch `channel`, if this node knows the channel (its own, or in the catalogue).
    pub fn declared_playback(&self, channel: &Name) -> Option<Playback> {
        match self.channels.get(channel) {
            Some(ch) if ch.status == ChannelStatus::Local => Some(self.local_playback(channel)),
            _ => self.upstream_catalog.as_ref().and_then(|c| c.get(channel)).map(|e| e.playback),
        }
    }

    // ----- outputs -----

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = self.holding_since.map(|since| since + tree::REPAIR_HOLD);
        [self.next_tick, self.next_deadline, self.next_flood, held].into_iter().flatten().min()
    }

    // ----- inputs: connections -----

    /// The shell connected to a neighbour as `peer` (we dialed); we introduce ourselves.
    pub fn peer_dialed(&mut self, now: Instant, peer: PeerId) {
        self.peers.insert(peer, Peer::new(now, true));
        self.exclusions += 1;
        let msg = Message::Hello {
            version: PROTOCOL_VERSION,
            node: self.config.name.clone(),
            id: self.config.id,
            token: self.config.token.clone(),
        };
        self.send(peer, msg);
        self.arm_timers(now);
    }

    /// A neighbour connected to us as `peer`; it must say `Hello` first.
    pub fn peer_accepted(&mut self, now: Instant, peer: PeerId) {
        self.peers.insert(peer, Peer::new(now, false));
        self.exclusions += 1;
        self.arm_timers(now);
    }

    /// The connection to `peer` is gone (closed by either side, or failed).
    pub fn peer_lost(&mut self, now: Instant, peer: PeerId, reason: &str) {
        let Some(p) = self.peers.remove(&peer) else { return };
        self.exclusions += 1;
        if p.up {
            self.note_lost((p.id, p.route.as_ref().map_or(self.flood, |r| r.flood)));
        }
        for ch in self.channels.values_mut() {
            ch.subscribers.remove(&peer);
            ch.sources.remove(&peer);
        }
        self.channels_check_at = None;
        if p.child {
            self.event(Event::ChildGone { peer });
        }
        if self.attaching == Some(peer) {
            self.attaching = None;
        }
        if self.parent == Some(peer) {
            self.parent = None;
            self.event(Event::ParentLost { reason: format!("{}: {reason}", p.name) });
        }
        self.reevaluate_parent(now);
    }

    /// Bytes are arriving from `peer` (part of a segment, say): it is alive, even if no whole
    /// message has arrived for a while on a slow or congested link.
    pub fn peer_alive(&mut self, now: Instant, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_heard = now;
        }
    }

    /// The shell's RTT estimate for `peer`; the simulator passes the link's at connect. See
    /// [`NodeConfig::rtt_from_transport`].
    pub fn peer_rtt(&mut self, now: Instant, peer: PeerId, rtt: Duration) {
        self.peer_rtts(now, [(peer, rtt)]);
    }

    /// [`Node::peer_rtt`] for many peers at once (the shell passes QUIC's estimate of every link
    /// at each timer wake), choosing the parent once, with every figure in.
    pub fn peer_rtts(&mut self, now: Instant, rtts: impl IntoIterator<Item = (PeerId, Duration)>) {
        let mut known = false;
        for (peer, rtt) in rtts {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.rtt = Some(rtt);
                known = true;
            }
        }
        if known {
            self.reevaluate_parent(now);
        }
    }

    // ----- inputs: data from peers -----

    /// A control message arrived from `peer`.
    pub fn handle_message(&mut self, now: Instant, peer: PeerId, msg: Message) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        p.last_heard = now;
        if !p.up {
            return self.handshake(now, peer, msg);
        }
        match msg {
            Message::Route(route) => self.on_route(now, peer, Some(route)),
            Message::RouteRefresh { flood, latency_us, path_digest } => {
                self.on_route_refresh(now, peer, flood, latency_us, path_digest)
            }
            Message::NoRoute => self.on_route(now, peer, None),
            Message::RouteRequest { flood } => self.on_route_request(now, peer, flood),
            Message::Attach => self.on_attach(peer),
            Message::Attached => self.on_attached(now, peer),
            Message::AttachRefused { reason } => self.on_attach_refused(now, peer, reason),
            Message::Detach => self.on_detach(peer),
            Message::Catalog { channels } if self.parent == Some(peer) => self.on_catalog(now, channels),
            Message::Catalog { .. } => {}
            Message::Subscribe { channel, resume, joining } => self.on_subscribe(now, peer, channel, resume, joining),
            Message::Unsubscribe { channel } => self.on_unsubscribe(now, peer, &channel),
            Message::Refused { channel, reason } => self.on_refused(now, peer, &channel, reason),
            Message::Ping { nonce, rtt_us } => {
                if rtt_us > 0
                    && let Some(p) = self.peers.get_mut(&peer)
                {
                    // Its measurement of our link (the same both ways): we need not probe it.
                    p.rtt = Some(Duration::from_micros(rtt_us).min(MAX_REPORTED_RTT));
                }
                self.send(peer, Message::Pong { nonce });
            }
            Message::Pong { nonce } => self.on_pong(now, peer, nonce),
            // Its arrival is the news: `last_heard` is already set.
            Message::Alive => {}
            Message::Hello { .. } | Message::Welcome { .. } => {
                self.drop_peer(now, peer, "handshake repeated".into());
            }
        }
    }

    // ----- inputs: timers -----

    /// Timers: tree floods (origin), keep-alive (`Alive`, probes), dead-peer detection, gaps, idle
    /// channels.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_flood.is_some_and(|t| now >= t) {
            self.start_flood(now);
        }
        if self.holding_since.is_some() {
            self.reevaluate_parent(now);
        }
        let Some(tick) = self.next_tick else { return };
        let tick_due = now >= tick;
        if !tick_due && self.next_deadline.is_none_or(|d| now < d) {
            return;
        }
        if tick_due {
            self.next_tick = Some(now + self.tick_interval());
        }
        let peers_due = self.check_peers(now, tick_due);
        let gaps_due = self.check_channels(now);
        self.next_deadline = peers_due.into_iter().chain(gaps_due).min().filter(|&d| Some(d) < self.next_tick);
    }

    // ----- private helpers -----

    fn is_origin(&self) -> bool {
        self.config.role == Role::Origin
    }

    fn tick_interval(&self) -> Duration {
        // Children hear `Alive` on every tick; deaths and gaps between ticks wake the node at
        // their own deadline (`next_deadline`), so a dead parent is found 2.25 intervals after
        // it last spoke, not up to a tick later.
        self.config.keepalive.clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn arm_timers(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.tick_interval());
        }
        if self.is_origin() && self.next_flood.is_none() {
            self.next_flood = Some(now);
        }
    }

    fn send(&mut self, peer: PeerId, msg: Message) {
        self.outputs.push_back(Output::Send { peer, msg });
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn drop_peer(&mut self, now: Instant, peer: PeerId, reason: String) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        self.event(Event::PeerMisbehaved { peer, reason: reason.clone() });
        self.outputs.push_back(Output::Close { peer, reason: reason.clone() });
        self.peer_lost(now, peer, &reason);
    }

    fn handshake(&mut self, now: Instant, peer: PeerId, msg: Message) {
        let dialed = self.peers.get(&peer).is_some_and(|p| p.dialed);
        match (dialed, msg) {
            (false, Message::Hello { version, node, id, token }) => {
                if version != PROTOCOL_VERSION {
                    return self.drop_peer(
                        now,
                        peer,
                        format!("protocol version {version}, expected {PROTOCOL_VERSION}"),
                    );
                }
                if !constant_time_eq(token.as_bytes(), self.config.token.as_bytes()) {
                    return self.drop_peer(now, peer, format!("node {node:?} presented a wrong cluster token"));
                }
                if id == self.config.id {
                    return self.drop_peer(now, peer, format!("node {node:?} has our own id {id}"));
                }
                self.send(peer, Message::Welcome { node: self.config.name.clone(), id: self.config.id });
                self.peer_up(now, peer, node, id);
            }
            (true, Message::Welcome { node, id }) => self.peer_up(now, peer, node, id),
            (_, other) => {
                let reason = format!(
                    "expected {} first, got {}",
                    if dialed { "Welcome" } else { "Hello" },
                    message_kind(&other)
                );
                self.drop_peer(now, peer, reason);
            }
        }
    }

    fn peer_up(&mut self, now: Instant, peer: PeerId, node: String, id: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.up = true;
            p.name = node.clone();
            p.id = id;
        }
        self.exclusions += 1;
        self.event(Event::PeerUp { peer, node });
        // Tell the new neighbour where we stand, so it need not wait for the next flood.
        self.send_route(peer);
        self.ping(now, peer);
    }

    fn ping(&mut self, now: Instant, peer: PeerId) {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        let Some(p) = self.peers.get_mut(&peer) else { return };
        p.ping = Some((nonce, now));
        p.pinged_at = Some(now);
        let rtt_us = p.rtt.map_or(0, |r| r.as_micros().max(1) as u64);
        self.send(peer, Message::Ping { nonce, rtt_us });
    }

    fn on_pong(&mut self, now: Instant, peer: PeerId, nonce: u64) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let Some((sent_nonce, sent_at)) = p.ping else { return };
        if sent_nonce != nonce {
            return;
        }
        p.ping = None;
        let sample = now.duration_since(sent_at);
        // Exponentially smoothed, as TCP and QUIC do (1/8 gain).
        p.rtt = Some(p.rtt.map_or(sample, |old| (old * 7 + sample) / 8));
    }

    /// Keep-alive. A parent tells each child it is alive on every tick (`Alive`, one way), so a
    /// child finds a dead parent 2.25 keep-alives after it last spoke. A child proves itself
    /// alive to its parent as every other neighbour does: with its route, every flood. A peer
    /// being attached to is pinged every keep-alive (it has no reason to speak yet), other
    /// neighbours every few floods for their RTT, or as soon as one misses a flood.
    ///
    /// Drops a parent or attach target silent for 2.25 keep-alives, any other neighbour silent
    /// for 2.25 flood intervals, and a peer that never finished its handshake. Returns when the
    /// first peer kept will have been silent too long, if nothing is heard from it until then.
    fn check_peers(&mut self, now: Instant, tick: bool) -> Option<Instant> {
        let mut to_drop = Vec::new();
        let mut to_ping = Vec::new();
        let mut to_assure = Vec::new();
        let mut first_death: Option<Instant> = None;
        for (id, p) in &self.peers {
            let attaching = Some(*id) == self.attaching;
            let watched = Some(*id) == self.parent || attaching;
            let interval = if watched { self.config.keepalive } else { self.config.flood_interval };
            // On a long path a probe needs its RTT to come back: never call a peer dead sooner
            // than one interval plus four RTTs (on a LAN this is the 2.25-interval rule).
            let dead_after = (interval * 9 / 4).max(interval + p.rtt.unwrap_or_default() * 4);
            let silent = now.duration_since(p.last_heard);
            // The parent's `Alive` and other neighbours' floods prove them alive; a ping now
            // and then only refreshes their RTT, which changes slowly. One side of a link
            // measures it: a child its parent, else the side that dialed, which passes its
            // figure on in the ping. Nobody does when the transport measures it. An attach
            // candidate has no reason to speak yet: it is pinged every keep-alive.
            let probe_every = if attaching { interval } else { self.config.flood_interval * RTT_PROBE_FLOODS };
            let prober = attaching || (!self.config.rtt_from_transport && (watched || (p.dialed && !p.child)));
            // A neighbour with no route to flood (no origin reachable yet, or not attached) is
            // quiet, not dead: once it has missed a flood, ask it directly, well before
            // `dead_after`, so a live link is never dropped for having nothing to say.
            let quiet = !watched
                && silent >= interval * 3 / 2
                && p.pinged_at.is_none_or(|at| now.duration_since(at) >= interval);
            if !p.up {
                if now.duration_since(p.since) > self.config.hello_timeout {
                    to_drop.push((*id, "no handshake in time".to_string()));
                }
            } else if silent >= dead_after {
                to_drop.push((*id, format!("silent for {} ms (keep-alive)", silent.as_millis())));
            } else {
                let death = p.last_heard + dead_after;
                first_death = Some(first_death.map_or(death, |d| d.min(death)));
                // Children are probed only when quiet: their RTT is not ours to choose by.
                if quiet || (prober && p.pinged_at.is_none_or(|at| now.duration_since(at) >= probe_every)) {
                    to_ping.push(*id);
                }
                if tick && p.child {
                    to_assure.push(*id);
                }
            }
        }
        for (id, reason) in to_drop {
            self.drop_peer(now, id, reason);
        }
        for id in to_ping {
            self.ping(now, id);
        }
        for id in to_assure {
            self.send(id, Message::Alive);
        }
        first_death
    }
}

impl Peer {
    fn new(now: Instant, dialed: bool) -> Self {
        Self {
            dialed,
            up: false,
            name: String::new(),
            id: 0,
            since: now,
            last_heard: now,
            rtt: None,
            ping: None,
            pinged_at: None,
            route: None,
            told_path: None,
            refused_until: None,
            child: false,
            route_digest: 0,
            route_through_us: false,
            verdict: std::cell::Cell::new(None),
        }
    }
}

fn message_kind(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "Hello",
        Message::Welcome { .. } => "Welcome",
        Message::Route(_) => "Route",
        Message::RouteRefresh { .. } => "RouteRefresh",
        Message::NoRoute => "NoRoute",
        Message::RouteRequest { .. } => "RouteRequest",
        Message::Attach => "Attach",
        Message::Attached => "Attached",
        Message::AttachRefused { .. } => "AttachRefused",
        Message::Detach => "Detach",
        Message::Catalog { .. } => "Catalog",
        Message::Subscribe { .. } => "Subscribe",
        Message::Unsubscribe { .. } => "Unsubscribe",
        Message::Refused { .. } => "Refused",
        Message::Ping { .. } => "Ping",
        Message::Pong { .. } => "Pong",
        Message::Alive => "Alive",
    }
}

/// A node id from its name (64-bit FNV-1a): stable across restarts and machines, so route paths
/// name the same node everywhere.
pub fn node_id(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Compare secrets without an early exit, so timing does not leak how much of a token matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

//! The node state machine: what an origin or a relay does, without any I/O.
//!
//! A [`Node`] holds the channels it carries (one [`SegmentWindow`] per rendition), the peers it
//! talks to (at most one parent, any number of children) and the subscriptions between them.
//! The shell feeds it inputs and carries out its outputs:
//!
//! - **inputs** (`&mut self`, each takes `now`): [`Node::parent_connected`],
//!   [`Node::child_connected`], [`Node::peer_lost`], [`Node::handle_message`],
//!   [`Node::handle_segment`], [`Node::set_local_channel`], [`Node::publish`],
//!   [`Node::viewer_request`], [`Node::handle_timeout`];
//! - **outputs**: after every input, call [`Node::poll_output`] until it returns `None`
//!   (messages and segments to send to a [`PeerId`], connections to close, events to log or to
//!   wake waiting HTTP requests), then arm a timer for [`Node::poll_timeout`].
//!
//! Peers are named by [`PeerId`], never by address; the same code runs under the tokio shell and
//! under the simulator.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::media::{Name, RenditionInfo, Segment, SegmentMeta};
use crate::window::{InsertError, SegmentWindow};
use crate::wire::{ChannelEntry, Message, PROTOCOL_VERSION};

/// A connection to another node, numbered by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u64);

/// Whether a node is the root of the tree or pulls from a parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Channels come from local sources; there is no parent.
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
    /// Shared cluster secret a child must present in `Hello`.
    pub token: String,
    /// Segments kept per rendition (what a reconnecting child can resume from).
    pub window_len: usize,
    /// Segments sent to a new subscriber that has nothing yet (the live playlist length).
    pub join_backfill: usize,
    /// Interval of keep-alive pings; a silent peer is dropped after three of them.
    pub keepalive: Duration,
    /// A relay releases a channel upstream when no viewer or child wanted it for this long.
    pub idle_timeout: Duration,
    /// How long a refused channel is remembered before asking upstream again.
    pub refusal_ttl: Duration,
    /// A child that has not said `Hello` within this time is dropped.
    pub hello_timeout: Duration,
    /// A gap in a window (a segment lost upstream) is given up on after this long, so the
    /// playlist moves on past it.
    pub gap_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            role: Role::Relay,
            name: "node".into(),
            token: String::new(),
            window_len: 30,
            join_backfill: 6,
            keepalive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(30),
            refusal_ttl: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(5),
            gap_timeout: Duration::from_secs(3),
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send a control message on the peer's control stream.
    Send { peer: PeerId, msg: Message },
    /// Send segments, in this order, on one new unidirectional stream to the peer.
    SendSegments { peer: PeerId, channel: Name, rendition: Name, segments: Vec<Segment> },
    /// Close the connection to the peer, giving the reason.
    Close { peer: PeerId, reason: String },
    /// Something happened that the shell may log, count, or wake waiters for.
    Event(Event),
}

/// Things worth logging, counting or waking HTTP requests for.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A segment entered a window, from a local source or from the parent.
    SegmentStored {
        channel: Name,
        rendition: Name,
        meta: SegmentMeta,
        bytes: usize,
    },
    /// A channel appeared, became live, was refused or was released.
    ChannelChanged {
        channel: Name,
    },
    ParentUp {
        node: String,
    },
    ParentLost {
        reason: String,
    },
    ChildAccepted {
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

/// One rendition of a carried channel.
#[derive(Debug, Clone)]
pub struct Rendition {
    pub info: RenditionInfo,
    pub window: SegmentWindow,
    /// Longest segment seen, rounded (EXT-X-TARGETDURATION must never shrink).
    pub target_duration_s: u32,
    sequencer: Sequencer,
    /// Since when segments have been waiting beyond a gap in the window.
    gap_since: Option<Instant>,
}

impl Rendition {
    fn new(info: RenditionInfo, window_len: usize) -> Self {
        Self {
            info,
            window: SegmentWindow::new(window_len),
            target_duration_s: 1,
            sequencer: Sequencer::default(),
            gap_since: None,
        }
    }

    /// The advertised bandwidth, or an estimate from the window (peak bits per second).
    pub fn bandwidth(&self) -> Option<u32> {
        self.info.bandwidth.or_else(|| {
            self.window
                .iter()
                .filter(|s| s.meta.duration_us > 0)
                .map(|s| (s.data.len() as u64 * 8 * 1_000_000 / u64::from(s.meta.duration_us)) as u32)
                .max()
        })
    }
}

/// How a node came to carry a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelStatus {
    /// Fed by a source on this node (origin).
    Local,
    /// Subscribed upstream; `live` once the first segment has arrived.
    Upstream { live: bool },
    /// The parent refused it; remembered until `until`.
    Refused { reason: String, until: Instant },
}

/// A channel carried by this node.
#[derive(Debug, Clone)]
pub struct Channel {
    pub status: ChannelStatus,
    pub source: String,
    pub renditions: BTreeMap<Name, Rendition>,
    /// Children subscribed to this channel.
    pub subscribers: BTreeSet<PeerId>,
    last_wanted: Instant,
}

impl Channel {
    fn has_segments(&self) -> bool {
        self.renditions.values().any(|r| !r.window.is_empty())
    }

    fn entry(&self, name: &Name) -> ChannelEntry {
        ChannelEntry {
            name: name.clone(),
            renditions: self.renditions.values().map(|r| r.info.clone()).collect(),
            source: self.source.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerRole {
    /// We dialled it; `welcomed` once it accepted our `Hello`.
    Parent { welcomed: bool, node: String },
    /// It dialled us; `node` is set once its `Hello` was accepted.
    Child { node: Option<String> },
}

#[derive(Debug, Clone)]
struct Peer {
    role: PeerRole,
    since: Instant,
    last_heard: Instant,
}

/// An origin or relay, as a sans-IO state machine. See the module docs for the calling contract.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    peers: BTreeMap<PeerId, Peer>,
    parent: Option<PeerId>,
    channels: BTreeMap<Name, Channel>,
    /// What the parent said it can deliver (relays); `None` until the first catalogue arrives.
    upstream_catalog: Option<BTreeMap<Name, ChannelEntry>>,
    outputs: VecDeque<Output>,
    next_tick: Option<Instant>,
    next_nonce: u64,
}

impl Node {
    pub fn new(config: NodeConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            parent: None,
            channels: BTreeMap::new(),
            upstream_catalog: None,
            outputs: VecDeque::new(),
            next_tick: None,
            next_nonce: 1,
        }
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

    /// The parent connection, once it accepted us.
    pub fn parent(&self) -> Option<(PeerId, &str)> {
        let id = self.parent?;
        match &self.peers.get(&id)?.role {
            PeerRole::Parent { welcomed: true, node } => Some((id, node)),
            _ => None,
        }
    }

    /// Accepted children and their names.
    pub fn children(&self) -> impl Iterator<Item = (PeerId, &str)> {
        self.peers.iter().filter_map(|(id, p)| match &p.role {
            PeerRole::Child { node: Some(n) } => Some((*id, n.as_str())),
            _ => None,
        })
    }

    /// Every channel this node can deliver: its local channels plus what its parent offers.
    pub fn catalog(&self) -> Vec<ChannelEntry> {
        let mut all: BTreeMap<Name, ChannelEntry> = self.upstream_catalog.clone().unwrap_or_default();
        for (name, ch) in &self.channels {
            if ch.status == ChannelStatus::Local {
                all.insert(name.clone(), ch.entry(name));
            }
        }
        all.into_values().collect()
    }

    // ----- outputs -----

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    // ----- inputs: connections -----

    /// The shell connected to our parent as `peer`; we introduce ourselves.
    pub fn parent_connected(&mut self, now: Instant, peer: PeerId) {
        if let Some(old) = self.parent.take() {
            self.drop_peer(now, old, "replaced by a new parent connection".into());
        }
        self.peers.insert(
            peer,
            Peer { role: PeerRole::Parent { welcomed: false, node: String::new() }, since: now, last_heard: now },
        );
        self.parent = Some(peer);
        let msg = Message::Hello {
            version: PROTOCOL_VERSION,
            node: self.config.name.clone(),
            token: self.config.token.clone(),
        };
        self.send(peer, msg);
        self.arm_tick(now);
    }

    /// A child connected to us as `peer`; it must say `Hello` first.
    pub fn child_connected(&mut self, now: Instant, peer: PeerId) {
        self.peers.insert(peer, Peer { role: PeerRole::Child { node: None }, since: now, last_heard: now });
        self.arm_tick(now);
    }

    /// The connection to `peer` is gone (closed by either side, or failed).
    pub fn peer_lost(&mut self, now: Instant, peer: PeerId, reason: &str) {
        let _ = now;
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        for ch in self.channels.values_mut() {
            ch.subscribers.remove(&peer);
        }
        match p.role {
            PeerRole::Parent { .. } => {
                if self.parent == Some(peer) {
                    self.parent = None;
                }
                self.event(Event::ParentLost { reason: reason.to_string() });
            }
            PeerRole::Child { node: Some(_) } => self.event(Event::ChildGone { peer }),
            PeerRole::Child { node: None } => {}
        }
    }

    // ----- inputs: data from peers -----

    /// A control message arrived from `peer`.
    pub fn handle_message(&mut self, now: Instant, peer: PeerId, msg: Message) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.last_heard = now;
        match p.role.clone() {
            PeerRole::Parent { welcomed, .. } => self.on_parent_message(now, peer, welcomed, msg),
            PeerRole::Child { node: None } => self.hello_on_child_message(now, peer, msg),
            PeerRole::Child { node: Some(_) } => self.on_child_message(now, peer, msg),
        }
    }

    /// A segment arrived from `peer`. Only a parent may send segments, and only for channels we
    /// asked for.
    pub fn handle_segment(&mut self, now: Instant, peer: PeerId, channel: Name, rendition: Name, segment: Segment) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.last_heard = now;
        if !matches!(p.role, PeerRole::Parent { welcomed: true, .. }) {
            return self.drop_peer(now, peer, "only a parent may send segments".into());
        }
        let window_len = self.config.window_len;
        let info = self.upstream_rendition_info(&channel, &rendition);
        let Some(ch) = self.channels.get_mut(&channel) else {
            // We unsubscribed; segments already in flight may still land. Not an error.
            return;
        };
        if !matches!(ch.status, ChannelStatus::Upstream { .. }) {
            return;
        }
        ch.renditions.entry(rendition.clone()).or_insert_with(|| Rendition::new(info, window_len));
        self.store(now, channel, rendition, segment);
    }

    // ----- inputs: local sources and viewers -----

    /// Declare (or update) a channel fed by a source on this node. Children learn of it through
    /// the catalogue.
    pub fn set_local_channel(&mut self, now: Instant, name: Name, source: &str, renditions: Vec<RenditionInfo>) {
        let window_len = self.config.window_len;
        let ch = self.channels.entry(name.clone()).or_insert_with(|| Channel {
            status: ChannelStatus::Local,
            source: source.to_string(),
            renditions: BTreeMap::new(),
            subscribers: BTreeSet::new(),
            last_wanted: now,
        });
        ch.status = ChannelStatus::Local;
        ch.source = source.to_string();
        for info in renditions {
            match ch.renditions.get_mut(&info.name) {
                Some(r) => r.info = info,
                None => {
                    ch.renditions.insert(info.name.clone(), Rendition::new(info, window_len));
                }
            }
        }
        self.event(Event::ChannelChanged { channel: name });
        self.broadcast_catalog();
    }

    /// Remove a local channel; its subscribers are told it is gone.
    pub fn remove_local_channel(&mut self, name: &Name) {
        let Some(ch) = self.channels.remove(name) else {
            return;
        };
        for peer in ch.subscribers {
            self.send(peer, Message::Refused { channel: name.clone(), reason: "channel removed at origin".into() });
        }
        self.event(Event::ChannelChanged { channel: name.clone() });
        self.broadcast_catalog();
    }

    /// Publish a segment from a local source at wall-clock time `wall_ms` (Unix milliseconds,
    /// the segment's origin timestamp). The node assigns its sequence number.
    pub fn publish(
        &mut self,
        now: Instant,
        channel: &Name,
        rendition: &Name,
        src: SourceSegment,
        wall_ms: u64,
    ) -> Result<SegmentMeta, PublishError> {
        let ch = self.channels.get_mut(channel).filter(|c| c.status == ChannelStatus::Local);
        let Some(ch) = ch else {
            return Err(PublishError::NotLocal(channel.clone()));
        };
        let Some(r) = ch.renditions.get_mut(rendition) else {
            return Err(PublishError::UnknownRendition { channel: channel.clone(), rendition: rendition.clone() });
        };
        let (seq, disc_seq, discontinuity) = r.sequencer.next(src.source_seq, src.discontinuity);
        let meta = SegmentMeta { seq, disc_seq, discontinuity, duration_us: src.duration_us, origin_ms: wall_ms };
        self.store(now, channel.clone(), rendition.clone(), Segment { meta, data: src.data });
        Ok(meta)
    }

    /// A viewer asked for `channel`. Relays subscribe upstream on the first request and keep the
    /// channel while viewers keep asking.
    pub fn viewer_request(&mut self, now: Instant, channel: &Name) -> Availability {
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.last_wanted = now;
            match &ch.status {
                ChannelStatus::Local | ChannelStatus::Upstream { .. } if ch.has_segments() => {
                    return Availability::Ready;
                }
                ChannelStatus::Local => return Availability::Pending,
                ChannelStatus::Upstream { .. } => {
                    return if self.parent.is_some() {
                        Availability::Pending
                    } else {
                        Availability::Unavailable("no connection to the parent node yet".into())
                    };
                }
                ChannelStatus::Refused { reason, until } if *until > now => {
                    return Availability::Unavailable(reason.clone());
                }
                ChannelStatus::Refused { .. } => {
                    self.channels.remove(channel);
                }
            }
        }
        if self.is_origin() {
            return Availability::Unavailable(format!("no channel named {channel}"));
        }
        if let Some(catalog) = &self.upstream_catalog
            && !catalog.contains_key(channel)
        {
            return Availability::Unavailable(format!("no channel named {channel}"));
        }
        if self.upstream_catalog.is_none() && self.parent().is_none() {
            return Availability::Unavailable("no connection to the parent node yet".into());
        }
        self.carry_upstream(now, channel);
        Availability::Pending
    }

    /// Timers: keep-alive pings, dead-peer detection, releasing idle channels.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(tick) = self.next_tick else { return };
        if now < tick {
            return;
        }
        self.next_tick = Some(now + self.tick_interval());
        let dead_after = self.config.keepalive * 3;

        let mut to_drop = Vec::new();
        let mut to_ping = Vec::new();
        for (id, p) in &self.peers {
            match &p.role {
                PeerRole::Child { node: None } if now.duration_since(p.since) > self.config.hello_timeout => {
                    to_drop.push((*id, "no Hello in time".to_string()));
                }
                _ if now.duration_since(p.last_heard) >= dead_after => {
                    to_drop.push((
                        *id,
                        format!("silent for {} ms (keep-alive)", now.duration_since(p.last_heard).as_millis()),
                    ));
                }
                PeerRole::Parent { welcomed: true, .. } => to_ping.push(*id),
                _ => {}
            }
        }
        for (id, reason) in to_drop {
            self.drop_peer(now, id, reason);
        }
        for id in to_ping {
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            self.send(id, Message::Ping { nonce });
        }

        // Give up on gaps that have waited too long; viewers move on past them.
        let mut skipped = Vec::new();
        for (cname, ch) in &mut self.channels {
            for (rname, r) in &mut ch.renditions {
                let Some(since) = r.gap_since else { continue };
                if now.duration_since(since) < self.config.gap_timeout {
                    continue;
                }
                if let Some(lost) = r.window.skip_gap() {
                    skipped.push(Event::GapSkipped { channel: cname.clone(), rendition: rname.clone(), lost });
                }
                r.gap_since = r.window.has_hidden().then_some(now);
            }
        }
        for e in skipped {
            self.event(e);
        }

        // Release channels nobody wants any more (relays only; local channels stay).
        let idle: Vec<Name> = self
            .channels
            .iter()
            .filter(|(_, c)| match &c.status {
                ChannelStatus::Local => false,
                ChannelStatus::Refused { until, .. } => *until <= now,
                ChannelStatus::Upstream { .. } => {
                    c.subscribers.is_empty() && now.duration_since(c.last_wanted) > self.config.idle_timeout
                }
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in idle {
            let was_upstream =
                matches!(self.channels.remove(&name).map(|c| c.status), Some(ChannelStatus::Upstream { .. }));
            if was_upstream && let Some(parent) = self.parent {
                self.send(parent, Message::Unsubscribe { channel: name.clone() });
            }
            self.event(Event::ChannelChanged { channel: name });
        }
    }

    // ----- private helpers -----

    fn is_origin(&self) -> bool {
        self.config.role == Role::Origin
    }

    fn tick_interval(&self) -> Duration {
        self.config.keepalive.min(Duration::from_secs(1))
    }

    fn arm_tick(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.tick_interval());
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

    fn on_parent_message(&mut self, now: Instant, peer: PeerId, welcomed: bool, msg: Message) {
        match (welcomed, msg) {
            (false, Message::Welcome { node }) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.role = PeerRole::Parent { welcomed: true, node: node.clone() };
                }
                self.event(Event::ParentUp { node });
                // Resume every channel we carry from the last sequence we hold.
                let carried: Vec<Name> = self
                    .channels
                    .iter()
                    .filter(|(_, c)| matches!(c.status, ChannelStatus::Upstream { .. }))
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in carried {
                    self.subscribe_upstream(&name);
                }
            }
            (true, Message::Catalog { channels }) => {
                let catalog: BTreeMap<Name, ChannelEntry> = channels.into_iter().map(|c| (c.name.clone(), c)).collect();
                // Channels that vanished upstream are refused to whoever waits for them.
                let gone: Vec<Name> = self
                    .channels
                    .iter()
                    .filter(|(n, c)| matches!(c.status, ChannelStatus::Upstream { .. }) && !catalog.contains_key(*n))
                    .map(|(n, _)| n.clone())
                    .collect();
                for (name, entry) in &catalog {
                    if let Some(ch) = self.channels.get_mut(name) {
                        for info in &entry.renditions {
                            if let Some(r) = ch.renditions.get_mut(&info.name) {
                                r.info = info.clone();
                            }
                        }
                        ch.source = entry.source.clone();
                    }
                }
                self.upstream_catalog = Some(catalog);
                for name in gone {
                    self.refuse_locally(now, &name, "channel no longer offered upstream".into());
                }
                self.broadcast_catalog();
            }
            (true, Message::Refused { channel, reason }) => self.refuse_locally(now, &channel, reason),
            (true, Message::Pong { .. }) => {}
            (true, Message::Ping { nonce }) => self.send(peer, Message::Pong { nonce }),
            (_, other) => {
                let reason = format!("unexpected message from parent: {}", message_kind(&other));
                self.drop_peer(now, peer, reason);
            }
        }
    }

    fn hello_on_child_message(&mut self, now: Instant, peer: PeerId, msg: Message) {
        let Message::Hello { version, node, token } = msg else {
            return self.drop_peer(now, peer, "expected Hello first".into());
        };
        if version != PROTOCOL_VERSION {
            return self.drop_peer(now, peer, format!("protocol version {version}, expected {PROTOCOL_VERSION}"));
        }
        if !constant_time_eq(token.as_bytes(), self.config.token.as_bytes()) {
            return self.drop_peer(now, peer, format!("node {node:?} presented a wrong cluster token"));
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.role = PeerRole::Child { node: Some(node.clone()) };
        }
        self.send(peer, Message::Welcome { node: self.config.name.clone() });
        let channels = self.catalog();
        self.send(peer, Message::Catalog { channels });
        self.event(Event::ChildAccepted { peer, node });
    }

    fn on_child_message(&mut self, now: Instant, peer: PeerId, msg: Message) {
        match msg {
            Message::Subscribe { channel, resume } => self.child_subscribes(now, peer, channel, resume),
            Message::Unsubscribe { channel } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.subscribers.remove(&peer);
                    ch.last_wanted = now;
                }
            }
            Message::Ping { nonce } => self.send(peer, Message::Pong { nonce }),
            Message::Pong { .. } => {}
            other => {
                let reason = format!("unexpected message from child: {}", message_kind(&other));
                self.drop_peer(now, peer, reason);
            }
        }
    }

    fn child_subscribes(&mut self, now: Instant, peer: PeerId, channel: Name, resume: Vec<(Name, u64)>) {
        let offered = self.catalog().iter().any(|c| c.name == channel);
        if !offered {
            let reason = format!("no channel named {channel}");
            return self.send(peer, Message::Refused { channel, reason });
        }
        if !self.channels.contains_key(&channel) {
            self.carry_upstream(now, &channel);
        }
        let backfill = self.config.join_backfill;
        // Invariant: carry_upstream inserted the channel if it was missing.
        let ch = self.channels.get_mut(&channel).expect("channel carried");
        if let ChannelStatus::Refused { reason, .. } = &ch.status {
            let reason = reason.clone();
            return self.send(peer, Message::Refused { channel, reason });
        }
        ch.subscribers.insert(peer);
        ch.last_wanted = now;
        let resume: BTreeMap<Name, u64> = resume.into_iter().collect();
        let mut out = Vec::new();
        for (rname, r) in &ch.renditions {
            let segs: Vec<&Segment> = match resume.get(rname) {
                Some(&last) if r.window.iter().next().is_some_and(|s| s.meta.seq <= last + 1) => {
                    r.window.after(last).collect()
                }
                // Nothing held, or what the child holds is older than our window: start live.
                _ => {
                    let n = r.window.len().saturating_sub(backfill);
                    r.window.iter().skip(n).collect()
                }
            };
            if !segs.is_empty() {
                // One stream for the whole backfill keeps it in order: the child's first
                // playlist then starts at the oldest segment, never later than it.
                out.push(Output::SendSegments {
                    peer,
                    channel: channel.clone(),
                    rendition: rname.clone(),
                    segments: segs.into_iter().cloned().collect(),
                });
            }
        }
        self.outputs.extend(out);
    }

    /// Start carrying `channel` from upstream (status Upstream, not yet live) and ask the parent.
    fn carry_upstream(&mut self, now: Instant, channel: &Name) {
        let source =
            self.upstream_catalog.as_ref().and_then(|c| c.get(channel)).map(|e| e.source.clone()).unwrap_or_default();
        self.channels.insert(
            channel.clone(),
            Channel {
                status: ChannelStatus::Upstream { live: false },
                source,
                renditions: BTreeMap::new(),
                subscribers: BTreeSet::new(),
                last_wanted: now,
            },
        );
        self.subscribe_upstream(channel);
        self.event(Event::ChannelChanged { channel: channel.clone() });
    }

    fn subscribe_upstream(&mut self, channel: &Name) {
        let Some((parent, _)) = self.parent() else {
            return;
        };
        let resume = self
            .channels
            .get(channel)
            .map(|c| {
                c.renditions.iter().filter_map(|(n, r)| r.window.latest().map(|s| (n.clone(), s.meta.seq))).collect()
            })
            .unwrap_or_default();
        self.send(parent, Message::Subscribe { channel: channel.clone(), resume });
    }

    fn refuse_locally(&mut self, now: Instant, channel: &Name, reason: String) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if ch.status == ChannelStatus::Local {
            return;
        }
        ch.status = ChannelStatus::Refused { reason: reason.clone(), until: now + self.config.refusal_ttl };
        ch.renditions.clear();
        let subs = std::mem::take(&mut ch.subscribers);
        for peer in subs {
            self.send(peer, Message::Refused { channel: channel.clone(), reason: reason.clone() });
        }
        self.event(Event::ChannelChanged { channel: channel.clone() });
    }

    fn upstream_rendition_info(&self, channel: &Name, rendition: &Name) -> RenditionInfo {
        self.upstream_catalog
            .as_ref()
            .and_then(|c| c.get(channel))
            .and_then(|e| e.renditions.iter().find(|r| &r.name == rendition))
            .cloned()
            .unwrap_or_else(|| RenditionInfo::named(rendition.clone()))
    }

    /// Put a segment in its window, fan it out to subscribers, and tell the shell.
    fn store(&mut self, now: Instant, channel: Name, rendition: Name, segment: Segment) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(r) = ch.renditions.get_mut(&rendition) else {
            return;
        };
        match r.window.insert(segment.clone()) {
            Ok(()) => {}
            // A resumed or re-sent segment we already hold: harmless.
            Err(InsertError::Duplicate(_) | InsertError::TooOld { .. }) => return,
        }
        if ch.status == ChannelStatus::Local {
            // A local source's gaps are final: nothing will ever fill them.
            while r.window.skip_gap().is_some() {}
        }
        r.gap_since = match (r.window.has_hidden(), r.gap_since) {
            (false, _) => None,
            (true, None) => Some(now),
            (true, since) => since,
        };
        let seconds = crate::playlist::target_duration_s([segment.meta]);
        r.target_duration_s = r.target_duration_s.max(seconds);
        let became_live = matches!(ch.status, ChannelStatus::Upstream { live: false });
        if became_live {
            ch.status = ChannelStatus::Upstream { live: true };
        }
        let subscribers: Vec<PeerId> = ch.subscribers.iter().copied().collect();
        for peer in subscribers {
            self.outputs.push_back(Output::SendSegments {
                peer,
                channel: channel.clone(),
                rendition: rendition.clone(),
                segments: vec![segment.clone()],
            });
        }
        let meta = segment.meta;
        let bytes = segment.data.len();
        if became_live {
            self.event(Event::ChannelChanged { channel: channel.clone() });
        }
        self.event(Event::SegmentStored { channel, rendition, meta, bytes });
    }

    fn broadcast_catalog(&mut self) {
        let channels = self.catalog();
        let children: Vec<PeerId> = self.children().map(|(id, _)| id).collect();
        for peer in children {
            self.send(peer, Message::Catalog { channels: channels.clone() });
        }
    }
}

/// Numbers the segments of a local source: keeps the source's own numbering while it moves
/// forward, and continues past a restart (numbers going backwards) with a discontinuity, so
/// viewers never see a sequence number twice.
#[derive(Debug, Clone, Default)]
struct Sequencer {
    last: Option<(u64, Option<u64>)>,
    disc_seq: u32,
}

/// A forward jump in a source's numbering larger than this is treated as a restart.
const MAX_SOURCE_JUMP: u64 = 1000;

impl Sequencer {
    /// (seq, disc_seq, discontinuity) for the next segment.
    fn next(&mut self, source_seq: Option<u64>, source_discontinuity: bool) -> (u64, u32, bool) {
        let (seq, restarted) = match (self.last, source_seq) {
            (None, Some(s)) => (s, false),
            (None, None) => (0, false),
            (Some((out, Some(prev))), Some(s)) if s > prev && s - prev <= MAX_SOURCE_JUMP => (out + (s - prev), false),
            (Some((out, _)), None) => (out + 1, false),
            (Some((out, _)), Some(_)) => (out + 1, true),
        };
        let discontinuity = self.last.is_some() && (restarted || source_discontinuity);
        if discontinuity {
            self.disc_seq += 1;
        }
        self.last = Some((seq, source_seq));
        (seq, self.disc_seq, discontinuity)
    }
}

fn message_kind(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "Hello",
        Message::Welcome { .. } => "Welcome",
        Message::Catalog { .. } => "Catalog",
        Message::Subscribe { .. } => "Subscribe",
        Message::Unsubscribe { .. } => "Unsubscribe",
        Message::Refused { .. } => "Refused",
        Message::Ping { .. } => "Ping",
        Message::Pong { .. } => "Pong",
    }
}

/// Compare secrets without an early exit, so timing does not leak how much of a token matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

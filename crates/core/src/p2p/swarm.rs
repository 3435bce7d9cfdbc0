//! One viewer's sharing policy (F50): which segment to take from where, when to give up on a
//! peer and fall back to the edge, whom to serve, and whom to choke, drop or report.
//!
//! The live stream is consumed in order, so piece selection is earliest-deadline-first. Each
//! segment has `seeders` designated viewers (a rotation over the viewer's position in the
//! swarm, given by the tracker) that fetch it from the edge at once; everyone else takes it
//! from a peer that holds it, or falls back to the edge `margin` before its playback deadline.
//! With N viewers the edge sends each segment about `seeders` times instead of N times, and a
//! viewer never waits for peers past the point where the edge could still deliver in time.
//!
//! Same calling convention as [`crate::Node`]: inputs take `now`, outputs are drained with
//! [`Swarm::poll_action`], and [`Swarm::poll_timeout`] says when [`Swarm::handle_timeout`]
//! must run next.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::peers::mix;
use super::signing::{SegmentVerifier, Signature};
use super::wire::{MAX_HAVE, RejectReason};
use crate::media::Name;

/// A peer, keyed by its viewer id (one connection per pair of viewers).
pub type PeerKey = u64;

/// Tunables of the sharing policy.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// Viewers that take each segment from the edge at once.
    pub seeders: usize,
    /// Fall back to the edge at the latest this long before a segment's playback deadline:
    /// enough for the edge to deliver it, so sharing adds no stall.
    pub margin: Duration,
    /// No peer request is started with less time than this before the fallback point.
    pub min_peer_time: Duration,
    /// A peer request not answered within this is abandoned (and counts against the peer).
    pub peer_timeout: Duration,
    /// Outstanding requests per peer.
    pub per_peer_requests: usize,
    /// Failures or timeouts after which a peer is choked (not asked) and replaced.
    pub max_strikes: u32,
    /// How long a slow peer stays choked.
    pub choke_for: Duration,
    /// Concurrent uploads to peers.
    pub upload_slots: usize,
    /// Peers wanted; fewer usable ones asks the shell for more.
    pub max_peers: usize,
    /// Fallback fetches start only while fewer edge fetches than this are in flight (seeder
    /// fetches always start): a crowd that falls back together then asks the edge for one
    /// segment per viewer at a time, earliest deadline first, as a CDN-only player does,
    /// instead of burying the edge under every segment at once.
    pub edge_fetches: usize,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            seeders: 2,
            margin: Duration::from_millis(2000),
            min_peer_time: Duration::from_millis(250),
            peer_timeout: Duration::from_millis(1500),
            per_peer_requests: 2,
            max_strikes: 3,
            choke_for: Duration::from_secs(15),
            upload_slots: 4,
            max_peers: 6,
            edge_fetches: 1,
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwarmAction {
    /// Fetch segment `seq` from the edge.
    FetchEdge { seq: u64 },
    /// Ask `peer` for segment `seq`.
    FetchPeer { peer: PeerKey, seq: u64 },
    /// Abandon the request to `peer` for `seq` (timed out, no longer wanted, or won elsewhere).
    CancelPeer { peer: PeerKey, seq: u64 },
    /// Abandon the edge fetch of `seq`: a peer delivered it first.
    CancelEdge { seq: u64 },
    /// Close the connection to `peer`.
    DropPeer { peer: PeerKey, reason: String },
    /// Tell the tracker that `peer` sent bytes that fail the origin's signature.
    ReportPeer { peer: PeerKey },
    /// Usable peers are below `max_peers`: ask the tracker for more.
    NeedPeers,
    /// The set of verified segments held changed: send this have-map to every peer.
    Advertise { seqs: Vec<u64> },
}

/// What a piece from a peer or the edge turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceOutcome {
    /// Verified and wanted: use it (and it may now be shared).
    Accepted,
    /// Fails the signature: not used, not shared.
    Rejected,
    /// Verified but not (or no longer) wanted.
    Unwanted,
}

/// Bytes and events counted by the swarm.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmStats {
    pub edge_bytes: u64,
    pub peer_bytes: u64,
    pub uploaded_bytes: u64,
    pub bad_pieces: u64,
    pub peer_timeouts: u64,
    /// Segments taken from the edge because no peer delivered in time.
    pub fallbacks: u64,
}

/// A wanted segment. An edge fetch and a peer request may run at once (a fallback fetch races
/// a peer that got the segment meanwhile); the first verified copy wins and the other is
/// cancelled, so a crowd that fell back together drains off the edge as soon as sharing works.
#[derive(Debug)]
struct Want {
    deadline: Instant,
    /// An edge fetch is in flight.
    edge: bool,
    /// The peer asked, and when to give up on it.
    peer: Option<(PeerKey, Instant)>,
    /// Peers that already failed this segment: not asked again for it.
    tried: BTreeSet<PeerKey>,
}

#[derive(Debug)]
struct PeerState {
    same_region: bool,
    rtt: Option<Duration>,
    have: BTreeSet<u64>,
    in_flight: usize,
    strikes: u32,
}

/// One viewer's swarm state.
#[derive(Debug)]
pub struct Swarm {
    cfg: SwarmConfig,
    channel: Name,
    rendition: Name,
    /// This viewer's position in the swarm and the swarm's size (from the tracker).
    position: (usize, usize),
    peers: BTreeMap<PeerKey, PeerState>,
    /// Peers not to talk to: liars for good (`None`), slow ones until a time.
    banned: BTreeMap<PeerKey, Option<Instant>>,
    wants: BTreeMap<u64, Want>,
    /// Verified segments held (the have-map), newest [`MAX_HAVE`].
    held: BTreeSet<u64>,
    uploads: usize,
    actions: VecDeque<SwarmAction>,
    stats: SwarmStats,
}

impl Swarm {
    pub fn new(cfg: SwarmConfig, channel: Name, rendition: Name) -> Self {
        Self {
            cfg,
            channel,
            rendition,
            position: (0, 1),
            peers: BTreeMap::new(),
            banned: BTreeMap::new(),
            wants: BTreeMap::new(),
            held: BTreeSet::new(),
            uploads: 0,
            actions: VecDeque::new(),
            stats: SwarmStats::default(),
        }
    }

    pub fn stats(&self) -> &SwarmStats {
        &self.stats
    }

    pub fn config(&self) -> &SwarmConfig {
        &self.cfg
    }

    /// Verified segments held, oldest first.
    pub fn held(&self) -> impl Iterator<Item = u64> + '_ {
        self.held.iter().copied()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// This viewer is number `index` of `size` in the swarm (the tracker's answer).
    pub fn set_position(&mut self, index: usize, size: usize) {
        self.position = (index, size.max(1));
    }

    /// Whether this viewer takes `seq` from the edge at once: the `seeders` viewers at
    /// positions `seq·seeders .. seq·seeders + seeders` (mod size), so every segment has
    /// exactly `seeders` of them and the duty rotates over the swarm.
    pub fn is_seeder(&self, seq: u64) -> bool {
        let (index, size) = (self.position.0 as u64, self.position.1.max(1) as u64);
        let s = self.cfg.seeders as u64;
        if s >= size {
            return true;
        }
        let first = (seq % size) * s % size;
        (index % size + size - first) % size < s
    }

    /// Whether `peer` may be (re)connected at `now`.
    pub fn is_banned(&self, now: Instant, peer: PeerKey) -> bool {
        match self.banned.get(&peer) {
            Some(None) => true,
            Some(Some(until)) => *until > now,
            None => false,
        }
    }

    /// A peer connected (`same_region` and `rtt` from the tracker or the handshake). Refused
    /// (returns false) when banned or when there are already `max_peers` peers.
    pub fn add_peer(&mut self, now: Instant, peer: PeerKey, same_region: bool, rtt: Option<Duration>) -> bool {
        if self.is_banned(now, peer) || self.peers.contains_key(&peer) || self.peers.len() >= self.cfg.max_peers {
            return false;
        }
        self.peers.insert(peer, PeerState { same_region, rtt, have: BTreeSet::new(), in_flight: 0, strikes: 0 });
        true
    }

    /// A peer is gone: what was asked of it is planned again.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerKey) {
        if self.peers.remove(&peer).is_none() {
            return;
        }
        self.forget_requests_to(peer);
        self.plan_all(now);
        if self.peers.len() < self.cfg.max_peers {
            self.actions.push_back(SwarmAction::NeedPeers);
        }
    }

    /// `peer`'s have-map (replaces the previous one).
    pub fn peer_have(&mut self, now: Instant, peer: PeerKey, seqs: &[u64]) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        p.have = seqs.iter().copied().collect();
        self.plan_all(now);
    }

    /// The player wants `seq` by `deadline` (call again when the deadline moves).
    pub fn want(&mut self, now: Instant, seq: u64, deadline: Instant) {
        if self.held.contains(&seq) {
            return;
        }
        self.wants.entry(seq).and_modify(|w| w.deadline = deadline).or_insert(Want {
            deadline,
            edge: false,
            peer: None,
            tried: BTreeSet::new(),
        });
        self.plan(now, seq);
    }

    /// `seq` is no longer wanted (skipped): its fetches are cancelled.
    pub fn unwant(&mut self, seq: u64) {
        let Some(w) = self.wants.remove(&seq) else { return };
        if let Some((peer, _)) = w.peer {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.in_flight = p.in_flight.saturating_sub(1);
            }
            self.actions.push_back(SwarmAction::CancelPeer { peer, seq });
        }
        if w.edge {
            self.actions.push_back(SwarmAction::CancelEdge { seq });
        }
    }

    /// Whether `seq` is wanted and nobody is fetching it yet.
    pub fn is_waiting(&self, seq: u64) -> bool {
        self.wants.get(&seq).is_some_and(|w| !w.edge && w.peer.is_none())
    }

    /// Segment `seq` arrived from `peer`: verify it against the origin's signature. Bad bytes
    /// get the peer dropped, banned and reported, and the segment planned again.
    pub fn piece_from_peer(
        &mut self,
        now: Instant,
        peer: PeerKey,
        seq: u64,
        data: &[u8],
        signature: &Signature,
        verifier: &dyn SegmentVerifier,
    ) -> PieceOutcome {
        self.release(peer, seq);
        if let Some(w) = self.wants.get_mut(&seq)
            && w.peer.is_some_and(|(p, _)| p == peer)
        {
            w.peer = None;
        }
        if !verifier.verify(&self.channel, &self.rendition, seq, data, signature) {
            self.stats.bad_pieces += 1;
            self.banned.insert(peer, None);
            self.peers.remove(&peer);
            self.forget_requests_to(peer);
            if let Some(w) = self.wants.get_mut(&seq) {
                w.tried.insert(peer);
            }
            self.actions.push_back(SwarmAction::DropPeer {
                peer,
                reason: format!("segment {seq} fails the origin's signature"),
            });
            self.actions.push_back(SwarmAction::ReportPeer { peer });
            self.actions.push_back(SwarmAction::NeedPeers);
            self.plan_all(now);
            return PieceOutcome::Rejected;
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.strikes = 0;
        }
        self.stats.peer_bytes += data.len() as u64;
        let edge_slot_freed = self.wants.get(&seq).is_some_and(|w| w.edge);
        if edge_slot_freed {
            self.actions.push_back(SwarmAction::CancelEdge { seq });
        }
        let out = self.accept(seq);
        if edge_slot_freed {
            self.plan_all(now);
        }
        out
    }

    /// Segment `seq` arrived from the edge with the origin's signature (if the edge gave one).
    /// Unsigned or badly signed bytes are neither used nor shared; the fetch is planned again.
    pub fn piece_from_edge(
        &mut self,
        now: Instant,
        seq: u64,
        data: &[u8],
        signature: Option<&Signature>,
        verifier: &dyn SegmentVerifier,
    ) -> PieceOutcome {
        let ok = signature.is_some_and(|s| verifier.verify(&self.channel, &self.rendition, seq, data, s));
        if !ok {
            self.stats.bad_pieces += 1;
            self.edge_failed(now, seq);
            return PieceOutcome::Rejected;
        }
        self.stats.edge_bytes += data.len() as u64;
        if let Some((peer, _)) = self.wants.get(&seq).and_then(|w| w.peer) {
            self.release(peer, seq);
            self.actions.push_back(SwarmAction::CancelPeer { peer, seq });
        }
        let out = self.accept(seq);
        // An edge slot is free: a fallback that waited for it may start.
        self.plan_all(now);
        out
    }

    /// The edge fetch of `seq` failed; it is planned again.
    pub fn edge_failed(&mut self, now: Instant, seq: u64) {
        if let Some(w) = self.wants.get_mut(&seq) {
            w.edge = false;
        }
        self.plan_all(now);
    }

    /// The request to `peer` for `seq` failed (refused, stream reset): a strike, and the
    /// segment is planned again without that peer.
    pub fn peer_failed(&mut self, now: Instant, peer: PeerKey, seq: u64) {
        let asked = self.wants.get(&seq).is_some_and(|w| w.peer.is_some_and(|(p, _)| p == peer));
        if !asked {
            return;
        }
        self.release(peer, seq);
        if let Some(w) = self.wants.get_mut(&seq) {
            w.peer = None;
            w.tried.insert(peer);
        }
        self.strike(now, peer);
        self.plan(now, seq);
    }

    /// A peer asks for `seq`: serve only verified segments, within the upload slots.
    pub fn upload_request(&mut self, now: Instant, peer: PeerKey, seq: u64) -> Result<(), RejectReason> {
        if self.is_banned(now, peer) {
            return Err(RejectReason::Choked);
        }
        if !self.held.contains(&seq) {
            return Err(RejectReason::NotHeld);
        }
        if self.uploads >= self.cfg.upload_slots {
            return Err(RejectReason::Busy);
        }
        self.uploads += 1;
        Ok(())
    }

    /// An upload granted by [`Self::upload_request`] ended after `bytes`.
    pub fn upload_done(&mut self, bytes: u64) {
        self.uploads = self.uploads.saturating_sub(1);
        self.stats.uploaded_bytes += bytes;
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.banned.retain(|_, until| until.is_none_or(|u| u > now));
        let expired: Vec<(u64, PeerKey)> = self
            .wants
            .iter()
            .filter_map(|(s, w)| match w.peer {
                Some((peer, give_up_at)) if give_up_at <= now => Some((*s, peer)),
                _ => None,
            })
            .collect();
        for (seq, peer) in expired {
            self.stats.peer_timeouts += 1;
            self.release(peer, seq);
            self.actions.push_back(SwarmAction::CancelPeer { peer, seq });
            if let Some(w) = self.wants.get_mut(&seq) {
                w.peer = None;
                w.tried.insert(peer);
            }
            self.strike(now, peer);
        }
        self.plan_all(now);
    }

    /// When [`Self::handle_timeout`] must run next. A fallback waiting for an edge slot needs
    /// no timer: it is planned when an edge fetch ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let edge_full = self.edge_in_flight() >= self.cfg.edge_fetches.max(1);
        self.wants
            .values()
            .map(|w| match (w.edge, w.peer) {
                (_, Some((_, give_up_at))) => Some(give_up_at),
                (false, None) if !edge_full => Some(self.fallback_at(w)),
                _ => None,
            })
            .chain(self.banned.values().copied())
            .flatten()
            .min()
    }

    pub fn poll_action(&mut self) -> Option<SwarmAction> {
        self.actions.pop_front()
    }

    // ----- policy -----

    fn fallback_at(&self, w: &Want) -> Instant {
        w.deadline.checked_sub(self.cfg.margin).unwrap_or(w.deadline)
    }

    fn plan_all(&mut self, now: Instant) {
        let seqs: Vec<u64> = self.wants.iter().filter(|(_, w)| w.peer.is_none()).map(|(s, _)| *s).collect();
        for seq in seqs {
            self.plan(now, seq);
        }
    }

    /// Decide where `seq` comes from: the edge when it is this viewer's turn to seed it or its
    /// fallback point has come; a peer that holds it while there is time — or, when the edge
    /// is already fetching it, as a race that frees the edge if the peer wins.
    fn plan(&mut self, now: Instant, seq: u64) {
        let seeder = self.is_seeder(seq);
        let edge_free = self.edge_in_flight() < self.cfg.edge_fetches.max(1);
        let Some(w) = self.wants.get_mut(&seq) else { return };
        let fallback_at = w.deadline.checked_sub(self.cfg.margin).unwrap_or(w.deadline);
        if !w.edge && (seeder || (now >= fallback_at && edge_free)) {
            w.edge = true;
            if !seeder {
                self.stats.fallbacks += 1;
            }
            self.actions.push_back(SwarmAction::FetchEdge { seq });
        }
        let (edge, asked) = (w.edge, w.peer.is_some());
        if asked || (!edge && fallback_at.saturating_duration_since(now) < self.cfg.min_peer_time) {
            return;
        }
        let Some(peer) = self.best_peer(seq) else { return };
        // Racing the edge, a peer gets its full timeout; otherwise no longer than the fallback.
        let give_up_at =
            if edge { now + self.cfg.peer_timeout } else { (now + self.cfg.peer_timeout).min(fallback_at) };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight += 1;
        }
        if let Some(w) = self.wants.get_mut(&seq) {
            w.peer = Some((peer, give_up_at));
        }
        self.actions.push_back(SwarmAction::FetchPeer { peer, seq });
    }

    /// The peer to ask for `seq`: one that holds it, has a free request slot and has not
    /// failed it; same region first, then the least busy, then the lowest RTT, then a
    /// per-segment hash (spreads the load over equal peers).
    fn best_peer(&self, seq: u64) -> Option<PeerKey> {
        let tried = &self.wants.get(&seq)?.tried;
        self.peers
            .iter()
            .filter(|(k, p)| p.have.contains(&seq) && p.in_flight < self.cfg.per_peer_requests && !tried.contains(k))
            .min_by_key(|(k, p)| (!p.same_region, p.in_flight, p.rtt.unwrap_or(Duration::MAX), mix(**k ^ seq)))
            .map(|(k, _)| *k)
    }

    /// Edge fetches in flight.
    fn edge_in_flight(&self) -> usize {
        self.wants.values().filter(|w| w.edge).count()
    }

    /// Requests outstanding to `peer` are forgotten (it is gone).
    fn forget_requests_to(&mut self, peer: PeerKey) {
        for w in self.wants.values_mut() {
            if w.peer.is_some_and(|(p, _)| p == peer) {
                w.peer = None;
            }
        }
    }

    fn release(&mut self, peer: PeerKey, seq: u64) {
        let asked = self.wants.get(&seq).is_some_and(|w| w.peer.is_some_and(|(p, _)| p == peer));
        if asked && let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }

    /// A failure or timeout; at `max_strikes` the peer is choked (banned for `choke_for`),
    /// dropped and replaced.
    fn strike(&mut self, now: Instant, peer: PeerKey) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        p.strikes += 1;
        if p.strikes >= self.cfg.max_strikes {
            self.banned.insert(peer, Some(now + self.cfg.choke_for));
            self.peers.remove(&peer);
            self.forget_requests_to(peer);
            self.actions.push_back(SwarmAction::DropPeer { peer, reason: "too slow: choked".into() });
            self.actions.push_back(SwarmAction::NeedPeers);
        }
    }

    fn accept(&mut self, seq: u64) -> PieceOutcome {
        let wanted = self.wants.remove(&seq).is_some();
        if self.held.insert(seq) {
            while self.held.len() > MAX_HAVE {
                self.held.pop_first();
            }
            self.actions.push_back(SwarmAction::Advertise { seqs: self.held.iter().copied().collect() });
        }
        if wanted { PieceOutcome::Accepted } else { PieceOutcome::Unwanted }
    }
}

//! One viewer's session (F40–F45, F50): the single download policy behind `relaycast watch`
//! and the simulator's audience.
//!
//! A session plays one live rendition in order. Its segments come from *sources* of two kinds:
//! HTTP servers (edges, several at once, switched mid-stream) scheduled by the multi-source
//! [`Scheduler`], and — when sharing is on — peers, scheduled by the [`Swarm`]. The swarm decides
//! *whether* a segment comes from the servers (this viewer's turn to seed it, or its fallback
//! point has come) and asks peers for the rest; the scheduler decides *which* server and hedges
//! late requests; one [`PlaybackBuffer`] (inside the scheduler) orders delivery and counts
//! stalls. Without sharing, the scheduler alone runs, as a plain HLS player would.
//!
//! Sans-IO like the rest of the core: inputs take `now`; drain [`Session::poll_output`] after
//! each; [`Session::poll_timeout`] says when [`Session::handle_timeout`] must run. No bytes are
//! kept here — outputs name requests and peers, and the shell keeps what they carried.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::buffer::PlaybackBuffer;
use crate::multisource::{Action, RequestId, Scheduler, SchedulerConfig, SourceId, SourceStats};
use crate::p2p::signing::{SegmentVerifier, Signature};
use crate::p2p::swarm::PieceOutcome;
use crate::p2p::wire::RejectReason;
use crate::p2p::{PeerKey, Swarm, SwarmAction};

/// How long a viewer that has not started playing waits for peers before the servers.
pub const STARTUP_PATIENCE: Duration = Duration::from_millis(2000);

/// Segments remembered beyond the next one (first-listed times).
const HISTORY: u64 = 64;

/// What the shell must do, or log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// GET segment `seq` from server `source`.
    Fetch { req: RequestId, source: SourceId, seq: u64 },
    /// Abort a request; its bytes are not needed (count them as duplicate bytes).
    Cancel { req: RequestId },
    /// Play segment `seq` next (segments come in order, each once), from where it came.
    Play { seq: u64, from: From },
    /// Segment `seq` is gone from every playlist before it could be had: a gap.
    Skip { seq: u64 },
    /// Ask `peer` for segment `seq`.
    FetchPeer { peer: PeerKey, seq: u64 },
    /// Abandon the request to `peer` for `seq`.
    CancelPeer { peer: PeerKey, seq: u64 },
    /// Close the connection to `peer`.
    DropPeer { peer: PeerKey, reason: String },
    /// Tell the tracker that `peer` sent bytes that fail the origin's signature.
    ReportPeer { peer: PeerKey },
    /// Fewer usable peers than wanted: ask the tracker for more.
    NeedPeers,
    /// The verified segments held changed: send this have-map to every peer.
    Advertise { seqs: Vec<u64> },
    /// Bytes that fail the origin's signature were thrown away (a log record).
    BadPiece { seq: u64, from: From },
}

/// Where a segment came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    /// A server, by the request that fetched it.
    Server { req: RequestId, source: SourceId },
    /// A peer.
    Peer(PeerKey),
}

/// The sharing half of a session: the swarm policy and what checks the origin's signatures.
pub struct Sharing {
    pub swarm: Swarm,
    pub verifier: Box<dyn SegmentVerifier + Send + Sync>,
}

/// One viewer's session. See the module documentation.
pub struct Session {
    sched: Scheduler,
    sharing: Option<Sharing>,
    /// Oldest segment each server lists (`None` once removed or before its first playlist).
    oldest: Vec<Option<u64>>,
    /// When each segment was first listed: before playback starts, a segment's deadline
    /// counts from there (the viewer waits [`STARTUP_PATIENCE`] for peers).
    first_listed: BTreeMap<u64, Instant>,
    outputs: VecDeque<Output>,
}

impl Session {
    /// A session over `sources` servers; with `sharing`, peers are a second kind of source.
    pub fn new(mut config: SchedulerConfig, sources: usize, sharing: Option<Sharing>) -> Self {
        config.gated = sharing.is_some();
        Self {
            sched: Scheduler::new(config, sources),
            sharing,
            oldest: vec![None; sources],
            first_listed: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn buffer(&self) -> &PlaybackBuffer {
        self.sched.buffer()
    }

    pub fn sources(&self) -> &[SourceStats] {
        self.sched.sources()
    }

    /// The swarm, when sharing.
    pub fn swarm(&self) -> Option<&Swarm> {
        self.sharing.as_ref().map(|s| &s.swarm)
    }

    /// When [`Self::handle_timeout`] must run next.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let swarm = self.sharing.as_ref().and_then(|s| s.swarm.poll_timeout());
        self.sched.poll_timeout(now).into_iter().chain(swarm).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.sched.handle_timeout(now);
        if let Some(s) = &mut self.sharing
            && s.swarm.poll_timeout().is_some_and(|t| t <= now)
        {
            s.swarm.handle_timeout(now);
        }
        self.update(now);
    }

    // ----- servers -----

    /// Server `source`'s playlist lists these segments (sequence, duration), oldest first.
    pub fn playlist(&mut self, now: Instant, source: SourceId, segments: &[(u64, Duration)]) {
        for &(seq, _) in segments {
            self.first_listed.entry(seq).or_insert(now);
        }
        if let (Some(slot), Some(&(oldest, _))) = (self.oldest.get_mut(source), segments.first()) {
            *slot = Some(oldest);
        }
        self.sched.playlist(now, source, segments);
        // Segments older than every server's window can no longer be had from them.
        if let Some(oldest) = self.oldest.iter().flatten().min() {
            self.sched.oldest_listed(now, *oldest);
        }
        if let Some(next) = self.sched.next_seq() {
            self.first_listed = self.first_listed.split_off(&next.saturating_sub(HISTORY));
        }
        self.update(now);
    }

    /// Headers arrived for `req`, with the body length if known.
    pub fn first_byte(&mut self, now: Instant, req: RequestId, total: Option<u64>) {
        self.sched.first_byte(now, req, total);
    }

    /// `bytes` more arrived for `req`.
    pub fn progress(&mut self, now: Instant, req: RequestId, bytes: u64) {
        self.sched.progress(now, req, bytes);
    }

    /// `req` completed with `data`. When sharing, the bytes must carry the origin's
    /// `signature`: what fails it is thrown away and fetched again, and only verified segments
    /// are offered to peers.
    pub fn completed(
        &mut self,
        now: Instant,
        req: RequestId,
        data: &[u8],
        signature: Option<&Signature>,
    ) -> PieceOutcome {
        let outcome = match (&mut self.sharing, self.sched.request(req)) {
            (Some(s), Some((source, seq))) => {
                let outcome = s.swarm.piece_from_edge(now, seq, data, signature, s.verifier.as_ref());
                if outcome == PieceOutcome::Rejected {
                    self.outputs.push_back(Output::BadPiece { seq, from: From::Server { req, source } });
                }
                outcome
            }
            _ => PieceOutcome::Accepted,
        };
        match outcome {
            PieceOutcome::Rejected => self.sched.failed(now, req),
            _ => self.sched.completed(now, req),
        }
        self.update(now);
        outcome
    }

    /// `req` failed (HTTP error, connection lost); the segment is fetched elsewhere.
    pub fn failed(&mut self, now: Instant, req: RequestId) {
        self.sched.failed(now, req);
        self.update(now);
    }

    /// Start using a new server (F45: switch to it mid-stream); returns its id.
    pub fn add_source(&mut self, now: Instant) -> SourceId {
        let id = self.sched.add_source(now);
        self.oldest.push(None);
        self.update(now);
        id
    }

    /// Stop using server `source`; its requests move to the others.
    pub fn remove_source(&mut self, now: Instant, source: SourceId) {
        if let Some(slot) = self.oldest.get_mut(source) {
            *slot = None;
        }
        self.sched.remove_source(now, source);
        self.update(now);
    }

    // ----- peers -----

    /// Leave the current swarm for another: the viewer now plays another rendition, and a swarm
    /// shares one (the origin signs channel and rendition). What the old swarm asked of peers
    /// is forgotten; segments not yet had are planned by the new one.
    pub fn rejoin(&mut self, now: Instant, sharing: Sharing) {
        self.sharing = Some(sharing);
        self.update(now);
    }

    /// This viewer is number `index` of `size` in the swarm (the tracker's answer).
    pub fn set_position(&mut self, index: usize, size: usize) {
        if let Some(s) = &mut self.sharing {
            s.swarm.set_position(index, size);
        }
    }

    /// A peer connected; false when the swarm refuses it (banned, or enough peers).
    pub fn peer_connected(&mut self, now: Instant, peer: PeerKey, same_region: bool, rtt: Option<Duration>) -> bool {
        let added = self.sharing.as_mut().is_some_and(|s| s.swarm.add_peer(now, peer, same_region, rtt));
        self.update(now);
        added
    }

    /// A peer is gone: what was asked of it is planned again.
    pub fn peer_lost(&mut self, now: Instant, peer: PeerKey) {
        if let Some(s) = &mut self.sharing {
            s.swarm.remove_peer(now, peer);
        }
        self.update(now);
    }

    /// `peer`'s have-map.
    pub fn peer_have(&mut self, now: Instant, peer: PeerKey, seqs: &[u64]) {
        if let Some(s) = &mut self.sharing {
            s.swarm.peer_have(now, peer, seqs);
        }
        self.update(now);
    }

    /// Segment `seq` arrived from `peer`: verified against the origin's signature, then played
    /// in order (or just held for others, when it was no longer needed).
    pub fn peer_piece(&mut self, now: Instant, peer: PeerKey, seq: u64, data: &[u8], sig: &Signature) -> PieceOutcome {
        let Some(s) = &mut self.sharing else { return PieceOutcome::Unwanted };
        let outcome = s.swarm.piece_from_peer(now, peer, seq, data, sig, s.verifier.as_ref());
        match outcome {
            PieceOutcome::Rejected => self.outputs.push_back(Output::BadPiece { seq, from: From::Peer(peer) }),
            _ => self.sched.supplied(now, seq, peer),
        }
        self.update(now);
        outcome
    }

    /// The request to `peer` for `seq` failed.
    pub fn peer_failed(&mut self, now: Instant, peer: PeerKey, seq: u64) {
        if let Some(s) = &mut self.sharing {
            s.swarm.peer_failed(now, peer, seq);
        }
        self.update(now);
    }

    /// A peer asks for `seq`: serve only verified segments, within the upload slots.
    pub fn upload_request(&mut self, now: Instant, peer: PeerKey, seq: u64) -> Result<(), RejectReason> {
        match &mut self.sharing {
            Some(s) => s.swarm.upload_request(now, peer, seq),
            None => Err(RejectReason::NotHeld),
        }
    }

    /// An upload granted by [`Self::upload_request`] ended after `bytes`.
    pub fn upload_done(&mut self, bytes: u64) {
        if let Some(s) = &mut self.sharing {
            s.swarm.upload_done(bytes);
        }
    }

    /// End of the session: close the buffer's books.
    pub fn finish(&mut self, now: Instant) {
        self.sched.finish(now);
    }

    // ----- composition -----

    /// Bring both policies up to date and collect what they decided, until neither has more:
    /// the scheduler's actions become outputs; the swarm learns each pending segment's deadline
    /// and releases segments to the servers or asks peers.
    fn update(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(action) = self.sched.poll_action() {
                progressed = true;
                self.scheduler_action(action);
            }
            if self.sharing.is_some() {
                self.refresh_wants(now);
                while let Some(action) = self.sharing.as_mut().and_then(|s| s.swarm.poll_action()) {
                    progressed = true;
                    self.swarm_action(now, action);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn scheduler_action(&mut self, action: Action) {
        let out = match action {
            Action::Fetch { req, source, seq } => Output::Fetch { req, source, seq },
            Action::Cancel { req } => Output::Cancel { req },
            Action::Deliver { req, seq, source } => Output::Play { seq, from: From::Server { req, source } },
            Action::DeliverSupplied { seq, by } => Output::Play { seq, from: From::Peer(by) },
            Action::Skip { seq } => {
                if let Some(s) = &mut self.sharing {
                    s.swarm.unwant(seq);
                }
                Output::Skip { seq }
            }
        };
        self.outputs.push_back(out);
    }

    fn swarm_action(&mut self, now: Instant, action: SwarmAction) {
        let out = match action {
            SwarmAction::FetchEdge { seq } => return self.sched.release(now, seq),
            SwarmAction::CancelEdge { seq } => return self.sched.withdraw(now, seq),
            SwarmAction::FetchPeer { peer, seq } => Output::FetchPeer { peer, seq },
            SwarmAction::CancelPeer { peer, seq } => Output::CancelPeer { peer, seq },
            SwarmAction::DropPeer { peer, reason } => Output::DropPeer { peer, reason },
            SwarmAction::ReportPeer { peer } => Output::ReportPeer { peer },
            SwarmAction::NeedPeers => Output::NeedPeers,
            SwarmAction::Advertise { seqs } => Output::Advertise { seqs },
        };
        self.outputs.push_back(out);
    }

    /// Tell the swarm when each pending segment must be there: back to back from the buffer's
    /// deadline; before playback starts, from when the next segment was first listed plus the
    /// patience for peers and the fallback margin; while stalled, now.
    fn refresh_wants(&mut self, now: Instant) {
        let Some(s) = &mut self.sharing else { return };
        let Some(next) = self.sched.next_seq() else { return };
        let buffer = self.sched.buffer();
        let mut at = match buffer.deadline() {
            Some(d) => d,
            None if buffer.started_at().is_none() => {
                self.first_listed.get(&next).map_or(now, |t| *t + STARTUP_PATIENCE + s.swarm.config().margin)
            }
            None => now,
        };
        for (seq, duration) in self.sched.pending() {
            s.swarm.want(now, seq, at);
            at += duration;
        }
    }
}

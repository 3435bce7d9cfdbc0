//! The viewer's multi-source download scheduler (F40, F45): which server to fetch each segment
//! from, when to ask a second server for a late one, and in which order to hand segments to the
//! player.
//!
//! Sans-IO like the node: the shell reports playlist contents, request progress, completions and
//! failures; the scheduler answers with [`Action`]s (fetch, cancel, deliver) and keeps the
//! [`PlaybackBuffer`] model whose deadlines drive hedging. Sources must number segments alike
//! (Relaycast edges do; so do servers re-serving one packager's output).
//!
//! Modes:
//! - [`Mode::Alternate`]: segment k from source k mod n (the dual-server seed's intent);
//! - [`Mode::Hedge`]: everything from the fastest source; a segment that will miss its playback
//!   deadline is also requested from another source, and the first complete copy wins;
//! - [`Mode::Adaptive`]: each segment to the source expected to finish it first (measured
//!   throughput and what it already has queued), with the same hedging.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::buffer::PlaybackBuffer;

/// How segments are spread over sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Alternate,
    Hedge,
    Adaptive,
}

/// A source (server) by index in the list the scheduler was built with.
pub type SourceId = usize;

/// A request, numbered by the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// GET segment `seq` from `source`.
    Fetch { req: RequestId, source: SourceId, seq: u64 },
    /// Abort a request; its bytes are not needed (count them as duplicate bytes).
    Cancel { req: RequestId },
    /// Hand the completed request's bytes to the player: segments come in order, each once.
    Deliver { req: RequestId, seq: u64, source: SourceId },
    /// Segment `seq` is gone from every playlist before it could be fetched: a gap.
    Skip { seq: u64 },
    /// Hand segment `seq`, which came from elsewhere ([`Scheduler::supplied`], e.g. a peer,
    /// tagged `by`), to the player: in order with the others.
    DeliverSupplied { seq: u64, by: u64 },
}

/// Tunables.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub mode: Mode,
    /// Buffer needed to start or resume playback.
    pub startup: Duration,
    /// Segments fetched ahead of the one the player needs next.
    pub lookahead: usize,
    /// Hedge a request expected to finish later than its deadline minus this margin.
    pub hedge_margin: Duration,
    /// A request with no byte after this long is considered late.
    pub first_byte_timeout: Duration,
    /// Consecutive failures after which a source is benched for `bench_time`.
    pub max_failures: u32,
    pub bench_time: Duration,
    /// Where a new session starts: this many segments behind the newest listed one.
    pub live_offset: usize,
    /// Fetch a segment only once [`Scheduler::release`]d: another policy (viewer-to-viewer
    /// sharing) decides which segments the servers are asked for, and when; released segments
    /// are fetched at once, several at a time.
    pub gated: bool,
    /// Ask a source for the next segment as soon as its current answer has begun (two requests
    /// per source, the second waiting behind the first): on a long round trip this keeps the
    /// link busy instead of idle for one RTT per segment. Low-latency viewers use it.
    pub pipeline: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Adaptive,
            startup: Duration::from_secs(4),
            lookahead: 3,
            hedge_margin: Duration::from_millis(500),
            first_byte_timeout: Duration::from_millis(1500),
            max_failures: 3,
            bench_time: Duration::from_secs(5),
            live_offset: 2,
            gated: false,
            pipeline: false,
        }
    }
}

/// Per-source accounting.
#[derive(Clone, Debug, Default)]
pub struct SourceStats {
    /// Bytes received (including duplicates).
    pub bytes: u64,
    /// Segments this source delivered to the player.
    pub delivered: u64,
    /// Requests started, failed, cancelled.
    pub requests: u64,
    pub failures: u64,
    pub cancelled: u64,
    /// Smoothed delivery rate, bits per second.
    pub throughput_bps: Option<f64>,
    /// Consecutive failures; benched until `benched_until` after `max_failures`.
    consecutive_failures: u32,
    benched_until: Option<Instant>,
    /// Switched off by the user (F45) or gone for good.
    removed: bool,
    /// Oldest and newest segment this source's playlist lists: it is asked for nothing else.
    oldest: Option<u64>,
    newest: Option<u64>,
}

/// Where a completed segment came from.
#[derive(Clone, Copy, Debug)]
enum Done {
    Request(RequestId, SourceId),
    Supplied(u64),
}

#[derive(Clone, Debug)]
struct Request {
    seq: u64,
    source: SourceId,
    started: Instant,
    first_byte: Option<Instant>,
    bytes: u64,
    total: Option<u64>,
    hedged: bool,
}

/// The multi-source scheduler. Inputs take `now`; drain [`Scheduler::poll_action`] after each.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    sources: Vec<SourceStats>,
    /// Listed, not yet delivered segments and their durations.
    listed: BTreeMap<u64, Duration>,
    next_seq: Option<u64>,
    inflight: BTreeMap<RequestId, Request>,
    /// Completed, waiting for earlier segments.
    completed: BTreeMap<u64, Done>,
    /// Segments the gate let through (see [`SchedulerConfig::gated`]).
    released: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    buffer: PlaybackBuffer,
    actions: VecDeque<Action>,
    next_req: u64,
    /// Typical segment size, for estimates before Content-Length is known.
    typical_bytes: Option<u64>,
    /// When the lateness checks last ran (they run every [`CHECK_EVERY`] while hedging can help).
    last_check: Option<Instant>,
}

/// How often requests are checked for lateness while a second source could take over.
const CHECK_EVERY: Duration = Duration::from_millis(100);

impl Scheduler {
    pub fn new(config: SchedulerConfig, sources: usize) -> Self {
        let buffer = PlaybackBuffer::new(config.startup);
        Self {
            config,
            sources: vec![SourceStats::default(); sources],
            listed: BTreeMap::new(),
            next_seq: None,
            inflight: BTreeMap::new(),
            completed: BTreeMap::new(),
            released: BTreeSet::new(),
            delivered: BTreeSet::new(),
            buffer,
            actions: VecDeque::new(),
            next_req: 1,
            typical_bytes: None,
            last_check: None,
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn buffer(&self) -> &PlaybackBuffer {
        &self.buffer
    }

    pub fn sources(&self) -> &[SourceStats] {
        &self.sources
    }

    /// When [`Self::handle_timeout`] should run next: lateness checks while requests fly and a
    /// second source could take over; the end of a bench otherwise.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let usable = (0..self.sources.len()).filter(|s| self.usable(*s, now)).count();
        let hedging = usable >= 2 && (!self.inflight.is_empty() || !self.listed.is_empty());
        let unbench = self.sources.iter().filter(|s| !s.removed).filter_map(|s| s.benched_until).filter(|t| *t > now);
        let check = self.last_check.map_or(now, |t| t + CHECK_EVERY);
        hedging.then_some(check).into_iter().chain(unbench).min()
    }

    /// The next segment the player needs, once the session has a starting point.
    pub fn next_seq(&self) -> Option<u64> {
        self.next_seq
    }

    /// Listed segments from the next one on that are neither completed nor delivered, with
    /// their durations, in order.
    pub fn pending(&self) -> impl Iterator<Item = (u64, Duration)> + '_ {
        let next = self.next_seq.unwrap_or(u64::MAX);
        self.listed.range(next..).filter(|(s, _)| !self.completed.contains_key(s)).map(|(s, d)| (*s, *d))
    }

    /// The source and segment of a request in flight.
    pub fn request(&self, req: RequestId) -> Option<(SourceId, u64)> {
        self.inflight.get(&req).map(|r| (r.source, r.seq))
    }

    /// Whether `seq` is still to be played and nobody has completed it yet.
    pub fn needs(&self, seq: u64) -> bool {
        self.next_seq.is_some_and(|n| seq >= n) && !self.completed.contains_key(&seq) && !self.delivered.contains(&seq)
    }

    /// Let `seq` be fetched from the servers (gated mode).
    pub fn release(&mut self, now: Instant, seq: u64) {
        if self.needs(seq) && self.released.insert(seq) {
            self.pump(now);
        }
    }

    /// Stop fetching `seq` from the servers (gated mode): its requests are cancelled.
    pub fn withdraw(&mut self, now: Instant, seq: u64) {
        self.released.remove(&seq);
        self.cancel_requests_for(seq);
        self.pump(now);
    }

    /// `seq` arrived from elsewhere (tagged `by`, e.g. a peer): requests for it are cancelled
    /// and it is played in order like a completed request.
    pub fn supplied(&mut self, now: Instant, seq: u64, by: u64) {
        if !self.needs(seq) {
            return;
        }
        self.released.remove(&seq);
        self.cancel_requests_for(seq);
        self.completed.insert(seq, Done::Supplied(by));
        self.deliver_ready(now);
        self.pump(now);
    }

    /// `source`'s playlist lists these segments (sequence, duration), oldest first.
    pub fn playlist(&mut self, now: Instant, source: SourceId, segments: &[(u64, Duration)]) {
        if let (Some(s), Some(&(oldest, _)), Some(&(newest, _))) =
            (self.sources.get_mut(source), segments.first(), segments.last())
        {
            s.oldest = Some(oldest);
            s.newest = Some(newest);
        }
        for &(seq, duration) in segments {
            if self.delivered.contains(&seq) || self.next_seq.is_some_and(|n| seq < n) {
                continue;
            }
            self.listed.insert(seq, duration);
        }
        if self.next_seq.is_none()
            && let Some(&(newest, _)) = segments.last()
        {
            // Start near the live edge, as players do: a few segments behind the newest.
            let oldest = segments[0].0;
            self.next_seq = Some(newest.saturating_sub(self.config.live_offset as u64).max(oldest));
            self.listed.retain(|seq, _| *seq >= newest.saturating_sub(self.config.live_offset as u64));
        }
        self.pump(now);
    }

    /// The oldest segment any source still lists; older unfetched ones are gone for good.
    pub fn oldest_listed(&mut self, now: Instant, oldest: u64) {
        let Some(next) = self.next_seq else { return };
        if next >= oldest || self.completed.contains_key(&next) || self.inflight.values().any(|r| r.seq == next) {
            return;
        }
        // The player fell behind the window: skip what can no longer be fetched.
        let mut seq = next;
        while seq < oldest && !self.completed.contains_key(&seq) {
            self.listed.remove(&seq);
            self.released.remove(&seq);
            self.actions.push_back(Action::Skip { seq });
            seq += 1;
        }
        self.next_seq = Some(seq);
        self.deliver_ready(now);
        self.pump(now);
    }

    /// Headers arrived for `req` (first byte), with the body length if known.
    pub fn first_byte(&mut self, now: Instant, req: RequestId, total: Option<u64>) {
        if let Some(r) = self.inflight.get_mut(&req) {
            r.first_byte.get_or_insert(now);
            r.total = total.or(r.total);
        }
        if self.config.pipeline {
            self.pump(now);
        }
    }

    /// `bytes` more arrived for `req`.
    pub fn progress(&mut self, now: Instant, req: RequestId, bytes: u64) {
        if let Some(r) = self.inflight.get_mut(&req) {
            r.first_byte.get_or_insert(now);
            r.bytes += bytes;
            self.sources[r.source].bytes += bytes;
        }
    }

    /// `req` completed with all its bytes.
    pub fn completed(&mut self, now: Instant, req: RequestId) {
        let Some(r) = self.inflight.remove(&req) else { return };
        let s = &mut self.sources[r.source];
        s.consecutive_failures = 0;
        let busy = now.duration_since(r.first_byte.unwrap_or(r.started)).max(Duration::from_millis(1));
        let sample = r.bytes as f64 * 8.0 / busy.as_secs_f64();
        // Responses smaller than ~20 KB measure latency more than rate; weigh them less.
        let gain = if r.bytes > 20_000 { 0.5 } else { 0.1 };
        s.throughput_bps = Some(s.throughput_bps.map_or(sample, |old| old * (1.0 - gain) + sample * gain));
        self.typical_bytes = Some(self.typical_bytes.map_or(r.bytes, |t| (t * 3 + r.bytes) / 4));
        self.released.remove(&r.seq);
        if self.delivered.contains(&r.seq) || self.completed.contains_key(&r.seq) {
            // A hedge that lost the race.
            self.actions.push_back(Action::Cancel { req });
        } else {
            self.completed.insert(r.seq, Done::Request(req, r.source));
            // The copy still in flight elsewhere is no longer needed.
            let losers: Vec<RequestId> =
                self.inflight.iter().filter(|(_, o)| o.seq == r.seq).map(|(id, _)| *id).collect();
            for l in losers {
                if let Some(lost) = self.inflight.remove(&l) {
                    // The loser's progress is a throughput sample too, or a throttled source
                    // would keep the rate it had before it slowed down.
                    let elapsed = now.duration_since(lost.started).max(Duration::from_millis(1));
                    let sample = lost.bytes as f64 * 8.0 / elapsed.as_secs_f64();
                    let s = &mut self.sources[lost.source];
                    s.cancelled += 1;
                    s.throughput_bps = Some(s.throughput_bps.map_or(sample, |old| old.min(sample)));
                }
                self.actions.push_back(Action::Cancel { req: l });
            }
        }
        self.deliver_ready(now);
        self.pump(now);
    }

    /// `req` failed (HTTP error, connection lost, bad bytes). The segment is retried elsewhere.
    pub fn failed(&mut self, now: Instant, req: RequestId) {
        let Some(r) = self.inflight.remove(&req) else { return };
        let s = &mut self.sources[r.source];
        s.failures += 1;
        s.consecutive_failures += 1;
        if s.consecutive_failures >= self.config.max_failures {
            s.benched_until = Some(now + self.config.bench_time);
        }
        self.pump(now);
    }

    /// Stop using a source (F45: switch away mid-stream); its requests move to the others.
    pub fn remove_source(&mut self, now: Instant, source: SourceId) {
        if let Some(s) = self.sources.get_mut(source) {
            s.removed = true;
        }
        let theirs: Vec<RequestId> =
            self.inflight.iter().filter(|(_, r)| r.source == source).map(|(id, _)| *id).collect();
        for id in theirs {
            self.inflight.remove(&id);
            self.actions.push_back(Action::Cancel { req: id });
        }
        self.pump(now);
    }

    /// Start using a new source (F45: switch to it mid-stream); returns its id.
    pub fn add_source(&mut self, now: Instant) -> SourceId {
        self.sources.push(SourceStats::default());
        self.pump(now);
        self.sources.len() - 1
    }

    /// Lateness checks: hedge requests that will miss their deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_check = Some(now);
        self.buffer.advance(now);
        self.pump(now);
    }

    /// End of the session.
    pub fn finish(&mut self, now: Instant) {
        self.buffer.finish(now);
    }

    // ----- private -----

    fn cancel_requests_for(&mut self, seq: u64) {
        let theirs: Vec<RequestId> = self.inflight.iter().filter(|(_, r)| r.seq == seq).map(|(id, _)| *id).collect();
        for id in theirs {
            self.inflight.remove(&id);
            self.actions.push_back(Action::Cancel { req: id });
        }
    }

    fn usable(&self, source: SourceId, now: Instant) -> bool {
        let s = &self.sources[source];
        !s.removed && s.benched_until.is_none_or(|t| t <= now)
    }

    /// Whether `source` lists `seq` yet (a lagging server is not asked for what it lacks).
    fn has(&self, source: SourceId, seq: u64) -> bool {
        let s = &self.sources[source];
        s.newest.is_some_and(|n| n >= seq) && s.oldest.is_some_and(|o| o <= seq)
    }

    fn busy(&self, source: SourceId) -> bool {
        let mut on_source = self.inflight.values().filter(|r| r.source == source);
        if !self.config.pipeline {
            return on_source.next().is_some();
        }
        // Pipelined: free again once the only request on it has begun to answer.
        match (on_source.next(), on_source.next()) {
            (None, _) => false,
            (Some(r), None) => r.first_byte.is_none(),
            (Some(_), Some(_)) => true,
        }
    }

    /// Hand every in-order completed segment to the player.
    fn deliver_ready(&mut self, now: Instant) {
        while let Some(next) = self.next_seq {
            let Some(done) = self.completed.remove(&next) else { break };
            let duration = self.listed.remove(&next).unwrap_or(Duration::from_secs(2));
            self.buffer.push(now, duration);
            self.delivered.insert(next);
            match done {
                Done::Request(req, source) => {
                    self.sources[source].delivered += 1;
                    self.actions.push_back(Action::Deliver { req, seq: next, source });
                }
                Done::Supplied(by) => self.actions.push_back(Action::DeliverSupplied { seq: next, by }),
            }
            self.next_seq = Some(next + 1);
        }
        // Keep the delivered set small: only what a late playlist could still list.
        if let Some(next) = self.next_seq {
            self.delivered = self.delivered.split_off(&next.saturating_sub(64));
            self.released = self.released.split_off(&next);
        }
    }

    /// The playback deadline of `seq`: when the buffer would run dry before it. `None` while
    /// the player is not playing (starting up or stalled).
    pub fn deadline(&self, seq: u64) -> Option<Instant> {
        let next = self.next_seq?;
        let base = self.buffer.deadline()?;
        let ahead: Duration = self.listed.range(next..seq).map(|(_, d)| *d).sum();
        Some(base + ahead)
    }

    /// Whether a request will miss its deadline (by the hedge margin). Before playback starts
    /// or while stalled, a request is late when it is far slower than real time.
    fn is_late(&self, now: Instant, r: &Request) -> bool {
        let finish = self.expected_finish(now, r);
        match self.deadline(r.seq) {
            Some(deadline) => finish + self.config.hedge_margin > deadline,
            None => {
                let duration = self.listed.get(&r.seq).copied().unwrap_or(Duration::from_secs(2));
                finish.saturating_duration_since(r.started) > duration * 2
            }
        }
    }

    /// Expected completion of a request, from its progress or the source's throughput.
    fn expected_finish(&self, now: Instant, r: &Request) -> Instant {
        let size = r.total.or(self.typical_bytes).unwrap_or(500_000) as f64;
        // Nothing of the body yet after the first-byte timeout (headers alone do not count):
        // treat it as stuck.
        if r.bytes == 0 && now.duration_since(r.started) >= self.config.first_byte_timeout {
            return now + Duration::from_secs(3600);
        }
        let rate_bps = match (r.first_byte, r.bytes) {
            (Some(fb), b) if b > 0 && now > fb => b as f64 * 8.0 / (now - fb).as_secs_f64(),
            _ => self.sources[r.source].throughput_bps.unwrap_or(0.0),
        };
        if rate_bps <= 0.0 {
            return now + Duration::from_millis(200);
        }
        let remaining = (size - r.bytes as f64).max(0.0) * 8.0 / rate_bps;
        now + Duration::from_secs_f64(remaining.min(3600.0))
    }

    /// Expected time for `source` to deliver a typical segment, counting what it has queued.
    fn expected_cost(&self, source: SourceId) -> f64 {
        let size = self.typical_bytes.unwrap_or(500_000) as f64 * 8.0;
        let rate = self.sources[source].throughput_bps.unwrap_or(f64::MAX / 4.0);
        let queued = self.inflight.values().filter(|r| r.source == source).count() as f64;
        (queued + 1.0) * size / rate
    }

    fn start(&mut self, now: Instant, source: SourceId, seq: u64, hedged: bool) {
        let req = RequestId(self.next_req);
        self.next_req += 1;
        self.inflight
            .insert(req, Request { seq, source, started: now, first_byte: None, bytes: 0, total: None, hedged });
        self.sources[source].requests += 1;
        self.actions.push_back(Action::Fetch { req, source, seq });
    }

    /// Start what should be fetched now, and hedge what is late.
    fn pump(&mut self, now: Instant) {
        let Some(next) = self.next_seq else { return };
        let usable: Vec<SourceId> = (0..self.sources.len()).filter(|s| self.usable(*s, now)).collect();
        if usable.is_empty() {
            return;
        }
        // 1. Fresh requests for the next few listed segments nobody is fetching (gated: every
        // released one).
        let gated = self.config.gated;
        let take = if gated { usize::MAX } else { self.config.lookahead + 1 };
        let wanted: Vec<u64> = self
            .listed
            .range(next..)
            .map(|(s, _)| *s)
            .filter(|s| !gated || self.released.contains(s))
            .take(take)
            .filter(|s| !self.completed.contains_key(s) && !self.inflight.values().any(|r| r.seq == *s))
            .collect();
        for seq in wanted {
            let holders: Vec<SourceId> = usable.iter().copied().filter(|s| self.has(*s, seq)).collect();
            if holders.is_empty() {
                if gated {
                    continue;
                }
                break;
            }
            // Released segments do not wait for a free source.
            let choice =
                self.choose(now, seq, &usable, &holders).or_else(|| gated.then(|| self.cheapest(&holders)).flatten());
            match choice {
                Some(source) => self.start(now, source, seq, false),
                // Segments are fetched in order: wait for the chosen source to be free.
                None => break,
            }
        }
        // 2. Hedging: a request that will miss its deadline is also asked of an idle source.
        if usable.len() >= 2 {
            self.hedge_late(now, &usable);
        }
    }

    /// The source for a fresh request of `seq` by the mode's rule, among the `holders` that
    /// list it; `None` to wait for one to be free.
    fn choose(&self, now: Instant, seq: u64, usable: &[SourceId], holders: &[SourceId]) -> Option<SourceId> {
        let idle: Vec<SourceId> = holders.iter().copied().filter(|s| !self.busy(*s)).collect();
        match self.config.mode {
            Mode::Alternate => {
                // The source is fixed by the sequence number, even if another lists the
                // segment first; only a segment about to be late goes elsewhere.
                let preferred = usable[(seq % usable.len() as u64) as usize];
                let urgent = self.deadline(seq).is_some_and(|d| d <= now + self.config.hedge_margin * 3);
                if idle.contains(&preferred) {
                    Some(preferred)
                } else if urgent && !self.has(preferred, seq) {
                    idle.first().copied()
                } else {
                    None
                }
            }
            Mode::Hedge => {
                let fastest = holders.iter().copied().max_by(|a, b| {
                    let ta = self.sources[*a].throughput_bps.unwrap_or(f64::MAX / 4.0);
                    let tb = self.sources[*b].throughput_bps.unwrap_or(f64::MAX / 4.0);
                    ta.total_cmp(&tb).then(b.cmp(a))
                })?;
                idle.contains(&fastest).then_some(fastest)
            }
            Mode::Adaptive => self.cheapest(&idle),
        }
    }

    /// The source expected to deliver a segment first (lowest id on a tie).
    fn cheapest(&self, among: &[SourceId]) -> Option<SourceId> {
        among.iter().copied().min_by(|a, b| self.expected_cost(*a).total_cmp(&self.expected_cost(*b)).then(a.cmp(b)))
    }

    /// Ask an idle source for every request that will miss its deadline (once per segment).
    fn hedge_late(&mut self, now: Instant, usable: &[SourceId]) {
        let late: Vec<(u64, SourceId)> = self
            .inflight
            .values()
            .filter(|r| !r.hedged)
            .filter(|r| self.inflight.values().filter(|o| o.seq == r.seq).count() == 1)
            .filter(|r| self.is_late(now, r))
            .map(|r| (r.seq, r.source))
            .collect();
        for (seq, slow) in late {
            let helpers: Vec<SourceId> =
                usable.iter().copied().filter(|s| *s != slow && !self.busy(*s) && self.has(*s, seq)).collect();
            if let Some(h) = self.cheapest(&helpers) {
                for r in self.inflight.values_mut().filter(|r| r.seq == seq) {
                    r.hedged = true;
                }
                self.start(now, h, seq, true);
            }
        }
    }
}

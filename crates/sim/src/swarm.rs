//! Viewer-to-viewer sharing at audience scale (F50): 10 000 viewers, each running the core's
//! viewer [`Session`] — the same code as `relaycast watch`, with sharing for the P2P run and
//! without for the CDN-only baseline — over simulated links, on the same edge.
//!
//! The model: one edge with a FIFO egress of `edge_mbps`; every viewer has a FIFO upload of
//! `upload_kbps` and a region; RTTs are drawn per pair (same region / other region). Segments
//! are published every `segment_s` and listed by the edge after `list_delay_ms`. Viewers join
//! uniformly over `join_s`; the tracker gives each `max_peers` peers ranked by the core's
//! [`rank_peers`] from a random sample, and refreshes positions every segment. A fetch the
//! policy cancels still costs the link it was queued on (conservative for P2P). A few viewers
//! may lie (send bytes that fail the signature); their victims must drop and report them.
//! Playback is the session's buffer model, so stalls are counted as everywhere else.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relaycast_core::Name;
use relaycast_core::multisource::{RequestId, SchedulerConfig};
use relaycast_core::p2p::peers::{PeerRecord, rank_peers};
use relaycast_core::p2p::signing::{SIGNATURE_LEN, SegmentVerifier, Signature};
use relaycast_core::p2p::swarm::PieceOutcome;
use relaycast_core::p2p::{Swarm, SwarmConfig};
use relaycast_core::viewer::{Output, Session, Sharing};
use serde::{Deserialize, Serialize};

/// A swarm scenario (`[swarm]` table of a scenario file; see `scenarios/swarm-10k.toml`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmScenario {
    pub seed: u64,
    pub viewers: usize,
    pub regions: usize,
    pub segment_s: f64,
    pub bitrate_kbps: f64,
    pub duration_s: f64,
    pub join_s: f64,
    pub edge_mbps: f64,
    pub edge_rtt_ms: f64,
    pub list_delay_ms: f64,
    pub upload_kbps: f64,
    pub upload_slots: usize,
    pub max_peers: usize,
    pub seeders: usize,
    pub margin_ms: u64,
    pub startup_s: f64,
    pub same_region_rtt_ms: (f64, f64),
    pub cross_region_rtt_ms: (f64, f64),
    /// Viewers that corrupt what they upload.
    pub liars: usize,
}

impl Default for SwarmScenario {
    fn default() -> Self {
        Self {
            seed: 1,
            viewers: 1000,
            regions: 4,
            segment_s: 2.0,
            bitrate_kbps: 400.0,
            duration_s: 60.0,
            join_s: 20.0,
            edge_mbps: 100.0,
            edge_rtt_ms: 40.0,
            list_delay_ms: 300.0,
            upload_kbps: 2000.0,
            upload_slots: 4,
            max_peers: 6,
            seeders: 2,
            margin_ms: 2000,
            startup_s: 4.0,
            same_region_rtt_ms: (5.0, 30.0),
            cross_region_rtt_ms: (60.0, 160.0),
            liars: 0,
        }
    }
}

#[derive(Deserialize)]
struct File {
    swarm: SwarmScenario,
}

impl SwarmScenario {
    /// Parse a scenario file's `[swarm]` table.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let s = f.swarm;
        if s.viewers == 0 || s.segment_s <= 0.0 || s.bitrate_kbps <= 0.0 || s.edge_mbps <= 0.0 || s.upload_kbps <= 0.0 {
            return Err("viewers, segment_s, bitrate_kbps, edge_mbps and upload_kbps must be positive".into());
        }
        if s.regions == 0 || s.liars >= s.viewers {
            return Err("regions must be ≥ 1 and liars < viewers".into());
        }
        Ok(s)
    }
}

/// What one run (P2P or CDN-only) measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SwarmReport {
    pub mode: String,
    pub viewers: usize,
    pub segments_played: u64,
    /// Bytes played that came from the edge / from peers.
    pub edge_bytes: u64,
    pub peer_bytes: u64,
    /// Bytes the edge sent, including fetches cancelled after a peer won the race.
    pub edge_sent_bytes: u64,
    /// Share of played bytes that came from peers.
    pub offload: f64,
    /// 1 − edge bytes sent / bytes played: what the edge was spared.
    pub edge_saving: f64,
    pub stalls: u64,
    pub stall_s: f64,
    pub played_s: f64,
    pub stall_ratio: f64,
    pub fallbacks: u64,
    pub bad_pieces: u64,
    pub liars: usize,
    pub liars_reported: usize,
    /// Segment delay: played-ready time − publish time, ms.
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub wall_s: f64,
}

impl std::fmt::Display for SwarmReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<8} viewers {:>6}  offload {:>5.1} %  edge saving {:>5.1} %  stalls {:>6}  stall ratio {:.4}  delay p50 {:>6.0} ms p99 {:>6.0} ms  fallbacks {}  liars reported {}/{}",
            self.mode,
            self.viewers,
            self.offload * 100.0,
            self.edge_saving * 100.0,
            self.stalls,
            self.stall_ratio,
            self.delay_p50_ms,
            self.delay_p99_ms,
            self.fallbacks,
            self.liars_reported,
            self.liars
        )
    }
}

/// Signatures in the simulation: honest viewers pass the origin's (all zeros); liars' bytes
/// carry a signature that does not verify.
struct SimVerifier;

impl SegmentVerifier for SimVerifier {
    fn verify(&self, _: &Name, _: &Name, _: u64, _: &[u8], signature: &Signature) -> bool {
        signature[0] == 0
    }
}

#[derive(Debug)]
enum Ev {
    Join(usize),
    Listed(u64),
    Tick(usize),
    EdgeArrive { v: usize, req: RequestId },
    EdgeSent,
    EdgeDone { v: usize, req: RequestId },
    UploadReq { server: usize, client: usize, seq: u64 },
    UploadEnd { server: usize },
    PeerDone { v: usize, peer: usize, seq: u64, ok: bool },
    Have { v: usize, from: usize, seqs: Rc<Vec<u64>> },
}

struct Viewer {
    region: usize,
    joined: bool,
    session: Session,
    peers: BTreeSet<usize>,
    up_free: u64,
    next_tick: Option<u64>,
    /// Edge requests the session cancelled: they cost no more once they are reached.
    edge_cancelled: BTreeSet<RequestId>,
    peer_bytes: u64,
    edge_bytes: u64,
    played: u64,
}

/// The event loop of one run.
struct Run<'a> {
    s: &'a SwarmScenario,
    p2p: bool,
    rng: ChaCha8Rng,
    base: Instant,
    now_us: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free_slots: Vec<usize>,
    order: u64,
    viewers: Vec<Viewer>,
    joined: Vec<usize>,
    /// Published segments: seq → publish time (µs).
    listed: BTreeMap<u64, u64>,
    /// The edge's FIFO: requests waiting (viewer, request); cancelled ones are skipped at no cost.
    edge_queue: std::collections::VecDeque<(usize, RequestId)>,
    edge_busy: bool,
    edge_sent: u64,
    seg_bytes: u64,
    delays: Vec<u64>,
    reported: BTreeSet<usize>,
    liars: BTreeSet<usize>,
}

const US: f64 = 1e6;
/// Segments the edge's playlist lists.
const PLAYLIST_LEN: usize = 16;

/// Run the scenario twice on one seed: with sharing and CDN-only.
pub fn run_swarm(s: &SwarmScenario) -> (SwarmReport, SwarmReport) {
    (Run::new(s, true).run(), Run::new(s, false).run())
}

impl<'a> Run<'a> {
    fn new(s: &'a SwarmScenario, p2p: bool) -> Self {
        #[allow(clippy::disallowed_methods)] // the virtual clock's epoch; only offsets matter
        let base = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
        let cfg = SwarmConfig {
            seeders: s.seeders.max(1),
            margin: Duration::from_millis(s.margin_ms),
            upload_slots: s.upload_slots.max(1),
            max_peers: s.max_peers.max(1),
            ..SwarmConfig::default()
        };
        let (ch, r) = (Name::new("live").expect("valid"), Name::new("src").expect("valid"));
        let player = SchedulerConfig { startup: Duration::from_secs_f64(s.startup_s), ..SchedulerConfig::default() };
        let viewers = (0..s.viewers)
            .map(|_| {
                let sharing = p2p.then(|| Sharing {
                    swarm: Swarm::new(cfg.clone(), ch.clone(), r.clone()),
                    verifier: Box::new(SimVerifier),
                });
                (rng.random_range(0..s.regions), Session::new(player.clone(), 1, sharing))
            })
            .map(|(region, session)| Viewer {
                region,
                joined: false,
                session,
                peers: BTreeSet::new(),
                up_free: 0,
                next_tick: None,
                edge_cancelled: BTreeSet::new(),
                peer_bytes: 0,
                edge_bytes: 0,
                played: 0,
            })
            .collect();
        let mut liars = BTreeSet::new();
        while liars.len() < s.liars {
            liars.insert(rng.random_range(0..s.viewers));
        }
        Self {
            s,
            p2p,
            rng,
            base,
            now_us: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free_slots: Vec::new(),
            order: 0,
            viewers,
            joined: Vec::new(),
            listed: BTreeMap::new(),
            edge_queue: std::collections::VecDeque::new(),
            edge_busy: false,
            edge_sent: 0,
            seg_bytes: (s.bitrate_kbps * 1000.0 / 8.0 * s.segment_s) as u64,
            delays: Vec::new(),
            reported: BTreeSet::new(),
            liars: if p2p { liars } else { BTreeSet::new() },
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.now_us)
    }

    fn at(&mut self, t: u64, ev: Ev) {
        let slot = match self.free_slots.pop() {
            Some(i) => {
                self.events[i] = Some(ev);
                i
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.order += 1;
        self.queue.push(Reverse((t, self.order, slot)));
    }

    fn rtt_us(&mut self, a: usize, b: usize) -> u64 {
        // Deterministic per pair: hash the pair into the range.
        let (lo, hi) = if self.viewers[a].region == self.viewers[b].region {
            self.s.same_region_rtt_ms
        } else {
            self.s.cross_region_rtt_ms
        };
        let h = relaycast_core::p2p::peers::mix((a.min(b) as u64) << 32 | a.max(b) as u64);
        let frac = (h % 10_000) as f64 / 10_000.0;
        ((lo + (hi - lo) * frac) * 1000.0) as u64
    }

    fn run(mut self) -> SwarmReport {
        #[allow(clippy::disallowed_methods)] // wall time of the run, reported only
        let wall = Instant::now();
        let end = (self.s.duration_s * US) as u64;
        for v in 0..self.s.viewers {
            let t = (self.rng.random::<f64>() * self.s.join_s * US) as u64;
            self.at(t, Ev::Join(v));
        }
        let seg_us = (self.s.segment_s * US) as u64;
        let mut seq = 0;
        while seq * seg_us <= end {
            self.at(seq * seg_us + (self.s.list_delay_ms * 1000.0) as u64, Ev::Listed(seq));
            seq += 1;
        }
        while let Some(Reverse((t, _, slot))) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now_us = t;
            let ev = self.events[slot].take().expect("event present");
            self.free_slots.push(slot);
            self.handle(ev);
        }
        self.report(wall)
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now();
        match ev {
            Ev::Join(v) => {
                self.viewers[v].joined = true;
                self.joined.push(v);
                if self.p2p {
                    self.find_peers(v);
                }
                let listing = self.playlist();
                self.show_playlist(v, &listing);
            }
            Ev::Listed(seq) => {
                self.listed.insert(seq, self.now_us - (self.s.list_delay_ms * 1000.0) as u64);
                // The tracker's refresh: positions by join order, more peers where needed.
                let n = self.joined.len();
                for i in 0..n {
                    let v = self.joined[i];
                    self.viewers[v].session.set_position(i, n);
                    if self.p2p && self.viewers[v].peers.len() < self.s.max_peers / 2 {
                        self.find_peers(v);
                    }
                }
                let listing = self.playlist();
                for i in 0..n {
                    self.show_playlist(self.joined[i], &listing);
                }
            }
            Ev::Tick(v) => {
                if self.viewers[v].next_tick == Some(self.now_us) {
                    self.viewers[v].next_tick = None;
                    self.viewers[v].session.handle_timeout(now);
                    self.update(v);
                }
            }
            Ev::EdgeArrive { v, req } => {
                self.edge_queue.push_back((v, req));
                self.edge_next();
            }
            Ev::EdgeSent => {
                self.edge_busy = false;
                self.edge_next();
            }
            Ev::EdgeDone { v, req } => {
                if self.viewers[v].edge_cancelled.remove(&req) {
                    return;
                }
                let sig = [0u8; SIGNATURE_LEN];
                let vw = &mut self.viewers[v];
                vw.session.progress(now, req, self.seg_bytes);
                if vw.session.completed(now, req, &[], Some(&sig)) != PieceOutcome::Rejected {
                    vw.edge_bytes += self.seg_bytes;
                }
                self.update(v);
            }
            Ev::UploadReq { server, client, seq } => {
                let ok = self.viewers[server].session.upload_request(now, client as u64, seq).is_ok();
                let half = self.rtt_us(server, client) / 2;
                if ok {
                    let start = self.viewers[server].up_free.max(self.now_us);
                    let done = start + (self.seg_bytes as f64 * 8.0 / (self.s.upload_kbps * 1000.0) * US) as u64;
                    self.viewers[server].up_free = done;
                    self.at(done, Ev::UploadEnd { server });
                    self.at(done + half, Ev::PeerDone { v: client, peer: server, seq, ok: true });
                } else {
                    self.at(self.now_us + half, Ev::PeerDone { v: client, peer: server, seq, ok: false });
                }
            }
            Ev::UploadEnd { server } => {
                self.viewers[server].session.upload_done(self.seg_bytes);
                self.update(server);
            }
            Ev::PeerDone { v, peer, seq, ok } => {
                if !self.viewers[v].peers.contains(&peer) {
                    return;
                }
                if !ok {
                    self.viewers[v].session.peer_failed(now, peer as u64, seq);
                } else {
                    let mut sig: Signature = [0u8; SIGNATURE_LEN];
                    if self.liars.contains(&peer) {
                        sig[0] = 1;
                    }
                    let vw = &mut self.viewers[v];
                    if vw.session.peer_piece(now, peer as u64, seq, &[], &sig) != PieceOutcome::Rejected {
                        vw.peer_bytes += self.seg_bytes;
                    }
                }
                self.update(v);
            }
            Ev::Have { v, from, seqs } => {
                if self.viewers[v].peers.contains(&from) {
                    self.viewers[v].session.peer_have(now, from as u64, &seqs);
                    self.update(v);
                }
            }
        }
    }

    /// The edge's playlist: the newest [`PLAYLIST_LEN`] listed segments.
    fn playlist(&self) -> Vec<(u64, Duration)> {
        let seg = Duration::from_secs_f64(self.s.segment_s);
        self.listed.keys().rev().take(PLAYLIST_LEN).rev().map(|seq| (*seq, seg)).collect()
    }

    /// Viewer `v` (re)loads the edge's playlist.
    fn show_playlist(&mut self, v: usize, listing: &[(u64, Duration)]) {
        if !listing.is_empty() {
            let now = self.now();
            self.viewers[v].session.playlist(now, 0, listing);
        }
        self.update(v);
    }

    /// Ask the "tracker" for peers: a random sample of joined viewers ranked by the core.
    fn find_peers(&mut self, v: usize) {
        if self.joined.len() < 2 {
            return;
        }
        let sample: Vec<PeerRecord> = (0..40)
            .map(|_| self.joined[self.rng.random_range(0..self.joined.len())])
            .filter(|&o| o != v && !self.viewers[v].peers.contains(&o))
            .map(|o| PeerRecord { id: o as u64, region: self.viewers[o].region.to_string(), addr: String::new() })
            .collect();
        let region = self.viewers[v].region.to_string();
        let want = self.s.max_peers.saturating_sub(self.viewers[v].peers.len());
        let now = self.now();
        for p in rank_peers(v as u64, &region, &BTreeMap::new(), &sample, want) {
            let o = p.id as usize;
            if self.viewers[o].peers.len() >= self.s.max_peers || self.viewers[v].peers.contains(&o) {
                continue;
            }
            let same = self.viewers[o].region == self.viewers[v].region;
            let rtt = Duration::from_micros(self.rtt_us(v, o));
            if !self.viewers[v].session.peer_connected(now, o as u64, same, Some(rtt)) {
                continue;
            }
            if !self.viewers[o].session.peer_connected(now, v as u64, same, Some(rtt)) {
                self.viewers[v].session.peer_lost(now, o as u64);
                continue;
            }
            self.viewers[v].peers.insert(o);
            self.viewers[o].peers.insert(v);
            // Exchange have-maps.
            for (a, b) in [(v, o), (o, v)] {
                let seqs: Vec<u64> = self.viewers[a].session.swarm().map(|s| s.held().collect()).unwrap_or_default();
                if !seqs.is_empty() {
                    let t = self.now_us + self.rtt_us(a, b) / 2;
                    self.at(t, Ev::Have { v: b, from: a, seqs: Rc::new(seqs) });
                }
            }
        }
    }

    /// Carry out what viewer `v`'s session decided and schedule its next timeout.
    fn update(&mut self, v: usize) {
        let now = self.now();
        while let Some(out) = self.viewers[v].session.poll_output() {
            match out {
                Output::Fetch { req, .. } => self.edge_fetch(v, req),
                Output::Cancel { req } => {
                    self.viewers[v].edge_cancelled.insert(req);
                }
                Output::Play { seq, .. } => {
                    self.viewers[v].played += 1;
                    if let Some(p) = self.listed.get(&seq) {
                        self.delays.push(self.now_us.saturating_sub(*p) / 1000);
                    }
                }
                Output::FetchPeer { peer, seq } => {
                    let t = self.now_us + self.rtt_us(v, peer as usize) / 2;
                    self.at(t, Ev::UploadReq { server: peer as usize, client: v, seq });
                }
                Output::DropPeer { peer, .. } => {
                    let o = peer as usize;
                    self.viewers[v].peers.remove(&o);
                    if self.viewers[o].peers.remove(&v) {
                        self.viewers[o].session.peer_lost(now, v as u64);
                        self.update(o);
                    }
                }
                Output::ReportPeer { peer } => {
                    self.reported.insert(peer as usize);
                }
                Output::Advertise { seqs } => {
                    let seqs = Rc::new(seqs);
                    let peers: Vec<usize> = self.viewers[v].peers.iter().copied().collect();
                    for o in peers {
                        let t = self.now_us + self.rtt_us(v, o) / 2;
                        self.at(t, Ev::Have { v: o, from: v, seqs: seqs.clone() });
                    }
                }
                Output::Skip { .. } | Output::CancelPeer { .. } | Output::NeedPeers | Output::BadPiece { .. } => {}
            }
        }
        if let Some(t) = self.viewers[v].session.poll_timeout(now) {
            let t_us = (t.saturating_duration_since(self.base).as_micros() as u64).max(self.now_us + 1);
            if self.viewers[v].next_tick.is_none_or(|n| t_us < n) {
                self.viewers[v].next_tick = Some(t_us);
                self.at(t_us, Ev::Tick(v));
            }
        }
    }

    /// A FIFO edge: the request arrives after half the RTT and waits for the link.
    fn edge_fetch(&mut self, v: usize, req: RequestId) {
        let half = (self.s.edge_rtt_ms * 1000.0 / 2.0) as u64;
        self.at(self.now_us + half, Ev::EdgeArrive { v, req });
    }

    /// Start sending the next request that was not cancelled meanwhile, at `edge_mbps`; it
    /// lands half an RTT after it is sent. A request cancelled once sending started costs
    /// the whole segment (at most one at a time).
    fn edge_next(&mut self) {
        if self.edge_busy {
            return;
        }
        while let Some((v, req)) = self.edge_queue.pop_front() {
            if self.viewers[v].edge_cancelled.remove(&req) {
                continue;
            }
            let half = (self.s.edge_rtt_ms * 1000.0 / 2.0) as u64;
            let done = self.now_us + (self.seg_bytes as f64 * 8.0 / (self.s.edge_mbps * 1e6) * US) as u64;
            self.edge_busy = true;
            self.edge_sent += self.seg_bytes;
            self.at(done, Ev::EdgeSent);
            self.at(done + half, Ev::EdgeDone { v, req });
            return;
        }
    }

    fn report(mut self, wall: Instant) -> SwarmReport {
        let now = self.now();
        let mut r = SwarmReport {
            mode: if self.p2p { "p2p" } else { "cdn-only" }.into(),
            viewers: self.s.viewers,
            liars: self.liars.len(),
            liars_reported: self.reported.intersection(&self.liars).count(),
            edge_sent_bytes: self.edge_sent,
            ..SwarmReport::default()
        };
        for (i, vw) in self.viewers.iter_mut().enumerate() {
            if !vw.joined || self.liars.contains(&i) {
                continue;
            }
            vw.session.finish(now);
            let buffer = vw.session.buffer();
            r.segments_played += vw.played;
            r.edge_bytes += vw.edge_bytes;
            r.peer_bytes += vw.peer_bytes;
            r.stalls += buffer.stalls().len() as u64;
            r.stall_s += buffer.stall_time().as_secs_f64();
            r.played_s += buffer.played().as_secs_f64();
            if let Some(swarm) = vw.session.swarm() {
                r.fallbacks += swarm.stats().fallbacks;
                r.bad_pieces += swarm.stats().bad_pieces;
            }
        }
        let got = (r.edge_bytes + r.peer_bytes).max(1) as f64;
        r.offload = r.peer_bytes as f64 / got;
        r.edge_saving = 1.0 - r.edge_sent_bytes as f64 / (r.segments_played * self.seg_bytes).max(1) as f64;
        r.stall_ratio = r.stall_s / (r.stall_s + r.played_s).max(1e-9);
        self.delays.sort_unstable();
        let pct =
            |p: f64| self.delays.get(((self.delays.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64;
        r.delay_p50_ms = pct(0.5);
        r.delay_p99_ms = pct(0.99);
        r.wall_s = wall.elapsed().as_secs_f64();
        r
    }
}

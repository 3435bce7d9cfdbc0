//! Sharing in `relaycast watch --p2p` (F50–F53): the network half of the core session's peers.
//!
//! A sharing viewer announces itself to the tracker (channel, rendition, region, QUIC address),
//! links to the peers the tracker ranks for it, serves the segments it holds, and fetches what
//! the session asks of peers. The session checks every segment — from a server or a peer —
//! against the origin's Ed25519 signature before it is played or offered to anyone; a peer that
//! sends bad bytes is dropped and reported to the tracker. Peers compose with everything else a
//! viewer does: several servers, steering, POP probing, switching.
//!
//! Also the bypass (F52): with `--tracker` and `--region`, a viewer in the broadcaster's region
//! is sent to the ingest-side node directly ([`apply_bypass`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use quinn::{Connection, Endpoint};
use relaycast_core::Name;
use relaycast_core::p2p::peers::{PeerAnnounce, PeerAnnounceReply, PeerReport};
use relaycast_core::p2p::signing::Signature;
use relaycast_core::p2p::swarm::PieceOutcome;
use relaycast_core::p2p::wire::{MAX_HAVE, PeerMessage, RejectReason};
use relaycast_core::p2p::{PeerKey, Swarm, SwarmConfig};
use relaycast_core::viewer::{Output, Session, Sharing};
use reqwest::Url;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::WatchArgs;
use super::http::names_from_url;
use super::peers::{self, Held, Me, NetEvent, Uploads};
use crate::common::http::post_json;
use crate::common::signing::Ed25519Verifier;

/// Flags of `relaycast watch` for sharing and the bypass.
#[derive(Args, Debug, Clone)]
pub struct P2pArgs {
    /// Share segments with other viewers over QUIC, each checked against the origin's
    /// signature; needs --tracker.
    #[arg(long, requires = "tracker")]
    pub p2p: bool,
    /// Tracker URL (e.g. http://127.0.0.1:7070): P2P peers, the origin's key, the bypass.
    #[arg(long, value_name = "URL")]
    pub tracker: Option<String>,
    /// This viewer's region: peers in it are preferred; in the broadcaster's region the
    /// tracker sends the viewer to the ingest-side node directly (the bypass).
    #[arg(long, default_value = "")]
    pub region: String,
    /// Do not take the bypass even when the tracker offers it (for comparisons).
    #[arg(long)]
    pub no_bypass: bool,
    /// Cap on uploads to peers, kbit/s; 0 = none.
    #[arg(long, default_value_t = 0)]
    pub upload_kbps: u64,
    /// Concurrent uploads to peers.
    #[arg(long, default_value_t = 4)]
    pub upload_slots: usize,
    /// Peers kept at most.
    #[arg(long, default_value_t = 6)]
    pub max_peers: usize,
    /// UDP address for peer connections (QUIC); port 0 picks one per viewer.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub peer_bind: SocketAddr,
    /// The origin's public key file (FILE.pub of its --signing-key) [default: from the tracker].
    #[arg(long, value_name = "FILE")]
    pub origin_key: Option<PathBuf>,
    /// Fall back to the servers this long before a segment's playback deadline, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub p2p_margin_ms: u64,
    /// Viewers that fetch each segment from the servers at once.
    #[arg(long, default_value_t = 2)]
    pub seeders: usize,
    /// Test hook: corrupt every segment uploaded to peers (a lying peer).
    #[arg(long, hide = true)]
    pub corrupt_uploads: bool,
}

/// If the tracker says this viewer is in the broadcaster's region, point every source at the
/// ingest-side node (same path, other host). Without `--tracker`/`--region`, or with
/// `--no-bypass`, the sources are unchanged.
pub async fn apply_bypass(args: &mut WatchArgs) -> Result<()> {
    let p = &args.p2p;
    let Some(tracker) = &p.tracker else { return Ok(()) };
    if p.region.is_empty() || p.no_bypass {
        return Ok(());
    }
    let tracker = Url::parse(tracker).with_context(|| format!("invalid tracker URL {tracker:?}"))?;
    let url = tracker.join(&format!("/api/v1/p2p/bypass?region={}", p.region))?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build()?;
    let body = client.get(url).send().await?.error_for_status()?.bytes().await?;
    let reply: serde_json::Value = serde_json::from_slice(&body).context("tracker bypass answer")?;
    let Some(base) = reply["bypass"].as_str() else { return Ok(()) };
    let base = Url::parse(base).with_context(|| format!("bypass URL {base:?}"))?;
    for s in &mut args.sources {
        let mut u = Url::parse(s).with_context(|| format!("invalid URL {s:?}"))?;
        let _ = u.set_host(base.host_str());
        let _ = u.set_port(base.port());
        tracing::info!(from = %s, to = %u, region = %p.region, "bypass: fetching from the ingest-side node directly");
        *s = u.to_string();
    }
    args.label.get_or_insert_with(|| "bypass".into());
    Ok(())
}

/// What the peer tasks report to the viewer loop.
pub enum PeerEvent {
    Net(NetEvent),
    Tracker(Result<PeerAnnounceReply, String>),
    Piece { peer: PeerKey, seq: u64, result: Result<(Bytes, Signature, u64), String> },
}

struct Link {
    conn: Connection,
    control: mpsc::UnboundedSender<PeerMessage>,
    dialed: bool,
}

/// The network half of a sharing viewer.
pub struct PeerNet {
    pub id: u64,
    region: String,
    client: reqwest::Client,
    tracker: Url,
    endpoint: Endpoint,
    me: Me,
    net_tx: mpsc::UnboundedSender<NetEvent>,
    tx: mpsc::UnboundedSender<PeerEvent>,
    uploads: Uploads,
    links: BTreeMap<PeerKey, Link>,
    dialing: BTreeMap<PeerKey, Instant>,
    /// Verified segments and their rendition: served to peers, and played from when a peer
    /// brought them. (Kept across a move to another rendition's swarm: a segment of the old one
    /// may still be waiting to be played.)
    store: BTreeMap<u64, (Name, Held)>,
    /// Requests to peers in flight, and when each was asked.
    fetches: BTreeMap<(PeerKey, u64), (JoinHandle<()>, Instant)>,
    /// When each segment a peer brought was asked for (for the QoE log).
    asked: BTreeMap<u64, Instant>,
    need_peers: Arc<Notify>,
    measured: Arc<Mutex<Measured>>,
    /// What this viewer announces, where, and how often.
    announcement: PeerAnnounce,
    announce_url: Url,
    refresh: Duration,
    /// The swarm policy's settings and the origin's key, for the swarm of another rendition.
    cfg: SwarmConfig,
    verifier: Ed25519Verifier,
    /// Forwarding link events (for the viewer's life), accepting and announcing (per swarm).
    tasks: Vec<JoinHandle<()>>,
    swarm_tasks: Vec<JoinHandle<()>>,
    /// Peers reported to the tracker as liars.
    pub reported: Vec<PeerKey>,
}

/// What the next announcement tells the tracker, refreshed every viewer tick.
#[derive(Default)]
struct Measured {
    rtt_ms: BTreeMap<u64, f64>,
    peer_bytes: u64,
    edge_bytes: u64,
}

impl PeerNet {
    /// Join the swarm of the rendition whose segments live at `segment_url`: announce to the
    /// tracker, learn the origin's key, listen for peers. Returns the core's half too.
    pub async fn join(
        args: &P2pArgs,
        client: &reqwest::Client,
        segment_url: &Url,
        tx: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(Self, Sharing)> {
        let Some(tracker) = &args.tracker else { bail!("--p2p needs --tracker URL") };
        let tracker = Url::parse(tracker).with_context(|| format!("invalid tracker URL {tracker:?}"))?;
        let (channel, rendition) = names_from_url(segment_url)?;
        let id: u64 = rand::random();
        let endpoint = crate::common::quic::server_endpoint(args.peer_bind, None)?;
        let announcement = PeerAnnounce {
            id,
            channel: channel.clone(),
            rendition: rendition.clone(),
            region: args.region.clone(),
            addr: endpoint.local_addr()?.to_string(),
            rtt_ms: BTreeMap::new(),
            peer_bytes: 0,
            edge_bytes: 0,
        };
        let announce_url = tracker.join("/api/v1/p2p/announce")?;
        let first = post_json::<_, PeerAnnounceReply>(client, &announce_url, None, &announcement)
            .await
            .context("announcing to the tracker")?;
        let verifier = match (&args.origin_key, &first.origin_key) {
            (Some(file), _) => Ed25519Verifier::from_file(file)?,
            (None, Some(hex)) => Ed25519Verifier::from_hex(hex)?,
            (None, None) => bail!(
                "--p2p needs the origin's public key to check what peers send: --origin-key FILE, or a tracker started with --origin-key"
            ),
        };
        let cfg = SwarmConfig {
            seeders: args.seeders.max(1),
            margin: Duration::from_millis(args.p2p_margin_ms),
            upload_slots: args.upload_slots.max(1),
            max_peers: args.max_peers.max(1),
            ..SwarmConfig::default()
        };
        let swarm = Swarm::new(cfg.clone(), channel.clone(), rendition.clone());
        let me = Me {
            id,
            channel,
            rendition,
            region: args.region.clone(),
            max_segment: relaycast_core::wire::DEFAULT_MAX_SEGMENT,
        };
        let uploads = Uploads {
            pacer: Arc::new(crate::common::egress::Egress::new(args.upload_kbps)),
            corrupt: args.corrupt_uploads,
        };
        let (net_tx, net_rx) = mpsc::unbounded_channel();
        let refresh = Duration::from_millis(first.refresh_ms.clamp(100, 60_000));
        let mut net = Self {
            id,
            region: args.region.clone(),
            client: client.clone(),
            tracker,
            endpoint,
            me,
            net_tx,
            tx,
            uploads,
            links: BTreeMap::new(),
            dialing: BTreeMap::new(),
            store: BTreeMap::new(),
            fetches: BTreeMap::new(),
            asked: BTreeMap::new(),
            need_peers: Arc::new(Notify::new()),
            measured: Arc::default(),
            announcement,
            announce_url,
            refresh,
            cfg,
            verifier: verifier.clone(),
            tasks: Vec::new(),
            swarm_tasks: Vec::new(),
            reported: Vec::new(),
        };
        net.forward(net_rx);
        net.start_swarm_tasks();
        let _ = net.tx.send(PeerEvent::Tracker(Ok(first)));
        Ok((net, Sharing { swarm, verifier: Box::new(verifier) }))
    }

    /// Move to the swarm of `rendition` (client ABR changed it; a swarm shares one rendition):
    /// leave the old swarm's peers, announce in the new one at once, and give the session a
    /// fresh swarm policy for it.
    pub fn move_to(&mut self, now: Instant, rendition: Name, session: &mut Session) {
        tracing::info!(viewer = self.id, from = %self.me.rendition, to = %rendition, "moving to the swarm of another rendition");
        for (_, link) in std::mem::take(&mut self.links) {
            link.conn.close(0u32.into(), b"changed rendition");
        }
        for (_, (task, _)) in std::mem::take(&mut self.fetches) {
            task.abort();
        }
        self.dialing.clear();
        self.me.rendition = rendition.clone();
        self.announcement.rendition = rendition.clone();
        for t in self.swarm_tasks.drain(..) {
            t.abort();
        }
        self.start_swarm_tasks();
        self.need_peers.notify_one();
        let swarm = Swarm::new(self.cfg.clone(), self.me.channel.clone(), rendition);
        session.rejoin(now, Sharing { swarm, verifier: Box::new(self.verifier.clone()) });
    }

    /// Forward link events to the viewer loop.
    fn forward(&mut self, mut net_rx: mpsc::UnboundedReceiver<NetEvent>) {
        let tx = self.tx.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(ev) = net_rx.recv().await {
                if tx.send(PeerEvent::Net(ev)).is_err() {
                    return;
                }
            }
        }));
    }

    /// Accept peers of this swarm, and announce every refresh period — or at once when the
    /// swarm needs peers — with the RTT QUIC measured to each peer, which the tracker ranks
    /// by (F51).
    fn start_swarm_tasks(&mut self) {
        let accept = peers::accept(self.endpoint.clone(), self.me.clone(), self.net_tx.clone(), self.uploads.clone());
        self.swarm_tasks.push(tokio::spawn(accept));
        let (client, tx, need, measured) =
            (self.client.clone(), self.tx.clone(), self.need_peers.clone(), self.measured.clone());
        let (url, mut announcement, refresh) = (self.announce_url.clone(), self.announcement.clone(), self.refresh);
        self.swarm_tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(refresh) => {}
                    _ = need.notified() => tokio::time::sleep(Duration::from_millis(100)).await,
                }
                {
                    let m = measured.lock().expect("measured lock");
                    announcement.rtt_ms = m.rtt_ms.clone();
                    (announcement.peer_bytes, announcement.edge_bytes) = (m.peer_bytes, m.edge_bytes);
                }
                let r = post_json::<_, PeerAnnounceReply>(&client, &url, None, &announcement)
                    .await
                    .map_err(|e| format!("{e:#}"));
                if tx.send(PeerEvent::Tracker(r)).is_err() {
                    return;
                }
            }
        }));
    }

    /// A verified segment (from a server or a peer): keep it for peers and for playing.
    pub fn hold(&mut self, seq: u64, held: Held) {
        self.store.insert(seq, (self.me.rendition.clone(), held));
        self.trim();
    }

    /// Keep the newest [`MAX_HAVE`] segments: what peers may ask for.
    fn trim(&mut self) {
        while self.store.len() > MAX_HAVE {
            self.store.pop_first();
        }
    }

    /// The held copy of `seq`, its rendition, and when it was asked of a peer, to play it.
    pub fn take_for_playing(&mut self, seq: u64) -> Option<(Held, Name, Option<Instant>)> {
        let (rendition, held) = self.store.get(&seq)?.clone();
        Some((held, rendition, self.asked.remove(&seq)))
    }

    /// The latest RTT QUIC measured to each peer and the bytes taken so far, for the next
    /// announcement.
    pub fn refresh_measured(&self, session: &Session) {
        let st = session.swarm().map(|s| s.stats().clone()).unwrap_or_default();
        let mut m = self.measured.lock().expect("measured lock");
        m.rtt_ms = self.links.iter().map(|(k, l)| (*k, l.conn.rtt().as_secs_f64() * 1000.0)).collect();
        (m.peer_bytes, m.edge_bytes) = (st.peer_bytes, st.edge_bytes);
    }

    /// An event from the peer tasks.
    pub fn handle(&mut self, now: Instant, ev: PeerEvent, session: &mut Session) {
        match ev {
            PeerEvent::Tracker(Ok(reply)) => self.tracker_reply(now, reply, session),
            PeerEvent::Tracker(Err(e)) => tracing::warn!(viewer = self.id, error = %e, "tracker unreachable"),
            PeerEvent::Piece { peer, seq, result } => self.piece(now, peer, seq, result, session),
            PeerEvent::Net(NetEvent::Up { peer, region, conn, control, dialed }) => {
                self.link_up(now, peer, &region, Link { conn, control, dialed }, session);
            }
            PeerEvent::Net(NetEvent::Have { peer, seqs }) => session.peer_have(now, peer, &seqs),
            PeerEvent::Net(NetEvent::Down { peer, conn_id }) => {
                if self.links.get(&peer).is_some_and(|l| l.conn.stable_id() == conn_id) {
                    self.links.remove(&peer);
                    session.peer_lost(now, peer);
                }
            }
            PeerEvent::Net(NetEvent::Upload { peer, seq, reply }) => {
                // A granted slot is returned by UploadDone once the upload ends.
                let answer = match session.upload_request(now, peer, seq) {
                    Ok(()) => self.store.get(&seq).map(|(_, held)| held.clone()).ok_or_else(|| {
                        session.upload_done(0);
                        RejectReason::NotHeld
                    }),
                    Err(reason) => Err(reason),
                };
                let granted = answer.is_ok();
                if reply.send(answer).is_err() && granted {
                    session.upload_done(0);
                }
            }
            PeerEvent::Net(NetEvent::UploadDone { bytes }) => session.upload_done(bytes),
        }
    }

    fn tracker_reply(&mut self, now: Instant, reply: PeerAnnounceReply, session: &mut Session) {
        session.set_position(reply.position, reply.swarm_size);
        let Some(swarm) = session.swarm() else { return };
        for peer in reply.peers {
            if swarm.peer_count() + self.dialing.len() >= swarm.config().max_peers {
                break;
            }
            if self.links.contains_key(&peer.id) || self.dialing.contains_key(&peer.id) || swarm.is_banned(now, peer.id)
            {
                continue;
            }
            let Ok(addr) = peer.addr.parse::<SocketAddr>() else { continue };
            self.dialing.insert(peer.id, now);
            let dial =
                peers::dial(self.endpoint.clone(), addr, self.me.clone(), self.net_tx.clone(), self.uploads.clone());
            tokio::spawn(dial);
        }
        self.dialing.retain(|_, t| now.duration_since(*t) < Duration::from_secs(5));
    }

    fn link_up(&mut self, now: Instant, peer: PeerKey, region: &str, link: Link, session: &mut Session) {
        self.dialing.remove(&peer);
        if let Some(old) = self.links.get(&peer) {
            // Both sides dialed each other: keep the connection the lower id dialed.
            let keep_new = link.dialed == (self.id < peer) && old.dialed != link.dialed;
            if keep_new {
                let old = self.links.insert(peer, link).expect("present");
                old.conn.close(0u32.into(), b"duplicate");
                send_have(&self.links[&peer], session);
            } else {
                link.conn.close(0u32.into(), b"duplicate");
            }
            return;
        }
        let same_region = !self.region.is_empty() && region == self.region;
        if session.peer_connected(now, peer, same_region, Some(link.conn.rtt())) {
            send_have(&link, session);
            self.links.insert(peer, link);
        } else {
            link.conn.close(0u32.into(), b"not now");
        }
    }

    fn piece(
        &mut self,
        now: Instant,
        peer: PeerKey,
        seq: u64,
        result: Result<(Bytes, Signature, u64), String>,
        session: &mut Session,
    ) {
        let Some((_, asked)) = self.fetches.remove(&(peer, seq)) else { return };
        match result {
            Ok((data, signature, origin_ms)) => {
                // Held before the session is told, so a Play it decides finds the bytes.
                let held = Held { data: data.clone(), signature, origin_ms };
                let previous = self.store.insert(seq, (self.me.rendition.clone(), held));
                self.asked.insert(seq, asked);
                if session.peer_piece(now, peer, seq, &data, &signature) == PieceOutcome::Rejected {
                    self.asked.remove(&seq);
                    match previous {
                        Some(p) => self.store.insert(seq, p),
                        None => self.store.remove(&seq),
                    };
                    tracing::warn!(
                        viewer = self.id,
                        peer,
                        seq,
                        "peer sent bytes that fail the origin's signature; dropping and reporting it"
                    );
                } else {
                    self.trim();
                }
            }
            Err(e) => {
                tracing::debug!(viewer = self.id, peer, seq, error = %e, "peer fetch failed");
                session.peer_failed(now, peer, seq);
            }
        }
    }

    /// Carry out what the session asked of peers.
    pub fn perform(&mut self, out: Output, session: &mut Session) {
        match out {
            Output::FetchPeer { peer, seq } => {
                let Some(link) = self.links.get(&peer) else {
                    return session.peer_failed(Instant::now(), peer, seq);
                };
                let (conn, tx) = (link.conn.clone(), self.tx.clone());
                let task = tokio::spawn(async move {
                    let result = peers::fetch(conn, seq, relaycast_core::wire::DEFAULT_MAX_SEGMENT)
                        .await
                        .map_err(|e| format!("{e:#}"));
                    let _ = tx.send(PeerEvent::Piece { peer, seq, result });
                });
                self.fetches.insert((peer, seq), (task, Instant::now()));
            }
            Output::CancelPeer { peer, seq } => {
                if let Some((task, _)) = self.fetches.remove(&(peer, seq)) {
                    task.abort();
                }
            }
            Output::DropPeer { peer, reason } => {
                tracing::info!(viewer = self.id, peer, %reason, "dropping peer");
                if let Some(l) = self.links.remove(&peer) {
                    l.conn.close(1u32.into(), reason.as_bytes());
                }
            }
            Output::ReportPeer { peer } => self.report(peer),
            Output::NeedPeers => self.need_peers.notify_one(),
            Output::Advertise { seqs } => {
                for l in self.links.values() {
                    let _ = l.control.send(PeerMessage::Have { seqs: seqs.clone() });
                }
            }
            other => tracing::debug!(?other, "not a peer output"),
        }
    }

    fn report(&mut self, peer: PeerKey) {
        self.reported.push(peer);
        let Ok(url) = self.tracker.join("/api/v1/p2p/report") else { return };
        let report = PeerReport { reporter: self.id, peer, reason: "segment fails the origin's signature".into() };
        let client = self.client.clone();
        tokio::spawn(async move {
            let body = serde_json::to_vec(&report).unwrap_or_default();
            let sent = client.post(url).header("content-type", "application/json").body(body).send().await;
            if let Err(e) = sent.and_then(|r| r.error_for_status()) {
                tracing::warn!(peer, error = %e, "could not report a peer to the tracker");
            }
        });
    }

    /// The `p2p` record of the QoE log: where the bytes came from, what was caught.
    pub fn record(&self, session: &Session) -> serde_json::Value {
        let st = session.swarm().map(|s| s.stats().clone()).unwrap_or_default();
        json!({
            "type": "p2p", "viewer": self.id, "edge_bytes": st.edge_bytes, "peer_bytes": st.peer_bytes,
            "uploaded_bytes": st.uploaded_bytes, "bad_pieces": st.bad_pieces, "peer_timeouts": st.peer_timeouts,
            "fallbacks": st.fallbacks, "reported": self.reported, "peers": self.links.len(),
        })
    }

    /// Stop every task and close the endpoint.
    pub fn close(&mut self) {
        let fetches = std::mem::take(&mut self.fetches).into_values().map(|(t, _)| t);
        for t in self.tasks.drain(..).chain(self.swarm_tasks.drain(..)).chain(fetches) {
            t.abort();
        }
        self.endpoint.close(0u32.into(), b"done");
    }
}

fn send_have(link: &Link, session: &Session) {
    let seqs: Vec<u64> = session.swarm().map(|s| s.held().collect()).unwrap_or_default();
    if !seqs.is_empty() {
        let _ = link.control.send(PeerMessage::Have { seqs });
    }
}

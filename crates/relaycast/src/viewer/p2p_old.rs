//! `relaycast watch --p2p` (F50–F53): a viewer that shares segments with other viewers.
//!
//! It announces itself to the tracker (channel, rendition, region, QUIC address), links to the
//! peers the tracker ranks for it, and plays the edge's media playlist in order, taking each
//! segment from wherever the core's [`Swarm`] decides: the edge at once (this viewer's turn to
//! seed it), a peer that holds it, or the edge as a fallback `margin` before its playback
//! deadline. Every segment — from the edge or a peer — is checked against the origin's
//! Ed25519 signature before it is played or offered to anyone; a peer that sends bad bytes is
//! dropped and reported to the tracker.
//!
//! Also the bypass (F52): with `--tracker` and `--region`, a viewer in the broadcaster's
//! region is sent to the ingest-side node directly ([`apply_bypass`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use quinn::Connection;
use relaycast_core::Name;
use relaycast_core::buffer::PlaybackBuffer;
use relaycast_core::multisource::SchedulerConfig;
use relaycast_core::p2p::signing::{Signature, from_hex};
use relaycast_core::p2p::swarm::PieceOutcome;
use relaycast_core::p2p::wire::PeerMessage;
use relaycast_core::p2p::{PeerKey, Swarm, SwarmAction, SwarmConfig};
use reqwest::Url;
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use super::peers::{self as net, Held, Me, NetEvent, Uploads};
use crate::common::http::post_json;
use crate::common::signing::{Ed25519Verifier, sha256_hex};
use crate::common::wall_ms;
use crate::viewer::qoe::QoeLog;
use crate::viewer::{Summary, WatchArgs};
use relaycast_core::p2p::peers::PeerAnnounce;
use relaycast_core::p2p::peers::PeerAnnounceReply;
use relaycast_core::p2p::peers::PeerReport;

/// Flags of `relaycast watch` for sharing and the bypass.
#[derive(Args, Debug, Clone)]
pub struct P2pArgs {
    /// Share segments with other viewers (F50); needs --tracker.
    #[arg(long, requires = "tracker")]
    pub p2p: bool,
    /// Tracker URL (e.g. http://127.0.0.1:7070): P2P peers, the origin's key, the bypass.
    #[arg(long, value_name = "URL")]
    pub tracker: Option<String>,
    /// This viewer's region: peers in it are preferred; in the broadcaster's region the
    /// tracker sends the viewer to the ingest-side node directly (bypass, F52).
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
    /// Fall back to the edge this long before a segment's playback deadline, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub p2p_margin_ms: u64,
    /// Viewers that fetch each segment from the edge at once.
    #[arg(long, default_value_t = 2)]
    pub seeders: usize,
    /// Test hook: corrupt every segment uploaded to peers (a lying peer).
    #[arg(long, hide = true)]
    pub corrupt_uploads: bool,
}

/// How long a viewer that has not started playing waits for peers before the edge.
const STARTUP_PATIENCE: Duration = Duration::from_millis(2000);

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

/// Events of one P2P viewer.
enum Ev {
    Net(NetEvent),
    Playlist(Result<crate::viewer::Listing, String>),
    Tracker(Result<PeerAnnounceReply, String>),
    Edge { seq: u64, result: Result<(Bytes, Option<Signature>, Option<u64>), String>, requested: Instant },
    Peer { peer: PeerKey, seq: u64, result: Result<(Bytes, Signature, u64), String>, requested: Instant },
}

struct Link {
    conn: Connection,
    control: mpsc::UnboundedSender<PeerMessage>,
    dialed: bool,
}

/// A segment fetched and verified, waiting for its turn to play.
struct Ready {
    data: Bytes,
    from: &'static str,
    peer: Option<PeerKey>,
    requested: Instant,
    origin_ms: Option<u64>,
}

pub async fn watch_one(args: &WatchArgs, client: reqwest::Client, index: usize) -> Result<Summary> {
    let p = &args.p2p;
    let Some(tracker) = &p.tracker else { bail!("--p2p needs --tracker URL") };
    let tracker = Url::parse(tracker).with_context(|| format!("invalid tracker URL {tracker:?}"))?;
    let Some(source) = args.sources.first() else { bail!("no playlist URL") };
    let started = Instant::now();
    let elapsed_ms = move |t: Instant| t.saturating_duration_since(started).as_secs_f64() * 1000.0;
    let media = crate::viewer::resolve_media_playlist(&client, source, args.rendition.as_deref()).await?;
    let (listing, _) = crate::viewer::poll_playlist(&client, &media).await?;
    let Some((_, _, first_uri)) = listing.first() else { bail!("{media} lists no segments yet") };
    let (channel, rendition) = names_from_url(first_uri)?;
    let id: u64 = rand::random();
    let endpoint = crate::common::quic::server_endpoint(p.peer_bind)?;
    let addr = endpoint.local_addr()?;

    let announce_url = tracker.join("/api/v1/p2p/announce")?;
    let announcement = PeerAnnounce {
        id,
        channel: channel.clone(),
        rendition: rendition.clone(),
        region: p.region.clone(),
        addr: addr.to_string(),
        rtt_ms: BTreeMap::new(),
    };
    let first = post_json::<_, PeerAnnounceReply>(&client, &announce_url, &announcement)
        .await
        .context("announcing to the tracker")?;
    let verifier = match (&p.origin_key, &first.origin_key) {
        (Some(file), _) => Ed25519Verifier::from_file(file)?,
        (None, Some(hex)) => Ed25519Verifier::from_hex(hex)?,
        (None, None) => bail!(
            "--p2p needs the origin's public key to check what peers send: --origin-key FILE, or a tracker started with --origin-key"
        ),
    };
    let cfg = SwarmConfig {
        seeders: p.seeders.max(1),
        margin: Duration::from_millis(p.p2p_margin_ms),
        upload_slots: p.upload_slots.max(1),
        max_peers: p.max_peers.max(1),
        ..SwarmConfig::default()
    };
    let mut swarm = Swarm::new(cfg, channel.clone(), rendition.clone());
    swarm.set_position(first.position, first.swarm_size);

    let label = args.label.clone().unwrap_or_else(|| "p2p".into());
    let log_path = args
        .log
        .as_ref()
        .map(|p| if index == 0 { p.clone() } else { PathBuf::from(format!("{}.{index}", p.display())) });
    let mut log = QoeLog::create(log_path.as_deref()).await?;
    log.write(json!({"type": "start", "unix_ms": wall_ms(), "label": label, "mode": "p2p", "sources": [media.as_str()], "viewer": id, "region": p.region}))
        .await?;
    log.write(json!({"type": "rtt", "source": 0, "rtt_ms": crate::viewer::min_rtt_ms(&media).await})).await?;

    let (tx, mut rx) = mpsc::unbounded_channel::<Ev>();
    let (net_tx, mut net_rx) = mpsc::unbounded_channel::<NetEvent>();
    let me = Me {
        id,
        channel: channel.clone(),
        rendition: rendition.clone(),
        region: p.region.clone(),
        max_segment: relaycast_core::wire::DEFAULT_MAX_SEGMENT,
    };
    let uploads =
        Uploads { pacer: Arc::new(crate::common::egress::Egress::new(p.upload_kbps)), corrupt: p.corrupt_uploads };
    let mut tasks = vec![tokio::spawn(net::accept(endpoint.clone(), me.clone(), net_tx.clone(), uploads.clone()))];
    {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = net_rx.recv().await {
                if tx.send(Ev::Net(ev)).is_err() {
                    return;
                }
            }
        }));
    }
    // Playlist poller.
    {
        let (client, tx, media) = (client.clone(), tx.clone(), media.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let result = crate::viewer::poll_playlist(&client, &media).await.map_err(|e| format!("{e:#}"));
                let wait = match &result {
                    Ok((_, target)) => (*target / 4).clamp(Duration::from_millis(200), Duration::from_secs(2)),
                    Err(_) => Duration::from_secs(1),
                };
                if tx.send(Ev::Playlist(result)).is_err() {
                    return;
                }
                tokio::time::sleep(wait).await;
            }
        }));
    }
    // Tracker announcer: every refresh period, and at once when the swarm needs peers. It
    // reports the RTT QUIC measured to each current peer, which the tracker ranks by (F51).
    let need_peers = Arc::new(Notify::new());
    let peer_rtts: Arc<std::sync::Mutex<BTreeMap<u64, f64>>> = Arc::default();
    {
        let (client, tx, url, mut a, need) =
            (client.clone(), tx.clone(), announce_url.clone(), announcement.clone(), need_peers.clone());
        let rtts = peer_rtts.clone();
        let refresh = Duration::from_millis(first.refresh_ms.clamp(100, 60_000));
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(refresh) => {}
                    _ = need.notified() => tokio::time::sleep(Duration::from_millis(100)).await,
                }
                a.rtt_ms = rtts.lock().expect("rtt lock").clone();
                let r = post_json::<_, PeerAnnounceReply>(&client, &url, &a).await.map_err(|e| format!("{e:#}"));
                if tx.send(Ev::Tracker(r)).is_err() {
                    return;
                }
            }
        }));
    }
    let _ = tx.send(Ev::Tracker(Ok(first)));

    let mut output = if index == 0 { crate::viewer::Output::open(args).await? } else { crate::viewer::Output::None };
    let mut buffer = PlaybackBuffer::new(Duration::from_secs_f64(args.startup.max(0.0)));
    let mut listed: BTreeMap<u64, (Url, Duration, Instant)> = BTreeMap::new();
    let mut next_seq: Option<u64> = None;
    let mut ready: BTreeMap<u64, Ready> = BTreeMap::new();
    let mut store: BTreeMap<u64, Held> = BTreeMap::new();
    let mut links: BTreeMap<PeerKey, Link> = BTreeMap::new();
    let mut dialing: BTreeMap<PeerKey, Instant> = BTreeMap::new();
    let mut edge_tasks: BTreeMap<u64, tokio::task::JoinHandle<()>> = BTreeMap::new();
    let mut peer_tasks: BTreeMap<(PeerKey, u64), tokio::task::JoinHandle<()>> = BTreeMap::new();
    let mut summary = Summary::default();
    let mut reported: Vec<PeerKey> = Vec::new();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_buffer_log = 0.0f64;
    let live_offset = SchedulerConfig::default().live_offset as u64;
    let margin = swarm.config().margin;

    loop {
        tokio::select! {
            Some(ev) = rx.recv() => {
                let now = Instant::now();
                match ev {
                    Ev::Playlist(Ok((segments, _target))) => {
                        for (seq, d, uri) in &segments {
                            listed.entry(*seq).or_insert((uri.clone(), *d, now));
                        }
                        if let (None, Some(newest)) = (next_seq, segments.last()) {
                            next_seq = Some(newest.0.saturating_sub(live_offset).max(segments[0].0));
                        }
                        if let Some(oldest) = segments.first().map(|s| s.0) {
                            listed.retain(|s, _| *s >= oldest.saturating_sub(64));
                        }
                    }
                    Ev::Playlist(Err(e)) => tracing::warn!(viewer = index, error = %e, "playlist reload failed"),
                    Ev::Tracker(Ok(reply)) => {
                        swarm.set_position(reply.position, reply.swarm_size);
                        for peer in reply.peers {
                            if swarm.peer_count() + dialing.len() >= swarm.config().max_peers {
                                break;
                            }
                            if links.contains_key(&peer.id) || dialing.contains_key(&peer.id) || swarm.is_banned(now, peer.id) {
                                continue;
                            }
                            let Ok(a) = peer.addr.parse::<SocketAddr>() else { continue };
                            dialing.insert(peer.id, now);
                            tokio::spawn(net::dial(endpoint.clone(), a, me.clone(), net_tx.clone(), uploads.clone()));
                        }
                        dialing.retain(|_, t| now.duration_since(*t) < Duration::from_secs(5));
                    }
                    Ev::Tracker(Err(e)) => tracing::warn!(viewer = index, error = %e, "tracker unreachable"),
                    Ev::Net(NetEvent::Up { peer, region, conn, control, dialed }) => {
                        dialing.remove(&peer);
                        match links.get(&peer) {
                            // Both sides dialed each other: keep the connection the lower id dialed.
                            Some(old) => {
                                let keep_new = dialed == (id < peer) && old.dialed != dialed;
                                if keep_new {
                                    let old = links.insert(peer, Link { conn, control, dialed }).expect("present");
                                    old.conn.close(0u32.into(), b"duplicate");
                                    send_have(&links[&peer], &swarm);
                                } else {
                                    conn.close(0u32.into(), b"duplicate");
                                }
                            }
                            None => {
                                let same = !p.region.is_empty() && region == p.region;
                                if swarm.add_peer(now, peer, same, Some(conn.rtt())) {
                                    let link = Link { conn, control, dialed };
                                    send_have(&link, &swarm);
                                    links.insert(peer, link);
                                } else {
                                    conn.close(0u32.into(), b"not now");
                                }
                            }
                        }
                    }
                    Ev::Net(NetEvent::Have { peer, seqs }) => swarm.peer_have(now, peer, &seqs),
                    Ev::Net(NetEvent::Down { peer, conn_id }) => {
                        if links.get(&peer).is_some_and(|l| l.conn.stable_id() == conn_id) {
                            links.remove(&peer);
                            swarm.remove_peer(now, peer);
                        }
                    }
                    Ev::Net(NetEvent::Upload { peer, seq, reply }) => {
                        // A granted slot is returned by UploadDone once the upload ends.
                        let answer = match swarm.upload_request(now, peer, seq) {
                            Ok(()) => store.get(&seq).cloned().ok_or_else(|| {
                                swarm.upload_done(0);
                                relaycast_core::p2p::wire::RejectReason::NotHeld
                            }),
                            Err(reason) => Err(reason),
                        };
                        let granted = answer.is_ok();
                        if reply.send(answer).is_err() && granted {
                            swarm.upload_done(0);
                        }
                    }
                    Ev::Net(NetEvent::UploadDone { bytes }) => swarm.upload_done(bytes),
                    Ev::Edge { seq, result, requested } => {
                        edge_tasks.remove(&seq);
                        match result {
                            Ok((data, sig, origin_ms)) => {
                                match swarm.piece_from_edge(now, seq, &data, sig.as_ref(), &verifier) {
                                    PieceOutcome::Rejected => {
                                        tracing::error!(viewer = index, seq, signed = sig.is_some(), "edge bytes fail the origin's signature; not played, fetched again");
                                    }
                                    outcome => {
                                        let held = Held { data: data.clone(), signature: sig.expect("verified"), origin_ms: origin_ms.unwrap_or(0) };
                                        store.insert(seq, held);
                                        if outcome == PieceOutcome::Accepted {
                                            ready.insert(seq, Ready { data, from: "edge", peer: None, requested, origin_ms });
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::warn!(viewer = index, seq, error = %e, "edge fetch failed");
                                swarm.edge_failed(now, seq);
                            }
                        }
                    }
                    Ev::Peer { peer, seq, result, requested } => {
                        peer_tasks.remove(&(peer, seq));
                        match result {
                            Ok((data, sig, origin_ms)) => match swarm.piece_from_peer(now, peer, seq, &data, &sig, &verifier) {
                                PieceOutcome::Rejected => {
                                    tracing::warn!(viewer = index, peer, seq, "peer sent bytes that fail the origin's signature; dropping and reporting it");
                                    log.write(json!({"type": "bad_peer", "t_ms": elapsed_ms(now), "peer": peer, "seq": seq})).await?;
                                }
                                outcome => {
                                    store.insert(seq, Held { data: data.clone(), signature: sig, origin_ms });
                                    if outcome == PieceOutcome::Accepted {
                                        ready.insert(seq, Ready { data, from: "peer", peer: Some(peer), requested, origin_ms: Some(origin_ms) });
                                    }
                                }
                            },
                            Err(e) => {
                                tracing::debug!(viewer = index, peer, seq, error = %e, "peer fetch failed");
                                swarm.peer_failed(now, peer, seq);
                            }
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                buffer.advance(now);
                // In-order delivery.
                while let Some(next) = next_seq {
                    if let Some(r) = ready.remove(&next) {
                        let duration = listed.get(&next).map_or(Duration::from_secs(2), |l| l.1);
                        buffer.push(now, duration);
                        let done_ms = elapsed_ms(now);
                        let source = if r.from == "edge" { 0 } else { 1 };
                        log.write(json!({
                            "type": "segment", "seq": next, "source": source, "from": r.from, "peer": r.peer,
                            "request_ms": elapsed_ms(r.requested), "first_byte_ms": null, "done_ms": done_ms,
                            "bytes": r.data.len(), "duration_ms": duration.as_millis(),
                            "origin_delay_ms": r.origin_ms.map(|o| wall_ms().saturating_sub(o)), "hedge": false,
                            "sha256": sha256_hex(&r.data),
                        })).await?;
                        summary.segments += 1;
                        summary.bytes += r.data.len() as u64;
                        output.write(r.data).await?;
                        next_seq = Some(next + 1);
                        continue;
                    }
                    // Gone from the edge's window and not fetched: skip it, as a player would.
                    let oldest_listed = listed.keys().next().copied();
                    let gone = !listed.contains_key(&next) && oldest_listed.is_some_and(|o| o > next);
                    let newest = listed.keys().next_back().copied();
                    let stale = !listed.contains_key(&next) && newest.is_some_and(|n| n > next + 8);
                    if gone || stale {
                        swarm.unwant(next);
                        summary.skipped += 1;
                        log.write(json!({"type": "skip", "seq": next, "t_ms": elapsed_ms(now)})).await?;
                        next_seq = Some(next + 1);
                        continue;
                    }
                    break;
                }
                // Deadlines of everything listed from the next segment on.
                if let Some(next) = next_seq {
                    let base = match buffer.deadline() {
                        Some(d) => d,
                        None if buffer.started_at().is_none() => listed
                            .get(&next)
                            .map_or(now, |l| l.2 + STARTUP_PATIENCE + margin),
                        None => now,
                    };
                    let mut at = base;
                    let wanted: Vec<(u64, Duration)> = listed.range(next..).map(|(s, l)| (*s, l.1)).collect();
                    for (seq, duration) in wanted {
                        if !ready.contains_key(&seq) && !store.contains_key(&seq) {
                            swarm.want(now, seq, at);
                        } else if !ready.contains_key(&seq) && seq >= next {
                            // Held (e.g. fetched as "unwanted" earlier): play it.
                            if let Some(h) = store.get(&seq) {
                                ready.insert(seq, Ready { data: h.data.clone(), from: "peer", peer: None, requested: now, origin_ms: Some(h.origin_ms) });
                            }
                        }
                        at += duration;
                    }
                }
                if swarm.poll_timeout().is_some_and(|t| t <= now) {
                    swarm.handle_timeout(now);
                }
                while store.len() > relaycast_core::p2p::wire::MAX_HAVE {
                    store.pop_first();
                }
                if elapsed_ms(now) - last_buffer_log >= 250.0 {
                    last_buffer_log = elapsed_ms(now);
                    *peer_rtts.lock().expect("rtt lock") =
                        links.iter().map(|(k, l)| (*k, l.conn.rtt().as_secs_f64() * 1000.0)).collect();
                    log.write(json!({"type": "buffer", "t_ms": last_buffer_log, "level_ms": buffer.level().as_millis() as u64})).await?;
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
            }
            _ = crate::common::shutdown_signal(), if index <= 1 => break,
        }
        // Carry out what the swarm decided.
        while let Some(action) = swarm.poll_action() {
            match action {
                SwarmAction::FetchEdge { seq } => {
                    let Some((uri, _, _)) = listed.get(&seq).cloned() else {
                        swarm.edge_failed(Instant::now(), seq);
                        continue;
                    };
                    let (client, tx) = (client.clone(), tx.clone());
                    let requested = Instant::now();
                    edge_tasks.insert(
                        seq,
                        tokio::spawn(async move {
                            let result = fetch_edge(&client, &uri).await.map_err(|e| format!("{e:#}"));
                            let _ = tx.send(Ev::Edge { seq, result, requested });
                        }),
                    );
                }
                SwarmAction::FetchPeer { peer, seq } => {
                    let Some(link) = links.get(&peer) else {
                        swarm.peer_failed(Instant::now(), peer, seq);
                        continue;
                    };
                    let (conn, tx) = (link.conn.clone(), tx.clone());
                    let requested = Instant::now();
                    peer_tasks.insert(
                        (peer, seq),
                        tokio::spawn(async move {
                            let result = net::fetch(conn, seq, relaycast_core::wire::DEFAULT_MAX_SEGMENT)
                                .await
                                .map_err(|e| format!("{e:#}"));
                            let _ = tx.send(Ev::Peer { peer, seq, result, requested });
                        }),
                    );
                }
                SwarmAction::CancelEdge { seq } => {
                    if let Some(t) = edge_tasks.remove(&seq) {
                        t.abort();
                    }
                }
                SwarmAction::CancelPeer { peer, seq } => {
                    if let Some(t) = peer_tasks.remove(&(peer, seq)) {
                        t.abort();
                    }
                }
                SwarmAction::DropPeer { peer, reason } => {
                    tracing::info!(viewer = index, peer, %reason, "dropping peer");
                    if let Some(l) = links.remove(&peer) {
                        l.conn.close(1u32.into(), reason.as_bytes());
                    }
                }
                SwarmAction::ReportPeer { peer } => {
                    reported.push(peer);
                    let (client, url) = (client.clone(), tracker.join("/api/v1/p2p/report")?);
                    let report =
                        PeerReport { reporter: id, peer, reason: "segment fails the origin's signature".into() };
                    tokio::spawn(async move {
                        let body = serde_json::to_vec(&report).unwrap_or_default();
                        let sent = client.post(url).header("content-type", "application/json").body(body).send().await;
                        if let Err(e) = sent.and_then(|r| r.error_for_status()) {
                            tracing::warn!(peer, error = %e, "could not report a peer to the tracker");
                        }
                    });
                }
                SwarmAction::NeedPeers => need_peers.notify_one(),
                SwarmAction::Advertise { seqs } => {
                    for l in links.values() {
                        let _ = l.control.send(PeerMessage::Have { seqs: seqs.clone() });
                    }
                }
            }
        }
    }

    for t in tasks.into_iter().chain(edge_tasks.into_values()).chain(peer_tasks.into_values()) {
        t.abort();
    }
    let now = Instant::now();
    buffer.finish(now);
    for stall in buffer.stalls() {
        let start_ms = elapsed_ms(stall.start);
        log.write(json!({"type": "stall", "start_ms": start_ms, "duration_ms": stall.duration.as_millis()})).await?;
    }
    summary.stalls = buffer.stalls().len();
    summary.stall_time = buffer.stall_time();
    let st = swarm.stats().clone();
    log.write(json!({
        "type": "p2p", "viewer": id, "edge_bytes": st.edge_bytes, "peer_bytes": st.peer_bytes,
        "uploaded_bytes": st.uploaded_bytes, "bad_pieces": st.bad_pieces, "peer_timeouts": st.peer_timeouts,
        "fallbacks": st.fallbacks, "reported": reported, "peers": links.len(),
    }))
    .await?;
    log.write(json!({
        "type": "end", "t_ms": elapsed_ms(now), "segments": summary.segments, "stalls": summary.stalls,
        "stall_ms": summary.stall_time.as_millis(), "bytes": summary.bytes, "duplicate_bytes": 0,
        "skipped": summary.skipped,
    }))
    .await?;
    log.flush().await?;
    output.close().await?;
    endpoint.close(0u32.into(), b"done");
    if index <= 1 {
        let total = (st.edge_bytes + st.peer_bytes).max(1);
        eprintln!(
            "p2p: {:.1} % of bytes from peers, uploaded {} bytes, {} bad pieces",
            st.peer_bytes as f64 * 100.0 / total as f64,
            st.uploaded_bytes,
            st.bad_pieces
        );
    }
    Ok(summary)
}

fn send_have(link: &Link, swarm: &Swarm) {
    let seqs: Vec<u64> = swarm.held().collect();
    if !seqs.is_empty() {
        let _ = link.control.send(PeerMessage::Have { seqs });
    }
}

/// Channel and rendition from a Relaycast segment URL (`.../live/{channel}/{rendition}/{seq}.ts`):
/// they name the swarm and are part of what the origin signed.
fn names_from_url(url: &Url) -> Result<(Name, Name)> {
    let parts: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    match parts.as_slice() {
        [.., "live", c, r, _] => Ok((Name::new(*c)?, Name::new(*r)?)),
        _ => bail!("--p2p needs a Relaycast stream (segments at /live/CHANNEL/RENDITION/SEQ.ts), got {url}"),
    }
}

/// GET a segment from the edge: bytes, the origin's signature and timestamp headers.
async fn fetch_edge(client: &reqwest::Client, url: &Url) -> Result<(Bytes, Option<Signature>, Option<u64>)> {
    let resp = client.get(url.clone()).timeout(Duration::from_secs(20)).send().await?;
    if !resp.status().is_success() {
        bail!("GET {url}: HTTP {}", resp.status());
    }
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let signature = header("relaycast-signature").and_then(|h| from_hex(&h));
    let origin_ms = header("relaycast-origin-time").and_then(|h| h.parse().ok());
    let data = resp.bytes().await?;
    Ok((data, signature, origin_ms))
}

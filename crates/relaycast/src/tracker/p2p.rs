//! The tracker's P2P routes (F51, F52): viewers announce what they watch and where they are,
//! and get back a bounded list of peers ranked by locality, their position in the swarm (which
//! rotates the edge-fetch duty), the origin's public key, and — for a viewer in the
//! broadcaster's region — the ingest-side node to fetch from directly (the bypass).
//!
//! `POST /api/v1/p2p/announce`, `POST /api/v1/p2p/report`, `GET /api/v1/p2p/swarms`. Soft state
//! like the rest of the tracker: a viewer silent for three refresh periods is forgotten. The
//! routes are open to viewers, so the state is bounded: at most `--max-p2p-viewers` viewers
//! (past it a new one is told to play from the CDN alone), swept of the silent every refresh
//! period, and a report counts only from a live viewer of the reported peer's swarm.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use relaycast_core::Name;
use relaycast_core::p2p::peers::{
    NodeRecord, PeerAnnounce, PeerAnnounceReply, PeerRecord, PeerReport, bypass_target, rank_peers,
};
use serde::Deserialize;
use serde_json::json;

use crate::common::http::error;

#[derive(Args, Debug, Clone)]
pub struct P2pTrackerArgs {
    /// The origin's public key (the FILE.pub written beside its --signing-key), handed to P2P
    /// viewers so they can verify every segment.
    #[arg(long, value_name = "FILE")]
    pub origin_key: Option<PathBuf>,
    /// Peers listed in each answer to a P2P viewer.
    #[arg(long, default_value_t = 8)]
    pub peer_list: usize,
    /// How often P2P viewers announce again, in milliseconds; silent for 3 periods = gone.
    #[arg(long, default_value_t = 2000)]
    pub viewer_refresh_ms: u64,
    /// Distinct viewers that must report a peer (bad bytes) before it is no longer listed.
    #[arg(long, default_value_t = 2)]
    pub report_threshold: usize,
    /// Viewers tracked at most (all swarms together); past it new viewers get 503 and play
    /// from the CDN alone.
    #[arg(long, default_value_t = 100_000)]
    pub max_p2p_viewers: usize,
}

type SwarmKey = (Name, Name);
/// The viewers of one swarm and when each last announced.
type Viewers = BTreeMap<u64, (PeerRecord, Instant)>;

/// The tracker's delivery nodes, for the bypass decision.
pub type NodesFn = Arc<dyn Fn() -> Vec<NodeRecord> + Send + Sync>;

struct P2pTracker {
    args: P2pTrackerArgs,
    origin_key: Option<String>,
    nodes: NodesFn,
    swarms: Mutex<BTreeMap<SwarmKey, Viewers>>,
    /// Accused viewer → distinct reporters.
    reports: Mutex<BTreeMap<u64, BTreeSet<u64>>>,
    /// When the silent were last swept out of every swarm.
    swept: Mutex<Instant>,
    /// Each viewer's byte counts (from peers, from servers) at its last announcement, so the
    /// offload counters grow by what is new.
    bytes: Mutex<BTreeMap<u64, (u64, u64)>>,
}

impl P2pTracker {
    fn refresh(&self) -> Duration {
        Duration::from_millis(self.args.viewer_refresh_ms.clamp(100, 60_000))
    }

    /// Once per refresh period: forget silent viewers, empty swarms, and reports about or by
    /// viewers no longer there.
    fn sweep(&self, swarms: &mut BTreeMap<SwarmKey, Viewers>) {
        let mut swept = self.swept.lock().expect("sweep lock");
        if swept.elapsed() < self.refresh() {
            return;
        }
        *swept = Instant::now();
        let expiry = self.refresh() * 3;
        for viewers in swarms.values_mut() {
            viewers.retain(|_, (_, seen)| seen.elapsed() < expiry);
        }
        swarms.retain(|_, viewers| !viewers.is_empty());
        let live: BTreeSet<u64> = swarms.values().flat_map(|v| v.keys().copied()).collect();
        metrics::gauge!("relaycast_p2p_viewers").set(live.len() as f64);
        self.bytes.lock().expect("bytes lock").retain(|id, _| live.contains(id));
        let mut reports = self.reports.lock().expect("reports lock");
        reports.retain(|peer, by| {
            by.retain(|r| live.contains(r));
            live.contains(peer) && !by.is_empty()
        });
    }

    /// Grow `relaycast_p2p_bytes_total` by what a viewer took since its last announcement.
    fn count_bytes(&self, a: &PeerAnnounce) {
        let (peer, edge) =
            self.bytes.lock().expect("bytes lock").insert(a.id, (a.peer_bytes, a.edge_bytes)).unwrap_or_default();
        metrics::counter!("relaycast_p2p_bytes_total", "from" => "peers").increment(a.peer_bytes.saturating_sub(peer));
        metrics::counter!("relaycast_p2p_bytes_total", "from" => "servers")
            .increment(a.edge_bytes.saturating_sub(edge));
    }

    fn is_liar(&self, id: u64) -> bool {
        self.reports
            .lock()
            .expect("reports lock")
            .get(&id)
            .is_some_and(|r| r.len() >= self.args.report_threshold.max(1))
    }
}

/// The P2P routes, to merge into the tracker's router.
pub fn router(args: &P2pTrackerArgs, nodes: NodesFn) -> Result<Router> {
    let origin_key = match &args.origin_key {
        Some(path) => Some(crate::common::signing::Ed25519Verifier::from_file(path)?.to_hex()),
        None => None,
    };
    let state = Arc::new(P2pTracker {
        args: args.clone(),
        origin_key,
        nodes,
        swarms: Mutex::new(BTreeMap::new()),
        reports: Mutex::new(BTreeMap::new()),
        swept: Mutex::new(Instant::now()),
        bytes: Mutex::new(BTreeMap::new()),
    });
    for from in ["peers", "servers"] {
        metrics::counter!("relaycast_p2p_bytes_total", "from" => from).increment(0);
    }
    metrics::gauge!("relaycast_p2p_viewers").set(0.0);
    let browsers = crate::tracker::webtorrent::router(args.report_threshold, state.origin_key.clone());
    Ok(Router::new()
        .route("/api/v1/p2p/announce", post(announce))
        .route("/api/v1/p2p/report", post(report))
        .route("/api/v1/p2p/swarms", get(swarms))
        .route("/api/v1/p2p/bypass", get(bypass))
        .with_state(state)
        .merge(browsers))
}

async fn announce(State(t): State<Arc<P2pTracker>>, body: axum::body::Bytes) -> Response {
    let a: PeerAnnounce = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a P2P announcement: {e}")),
    };
    if a.region.len() > relaycast_core::p2p::wire::MAX_REGION {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "region label longer than 64 bytes");
    }
    if a.addr.parse::<SocketAddr>().is_err() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, format!("addr {:?} is not an IP:port", a.addr));
    }
    let record = PeerRecord { id: a.id, region: a.region.clone(), addr: a.addr.clone() };
    let expiry = t.refresh() * 3;
    let (peers, position, swarm_size) = {
        let mut swarms = t.swarms.lock().expect("swarms lock");
        t.sweep(&mut swarms);
        let key = (a.channel.clone(), a.rendition.clone());
        let known = swarms.get(&key).is_some_and(|s| s.contains_key(&a.id));
        if !known && swarms.values().map(BTreeMap::len).sum::<usize>() >= t.args.max_p2p_viewers {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the P2P tracker is full ({} viewers): play from the CDN", t.args.max_p2p_viewers),
            );
        }
        let swarm = swarms.entry(key).or_default();
        if swarm.insert(a.id, (record, Instant::now())).is_none() {
            tracing::info!(viewer = a.id, channel = %a.channel, region = %a.region, addr = %a.addr, "P2P viewer joined");
        }
        swarm.retain(|_, (_, seen)| seen.elapsed() < expiry);
        let honest: Vec<&PeerRecord> = swarm.values().map(|(r, _)| r).filter(|r| !t.is_liar(r.id)).collect();
        let peers = rank_peers(a.id, &a.region, &a.rtt_ms, honest, t.args.peer_list);
        let position = swarm.keys().position(|id| *id == a.id).unwrap_or(0);
        (peers, position, swarm.len())
    };
    t.count_bytes(&a);
    let nodes = (t.nodes)();
    let bypass = bypass_target(&a.region, &nodes).and_then(|n| n.http.as_ref()).map(|h| format!("http://{h}"));
    Json(PeerAnnounceReply {
        peers,
        position,
        swarm_size,
        refresh_ms: t.refresh().as_millis() as u64,
        origin_key: t.origin_key.clone(),
        bypass,
    })
    .into_response()
}

#[derive(Deserialize)]
struct BypassQuery {
    #[serde(default)]
    region: String,
}

/// `GET /api/v1/p2p/bypass?region=R`: the ingest-side node's base URL if R is its region.
async fn bypass(
    State(t): State<Arc<P2pTracker>>,
    axum::extract::Query(q): axum::extract::Query<BypassQuery>,
) -> Response {
    let nodes = (t.nodes)();
    let bypass = bypass_target(&q.region, &nodes).and_then(|n| n.http.as_ref()).map(|h| format!("http://{h}"));
    Json(json!({ "region": q.region, "bypass": bypass })).into_response()
}

async fn report(State(t): State<Arc<P2pTracker>>, body: axum::body::Bytes) -> Response {
    let r: PeerReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a P2P report: {e}")),
    };
    if r.reporter == r.peer {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "a viewer cannot report itself");
    }
    // Only a live viewer watching alongside the peer can report it (a stranger's ids count for
    // nothing).
    let expiry = t.refresh() * 3;
    let together = t.swarms.lock().expect("swarms lock").values().any(|v| {
        let live = |id| v.get(&id).is_some_and(|(_, seen)| seen.elapsed() < expiry);
        live(r.reporter) && live(r.peer)
    });
    if !together {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("viewer {} is not watching in a swarm with viewer {}: report not counted", r.reporter, r.peer),
        );
    }
    let count = {
        let mut reports = t.reports.lock().expect("reports lock");
        let set = reports.entry(r.peer).or_default();
        set.insert(r.reporter);
        set.len()
    };
    tracing::warn!(peer = r.peer, reporter = r.reporter, reports = count, reason = %r.reason.chars().take(200).collect::<String>(), "P2P viewer reported for bad bytes");
    Json(json!({ "peer": r.peer, "reports": count, "excluded": count >= t.args.report_threshold.max(1) }))
        .into_response()
}

async fn swarms(State(t): State<Arc<P2pTracker>>) -> Response {
    let expiry = t.refresh() * 3;
    let reports = t.reports.lock().expect("reports lock").clone();
    let swarms = t.swarms.lock().expect("swarms lock");
    let list: Vec<_> = swarms
        .iter()
        .map(|((channel, rendition), viewers)| {
            let v: Vec<_> = viewers
                .values()
                .filter(|(_, seen)| seen.elapsed() < expiry)
                .map(|(r, _)| json!({ "id": r.id, "region": r.region, "addr": r.addr, "reports": reports.get(&r.id).map_or(0, |s| s.len()) }))
                .collect();
            json!({ "channel": channel, "rendition": rendition, "viewers": v })
        })
        .collect();
    let reported: Vec<_> = reports.iter().map(|(peer, by)| json!({ "peer": peer, "reporters": by })).collect();
    Json(json!({ "swarms": list, "reported": reported })).into_response()
}

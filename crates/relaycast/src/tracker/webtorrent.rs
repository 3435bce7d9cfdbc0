//! The tracker's WebTorrent side for browsers (F54, issue 20): `GET /announce` upgrades to a
//! WebSocket that speaks bittorrent-tracker's JSON, so a stock p2p-media-loader page connects
//! to `ws://TRACKER/announce?region=R`. The policy (whom each offer goes to, bounds, reports) is
//! `relaycast_core::p2p::webtorrent`; this module owns the sockets, the JSON and the clock.
//!
//! Per connection: messages of at most 64 KiB, a bounded queue towards the
//! client (a client that does not read is closed, not buffered for), a ping every 15 s whose
//! pong gives the round trip the core ranks peers by. Also: `POST /api/v1/p2p/browser-report`
//! (a page names a peer whose bytes failed the origin's signature), `GET /api/v1/p2p/browsers`
//! (swarms as JSON) and `GET /api/v1/p2p/origin-key` (the key pages verify segments with); these
//! three answer any web origin (CORS), as the page comes from an edge.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use relaycast_core::p2p::webtorrent::{Action, ConnId, Id20, Incoming, Locality, WtConfig, WtTracker};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::common::http::error;

/// Largest WebSocket message a client may send (aquatic's limit). Frames may be as large:
/// browsers send a message as one frame, and five offers with their SDP can pass 16 KiB.
const MAX_MESSAGE: usize = 64 * 1024;
/// Messages queued towards one client before it counts as not reading.
const QUEUE: usize = 64;
const PING_EVERY: Duration = Duration::from_secs(15);
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Connections open at most; past it the upgrade is refused with 503.
const MAX_CONNECTIONS: usize = 50_000;

struct Wt {
    tracker: Mutex<WtTracker>,
    /// Each connection's queue towards its client and its address.
    conns: Mutex<BTreeMap<ConnId, (mpsc::Sender<String>, IpAddr)>>,
    next: AtomicU64,
    origin_key: Option<String>,
}

impl Wt {
    /// Carry out what the core decided.
    fn perform(&self, actions: Vec<Action>) {
        let mut conns = self.conns.lock().expect("conns lock");
        for action in actions {
            match action {
                Action::Send(conn, msg) => {
                    let Some((queue, ip)) = conns.get(&conn) else { continue };
                    let text = serde_json::to_string(&msg).expect("tracker messages serialise");
                    metrics::counter!("relaycast_wt_messages_sent_total").increment(1);
                    if queue.try_send(text).is_err() {
                        tracing::warn!(conn, %ip, "browser peer does not read its tracker messages; closing");
                        conns.remove(&conn);
                    }
                }
                Action::Close(conn, why) => {
                    if let Some((_, ip)) = conns.remove(&conn) {
                        tracing::warn!(conn, %ip, reason = %why, "closing a browser peer's tracker connection");
                        metrics::counter!("relaycast_wt_closed_total", "reason" => "refused").increment(1);
                    }
                }
            }
        }
    }

    fn gauges(&self) {
        let t = self.tracker.lock().expect("tracker lock");
        let (swarms, peers) = t.size();
        metrics::gauge!("relaycast_wt_connections").set(t.connections() as f64);
        metrics::gauge!("relaycast_wt_swarms").set(swarms as f64);
        metrics::gauge!("relaycast_wt_peers").set(peers as f64);
    }
}

/// The WebTorrent routes, to merge into the tracker's router. `origin_key` is the origin's
/// public key in hex, if the tracker was given it.
pub fn router(report_threshold: usize, origin_key: Option<String>) -> Router {
    let config = WtConfig { report_threshold, ..WtConfig::default() };
    let wt = Arc::new(Wt {
        tracker: Mutex::new(WtTracker::new(config)),
        conns: Mutex::new(BTreeMap::new()),
        next: AtomicU64::new(1),
        origin_key,
    });
    tokio::spawn(sweep(Arc::downgrade(&wt)));
    Router::new()
        .route("/announce", get(upgrade))
        .route("/api/v1/p2p/browser-report", post(report).options(preflight))
        .route("/api/v1/p2p/browsers", get(swarms))
        .route("/api/v1/p2p/origin-key", get(origin_key_route))
        .with_state(wt)
}

/// Every 30 s: silent peers leave their swarms, idle connections are closed.
async fn sweep(wt: std::sync::Weak<Wt>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let Some(wt) = wt.upgrade() else { return };
        let idle = wt.tracker.lock().expect("tracker lock").sweep(Instant::now());
        let mut conns = wt.conns.lock().expect("conns lock");
        for conn in idle {
            if conns.remove(&conn).is_some() {
                metrics::counter!("relaycast_wt_closed_total", "reason" => "idle").increment(1);
            }
        }
        drop(conns);
        wt.gauges();
    }
}

#[derive(Deserialize)]
struct AnnounceQuery {
    #[serde(default)]
    region: String,
}

async fn upgrade(
    State(wt): State<Arc<Wt>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(q): Query<AnnounceQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if wt.conns.lock().expect("conns lock").len() >= MAX_CONNECTIONS {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the tracker has as many browser peers as it takes; play from the CDN",
        );
    }
    let region: String = q.region.chars().take(64).collect();
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(wt, socket, addr.ip(), region))
}

/// A client's network for locality: its IPv4 /24 or IPv6 /48.
fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// One client's connection, until it closes, breaks, floods or stops reading.
async fn serve(wt: Arc<Wt>, mut socket: WebSocket, ip: IpAddr, region: String) {
    let conn = wt.next.fetch_add(1, Ordering::Relaxed);
    let (queue, mut outgoing) = mpsc::channel::<String>(QUEUE);
    wt.conns.lock().expect("conns lock").insert(conn, (queue, ip));
    let locality = Locality { region, network: network(ip) };
    wt.tracker.lock().expect("tracker lock").connect(Instant::now(), conn, locality);
    wt.gauges();
    let started = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    let why = loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => wt.perform(on_text(&wt, conn, text.as_str())),
                Some(Ok(Message::Binary(_))) => {
                    let actions = wt.tracker.lock().expect("tracker lock").malformed(Instant::now(), conn, "binary message (the protocol is JSON text)");
                    wt.perform(actions);
                }
                Some(Ok(Message::Pong(sent))) => on_pong(&wt, conn, started, &sent),
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Close(_))) | None => break "closed by the client".to_string(),
                Some(Err(e)) => break format!("broken: {e}"),
            },
            queued = outgoing.recv() => match queued {
                Some(text) => {
                    if let Err(e) = socket.send(Message::Text(text.into())).await {
                        break format!("send failed: {e}");
                    }
                }
                // The tracker dropped this connection's queue: refused, idle or not reading.
                None => break "closed by the tracker".to_string(),
            },
            _ = ping.tick() => {
                let stamp = started.elapsed().as_micros().to_be_bytes().to_vec();
                if socket.send(Message::Ping(stamp.into())).await.is_err() {
                    break "ping failed".to_string();
                }
            }
        }
    };
    tracing::debug!(conn, %ip, reason = %why, "browser peer's tracker connection ended");
    wt.conns.lock().expect("conns lock").remove(&conn);
    wt.tracker.lock().expect("tracker lock").disconnect(conn);
    wt.gauges();
    let _ = socket.send(Message::Close(None)).await;
}

fn on_text(wt: &Wt, conn: ConnId, text: &str) -> Vec<Action> {
    let now = Instant::now();
    let mut tracker = wt.tracker.lock().expect("tracker lock");
    match serde_json::from_str::<Incoming>(text) {
        Ok(msg) => {
            metrics::counter!("relaycast_wt_messages_received_total").increment(1);
            tracker.handle(now, conn, msg)
        }
        Err(e) => {
            metrics::counter!("relaycast_wt_malformed_total").increment(1);
            tracing::info!(conn, error = %e, "malformed WebTorrent tracker message");
            tracker.malformed(now, conn, &e.to_string())
        }
    }
}

/// A pong carries the microsecond stamp of its ping: the round trip to this client.
fn on_pong(wt: &Wt, conn: ConnId, started: Instant, payload: &[u8]) {
    let Ok(stamp) = <[u8; 16]>::try_from(payload) else { return };
    let sent = u128::from_be_bytes(stamp);
    let rtt_us = started.elapsed().as_micros().saturating_sub(sent);
    wt.tracker.lock().expect("tracker lock").set_rtt(conn, rtt_us as f64 / 1000.0);
}

/// Answers any web origin: the page that calls is served by an edge, not by the tracker.
fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
    r
}

async fn preflight() -> Response {
    cors(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct BrowserReport {
    /// The reporting page's own label (any string; distinct labels count as distinct reporters).
    reporter: String,
    /// The peer id p2p-media-loader names the failing peer by.
    peer: String,
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/p2p/browser-report`: a page says a peer sent bytes that fail the origin's
/// signature. Counted only from an address with a live tracker connection.
async fn report(
    State(wt): State<Arc<Wt>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let r: BrowserReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return cors(error(StatusCode::BAD_REQUEST, format!("not a browser report: {e}"))),
    };
    let Some(peer) = Id20::from_latin1(&r.peer) else {
        return cors(error(StatusCode::UNPROCESSABLE_ENTITY, "peer must be a 20-character peer id"));
    };
    let connected = wt.conns.lock().expect("conns lock").values().any(|(_, ip)| *ip == addr.ip());
    if !connected {
        let why = format!("{} has no open tracker connection: report not counted", addr.ip());
        return cors(error(StatusCode::UNPROCESSABLE_ENTITY, why));
    }
    let mut tracker = wt.tracker.lock().expect("tracker lock");
    let was_excluded = tracker.excluded(&peer);
    let Some(count) = tracker.report(&r.reporter, peer) else {
        return cors(error(StatusCode::NOT_FOUND, format!("no browser peer {peer} in any swarm")));
    };
    let excluded = tracker.excluded(&peer);
    drop(tracker);
    metrics::counter!("relaycast_wt_reports_total").increment(1);
    if excluded && !was_excluded {
        metrics::counter!("relaycast_wt_peers_excluded_total").increment(1);
    }
    let reason: String = r.reason.chars().take(200).collect();
    tracing::warn!(%peer, reporter = %r.reporter.chars().take(64).collect::<String>(), reports = count, excluded, %reason, "browser peer reported for bad bytes");
    cors(axum::Json(json!({ "peer": r.peer, "reports": count, "excluded": excluded })).into_response())
}

/// `GET /api/v1/p2p/browsers`: each swarm (info hash in hex) with its peers.
async fn swarms(State(wt): State<Arc<Wt>>) -> Response {
    let list = wt.tracker.lock().expect("tracker lock").swarms();
    let swarms: Vec<_> = list
        .iter()
        .map(|(hash, peers)| {
            let peers: Vec<_> = peers
                .iter()
                .map(|(id, loc, excluded)| json!({ "peer": id.to_string(), "region": loc.region, "network": loc.network, "excluded": excluded }))
                .collect();
            json!({ "info_hash": crate::common::signing::hex(&hash.0), "peers": peers })
        })
        .collect();
    cors(axum::Json(json!({ "swarms": swarms })).into_response())
}

/// `GET /api/v1/p2p/origin-key`: the origin's Ed25519 public key (hex), for pages to verify
/// segments from peers with.
async fn origin_key_route(State(wt): State<Arc<Wt>>) -> Response {
    match &wt.origin_key {
        Some(key) => cors(axum::Json(json!({ "origin_key": key })).into_response()),
        None => cors(error(StatusCode::NOT_FOUND, "the tracker was not given the origin's key (--origin-key FILE)")),
    }
}

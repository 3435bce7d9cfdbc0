//! HTTP on every node: HLS for viewers, the player page, Prometheus metrics, the JSON API and
//! (on an origin) the push-ingest endpoint.
//!
//! The URL layout is a public contract (DESIGN.md):
//! `/live/{channel}/index.m3u8`, `/live/{channel}/{rendition}/index.m3u8`,
//! `/live/{channel}/{rendition}/{seq}.ts`, `/metrics`, `/api/v1/...`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use relaycast_core::node::ChannelStatus;
use relaycast_core::playlist::{KeyUris, MediaPlaylist, render_master};
use relaycast_core::{Availability, Name, Playback, Role};
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};

use crate::common::egress::Egress;
use crate::common::http::error;
use crate::common::parse_name;
use crate::common::playback::PlaybackKey;
use crate::common::wall_ms;
use crate::node::host::Host;
use crate::node::ingest::push::{self, PushIngest};
use crate::node::lowlatency;

/// Segments shown in a live media playlist.
pub const PLAYLIST_LEN: usize = 6;
/// How long a viewer request waits for a channel to arrive from upstream.
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub host: Arc<Host>,
    pub push: Option<Arc<PushIngest>>,
    pub metrics: PrometheusHandle,
    pub egress: Arc<Egress>,
    /// The cluster token, which admin calls (`PUT /api/v1/egress`) must present.
    pub token: Arc<str>,
    /// An origin's channel with no new media for this long is offline (`--publisher-timeout`).
    pub publisher_timeout: Duration,
    /// The cluster's playback key: AES-128 keys of encrypted channels derive from it.
    pub playback_key: Option<Arc<PlaybackKey>>,
    /// Active viewers and recent egress (for `/api/v1/node`).
    pub viewers: Arc<crate::node::viewers::Viewers>,
    /// The tracker this node announces to, and its region: where the player page finds its
    /// peers (`/api/v1/p2p`).
    pub sharing: Option<(String, String)>,
}

pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .expose_headers(EXPOSED.map(header::HeaderName::from_static));
    Router::new()
        .route("/", get(index_page))
        .route("/assets/{file}", get(asset))
        .route("/live/{channel}/index.m3u8", get(main_playlist))
        .route("/live/{channel}/{rendition}/index.m3u8", get(media_playlist))
        .route("/live/{channel}/keys/{file}", get(content_key))
        .route("/live/{channel}/{rendition}/{file}", get(segment))
        .route("/metrics", get(metrics))
        .route("/api/v1/channels", get(channels))
        .route("/api/v1/node", get(node_info))
        .route("/api/v1/p2p", get(p2p_config))
        .route("/api/v1/arrivals", get(arrivals))
        // The smallest answer there is: viewers time it on a warm connection for the path's RTT.
        .route("/api/v1/ping", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/v1/egress", get(egress_get).put(egress_put))
        .merge(push::routes(state.host.clone(), state.push.clone()))
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "no such path; see /api/v1/channels and /live/{channel}/index.m3u8")
        })
        .layer(cors)
        .with_state(state)
}

async fn index_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("../../../../web/index.html"),
    )
        .into_response()
}

/// `/assets/{file}`: the player page's scripts (hls.js, p2p-media-loader).
async fn asset(Path(file): Path<String>) -> Response {
    match crate::node::web::asset(&file) {
        Some(js) => {
            ([(header::CONTENT_TYPE, "application/javascript"), (header::CACHE_CONTROL, "public, max-age=3600")], js)
                .into_response()
        }
        None if crate::node::web::ASSETS.iter().any(|(n, _, _)| *n == file) => error(
            StatusCode::NOT_FOUND,
            format!("{file} is not installed: run `npm ci --prefix web` and restart (or set RELAYCAST_WEB_DIR)"),
        ),
        None => error(StatusCode::NOT_FOUND, format!("no asset named {file:?}")),
    }
}

/// `GET /api/v1/p2p`: where the player page shares with other browsers — the tracker's
/// WebTorrent announce URL (with this node's region, so peers nearby are found first) and its
/// base URL (origin key, reports).
async fn p2p_config(State(s): State<AppState>) -> Response {
    let Some((tracker, region)) = &s.sharing else {
        return error(StatusCode::NOT_FOUND, "this node has no tracker (--tracker): sharing between browsers is off");
    };
    let base = tracker.trim_end_matches('/');
    let ws = base.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
    let announce = if region.is_empty() { format!("{ws}/announce") } else { format!("{ws}/announce?region={region}") };
    axum::Json(serde_json::json!({ "tracker": base, "announce": announce, "region": region })).into_response()
}

/// Ask the node for a channel, waiting for it to arrive from upstream if needed.
pub(crate) async fn want_channel(host: &Arc<Host>, channel: &Name) -> Result<(), Response> {
    let first = host.input(|n, now| n.viewer_request(now, channel));
    let outcome = match first {
        Availability::Ready => return Ok(()),
        Availability::Unavailable(reason) => Err(reason),
        Availability::Pending => {
            let waited = host
                .wait_for(FIRST_SEGMENT_WAIT, || match host.input(|n, now| n.viewer_request(now, channel)) {
                    Availability::Pending => None,
                    other => Some(other),
                })
                .await;
            match waited {
                Some(Availability::Ready) => return Ok(()),
                Some(Availability::Unavailable(reason)) => Err(reason),
                _ => {
                    return Err(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "channel {channel} has no segments yet (waited {} s); retry shortly",
                            FIRST_SEGMENT_WAIT.as_secs()
                        ),
                    ));
                }
            }
        }
    };
    outcome.map_err(|reason| {
        let status =
            if reason.contains("no channel named") { StatusCode::NOT_FOUND } else { StatusCode::SERVICE_UNAVAILABLE };
        error(status, reason)
    })
}

/// After [`want_channel`]: wait until `rendition` has segments here (its first segment may
/// trail the channel's first by a moment), or say it does not exist.
async fn want_rendition(host: &Arc<Host>, channel: &Name, rendition: &Name) -> Result<(), Response> {
    let state = || {
        host.read(|n| {
            let has =
                n.channel(channel).and_then(|c| c.renditions.get(rendition)).is_some_and(|r| !r.window.is_empty());
            let offered = n.offered_renditions(channel).iter().any(|r| &r.name == rendition);
            (has, offered)
        })
    };
    match host.wait_for(FIRST_SEGMENT_WAIT, || if state().0 || !state().1 { Some(()) } else { None }).await {
        Some(()) if state().0 => Ok(()),
        Some(()) => Err(error(StatusCode::NOT_FOUND, format!("channel {channel} has no rendition named {rendition}"))),
        None => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("rendition {channel}/{rendition} has no segments yet; retry shortly"),
        )),
    }
}

fn playlist_response(body: String, target_s: u32) -> Response {
    // A playlist is stale after about one target duration: half of it, at least one second.
    let max_age = (target_s / 2).max(1);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_str(&format!("public, max-age={max_age}")).expect("ascii header"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn main_playlist(State(s): State<AppState>, Path(channel): Path<String>) -> Response {
    let channel = match parse_name(&channel) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(r) = want_channel(&s.host, &channel).await {
        count("playlist", r.status());
        return r;
    }
    let offered = s.host.read(|n| n.offered_renditions(&channel));
    if let [only] = offered.as_slice()
        && let Err(r) = want_rendition(&s.host, &channel, &only.name).await
    {
        return r;
    }
    let rendered = s.host.read(|n| {
        let ch = n.channel(&channel)?;
        if let [only] = offered.as_slice()
            && only.init.is_none()
        {
            // One TS rendition: serve its media playlist directly (one round trip less for
            // players). A low-latency one gets a master: its playlist URIs are relative to it.
            let r = ch.renditions.get(&only.name)?;
            let prefix = format!("{}/", only.name);
            let keys = n.encryption(&channel).map(|segments_per_key| KeyUris { segments_per_key, uri_prefix: "keys/" });
            let p = MediaPlaylist { target_duration_s: r.target_duration_s, uri_prefix: &prefix, uri_query: "", keys };
            return Some((p.render(&r.window.live_run(PLAYLIST_LEN)), r.target_duration_s));
        }
        // Several: a master listing every declared rendition, whether or not its first segment
        // has reached this node yet (its media playlist waits for it).
        let infos: Vec<_> = offered
            .iter()
            .map(|info| {
                let estimate = ch.renditions.get(&info.name).and_then(|r| r.bandwidth());
                relaycast_core::RenditionInfo { bandwidth: info.bandwidth.or(estimate), ..info.clone() }
            })
            .collect();
        Some((render_master(&infos, 1_000_000), 2))
    });
    count("playlist", StatusCode::OK);
    match rendered {
        Some((body, target)) => playlist_response(body, target),
        None => error(StatusCode::SERVICE_UNAVAILABLE, format!("channel {channel} was released; retry")),
    }
}

async fn media_playlist(
    State(s): State<AppState>,
    Path((channel, rendition)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let (channel, rendition) = match (parse_name(&channel), parse_name(&rendition)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(r) = async {
        want_channel(&s.host, &channel).await?;
        want_rendition(&s.host, &channel, &rendition).await
    }
    .await
    {
        count("playlist", r.status());
        return r;
    }
    if lowlatency::is_cmaf(&s.host, &channel, &rendition) {
        let r = lowlatency::playlist(&s.host, &channel, &rendition, query.as_deref()).await;
        count("playlist", r.status());
        return r;
    }
    let rendered = s.host.read(|n| {
        let r = n.channel(&channel)?.renditions.get(&rendition)?;
        let keys = n.encryption(&channel).map(|segments_per_key| KeyUris { segments_per_key, uri_prefix: "../keys/" });
        let p = MediaPlaylist { target_duration_s: r.target_duration_s, uri_prefix: "", uri_query: "", keys };
        Some((p.render(&r.window.live_run(PLAYLIST_LEN)), r.target_duration_s))
    });
    match rendered {
        Some((body, target)) => {
            count("playlist", StatusCode::OK);
            playlist_response(body, target)
        }
        None => error(StatusCode::NOT_FOUND, format!("channel {channel} has no rendition named {rendition}")),
    }
}

async fn segment(
    State(s): State<AppState>,
    Path((channel, rendition, file)): Path<(String, String, String)>,
) -> Response {
    let (channel, rendition) = match (parse_name(&channel), parse_name(&rendition)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    // A TS segment number, or a file of a low-latency (CMAF) rendition.
    let requested = match (file.strip_suffix(".ts").and_then(|n| n.parse::<u64>().ok()), lowlatency::parse_file(&file))
    {
        (Some(seq), _) => Ok(seq),
        (None, Some(f)) => Err(f),
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{file:?} is not a segment name ({{seq}}.ts, {{seq}}.m4s, {{seq}}.{{part}}.m4s or init.mp4)"),
            );
        }
    };
    if let Err(r) = async {
        want_channel(&s.host, &channel).await?;
        want_rendition(&s.host, &channel, &rendition).await
    }
    .await
    {
        count("segment", r.status());
        return r;
    }
    let seq = match requested {
        Ok(seq) => seq,
        Err(f) => {
            let r = lowlatency::file(&s.host, &channel, &rendition, f).await;
            count(if matches!(f, lowlatency::LlFile::Part(..)) { "part" } else { "segment" }, r.status());
            if r.status().is_success() && !matches!(f, lowlatency::LlFile::Init) {
                served(&s.host.name, &channel);
            }
            return r;
        }
    };
    let found = s.host.read(|n| {
        let r = n.channel(&channel)?.renditions.get(&rendition)?;
        let range = r.window.iter().next().map(|f| f.meta.seq).zip(r.window.latest().map(|l| l.meta.seq));
        Some((r.window.get(seq).cloned(), range))
    });
    let segment = match found {
        None => {
            return error(StatusCode::NOT_FOUND, format!("channel {channel} has no rendition named {rendition}"));
        }
        Some((Some(seg), _)) => seg,
        Some((None, range)) => {
            let held = range.map_or("none".to_string(), |(a, b)| format!("{a}..={b}"));
            count("segment", StatusCode::NOT_FOUND);
            return error(
                StatusCode::NOT_FOUND,
                format!("segment {seq} of {channel}/{rendition} is not in the window (held: {held})"),
            );
        }
    };
    count("segment", StatusCode::OK);
    served(&s.host.name, &channel);
    egress_counter(&s.host.name).increment(segment.data.len() as u64);
    let mut resp = Response::new(Body::from_stream(s.egress.clone().pace(segment.data.clone())));
    *resp.headers_mut() = segment_headers(&segment);
    resp
}

/// Response headers the browser may read across origins (set by the CORS layer in `router`).
const EXPOSED: [&str; 2] = ["relaycast-origin-time", "relaycast-signature"];

/// A TS segment's response headers: the router's answer and the stored one share them.
fn segment_headers(segment: &relaycast_core::media::Segment) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(segment.data.len()));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
    // A sequence number is never reused for other bytes, so segments can be cached for good.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400, immutable"));
    h.insert("relaycast-origin-time", HeaderValue::from(segment.meta.origin_ms));
    // The origin's signature (F53): viewers check it before playing or sharing the bytes.
    if let Some(sig) = &segment.signature
        && let Ok(v) = HeaderValue::from_str(&relaycast_core::p2p::signing::to_hex(sig))
    {
        h.insert("relaycast-signature", v);
    }
    h
}

/// The head of a stored segment response (`stored_segments`): status line, the router's
/// headers with what its CORS layer adds, and `date`.
pub(crate) fn segment_head(segment: &relaycast_core::media::Segment, date: HeaderValue) -> Vec<u8> {
    let mut h = segment_headers(segment);
    let exposed = HeaderValue::from_str(&EXPOSED.join(",")).expect("header names are valid values");
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed);
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::DATE, date);
    crate::common::http1::response_head(StatusCode::OK, &h)
}

/// `GET /live/{channel}/keys/{index}.key`: an AES-128 key of an encrypted channel. The door in
/// front has checked the viewer's playback token; the key is never stored by shared caches.
async fn content_key(State(s): State<AppState>, Path((channel, file)): Path<(String, String)>) -> Response {
    let channel = match parse_name(&channel) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(index) = file.strip_suffix(".key").and_then(|i| i.parse::<u64>().ok()) else {
        return error(StatusCode::BAD_REQUEST, format!("{file:?} is not a key name ({{index}}.key)"));
    };
    let (encrypted, playback) = s.host.read(|n| (n.encryption(&channel).is_some(), n.playback(&channel)));
    let key = match (&s.playback_key, encrypted, playback) {
        (_, false, _) => return error(StatusCode::NOT_FOUND, format!("channel {channel} is not encrypted")),
        (_, _, Playback::Public) => {
            return error(
                StatusCode::FORBIDDEN,
                format!("channel {channel} is public; keys are only for signed channels"),
            );
        }
        (None, ..) => return error(StatusCode::FORBIDDEN, "this node has no playback key (--playback-key)"),
        (Some(k), ..) => k.content_key(&channel, index),
    };
    metrics::counter!("relaycast_keys_served_total", "node" => s.host.name.clone()).increment(1);
    ([(header::CONTENT_TYPE, "application/octet-stream"), (header::CACHE_CONTROL, "private, no-store")], key.to_vec())
        .into_response()
}

async fn egress_get(State(s): State<AppState>) -> Response {
    axum::Json(json!({ "kbps": s.egress.kbps() })).into_response()
}

/// `PUT /api/v1/egress` with `{"kbps": N}` (0 = unlimited) and `Authorization: Bearer TOKEN`.
async fn egress_put(State(s): State<AppState>, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> Response {
    if !crate::common::http::bearer_matches(&headers, &s.token) {
        return error(StatusCode::UNAUTHORIZED, "admin calls need `Authorization: Bearer <cluster token>`");
    }
    let Some(kbps) = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v.get("kbps")?.as_u64())
    else {
        return error(StatusCode::BAD_REQUEST, "body must be JSON like {\"kbps\": 2000} (0 = unlimited)");
    };
    s.egress.set_kbps(kbps);
    tracing::info!(node = %s.host.name, kbps, "egress cap changed");
    axum::Json(json!({ "kbps": s.egress.kbps() })).into_response()
}

/// A segment or part of `channel` went out to a viewer.
fn served(node: &str, channel: &relaycast_core::Name) {
    served_counter(node, channel).increment(1);
}

fn count(kind: &'static str, status: StatusCode) {
    requests_counter(kind, status).increment(1);
}

/// Segments and parts of `channel` sent to viewers (one per answer).
pub(crate) fn served_counter(node: &str, channel: &relaycast_core::Name) -> metrics::Counter {
    metrics::counter!("relaycast_segments_sent_total", "node" => node.to_string(), "channel" => channel.to_string(), "to" => "viewer")
}

/// HTTP answers of one kind (`playlist`, `segment`, `part`) and status.
pub(crate) fn requests_counter(kind: &'static str, status: StatusCode) -> metrics::Counter {
    metrics::counter!("relaycast_http_requests_total", "kind" => kind, "status" => status.as_str().to_string())
}

/// Payload bytes of segments and parts sent to viewers.
pub(crate) fn egress_counter(node: &str) -> metrics::Counter {
    metrics::counter!("relaycast_http_egress_bytes_total", "node" => node.to_string())
}

async fn metrics(State(s): State<AppState>) -> Response {
    crate::common::metrics::response(&s.metrics)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Origin => "origin",
        Role::Relay => "relay",
    }
}

async fn channels(State(s): State<AppState>) -> Response {
    let body = s.host.read(|n| {
        let list: Vec<_> = n
            .catalog()
            .into_iter()
            .map(|entry| {
                let carried = n.channel(&entry.name);
                let timeout_ms = s.publisher_timeout.as_millis() as u64;
                let live = match carried {
                    // At the origin a channel is live while its source delivers; a relay's while
                    // it holds segments.
                    Some(c) if s.host.role == Role::Origin => {
                        c.newest_origin_ms().is_some_and(|ms| wall_ms().saturating_sub(ms) <= timeout_ms)
                    }
                    Some(c) => c.renditions.values().any(|r| !r.window.is_empty()),
                    // Relays learn channels from the catalogue; they are live at the origin.
                    None => s.host.role == Role::Relay,
                };
                json!({
                    "name": entry.name,
                    "source": entry.source,
                    "live": live,
                    "carried": carried.is_some(),
                    "low_latency": entry.renditions.iter().any(|r| r.init.is_some()),
                    "playlist": format!("/live/{}/index.m3u8", entry.name),
                    "renditions": entry.renditions.iter().map(|r| json!({
                        "name": r.name,
                        "bandwidth": r.bandwidth.or_else(|| carried.and_then(|c| c.renditions.get(&r.name)).and_then(|x| x.bandwidth())),
                        "resolution": r.resolution.map(|(w, h)| format!("{w}x{h}")),
                        "codecs": r.codecs,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "node": s.host.name, "role": role_name(s.host.role), "channels": list })
    });
    axum::Json(body).into_response()
}

/// When this node had each of its latest segments (a latency budget's per-node stage).
async fn arrivals(State(s): State<AppState>) -> Response {
    let list: Vec<_> = s.host.arrivals.lock().expect("arrivals lock").iter().cloned().collect();
    axum::Json(json!({ "node": s.host.name, "arrivals": list })).into_response()
}

async fn node_info(State(s): State<AppState>) -> Response {
    let (p50, p99, max, count) = {
        let d = s.host.delay.lock().expect("delay lock");
        let h = &d.histogram;
        (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max(), d.segments)
    };
    let part_delay = {
        let d = s.host.part_delay.lock().expect("delay lock");
        let h = &d.histogram;
        json!({ "parts": d.segments, "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99), "max": h.max() })
    };
    let body = s.host.read(|n| {
        let carried: Vec<_> = n
            .channels()
            .map(|(name, c)| {
                json!({
                    "name": name,
                    "status": match &c.status {
                        ChannelStatus::Local => "local".to_string(),
                        ChannelStatus::Upstream { live: true } => "live".to_string(),
                        ChannelStatus::Upstream { live: false } => "pending".to_string(),
                        ChannelStatus::Refused { reason, .. } => format!("refused: {reason}"),
                    },
                    "subscribers": c.subscribers.len(),
                    "renditions": c.renditions.iter().map(|(rn, r)| json!({
                        "name": rn,
                        "segments": r.window.len(),
                        "latest_seq": r.window.latest().map(|x| x.meta.seq),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let view = n.route_view(std::time::Instant::now());
        json!({
            "name": s.host.name,
            "role": role_name(s.host.role),
            "latency_to_origin_ms": view.latency_us.map(|us| us as f64 / 1000.0),
            "hops": view.hops,
            "flood": view.flood,
            "path": view.path.iter().map(|id| format!("{id:016x}")).collect::<Vec<_>>(),
            "parent": view.parent,
            "backups": view.backups.iter().map(|(name, us)| json!({"name": name, "latency_ms": *us as f64 / 1000.0})).collect::<Vec<_>>(),
            "children": view.children,
            "neighbours": n.neighbours().map(|(_, name, rtt)| json!({"name": name, "rtt_ms": rtt.map(|r| r.as_secs_f64() * 1000.0)})).collect::<Vec<_>>(),
            "channels": carried,
            "delay_ms": { "segments": count, "p50": p50, "p99": p99, "max": max },
            "part_delay_ms": part_delay,
            "held_requests": s.host.held.load(std::sync::atomic::Ordering::Relaxed),
            "viewers": s.viewers.active(std::time::Instant::now()),
            "egress_bps": s.viewers.egress_bps(std::time::Instant::now()),
            "now_ms": wall_ms(),
        })
    });
    axum::Json(body).into_response()
}

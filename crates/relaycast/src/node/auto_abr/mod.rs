//! Server-side ABR at the edge (F30): `/live/{channel}/auto.m3u8`, one media playlist whose
//! segments the edge resolves to a rendition of the ladder when they are requested.
//!
//! - `GET /live/{ch}/auto.m3u8` opens a session and redirects to `auto/index.m3u8?s=ID`, so a
//!   player keeps its session id in every URL it derives (no cookies, works through any player).
//! - `GET /live/{ch}/auto/index.m3u8?s=ID`: the live playlist (sequence numbers are shared by
//!   every rendition of a ladder) with `?s=ID` on each segment URI.
//! - `GET /live/{ch}/auto/{seq}.ts?s=ID`: the core's [`AbrPolicy`] picks the rendition from the
//!   edge's egress capacity (`--abr-capacity-kbps`, else the `--egress-kbps` cap) shared among
//!   the current auto viewers and the viewer's measured delivery rate. The continuity counters
//!   are renumbered ([`Continuity`]) so a switch looks like one continuous stream. The answer
//!   says what was sent: `Relaycast-Rendition`, `Content-Location` (the rendition's own URL),
//!   `CMSD-Static: br=` (its bit rate) and `CMSD-Dynamic: etp=`/`mb=` (the viewer's share).
//! - `GET /api/v1/abr`: sessions, their renditions and shares, as JSON.
//!
//! A low-latency (CMAF) channel gets an LL-HLS auto playlist whose segments sit in the folder of
//! the rendition chosen for each ([`low_latency`]).
//!
//! Players that adapt themselves keep using the master playlist (client-side ABR, F31).

mod low_latency;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use relaycast_core::Name;
use relaycast_core::abr::{AbrConfig, AbrPolicy, Decision};
use relaycast_core::continuity::Continuity;
use relaycast_core::playlist::{KeyUris, MediaPlaylist};
use serde::Deserialize;
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};

use crate::common::egress::Egress;
use crate::common::http::error;
use crate::common::parse_name;
use crate::node::host::Host;
use crate::node::http::{PLAYLIST_LEN, want_channel};

/// A response whose connection held the edge back for less than this shows no client limit.
const MIN_BLOCKED: Duration = Duration::from_millis(5);
/// Sessions silent for this long are forgotten.
const SESSION_TTL: Duration = Duration::from_secs(60);
/// Most auto sessions one edge keeps (a few hundred bytes each).
const MAX_SESSIONS: usize = 50_000;

/// The edge's server-side ABR: one policy per channel, and each session's stream state.
pub struct AutoAbr {
    host: Arc<Host>,
    egress: Arc<Egress>,
    /// Configured capacity in kbit/s; 0 = use the egress cap.
    capacity_kbps: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    policies: BTreeMap<Name, AbrPolicy>,
    sessions: BTreeMap<u64, Session>,
}

struct Session {
    channel: Name,
    continuity: Continuity,
    /// The last segment sent: its number, rendition and (renumbered) bytes, for retries.
    last: Option<(u64, Name, Bytes)>,
    last_seen: Instant,
    switches: u64,
    /// Low latency: the rendition chosen for each segment, by sequence number.
    picks: BTreeMap<u64, Name>,
}

#[derive(Deserialize)]
struct SessionQuery {
    s: Option<String>,
}

impl AutoAbr {
    pub fn new(host: Arc<Host>, egress: Arc<Egress>, capacity_kbps: u64) -> Arc<Self> {
        Arc::new(Self { host, egress, capacity_kbps, inner: Mutex::new(Inner::default()) })
    }

    /// The capacity shared by auto viewers, bit/s (`None`: unlimited).
    fn capacity_bps(&self) -> Option<u64> {
        let kbps = if self.capacity_kbps > 0 { self.capacity_kbps } else { self.egress.kbps() };
        (kbps > 0).then_some(kbps * 1000)
    }
}

/// The routes of server-side ABR, to merge into a node's router.
pub fn router(abr: Arc<AutoAbr>) -> Router {
    let cors = CorsLayer::new().allow_origin(Any).allow_methods(Any).expose_headers(
        [
            "relaycast-origin-time",
            "relaycast-last-part",
            "relaycast-rendition",
            "content-location",
            "cmsd-static",
            "cmsd-dynamic",
        ]
        .map(header::HeaderName::from_static),
    );
    Router::new()
        .route("/live/{channel}/auto.m3u8", get(start_session))
        .route("/live/{channel}/auto/index.m3u8", get(playlist))
        .route("/live/{channel}/auto/{file}", get(segment))
        .route("/live/{channel}/auto/{rendition}/{file}", get(cmaf_file))
        .route("/api/v1/abr", get(status))
        .layer(cors)
        .with_state(abr)
}

fn new_session_id() -> u64 {
    // 53 bits: survives a round trip through JavaScript numbers in tools that parse it.
    rand::random::<u64>() >> 11
}

fn parse_session(q: &SessionQuery) -> Result<Option<u64>, Response> {
    match &q.s {
        None => Ok(None),
        Some(s) => u64::from_str_radix(s, 16)
            .map(Some)
            .map_err(|_| error(StatusCode::BAD_REQUEST, format!("session id {s:?} is not hexadecimal"))),
    }
}

fn redirect(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_string()), (header::CACHE_CONTROL, "no-store".to_string())])
        .into_response()
}

/// `GET /live/{ch}/auto.m3u8`: a new session, redirected to its playlist.
async fn start_session(State(abr): State<Arc<AutoAbr>>, Path(channel): Path<String>) -> Response {
    let channel = match parse_name(&channel) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(r) = want_channel(&abr.host, &channel).await {
        return r;
    }
    let id = new_session_id();
    if let Err(r) = join(&abr, &channel, id) {
        return r;
    }
    tracing::debug!(%channel, session = format!("{id:x}"), "auto session");
    // The switch counter exists from the first session on (at 0), for dashboards.
    metrics::counter!("relaycast_abr_switches_total", "channel" => channel.to_string()).increment(0);
    redirect(&format!("auto/index.m3u8?s={id:x}"))
}

/// Register (or refresh) session `id` watching `channel`. Session ids come from clients, so the
/// map is bounded: expired sessions go when a new one arrives, and past [`MAX_SESSIONS`] a new
/// one is refused with a 503 (the player retries; existing viewers are not disturbed).
fn join(abr: &AutoAbr, channel: &Name, id: u64) -> Result<(), Response> {
    let now = Instant::now();
    let mut inner = abr.inner.lock().expect("abr lock");
    if !inner.sessions.contains_key(&id) {
        inner.sessions.retain(|_, s| now.saturating_duration_since(s.last_seen) <= SESSION_TTL);
        metrics::gauge!("relaycast_abr_sessions", "node" => abr.host.name.clone()).set(inner.sessions.len() as f64);
        if inner.sessions.len() >= MAX_SESSIONS {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("this edge holds {MAX_SESSIONS} auto sessions already; retry shortly"),
            ));
        }
    }
    let session = inner.sessions.entry(id).or_insert_with(|| Session {
        channel: channel.clone(),
        continuity: Continuity::new(),
        last: None,
        last_seen: now,
        switches: 0,
        picks: BTreeMap::new(),
    });
    session.last_seen = now;
    session.channel = channel.clone();
    let policy = inner.policies.entry(channel.clone()).or_insert_with(|| AbrPolicy::new(AbrConfig::default()));
    policy.expire(now);
    policy.join(now, id);
    Ok(())
}

/// Renditions that hold segments here, lowest bit rate first: (name, bit/s).
///
/// The rate is what the rendition's recent segments really average (bytes × 8 / duration over
/// the window), not the BANDWIDTH peak the master playlist declares: a shared egress is used up
/// by average rates, and the edge has the very segments it is about to send. The declared
/// figure is used until two segments are here.
fn ladder(host: &Host, channel: &Name) -> Vec<(Name, u64)> {
    host.read(|n| {
        let Some(ch) = n.channel(channel) else { return Vec::new() };
        let offered = n.offered_renditions(channel);
        let mut out: Vec<(Name, u64)> = ch
            .renditions
            .iter()
            .filter(|(_, r)| !r.window.is_empty())
            .filter_map(|(name, r)| {
                let (bytes, us) = r
                    .window
                    .iter()
                    .fold((0u64, 0u64), |(b, d), s| (b + s.data.len() as u64, d + u64::from(s.meta.duration_us)));
                let average = (r.window.len() >= 2 && us > 0).then(|| bytes * 8 * 1_000_000 / us);
                let declared = offered.iter().find(|o| &o.name == name).and_then(|o| o.bandwidth);
                Some((name.clone(), average.or(declared.or(r.bandwidth()).map(u64::from))?))
            })
            .collect();
        out.sort_by_key(|(name, bw)| (*bw, name.clone()));
        out
    })
}

/// `GET /live/{ch}/auto/index.m3u8?s=ID`.
async fn playlist(
    State(abr): State<Arc<AutoAbr>>,
    Path(channel): Path<String>,
    Query(q): Query<SessionQuery>,
    RawQuery(raw): RawQuery,
) -> Response {
    let channel = match parse_name(&channel) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let id = match parse_session(&q) {
        Ok(Some(id)) => id,
        Ok(None) => return redirect(&format!("index.m3u8?s={:x}", new_session_id())),
        Err(r) => return r,
    };
    if let Err(r) = want_channel(&abr.host, &channel).await {
        return r;
    }
    if let Err(r) = join(&abr, &channel, id) {
        return r;
    }
    if low_latency::is_cmaf(&abr, &channel) {
        return low_latency::playlist(&abr, &channel, id, raw.as_deref().unwrap_or("")).await;
    }
    let query = format!("s={id:x}");
    let rendered = abr.host.read(|n| {
        let ch = n.channel(&channel)?;
        // Every rendition of a ladder numbers its segments alike; list the one furthest ahead.
        let r = ch
            .renditions
            .values()
            .filter(|r| !r.window.is_empty())
            .max_by_key(|r| r.window.latest().map(|s| s.meta.seq))?;
        let keys = n.encryption(&channel).map(|segments_per_key| KeyUris { segments_per_key, uri_prefix: "../keys/" });
        let p = MediaPlaylist { target_duration_s: r.target_duration_s, uri_prefix: "", uri_query: &query, keys };
        Some((p.render(&r.window.live_run(PLAYLIST_LEN)), r.target_duration_s))
    });
    let Some((body, target)) = rendered else {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("channel {channel} has no segments yet; retry shortly"));
    };
    let max_age = (target / 2).max(1);
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl".to_string()),
            // Per-session URLs: a shared cache must not hand this playlist to someone else.
            (header::CACHE_CONTROL, format!("private, max-age={max_age}")),
        ],
        body,
    )
        .into_response()
}

/// `GET /live/{ch}/auto/{seq}.ts?s=ID`: the policy picks the rendition, the session's
/// continuity counters are carried across, and the bytes go out through the shared egress.
async fn segment(
    State(abr): State<Arc<AutoAbr>>,
    Path((channel, file)): Path<(String, String)>,
    Query(q): Query<SessionQuery>,
) -> Response {
    match serve_segment(abr, &channel, &file, &q).await {
        Ok(r) | Err(r) => r,
    }
}

async fn serve_segment(abr: Arc<AutoAbr>, channel: &str, file: &str, q: &SessionQuery) -> Result<Response, Response> {
    let channel = parse_name(channel).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let Some(seq) = file.strip_suffix(".ts").and_then(|n| n.parse::<u64>().ok()) else {
        return Err(error(StatusCode::BAD_REQUEST, format!("{file:?} is not a segment name ({{seq}}.ts)")));
    };
    let Some(id) = parse_session(q)? else {
        return Err(error(StatusCode::BAD_REQUEST, "auto segments need the session id (?s=ID) of auto/index.m3u8"));
    };
    want_channel(&abr.host, &channel).await?;
    join(&abr, &channel, id)?;
    let choice = choose_rendition(&abr, &channel, id, seq).await?;
    let (body, origin_ms, switched) = session_bytes(&abr, &channel, id, seq, &choice.rendition)?;
    if switched {
        metrics::counter!("relaycast_abr_switches_total", "channel" => channel.to_string()).increment(1);
    }
    metrics::counter!("relaycast_abr_segments_total", "channel" => channel.to_string(), "rendition" => choice.rendition.to_string())
        .increment(1);
    metrics::counter!("relaycast_http_egress_bytes_total", "node" => abr.host.name.clone())
        .increment(body.len() as u64);
    let mut resp = paced_response(&abr, &channel, id, body, "video/mp2t");
    let h = resp.headers_mut();
    h.insert("relaycast-origin-time", HeaderValue::from(origin_ms));
    for (name, value) in choice.headers(&channel, seq) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    Ok(resp)
}

/// `GET /live/{ch}/auto/{rendition}/{file}?s=ID`: an init segment, part or segment of a
/// low-latency auto playlist.
async fn cmaf_file(
    State(abr): State<Arc<AutoAbr>>,
    Path((channel, rendition, file)): Path<(String, String, String)>,
    Query(q): Query<SessionQuery>,
) -> Response {
    let (channel, rendition) = match (parse_name(&channel), parse_name(&rendition)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let id = match parse_session(&q) {
        Ok(Some(id)) => id,
        Ok(None) => return error(StatusCode::BAD_REQUEST, "auto files need the session id (?s=ID) of auto/index.m3u8"),
        Err(r) => return r,
    };
    if let Err(r) = want_channel(&abr.host, &channel).await {
        return r;
    }
    if let Err(r) = join(&abr, &channel, id) {
        return r;
    }
    low_latency::file(&abr, &channel, id, &rendition, &file).await
}

/// The rendition a segment goes out in, and why.
struct Choice {
    rendition: Name,
    /// Its advertised bandwidth, bit/s.
    bandwidth: u64,
    decision: Decision,
}

impl Choice {
    /// Where the bytes came from and what the policy saw (CMSD, CTA-5006).
    fn headers(&self, channel: &Name, seq: u64) -> [(&'static str, String); 4] {
        let kbps = |bps: f64| if bps.is_finite() { (bps / 1000.0).round() as u64 } else { 0 };
        let d = &self.decision;
        let dynamic = match (d.share_bps.is_finite(), d.rate_bps) {
            (true, Some(rate)) => format!("\"relaycast\";etp={};mb={}", kbps(rate), kbps(d.share_bps)),
            (true, None) => format!("\"relaycast\";mb={}", kbps(d.share_bps)),
            (false, Some(rate)) => format!("\"relaycast\";etp={}", kbps(rate)),
            (false, None) => "\"relaycast\"".to_string(),
        };
        [
            ("relaycast-rendition", self.rendition.to_string()),
            ("content-location", format!("/live/{channel}/{}/{seq}.ts", self.rendition)),
            ("cmsd-static", format!("br={}", kbps(self.bandwidth as f64))),
            ("cmsd-dynamic", dynamic),
        ]
    }
}

/// Ask the policy which rendition session `id` gets for `seq`. The policy always sees the
/// whole ladder, so its notion of "one step up" stays the same from one segment to the next;
/// renditions reach a relay one after another, so a chosen one not here yet gets a moment,
/// then the nearest lower one that is here is taken (or, failing that, the nearest higher).
async fn choose_rendition(abr: &AutoAbr, channel: &Name, id: u64, seq: u64) -> Result<Choice, Response> {
    let full = ladder(&abr.host, channel);
    let has = |name: &Name| {
        abr.host.read(|n| {
            n.channel(channel).and_then(|c| c.renditions.get(name)).is_some_and(|r| r.window.get(seq).is_some())
        })
    };
    if !full.iter().any(|(name, _)| has(name)) {
        return Err(error(StatusCode::NOT_FOUND, format!("segment {seq} of {channel} is not held here")));
    }
    let bandwidths: Vec<u64> = full.iter().map(|(_, bw)| *bw).collect();
    let capacity = abr.capacity_bps();
    let decision = {
        let mut inner = abr.inner.lock().expect("abr lock");
        let policy = inner.policies.entry(channel.clone()).or_insert_with(|| AbrPolicy::new(AbrConfig::default()));
        // Invariant: the ladder is not empty, so the policy decides.
        policy.choose(Instant::now(), id, seq, &bandwidths, capacity).expect("non-empty ladder")
    };
    let mut index = decision.index;
    if !has(&full[index].0) {
        let _ = abr.host.wait_for(Duration::from_secs(1), || has(&full[index].0).then_some(())).await;
        if !has(&full[index].0) {
            index = (0..=index).rev().chain(index + 1..full.len()).find(|&i| has(&full[i].0)).unwrap_or(index);
        }
    }
    Ok(Choice { rendition: full[index].0.clone(), bandwidth: bandwidths[index], decision })
}

/// The bytes session `id` gets for `seq` in `rendition`, with continuity counters carried on
/// from its previous segment (a retry gets the very same bytes); the origin timestamp; and
/// whether the rendition changed from the previous segment.
fn session_bytes(
    abr: &AutoAbr,
    channel: &Name,
    id: u64,
    seq: u64,
    rendition: &Name,
) -> Result<(Bytes, u64, bool), Response> {
    let mut inner = abr.inner.lock().expect("abr lock");
    // Invariant: `join` created the session.
    let session = inner.sessions.get_mut(&id).expect("joined above");
    let Some(seg) = abr.host.read(|n| n.channel(channel)?.renditions.get(rendition)?.window.get(seq).cloned()) else {
        return Err(error(StatusCode::NOT_FOUND, format!("segment {seq} of {channel}/{rendition} left the window")));
    };
    let (body, switched) = match &session.last {
        Some((s, r, bytes)) if *s == seq && r == rendition => (bytes.clone(), false),
        last => {
            let follows = last.as_ref().is_some_and(|(s, _, _)| *s + 1 == seq);
            let switched = follows && last.as_ref().is_some_and(|(_, r, _)| r != rendition);
            if !follows {
                session.continuity.reset();
            }
            let bytes = Bytes::from(session.continuity.renumber(&seg.data));
            session.last = Some((seq, rendition.clone(), bytes.clone()));
            (bytes, switched)
        }
    };
    if switched {
        session.switches += 1;
    }
    Ok((body, seg.meta.origin_ms, switched))
}

/// The segment body as a response paced by the shared egress, measuring how much the viewer's
/// own connection held it up (see [`Measured`]).
fn paced_response(abr: &Arc<AutoAbr>, channel: &Name, id: u64, body: Bytes, content_type: &'static str) -> Response {
    let len = body.len();
    let measured = Measured {
        abr: abr.clone(),
        channel: channel.clone(),
        session: id,
        bytes: 0,
        blocked: Duration::ZERO,
        handed_over: None,
    };
    let paced = abr.egress.clone().pace(body);
    let stream = futures_util::stream::unfold((paced.boxed(), measured), |(mut paced, mut m)| async move {
        // Time between handing a chunk over and being asked for the next is time the viewer's
        // connection held us up; waiting on the shared egress below is not counted.
        if let Some(at) = m.handed_over.take() {
            m.blocked += at.elapsed();
        }
        let item = paced.next().await?;
        if let Ok(chunk) = &item {
            m.bytes += chunk.len() as u64;
        }
        m.handed_over = Some(Instant::now());
        Some((item, (paced, m)))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    resp
}

/// Measures what limits one response: the viewer's own connection, or not.
///
/// The edge's egress is shared, so how long a response takes says more about the crowd than the
/// viewer (and a run that used it did hand spare capacity to whoever measured fast, and sent
/// viewers of an ample edge the lowest rendition when small segments measured slow). What the
/// viewer alone causes is backpressure: the time its connection takes to accept each chunk. A
/// response held up at least [`MIN_BLOCKED`] reports bytes over that time as the viewer's rate;
/// one that was not tells the policy the viewer is not limited by its link.
struct Measured {
    abr: Arc<AutoAbr>,
    channel: Name,
    session: u64,
    bytes: u64,
    blocked: Duration,
    handed_over: Option<Instant>,
}

impl Drop for Measured {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut inner = self.abr.inner.lock().expect("abr lock");
        let Some(p) = inner.policies.get_mut(&self.channel) else { return };
        if self.blocked >= MIN_BLOCKED {
            p.delivered(now, self.session, self.bytes, self.blocked);
        } else if self.bytes > 0 {
            p.not_limited(now, self.session);
        }
    }
}

/// `GET /api/v1/abr`: capacity, and per channel the sessions with their renditions and shares.
async fn status(State(abr): State<Arc<AutoAbr>>) -> Response {
    let now = Instant::now();
    let capacity = abr.capacity_bps();
    let inner = abr.inner.lock().expect("abr lock");
    let channels: Vec<_> = inner
        .policies
        .iter()
        .map(|(name, policy)| {
            let sessions: Vec<_> = inner
                .sessions
                .iter()
                .filter(|(id, s)| &s.channel == name && policy.knows(**id))
                .map(|(id, s)| {
                    let share = policy.share(now, *id, capacity);
                    // Low latency: the choice for the newest segment listed.
                    let newest = s.picks.last_key_value().or(s.last.as_ref().map(|(seq, r, _)| (seq, r)));
                    json!({
                        "id": format!("{id:x}"),
                        "rendition": newest.map(|(_, r)| r.to_string()),
                        "last_seq": newest.map(|(seq, _)| *seq),
                        "share_kbps": share.is_finite().then(|| (share / 1000.0).round()),
                        "switches": s.switches,
                        "idle_s": now.saturating_duration_since(s.last_seen).as_secs_f64(),
                    })
                })
                .collect();
            json!({ "channel": name, "viewers": policy.active(now), "sessions": sessions })
        })
        .collect();
    axum::Json(json!({
        "node": abr.host.name,
        "capacity_kbps": capacity.map(|c| c / 1000),
        "channels": channels,
    }))
    .into_response()
}

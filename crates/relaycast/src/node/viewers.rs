//! Edge-side live tracking (F21): which viewers are active on this edge, and how much it sends
//! them, reported to the tracker's traffic manager every second.
//!
//! HLS has no "connected" state: a viewer is active while it keeps reloading the playlist. So a
//! viewer is a key seen on a playlist request within [`ACTIVE`] — the steering `session` query
//! parameter when the URL carries one (the tracker's answers always do), else the client's IP
//! address (several anonymous players behind one address count once; steer them to count them).
//! Egress is the body size of every `/live/` response.
//!
//! Draining (SIGTERM on a relay): viewers already watching are served on, a viewer not seen
//! before gets `503` + `Retry-After`, and the reports list no channel, so the tracker steers no
//! one here and moves the steered viewers at their next steering poll.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use relaycast_core::steering::EdgeReport;
use serde::Serialize;

use crate::common::session_param;

/// A viewer with no playlist request for this long has left.
pub const ACTIVE: Duration = Duration::from_secs(6);
/// Window over which egress is averaged for a report.
const EGRESS_WINDOW: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<String, Instant>,
    anonymous: BTreeMap<IpAddr, Instant>,
    /// (when, bytes) of recent responses, oldest first.
    sent: VecDeque<(Instant, u64)>,
}

/// Most viewers of one kind (steered sessions, anonymous addresses) an edge tracks. Keys come
/// from clients; past this, stale entries are dropped first and new ones are not counted.
const MAX_TRACKED: usize = 100_000;

fn remember<K: Ord>(map: &mut BTreeMap<K, Instant>, key: K, now: Instant) {
    if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
        map.retain(|_, t| now.saturating_duration_since(*t) < ACTIVE);
        if map.len() >= MAX_TRACKED {
            return;
        }
    }
    map.insert(key, now);
}

/// The rate of the responses in `sent` (when, bytes) within [`EGRESS_WINDOW`] of `now`.
fn bits_per_second(sent: &VecDeque<(Instant, u64)>, now: Instant) -> f64 {
    let bytes: u64 =
        sent.iter().filter(|(t, _)| now.saturating_duration_since(*t) < EGRESS_WINDOW).map(|(_, b)| b).sum();
    bytes as f64 * 8.0 / EGRESS_WINDOW.as_secs_f64()
}

/// Active viewers and recent egress of this edge.
#[derive(Default)]
pub struct Viewers {
    inner: Mutex<Inner>,
    draining: AtomicBool,
}

/// What an edge reports to the tracker.
#[derive(Serialize, Debug)]
pub struct ReportBody<'a> {
    pub name: &'a str,
    #[serde(flatten)]
    pub report: EdgeReport,
}

impl Viewers {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Count a playlist request; false if it is a new viewer and the edge is draining.
    fn seen(&self, now: Instant, session: Option<String>, ip: Option<IpAddr>) -> bool {
        let mut inner = self.inner.lock().expect("viewers lock");
        let draining = self.draining.load(Ordering::Relaxed);
        fn fresh<K: Ord>(map: &BTreeMap<K, Instant>, key: &K, now: Instant) -> bool {
            map.get(key).is_none_or(|t| now.saturating_duration_since(*t) >= ACTIVE)
        }
        match (session, ip) {
            (Some(s), _) if draining && fresh(&inner.sessions, &s, now) => false,
            (None, Some(ip)) if draining && fresh(&inner.anonymous, &ip, now) => false,
            (Some(s), _) => {
                remember(&mut inner.sessions, s, now);
                true
            }
            (None, Some(ip)) => {
                remember(&mut inner.anonymous, ip, now);
                true
            }
            (None, None) => true,
        }
    }

    /// Stop taking new viewers and stop offering channels to the tracker.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Viewers seen within [`ACTIVE`].
    pub fn active(&self, now: Instant) -> usize {
        let inner = self.inner.lock().expect("viewers lock");
        let live = |t: &Instant| now.saturating_duration_since(*t) < ACTIVE;
        inner.sessions.values().filter(|t| live(t)).count() + inner.anonymous.values().filter(|t| live(t)).count()
    }

    /// Bits per second sent to viewers over the last [`EGRESS_WINDOW`].
    pub fn egress_bps(&self, now: Instant) -> f64 {
        bits_per_second(&self.inner.lock().expect("viewers lock").sent, now)
    }

    pub(crate) fn sent(&self, now: Instant, bytes: u64) {
        let mut inner = self.inner.lock().expect("viewers lock");
        // Drop what left the window as we go (an edge without a tracker never reports).
        while inner.sent.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) >= EGRESS_WINDOW) {
            inner.sent.pop_front();
        }
        inner.sent.push_back((now, bytes));
    }

    /// The current report (and forget what is stale), listing the `channels` this edge can
    /// serve now.
    pub fn report(&self, now: Instant, mut channels: Vec<String>) -> EdgeReport {
        if self.draining.load(Ordering::Relaxed) {
            channels.clear();
        }
        let mut inner = self.inner.lock().expect("viewers lock");
        inner.sessions.retain(|_, t| now.saturating_duration_since(*t) < ACTIVE);
        inner.anonymous.retain(|_, t| now.saturating_duration_since(*t) < ACTIVE);
        inner.sent.retain(|(t, _)| now.saturating_duration_since(*t) < EGRESS_WINDOW);
        let egress_bps = bits_per_second(&inner.sent, now);
        let sessions: Vec<String> = inner.sessions.keys().take(10_000).cloned().collect();
        let anonymous = inner.anonymous.len() as u32;
        metrics::gauge!("relaycast_edge_viewer_sessions").set(inner.sessions.len() as f64);
        metrics::gauge!("relaycast_edge_anonymous_viewers").set(f64::from(anonymous));
        EdgeReport { viewers: sessions.len() as u32 + anonymous, anonymous, sessions, egress_bps, channels }
    }
}

/// Axum middleware counting viewers and egress on `/live/` requests.
pub async fn track(State(viewers): State<Arc<Viewers>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let live = path.starts_with("/live/");
    if live && path.ends_with(".m3u8") {
        let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        if !viewers.seen(Instant::now(), session_param(req.uri().query()), ip) {
            return crate::common::http::error(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "this edge is shutting down and takes no new viewers; ask the tracker for another",
            );
        }
    }
    let resp = next.run(req).await;
    if live && resp.status().is_success() {
        let len = resp
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        viewers.sent(Instant::now(), len);
    }
    resp
}

/// Who reports, to which tracker, with which cluster token.
pub struct Reporter {
    pub name: String,
    pub tracker: reqwest::Url,
    pub token: String,
    /// Shows the node certificate, if the node has one.
    pub client: reqwest::Client,
    /// The node, asked which channels it can serve at each report.
    pub host: Arc<crate::node::host::Host>,
}

/// Report this edge's viewers to the tracker every second, forever.
pub async fn report_loop(viewers: Arc<Viewers>, me: Reporter) {
    let Reporter { name, tracker, token, client, host } = me;
    let Ok(url) = tracker.join("/api/v1/edge-report") else {
        return tracing::error!(%tracker, "bad tracker URL for edge reports");
    };
    let mut failing = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let channels = host.read(|n| n.servable_channels().iter().map(|c| c.to_string()).collect());
        let body = ReportBody { name: &name, report: viewers.report(Instant::now(), channels) };
        let Ok(json) = serde_json::to_vec(&body) else { continue };
        let result = client
            .post(url.clone())
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(json)
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => failing = false,
            // 404: the tracker does not know this edge yet (it announces first); 503: no
            // traffic manager. Either way, keep trying quietly after the first warning.
            Ok(r) => {
                if !failing {
                    tracing::warn!(node = %name, status = %r.status(), "tracker refused the viewer report");
                }
                failing = true;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(node = %name, error = %e, "viewer report failed");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draining_edge_serves_its_viewers_but_takes_no_new_ones() {
        let v = Viewers::default();
        let t0 = Instant::now();
        let ip = |n: u8| Some(IpAddr::from([127, 0, 0, n]));
        assert!(v.seen(t0, Some("old".into()), None));
        assert!(v.seen(t0, None, ip(1)));
        v.start_draining();
        assert!(v.seen(t0, Some("old".into()), None), "a session already watching goes on");
        assert!(v.seen(t0, None, ip(1)));
        assert!(!v.seen(t0, Some("new".into()), None), "a new session is refused");
        assert!(!v.seen(t0, None, ip(2)));
        assert!(v.report(t0, vec!["demo".into()]).channels.is_empty(), "nothing offered to the tracker");
        assert_eq!(v.active(t0), 2);
        assert_eq!(v.active(t0 + ACTIVE), 0, "viewers that stop asking have left");
        assert!(!v.seen(t0 + ACTIVE, Some("old".into()), None), "one that left does not come back");
    }

    #[test]
    fn client_keys_are_capped_and_stale_ones_make_room() {
        let t0 = Instant::now();
        let mut map = BTreeMap::new();
        for i in 0..MAX_TRACKED + 10 {
            remember(&mut map, i, t0);
        }
        assert_eq!(map.len(), MAX_TRACKED, "a flood of made-up keys stops at the cap");
        remember(&mut map, 1, t0 + Duration::from_secs(1));
        assert_eq!(map[&1], t0 + Duration::from_secs(1), "known keys are still refreshed");
        // Once they are stale, new keys take their place.
        let later = t0 + ACTIVE + Duration::from_secs(1);
        remember(&mut map, usize::MAX, later);
        assert!(map.contains_key(&usize::MAX) && map.len() == 1, "{}", map.len());
    }
}

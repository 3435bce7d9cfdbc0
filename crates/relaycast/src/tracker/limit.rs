//! A per-address rate limit on the tracker's open, viewer-facing routes (`/play`, steering, the
//! P2P calls): each client address gets a token bucket of `--viewer-rate` requests per second
//! with a burst of twice that, and past it a `429` with a reason. The buckets are bounded: a
//! bucket idle long enough to be full again is the same as none and is forgotten when the table
//! fills up, so made-up source addresses cannot grow the tracker's memory either.
//!
//! Viewers behind one NAT share an address; the default (200/s) leaves room for hundreds of
//! them steering every couple of seconds.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::common::http::error;

/// Client addresses tracked at most.
const MAX_CLIENTS: usize = 100_000;

pub struct RateLimit {
    per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimit {
    /// `per_s` requests per second per address; 0 = no limit.
    pub fn new(per_s: u32) -> Arc<Self> {
        let per_s = f64::from(per_s);
        Arc::new(Self { per_s, burst: 2.0 * per_s, buckets: Mutex::new(HashMap::new()) })
    }

    /// Take one request from `ip`'s bucket; false when it is empty.
    fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&ip) {
            let refill_s = self.burst / self.per_s;
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < refill_s);
            if buckets.len() >= MAX_CLIENTS {
                // Every tracked client is busy: serve without tracking rather than refuse all.
                return true;
            }
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_s).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn is_open_route(path: &str) -> bool {
    ["/play/", "/api/v1/steering/", "/api/v1/p2p/", "/api/v1/rank/"].iter().any(|p| path.starts_with(p))
}

pub async fn limit(State(l): State<Arc<RateLimit>>, req: Request, next: Next) -> Response {
    if l.per_s > 0.0 && is_open_route(req.uri().path()) {
        let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        if let Some(ip) = ip
            && !l.admit(ip, Instant::now())
        {
            metrics::counter!("relaycast_tracker_rate_limited_total").increment(1);
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("more than {} requests per second from {ip}; retry in a second", l.per_s),
            );
            r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
            return r.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate_and_other_addresses_are_unaffected() {
        let l = RateLimit::new(10);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!((0..30).filter(|_| l.admit(a, t0)).count(), 20, "a burst of twice the rate");
        assert!(l.admit(b, t0), "another address has its own bucket");
        assert!(!l.admit(a, t0 + Duration::from_millis(50)));
        assert!(l.admit(a, t0 + Duration::from_millis(150)), "one more after a tenth of a second");
    }
}

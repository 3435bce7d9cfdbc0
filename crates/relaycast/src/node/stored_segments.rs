//! The window's TS segments as whole HTTP/1.1 responses in memory files, so a plain-HTTP viewer's
//! `GET /live/{channel}/{rendition}/{seq}.ts` is answered with one `sendfile` (`common::http1`).
//!
//! Only what the router would answer the same way is answered here: a public channel, a segment
//! in the window, no egress cap (pacing needs the router's paced body). Everything else — signed
//! channels, parts, missing segments, a capped edge — falls through to the router, which has the
//! reasons and the waiting. The response is made once per segment, the first time one is asked
//! for, with the router's headers; its `date` is when it was made, as a cache's stored answer
//! keeps its original date. A response leaves memory when its segment leaves the window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::StatusCode;
use relaycast_core::{Availability, Name, Node, Playback, Segment};

use crate::common::egress::Egress;
use crate::common::http1::{Shortcut, StoredResponse};
use crate::node::host::Host;
use crate::node::http;
use crate::node::viewers::Viewers;

/// One stored segment and the counters each send of it adds to.
struct Stored {
    channel: Name,
    rendition: Name,
    seq: u64,
    response: Arc<StoredResponse>,
    /// Payload bytes (what the router path counts as egress).
    body_len: u64,
    requests: metrics::Counter,
    segments_sent: metrics::Counter,
    egress_bytes: metrics::Counter,
}

pub struct StoredSegments {
    host: Arc<Host>,
    egress: Arc<Egress>,
    viewers: Arc<Viewers>,
    /// By request target (`/live/{channel}/{rendition}/{seq}.ts`), so a hit allocates nothing.
    stored: Mutex<HashMap<Box<str>, Arc<Stored>>>,
}

impl StoredSegments {
    pub fn new(host: Arc<Host>, egress: Arc<Egress>, viewers: Arc<Viewers>) -> Arc<Self> {
        Arc::new(Self { host, egress, viewers, stored: Mutex::default() })
    }

    /// The stored response for `target`, made now if it names a segment in the window.
    fn get_or_store(&self, target: &str) -> Option<Arc<Stored>> {
        if let Some(s) = self.stored.lock().expect("stored segments lock").get(target) {
            return Some(s.clone());
        }
        let (channel, rendition, seq) = parse_target(target)?;
        // Signed channels are never stored: their requests go through the router's door.
        let segment = self.host.read(|n| {
            let public = n.declared_playback(&channel) == Some(Playback::Public);
            segment_in(n, &channel, &rendition, seq).filter(|_| public).cloned()
        })?;
        let head = http::segment_head(&segment, crate::common::http1::date_now());
        let response = match StoredResponse::new(&head, &segment.data) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::warn!(node = %self.host.name, %channel, %rendition, seq, error = %e, "cannot store a segment response; the router serves it");
                return None;
            }
        };
        let node = &self.host.name;
        let stored = Arc::new(Stored {
            response,
            body_len: segment.data.len() as u64,
            requests: http::requests_counter("segment", StatusCode::OK),
            segments_sent: http::served_counter(node, &channel),
            egress_bytes: http::egress_counter(node),
            channel,
            rendition,
            seq,
        });
        let mut all = self.stored.lock().expect("stored segments lock");
        all.insert(target.into(), stored.clone());
        // A new segment is a good moment to forget the ones that left their window.
        self.host.read(|n| all.retain(|_, s| in_window(n, s)));
        let bytes: u64 = all.values().map(|s| s.response.wire_len()).sum();
        metrics::gauge!("relaycast_stored_segment_bytes", "node" => self.host.name.clone()).set(bytes as f64);
        Some(stored)
    }
}

fn segment_in<'n>(n: &'n Node, channel: &Name, rendition: &Name, seq: u64) -> Option<&'n Segment> {
    n.channel(channel)?.renditions.get(rendition)?.window.get(seq)
}

fn in_window(n: &Node, s: &Stored) -> bool {
    segment_in(n, &s.channel, &s.rendition, s.seq).is_some()
}

impl Shortcut for StoredSegments {
    fn stored(&self, target: &str) -> Option<Arc<StoredResponse>> {
        if self.egress.kbps() != 0 {
            return None;
        }
        let stored = self.get_or_store(target)?;
        // What the router checks, in one look at the node: the channel is public, the segment
        // still in the window, and (as `want_channel`) the request keeps the channel wanted here.
        let servable = self.host.input(|n, now| {
            n.declared_playback(&stored.channel) == Some(Playback::Public)
                && in_window(n, &stored)
                && n.viewer_request(now, &stored.channel) == Availability::Ready
        });
        if !servable {
            return None;
        }
        stored.requests.increment(1);
        stored.segments_sent.increment(1);
        stored.egress_bytes.increment(stored.body_len);
        self.viewers.sent(Instant::now(), stored.body_len);
        Some(stored.response.clone())
    }
}

/// `/live/{channel}/{rendition}/{seq}.ts` without a query; None for anything else.
fn parse_target(target: &str) -> Option<(Name, Name, u64)> {
    let rest = target.strip_prefix("/live/")?;
    let mut parts = rest.split('/');
    let (channel, rendition, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let seq = file.strip_suffix(".ts")?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((crate::common::parse_name(channel).ok()?, crate::common::parse_name(rendition).ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_segment_urls_are_taken() {
        let (c, r, s) = parse_target("/live/demo/src/42.ts").expect("a segment URL");
        assert_eq!((c.as_str(), r.as_str(), s), ("demo", "src", 42));
        for other in [
            "/live/demo/src/42.ts?token=x",
            "/live/demo/src/index.m3u8",
            "/live/demo/src/42.m4s",
            "/live/demo/src/.ts",
            "/live/demo/src/+4.ts",
            "/live/demo/src/4/2.ts",
            "/live/demo/42.ts",
            "/live/de%20mo/src/42.ts",
            "/metrics",
        ] {
            assert!(parse_target(other).is_none(), "{other} must go to the router");
        }
    }
}

//! Low-latency HLS on every node (F32) for CMAF renditions: the playlist with parts and
//! blocking reload, the init segment, parts and whole fMP4 segments.
//!
//! A request for something that is about to exist (the next part, the preload hint, the next
//! playlist) is held until the node stores it, then answered at once; a held request ends with a
//! clear error when the source stops (never hangs). Held requests are counted and capped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use relaycast_core::llhls::{self, Block, Directives, LlPlaylist, RenditionReport};
use relaycast_core::node::Rendition;
use relaycast_core::p2p::signing::Signature;
use relaycast_core::{Name, Node};

use crate::common::http::error;
use crate::node::host::Host;

/// Most requests one node holds at once; past it, requests are answered 503 at once.
pub const MAX_HELD: usize = 20_000;
/// Segments listed in a low-latency playlist: long enough to seek back a little and for a
/// player to rejoin; players reloading every part ask for delta updates (`_HLS_skip`).
const PLAYLIST_LEN: usize = 20;

/// What a file name under a CMAF rendition asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlFile {
    Init,
    Segment(u64),
    Part(u64, u32),
}

/// Parse `init.mp4`, `{seq}.m4s` or `{seq}.{part}.m4s`; `None` for anything else.
pub fn parse_file(file: &str) -> Option<LlFile> {
    if file == "init.mp4" {
        return Some(LlFile::Init);
    }
    let stem = file.strip_suffix(".m4s")?;
    match stem.split_once('.') {
        None => Some(LlFile::Segment(stem.parse().ok()?)),
        Some((seq, part)) => Some(LlFile::Part(seq.parse().ok()?, part.parse().ok()?)),
    }
}

/// Whether this rendition is packaged as CMAF (served by this module): its init segment is
/// known, or its parts are already here (a relay may get the first parts before the catalogue
/// that carries the init segment).
pub fn is_cmaf(host: &Host, channel: &Name, rendition: &Name) -> bool {
    host.read(|n| {
        let has_parts = n
            .channel(channel)
            .and_then(|c| c.renditions.get(rendition))
            .is_some_and(|r| r.parts.runs().next().is_some());
        has_parts || n.offered_renditions(channel).iter().any(|r| &r.name == rendition && r.init.is_some())
    })
}

fn rendition<'a>(n: &'a Node, channel: &Name, rendition: &Name) -> Option<&'a Rendition> {
    n.channel(channel)?.renditions.get(rendition)
}

/// How long a held request may wait: three target durations, at least three seconds.
pub fn hold_limit(host: &Host, channel: &Name, name: &Name) -> Duration {
    let target = host.read(|n| rendition(n, channel, name).map_or(1, |r| r.target_duration_s));
    Duration::from_secs(u64::from(target.max(1)) * 3).max(Duration::from_secs(3))
}

/// Hold the request until `ready` gives an answer (`Ok(None)`: not within `limit`), within the
/// node's cap on held requests (`Err`: the cap is reached, answer this at once).
pub async fn hold<T>(
    host: &Arc<Host>,
    limit: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<Option<T>, Response> {
    if let Some(r) = ready() {
        return Ok(Some(r));
    }
    if host.held.fetch_add(1, Ordering::Relaxed) >= MAX_HELD {
        host.held.fetch_sub(1, Ordering::Relaxed);
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this node holds {MAX_HELD} waiting requests; retry"),
        ));
    }
    let answer = host.wait_for(limit, &mut ready).await;
    host.held.fetch_sub(1, Ordering::Relaxed);
    Ok(answer)
}

/// The low-latency media playlist, held while the directives ask for a part not yet here.
pub async fn playlist(host: &Arc<Host>, channel: &Name, name: &Name, query: Option<&str>) -> Response {
    let directives = match llhls::parse_directives(query.unwrap_or("")) {
        Ok(d) => d,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let state = || host.read(|n| blocking(n, channel, name, directives));
    if let Block::TooFar(reason) = state() {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    let limit = hold_limit(host, channel, name);
    let render = || match state() {
        Block::Ready | Block::TooFar(_) => host.read(|n| render(n, channel, name, directives.skip)),
        Block::Wait => None,
    };
    match hold(host, limit, render).await {
        Ok(Some(r)) => {
            let blocking = directives.msn.is_some();
            // A blocking answer names one playlist version and may be cached; a plain one is
            // stale as soon as the next part exists.
            let cache = if blocking { "public, max-age=6" } else { "no-cache" };
            with_headers(r, "application/vnd.apple.mpegurl", cache)
        }
        Ok(None) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "segment {} part {} of {channel}/{name} was not produced within {} s (is the source live?)",
                directives.msn.unwrap_or(0),
                directives.part.map_or("-".to_string(), |p| p.to_string()),
                limit.as_secs()
            ),
        ),
        Err(e) => e,
    }
}

fn blocking(n: &Node, channel: &Name, name: &Name, d: Directives) -> Block {
    match rendition(n, channel, name) {
        Some(r) => llhls::blocking_state(r.window.latest().map(|s| s.meta.seq), &r.parts, d),
        None => Block::Wait,
    }
}

fn render(n: &Node, channel: &Name, name: &Name, skip: bool) -> Option<Response> {
    let ch = n.channel(channel)?;
    let r = ch.renditions.get(name)?;
    let reports: Vec<RenditionReport> = ch
        .renditions
        .iter()
        .filter(|(other, _)| *other != name)
        .filter_map(|(other, o)| {
            let (last_msn, last_part) = match o.parts.runs().next_back() {
                Some(run) if !run.is_complete() && run.available().next().is_some() => {
                    (run.seq, Some(run.available().count() as u32 - 1))
                }
                _ => (o.window.latest()?.meta.seq, None),
            };
            Some(RenditionReport { uri: format!("../{other}/index.m3u8"), last_msn, last_part })
        })
        .collect();
    let segments = r.window.live_run(PLAYLIST_LEN);
    let p = LlPlaylist {
        reports: &reports,
        skip,
        ..LlPlaylist::new(r.target_duration_s, r.part_target_us, &segments, &r.parts)
    };
    Some(p.render().into_response())
}

/// Where a requested file stands on this node.
enum Lookup {
    Found(Found),
    /// About to exist: hold the request.
    Soon,
    /// Too old, too far ahead, or a part past its segment's last.
    Gone,
}

fn lookup(n: &Node, channel: &Name, name: &Name, file: LlFile) -> Lookup {
    let Some(r) = rendition(n, channel, name) else { return Lookup::Gone };
    let wait =
        |part| blocking(n, channel, name, Directives { msn: Some(file_seq(file)), part, skip: false }) == Block::Wait;
    match file {
        LlFile::Init => {
            match n.offered_renditions(channel).into_iter().find(|i| &i.name == name).and_then(|i| i.init) {
                Some(init) => {
                    Lookup::Found(Found { bytes: Bytes::from(init), origin_ms: None, last: false, signature: None })
                }
                None => Lookup::Gone,
            }
        }
        LlFile::Segment(seq) => match r.window.get(seq) {
            Some(s) => Lookup::Found(Found {
                bytes: s.data.clone(),
                origin_ms: Some(s.meta.origin_ms),
                last: false,
                signature: s.signature,
            }),
            None if wait(None) => Lookup::Soon,
            None => Lookup::Gone,
        },
        LlFile::Part(seq, index) => match r.parts.part(seq, index) {
            Some(p) => Lookup::Found(Found {
                bytes: p.data.clone(),
                origin_ms: Some(p.meta.origin_ms),
                last: p.meta.last,
                signature: p.signature,
            }),
            None => {
                let whole = r.window.get(seq).is_some() || r.parts.run(seq).is_some_and(|run| run.is_complete());
                if !whole && wait(Some(index)) { Lookup::Soon } else { Lookup::Gone }
            }
        },
    }
}

fn file_seq(file: LlFile) -> u64 {
    match file {
        LlFile::Init => 0,
        LlFile::Segment(seq) | LlFile::Part(seq, _) => seq,
    }
}

/// A file of a CMAF rendition, found.
pub struct Found {
    pub bytes: Bytes,
    /// The origin's timestamp (parts and segments).
    pub origin_ms: Option<u64>,
    /// A segment's last part.
    pub last: bool,
    /// The origin's signature over the whole segment (a segment, or its last part).
    pub signature: Option<Signature>,
}

/// `init.mp4`, a part, or a whole fMP4 segment; a part or segment about to exist is held.
/// `Err` is the answer to give instead (404, 503 with a reason).
pub async fn fetch(host: &Arc<Host>, channel: &Name, name: &Name, file: LlFile) -> Result<Found, Response> {
    let limit = hold_limit(host, channel, name);
    let held = hold(host, limit, || match host.read(|n| lookup(n, channel, name, file)) {
        Lookup::Soon => None,
        done => Some(done),
    })
    .await?;
    match held {
        Some(Lookup::Found(found)) => Ok(found),
        Some(_) => {
            let what = match file {
                LlFile::Init => "the init segment".to_string(),
                LlFile::Segment(seq) => format!("segment {seq}"),
                LlFile::Part(seq, index) => format!("part {seq}.{index}"),
            };
            Err(error(
                StatusCode::NOT_FOUND,
                format!(
                    "{what} of {channel}/{name} is not held here (too old, too far ahead, or past the segment's last part)"
                ),
            ))
        }
        None => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{file:?} of {channel}/{name} did not arrive within {} s (is the source live?)", limit.as_secs()),
        )),
    }
}

/// [`fetch`] answered for everyone: shared caches may keep parts and segments for good. A part
/// still arriving from the parent is answered at once and streamed as its bytes come.
pub async fn file(host: &Arc<Host>, channel: &Name, name: &Name, file: LlFile) -> Response {
    if let LlFile::Part(seq, index) = file {
        let key = (channel.clone(), name.clone(), seq, index);
        let limit = hold_limit(host, channel, name);
        // Wait like `fetch`, but also stop waiting when the part starts arriving.
        let arriving = hold(host, limit, || match host.read(|n| lookup(n, channel, name, file)) {
            Lookup::Soon => host.arriving.follow(&key).map(Some),
            _ => Some(None),
        })
        .await;
        match arriving {
            Ok(Some(Some((head, rx)))) => return streamed(host, head, rx),
            Err(answer) => return answer,
            Ok(None) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "part {seq}.{index} of {channel}/{name} did not arrive within {} s (is the source live?)",
                        limit.as_secs()
                    ),
                );
            }
            // Whole already, or gone: `fetch` answers at once.
            Ok(Some(None)) => {}
        }
    }
    let found = match fetch(host, channel, name, file).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let cache = if file == LlFile::Init { "public, max-age=5" } else { "public, max-age=86400, immutable" };
    metrics::counter!("relaycast_http_egress_bytes_total", "node" => host.name.clone())
        .increment(found.bytes.len() as u64);
    let mut r = with_headers(found.bytes.clone().into_response(), "video/mp4", cache);
    found.mark(&mut r);
    r
}

/// The answer for a part whose bytes are still arriving: the same headers as for a whole one,
/// its length known from the header, the body streamed.
fn streamed(
    host: &Host,
    head: crate::node::arriving::PartHead,
    rx: tokio::sync::watch::Receiver<crate::node::arriving::Progress>,
) -> Response {
    metrics::counter!("relaycast_http_egress_bytes_total", "node" => host.name.clone()).increment(head.len as u64);
    metrics::counter!("relaycast_parts_cut_through_total", "node" => host.name.clone()).increment(1);
    let mut r =
        with_headers(crate::node::arriving::body(rx).into_response(), "video/mp4", "public, max-age=86400, immutable");
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(head.len));
    let found =
        Found { bytes: Bytes::new(), origin_ms: Some(head.origin_ms), last: head.last, signature: head.signature };
    found.mark(&mut r);
    r
}

impl Found {
    /// The origin's timestamp; for a segment's last part the mark that it is the last (a client
    /// fetching a segment part by part knows where it ends); the origin's signature over the
    /// whole segment, which sharing viewers check.
    pub fn mark(&self, r: &mut Response) {
        let h = r.headers_mut();
        if let Some(ms) = self.origin_ms {
            h.insert("relaycast-origin-time", HeaderValue::from(ms));
        }
        if self.last {
            h.insert("relaycast-last-part", HeaderValue::from_static("true"));
        }
        if let Some(sig) = &self.signature
            && let Ok(v) = HeaderValue::from_str(&relaycast_core::p2p::signing::to_hex(sig))
        {
            h.insert("relaycast-signature", v);
        }
    }
}

fn with_headers(mut r: Response, content_type: &'static str, cache: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(parse_file("init.mp4"), Some(LlFile::Init));
        assert_eq!(parse_file("12.m4s"), Some(LlFile::Segment(12)));
        assert_eq!(parse_file("12.3.m4s"), Some(LlFile::Part(12, 3)));
        assert_eq!(parse_file("12.ts"), None);
        assert_eq!(parse_file("x.m4s"), None);
        assert_eq!(parse_file("1.2.3.m4s"), None);
        assert_eq!(parse_file("-1.m4s"), None);
    }
}

//! Server-side ABR at low latency (F30 with F32): the auto playlist of a CMAF channel lists each
//! segment's parts from the rendition chosen for that segment, in that rendition's folder
//! (`{rendition}/{seq}.{part}.m4s?s=ID`), and repeats `EXT-X-MAP` where the rendition changes,
//! so the player loads the matching init segment. fMP4 needs no renumbering, so the bytes are the
//! rendition's own.
//!
//! The rendition of a segment is chosen once, when the playlist first needs it — listed, or
//! hinted as the next part — by the same policy as for MPEG-TS segments. Older segments a new
//! session sees are listed in the rendition of its first choice. Parts are served through the
//! session, paced by the shared egress, so the policy sees each viewer's delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use relaycast_core::Name;
use relaycast_core::abr::{AbrConfig, AbrPolicy};
use relaycast_core::llhls::{self, Block, LlPlaylist};
use relaycast_core::media::SegmentMeta;
use relaycast_core::parts::{PartLog, PartRun};

use super::{AutoAbr, ladder, paced_response};
use crate::common::http::error;
use crate::node::lowlatency::{self, LlFile};

/// Segments listed in an auto playlist (as for a rendition's own LL playlist).
const PLAYLIST_LEN: usize = 20;
/// Choices remembered per session: more than a playlist lists.
pub(super) const PICKS_KEPT: usize = 64;

/// What one CMAF rendition holds, copied out of the node.
struct Held {
    name: Name,
    segments: Vec<SegmentMeta>,
    runs: Vec<PartRun>,
    target_duration_s: u32,
    part_target_us: u32,
}

impl Held {
    /// The segment after the newest it has begun.
    fn next_seq(&self) -> u64 {
        let newest = self.runs.last().map(|r| r.seq).max(self.segments.last().map(|m| m.seq));
        newest.map_or(0, |s| s + 1)
    }

    fn has(&self, seq: u64) -> bool {
        self.segments.iter().any(|m| m.seq == seq) || self.runs.iter().any(|r| r.seq == seq)
    }
}

/// One session's playlist, composed of the renditions chosen per segment.
struct Composed {
    segments: Vec<SegmentMeta>,
    parts: PartLog,
    folders: BTreeMap<u64, String>,
    target_duration_s: u32,
    part_target_us: u32,
}

fn held(abr: &AutoAbr, channel: &Name) -> Vec<Held> {
    abr.host.read(|n| {
        let Some(ch) = n.channel(channel) else { return Vec::new() };
        ch.renditions
            .iter()
            .filter(|(_, r)| r.info.init.is_some())
            .map(|(name, r)| Held {
                name: name.clone(),
                segments: r.window.live_run(PLAYLIST_LEN),
                runs: r.parts.runs().cloned().collect(),
                target_duration_s: r.target_duration_s,
                part_target_us: r.part_target_us,
            })
            .collect()
    })
}

/// Whether the channel's renditions are CMAF (served at low latency).
pub(super) fn is_cmaf(abr: &AutoAbr, channel: &Name) -> bool {
    abr.host.read(|n| n.channel(channel).is_some_and(|c| c.renditions.values().any(|r| r.info.init.is_some())))
}

/// Compose session `id`'s playlist, choosing renditions for segments that have none yet.
fn compose(abr: &AutoAbr, channel: &Name, id: u64) -> Option<Composed> {
    let renditions = held(abr, channel);
    let leader = renditions.iter().max_by_key(|h| h.next_seq())?;
    let mut seqs: Vec<u64> = leader.segments.iter().map(|m| m.seq).collect();
    let newest_listed = seqs.last().copied();
    seqs.extend(leader.runs.iter().map(|r| r.seq).filter(|&s| newest_listed.is_none_or(|l| s > l)));
    seqs.push(leader.next_seq());
    let folders = choose(abr, channel, id, &renditions, &seqs);

    let keep = leader.runs.len().max(2);
    let mut composed = Composed {
        segments: Vec::new(),
        parts: PartLog::new(keep),
        folders: BTreeMap::new(),
        target_duration_s: leader.target_duration_s,
        part_target_us: leader.part_target_us,
    };
    for &seq in &seqs {
        let Some(h) = folders.get(&seq).and_then(|f| renditions.iter().find(|h| &h.name == f)) else { break };
        composed.folders.insert(seq, h.name.to_string());
        if let Some(run) = h.runs.iter().find(|r| r.seq == seq) {
            composed.parts.adopt(run.clone());
        }
        match h.segments.iter().find(|m| m.seq == seq) {
            Some(m) => composed.segments.push(*m),
            // The segment being made (or next): its parts, then nothing after it.
            None => break,
        }
    }
    Some(composed)
}

/// The rendition of each segment in `seqs` for session `id`: its earlier choices, the policy's
/// for new segments, and for segments older than its first choice that choice's rendition.
fn choose(abr: &AutoAbr, channel: &Name, id: u64, held: &[Held], seqs: &[u64]) -> BTreeMap<u64, Name> {
    let full = ladder(&abr.host, channel);
    let bandwidths: Vec<u64> = full.iter().map(|(_, bw)| *bw).collect();
    let capacity = abr.capacity_bps();
    let now = Instant::now();
    let mut inner = abr.inner.lock().expect("abr lock");
    let super::Inner { policies, sessions } = &mut *inner;
    let Some(session) = sessions.get_mut(&id) else { return BTreeMap::new() };
    let policy = policies.entry(channel.clone()).or_insert_with(|| AbrPolicy::new(AbrConfig::default()));
    let newest = seqs.last().copied().unwrap_or(0);
    // A new session's first choice is for the segment being made; older ones follow it.
    let from = session.picks.keys().next_back().map_or(newest.saturating_sub(1), |last| last + 1);
    for &seq in seqs.iter().filter(|&&s| s >= from) {
        if session.picks.contains_key(&seq) {
            continue;
        }
        let Some(decision) = policy.choose(now, id, seq, &bandwidths, capacity) else { break };
        let wanted = &full[decision.index].0;
        // The chosen rendition may not hold a listed segment (a relay's renditions arrive one
        // after another): the nearest lower one that does, or the nearest higher.
        let holds = |i: usize| seq >= newest || held.iter().any(|h| h.name == full[i].0 && h.has(seq));
        let index = (0..=decision.index).rev().chain(decision.index + 1..full.len()).find(|&i| holds(i));
        let Some(index) = index else { continue };
        let pick = full[index].0.clone();
        if session.picks.values().next_back().is_some_and(|prev| *prev != pick) {
            session.switches += 1;
            metrics::counter!("relaycast_abr_switches_total", "channel" => channel.to_string()).increment(1);
        }
        tracing::trace!(%channel, session = format!("{id:x}"), seq, rendition = %pick, wanted = %wanted, "auto pick");
        session.picks.insert(seq, pick);
    }
    while session.picks.len() > PICKS_KEPT {
        session.picks.pop_first();
    }
    let first = session.picks.values().next().cloned();
    seqs.iter()
        .filter_map(|&seq| {
            let pick = session.picks.get(&seq).cloned().or_else(|| {
                let first = first.clone()?;
                let holds = held.iter().any(|h| h.name == first && h.has(seq));
                let other = || held.iter().find(|h| h.has(seq)).map(|h| h.name.clone());
                if holds { Some(first) } else { other() }
            })?;
            Some((seq, pick))
        })
        .collect()
}

/// `GET /live/{ch}/auto/index.m3u8?s=ID[&_HLS_msn=M&_HLS_part=P&_HLS_skip=YES]` on a CMAF channel.
pub(super) async fn playlist(abr: &Arc<AutoAbr>, channel: &Name, id: u64, query: &str) -> Response {
    let directives = match llhls::parse_directives(query) {
        Ok(d) => d,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let state = |c: &Composed| llhls::blocking_state(c.segments.last().map(|m| m.seq), &c.parts, directives);
    if let Some(Block::TooFar(reason)) = compose(abr, channel, id).as_ref().map(state) {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    let limit = std::time::Duration::from_secs(3);
    let ready = || compose(abr, channel, id).filter(|c| state(c) != Block::Wait);
    let composed = match lowlatency::hold(&abr.host, limit, ready).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{channel} produced nothing new within {} s (is the source live?)", limit.as_secs()),
            );
        }
        Err(at_capacity) => return at_capacity,
    };
    let query = format!("s={id:x}");
    let body = LlPlaylist {
        folders: &composed.folders,
        uri_query: &query,
        skip: directives.skip,
        ..LlPlaylist::new(composed.target_duration_s, composed.part_target_us, &composed.segments, &composed.parts)
    }
    .render();
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            // Per-session URLs: a shared cache must not hand this playlist to someone else.
            (header::CACHE_CONTROL, "private, no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /live/{ch}/auto/{rendition}/{file}?s=ID`: a file of the rendition the playlist chose,
/// through the session's pacing and measurement.
pub(super) async fn file(abr: &Arc<AutoAbr>, channel: &Name, id: u64, rendition: &Name, name: &str) -> Response {
    let Some(file) = lowlatency::parse_file(name) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{name:?} is not init.mp4, {{seq}}.m4s or {{seq}}.{{part}}.m4s"),
        );
    };
    let found = match lowlatency::fetch(&abr.host, channel, rendition, file).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    if matches!(file, LlFile::Part(_, 0) | LlFile::Segment(_)) {
        metrics::counter!("relaycast_abr_segments_total", "channel" => channel.to_string(), "rendition" => rendition.to_string())
            .increment(1);
    }
    metrics::counter!("relaycast_http_egress_bytes_total", "node" => abr.host.name.clone())
        .increment(found.bytes.len() as u64);
    let mut r = paced_response(abr, channel, id, found.bytes.clone(), "video/mp4");
    found.mark(&mut r);
    if let Ok(v) = HeaderValue::from_str(rendition.as_str()) {
        r.headers_mut().insert("relaycast-rendition", v);
    }
    r
}

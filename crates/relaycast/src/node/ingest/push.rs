//! HLS pushed over HTTP PUT (F2): `ffmpeg ... -f hls -method PUT
//! http://origin/ingest/{channel}/{key}/{rendition}.m3u8`.
//!
//! ffmpeg uploads each segment file, then the playlist that lists it. A segment is published
//! when a playlist names it, with the duration and discontinuity the playlist gives; the
//! playlist's stem names the rendition. Channels and their stream keys are declared up front.
//!
//! A push channel also takes a continuous MPEG-TS stream, `ffmpeg ... -f mpegts -method PUT
//! http://origin/ingest/{channel}/{key}`, packaged as low-latency CMAF parts as it arrives
//! (see [`super::cmaf`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use bytes::Bytes;
use futures_util::StreamExt;
use relaycast_core::{Name, SourceSegment};

use crate::common::http::error;
use crate::common::parse_name;
use crate::node::host::Host;
use crate::node::ingest::claim::{Publishing, Refusal};
use crate::node::ingest::cmaf::{LiveRendition, SegmentPublisher};
use crate::node::ingest::meter::PublisherMeter;

/// Segment files held per channel while waiting for a playlist that names them.
const MAX_PENDING_FILES: usize = 32;
/// Largest playlist accepted.
const MAX_PLAYLIST_BYTES: usize = 256 * 1024;

/// The push-ingest state of an origin: declared channels, their keys, and uploaded files.
pub struct PushIngest {
    channels: BTreeMap<Name, Mutex<PushChannel>>,
    /// Stream keys and live publishers, shared with the RTMP and SRT listeners.
    pub publishing: Arc<Publishing>,
    low_latency: bool,
}

struct PushChannel {
    /// Uploaded, not yet published segment files by file name, oldest first.
    pending: VecDeque<(String, Bytes)>,
    /// Last source sequence published per rendition.
    published: BTreeMap<Name, u64>,
    /// The latest playlist uploaded per rendition.
    playlists: BTreeMap<Name, m3u8_rs::MediaPlaylist>,
    /// Where each rendition's segments go (packaged as CMAF parts on a low-latency origin).
    publishers: BTreeMap<Name, SegmentPublisher>,
}

impl PushIngest {
    /// Declare push channels (`name → stream key`) on `host`; `low_latency` packages pushed HLS
    /// segments as CMAF parts.
    pub fn new(host: &Arc<Host>, keys: BTreeMap<Name, String>, low_latency: bool, takeover: bool) -> Arc<Self> {
        let mut channels = BTreeMap::new();
        let source = if low_latency { "push · low latency" } else { "push" };
        let publishing = Publishing::new(&keys, takeover);
        for name in keys.into_keys() {
            host.input(|n, now| n.set_local_channel(now, name.clone(), source, Vec::new()));
            channels.insert(
                name,
                Mutex::new(PushChannel {
                    pending: VecDeque::new(),
                    published: BTreeMap::new(),
                    playlists: BTreeMap::new(),
                    publishers: BTreeMap::new(),
                }),
            );
        }
        Arc::new(Self { channels, publishing, low_latency })
    }
}

/// What the push handlers need: the node to publish on and its push channels, if any.
#[derive(Clone)]
struct PushState {
    host: Arc<Host>,
    push: Option<Arc<PushIngest>>,
}

/// `PUT|DELETE /ingest/{channel}/{key}/{file}`. A node without push channels answers every
/// upload with a reason instead of a bare 404.
pub fn routes<S: Clone + Send + Sync + 'static>(host: Arc<Host>, push: Option<Arc<PushIngest>>) -> Router<S> {
    Router::new()
        .route("/ingest/{channel}/{key}/{file}", put(put_file).delete(delete_file))
        .route("/ingest/{channel}/{key}", put(put_stream).post(put_stream))
        .with_state(PushState { host, push })
}

fn authorise<'a>(
    state: &'a PushState,
    channel: &str,
    key: &str,
    peer: &str,
) -> Result<(Name, &'a Mutex<PushChannel>), Response> {
    let Some(push) = &state.push else {
        return Err(error(StatusCode::NOT_FOUND, Refusal::NoChannels.to_string()));
    };
    let name = push.publishing.check_key(channel, key, peer).map_err(|r| error(r.status(), r.to_string()))?;
    Ok((name.clone(), push.channels.get(&name).expect("publishing and push channels are declared together")))
}

/// The uploader's address, for the log.
fn peer(addr: Option<Extension<ConnectInfo<SocketAddr>>>) -> String {
    addr.map_or_else(|| "unknown".to_string(), |a| a.0.0.to_string())
}

/// `PUT /ingest/{channel}/{key}/{file}`: a segment (`*.ts`) or a playlist (`*.m3u8`).
async fn put_file(
    State(state): State<PushState>,
    Path((channel, key, file)): Path<(String, String, String)>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
) -> Response {
    tracing::debug!(%channel, %file, "push upload started");
    let (name, ch) = match authorise(&state, &channel, &key, &peer(addr)) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let low_latency = state.push.as_ref().is_some_and(|p| p.low_latency);
    let is_playlist = file.ends_with(".m3u8");
    let limit = if is_playlist { MAX_PLAYLIST_BYTES } else { state.host.max_segment_bytes };
    let bytes = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(channel = %name, %file, limit, error = %e, "push upload refused");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{file} is larger than the {limit}-byte limit or the upload broke: {e}"),
            );
        }
    };
    tracing::debug!(channel = %name, %file, bytes = bytes.len(), "push upload received");
    let published = if is_playlist {
        let stem = file.trim_end_matches(".m3u8");
        let rendition = match parse_name(stem) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("playlist name: {e}")),
        };
        let playlist = match m3u8_rs::parse_playlist_res(&bytes) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
            // A master playlist (var_stream_map) only names the media playlists; nothing to do.
            Ok(m3u8_rs::Playlist::MasterPlaylist(_)) => return StatusCode::CREATED.into_response(),
            Err(e) => {
                tracing::warn!(channel = %name, %file, error = %e, "push playlist refused");
                return error(StatusCode::UNPROCESSABLE_ENTITY, format!("{file} is not an HLS playlist: {e}"));
            }
        };
        ch.lock().expect("push lock").playlists.insert(rendition, playlist);
        publish_ready(&state.host, &name, ch, low_latency)
    } else {
        {
            let mut c = ch.lock().expect("push lock");
            c.pending.retain(|(f, _)| *f != file);
            c.pending.push_back((file, bytes));
            while c.pending.len() > MAX_PENDING_FILES {
                c.pending.pop_front();
            }
        }
        publish_ready(&state.host, &name, ch, low_latency)
    };
    match published {
        Ok(n) => {
            tracing::debug!(channel = %name, published = n, "push upload");
            StatusCode::CREATED.into_response()
        }
        Err(reason) => error(StatusCode::CONFLICT, reason),
    }
}

/// `PUT|POST /ingest/{channel}/{key}`: a live MPEG-TS stream (chunked upload), packaged as
/// low-latency rendition `src` while it lasts.
async fn put_stream(
    State(state): State<PushState>,
    Path((channel, key)): Path<(String, String)>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
) -> Response {
    let Some(push) = &state.push else {
        return error(StatusCode::NOT_FOUND, Refusal::NoChannels.to_string());
    };
    let claim = match push.publishing.claim(&channel, &key, &peer(addr), "http") {
        Ok(c) => c,
        Err(r) => return error(r.status(), r.to_string()),
    };
    let name = claim.channel.clone();
    let rendition = Name::new("src").expect("valid name");
    let mut live = LiveRendition::new(state.host.clone(), name.clone(), rendition, "push · low latency");
    // What follows is a new encoder, whatever came before.
    live.discontinuity();
    let mut meter = PublisherMeter::new(&name, "http");
    let mut stream = body.into_data_stream();
    let mut received = 0u64;
    let outcome = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = claim.taken_over() => break Err("another publisher took the channel over".to_string()),
        };
        match next {
            Some(Ok(chunk)) => {
                received += chunk.len() as u64;
                meter.received(chunk.len());
                let pushed = live.push(&chunk);
                meter.frames(live.counts());
                if let Err(e) = pushed {
                    break Err(format!("{e:#}"));
                }
            }
            Some(Err(e)) => break Err(format!("the upload broke: {e}")),
            None => break Ok(()),
        }
    };
    drop(claim);
    if let Err(e) = live.end() {
        tracing::warn!(channel = %name, error = %format!("{e:#}"), "closing the last segment");
    }
    meter.frames(live.counts());
    match outcome {
        Ok(()) => {
            tracing::info!(channel = %name, bytes = received, "live TS stream ended");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(reason) => {
            tracing::warn!(channel = %name, bytes = received, %reason, "live TS stream refused");
            error(StatusCode::BAD_REQUEST, reason)
        }
    }
}

/// `DELETE /ingest/...`: ffmpeg's `delete_segments` flag; old files simply age out here.
async fn delete_file(
    State(state): State<PushState>,
    Path((channel, key, _file)): Path<(String, String, String)>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    match authorise(&state, &channel, &key, &peer(addr)) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// Publish, in playlist order, every uploaded segment that the rendition's latest playlist
/// names and that is newer than what was published. ffmpeg uploads a segment and the playlist
/// naming it concurrently, so whichever upload completes second publishes it.
fn publish_ready(
    host: &Arc<Host>,
    channel: &Name,
    ch: &Mutex<PushChannel>,
    low_latency: bool,
) -> Result<usize, String> {
    let mut ready: Vec<(Name, SourceSegment)> = Vec::new();
    {
        let mut guard = ch.lock().expect("push lock");
        let c = &mut *guard;
        for (rendition, playlist) in &c.playlists {
            let mut last = c.published.get(rendition).copied();
            let newest_listed = playlist.media_sequence + playlist.segments.len() as u64;
            if last.is_some_and(|l| newest_listed <= l) {
                // A restarted ffmpeg counts from 0 again; the core marks the discontinuity.
                last = None;
            }
            for (i, seg) in playlist.segments.iter().enumerate() {
                let seq = playlist.media_sequence + i as u64;
                if last.is_some_and(|l| seq <= l) {
                    continue;
                }
                let file = seg.uri.rsplit('/').next().unwrap_or(&seg.uri);
                let Some(pos) = c.pending.iter().position(|(f, _)| f == file) else {
                    break;
                };
                let Some((_, data)) = c.pending.remove(pos) else {
                    break;
                };
                last = Some(seq);
                let duration_us = (f64::from(seg.duration).max(0.0) * 1e6).min(f64::from(u32::MAX)) as u32;
                let src = SourceSegment { source_seq: Some(seq), discontinuity: seg.discontinuity, duration_us, data };
                ready.push((rendition.clone(), src));
            }
            if let Some(l) = last {
                c.published.insert(rendition.clone(), l);
            }
        }
    }
    let count = ready.len();
    let mut guard = ch.lock().expect("push lock");
    for (rendition, src) in ready {
        let publisher = guard
            .publishers
            .entry(rendition.clone())
            .or_insert_with(|| SegmentPublisher::new(host.clone(), channel.clone(), rendition, "push", low_latency));
        publisher.publish(src).map_err(|e| format!("{e:#}"))?;
    }
    Ok(count)
}

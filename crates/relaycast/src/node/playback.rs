//! The door of every `/live/` URL: a `signed` channel (F71) is served only to requests with a
//! valid playback token, and the token is carried into every URI the answer lists (playlists,
//! redirects), so a player that opened a signed link keeps working without knowing about it.
//!
//! Whether a channel is signed is the origin's word, carried to every relay in the catalogue;
//! the door waits for the channel to be known here before deciding, so a relay that has not
//! heard of the channel yet never serves it openly.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use relaycast_core::Playback;
use relaycast_core::playlist::with_query;

use crate::common::http::error;
use crate::common::parse_name;
use crate::common::playback::{PARAM, PlaybackKey, Refusal, token_in};
use crate::node::host::Host;

/// Largest playlist rewritten (far above any live playlist; bigger answers are refused).
const MAX_PLAYLIST: usize = 4 << 20;

/// What the door needs: the node, and the cluster's playback key if this node has one.
#[derive(Clone)]
pub struct Door {
    pub host: Arc<Host>,
    pub key: Option<Arc<PlaybackKey>>,
}

pub async fn door(State(d): State<Door>, req: Request, next: Next) -> Response {
    let Some(channel) = req.uri().path().strip_prefix("/live/").and_then(|p| p.split('/').next()) else {
        return next.run(req).await;
    };
    // A bad name is the handler's to explain (400); it serves nothing under it.
    let Ok(channel) = parse_name(channel) else { return next.run(req).await };
    let playback = match d.host.read(|n| n.declared_playback(&channel)) {
        Some(p) => p,
        // Not heard of yet: wait until it is known (or refused) before deciding.
        None => match crate::node::http::want_channel(&d.host, &channel).await {
            Ok(()) => d.host.read(|n| n.playback(&channel)),
            Err(r) => return r,
        },
    };
    if playback == Playback::Public {
        return next.run(req).await;
    }
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let token = token_in(req.uri().query());
    let checked = match (&d.key, &token) {
        (None, _) => Err(Refusal::NoKey(channel.clone())),
        (_, None) => Err(Refusal::Missing(channel.clone())),
        (Some(key), Some(t)) => key.check(t, &channel, crate::common::wall_ms() / 1000, client),
    };
    if let Err(why) = checked {
        metrics::counter!("relaycast_playback_refused_total", "node" => d.host.name.clone()).increment(1);
        tracing::debug!(node = %d.host.name, %channel, %client, reason = %why, "playback refused");
        return error(StatusCode::FORBIDDEN, why.to_string());
    }
    let token = token.expect("checked above");
    carry_token(next.run(req).await, &format!("{PARAM}={token}")).await
}

/// Add `query` to the URIs of a playlist answer and to a redirect's target.
async fn carry_token(resp: Response, query: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    if parts.status.is_redirection()
        && let Some(to) = parts.headers.get(header::LOCATION).and_then(|v| v.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(&format!("{to}{}{query}", if to.contains('?') { '&' } else { '?' }))
    {
        parts.headers.insert(header::LOCATION, v);
    }
    let is_playlist = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/vnd.apple.mpegurl"));
    if !is_playlist || !parts.status.is_success() {
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PLAYLIST).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "playlist too large to sign");
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "playlist is not UTF-8");
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    // Each viewer's playlist now differs: a shared cache must not hand one viewer's token to another.
    parts.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    Response::from_parts(parts, Body::from(with_query(text, query)))
}

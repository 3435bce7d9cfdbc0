//! HLS Content Steering (F25): a main playlist in which every edge is a pathway, and the
//! steering manifest that orders those pathways per session. hls.js and Safari follow it with
//! no Relaycast code in the player: they re-fetch the manifest every TTL and move to the first
//! pathway of PATHWAY-PRIORITY at the next segment.
//!
//! Edges that appear after a player loaded its main playlist (a new secondary) reach it as
//! PATHWAY-CLONES of the player's current pathway. hls.js's HOST replacement keeps the port and
//! our edges differ by port, so each clone names its full variant URIs (`PER-VARIANT-URIS`,
//! keyed by the `STABLE-VARIANT-ID` every variant of the main playlist carries).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Steer, SteerQuery, Traffic};
use crate::common::http::error;

/// One variant of a channel's main playlist, as an edge serves it.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// `STABLE-VARIANT-ID`: the rendition name (or `main` for a single rendition).
    pub id: String,
    /// Path under `/live/{channel}/` on every edge.
    pub file: String,
    /// The `EXT-X-STREAM-INF` attributes other than PATHWAY-ID and STABLE-VARIANT-ID.
    pub attrs: String,
}

/// Bandwidth announced for a channel with one rendition (edges serve its media playlist
/// directly and do not know its bitrate up front); players only use it as a first estimate.
const SINGLE_BANDWIDTH: u64 = 2_000_000;

/// The variants of `channel` from an edge's `/live/{channel}/index.m3u8`.
pub fn variants_of(body: &[u8]) -> Result<Vec<Variant>, String> {
    match m3u8_rs::parse_playlist_res(body) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(_)) => Ok(vec![Variant {
            id: "main".into(),
            file: "index.m3u8".into(),
            attrs: format!("BANDWIDTH={SINGLE_BANDWIDTH}"),
        }]),
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => {
            let v: Vec<Variant> = m
                .variants
                .iter()
                .filter(|v| !v.is_i_frame && !v.uri.contains("://") && !v.uri.starts_with('/'))
                .map(|v| {
                    let id: String = v
                        .uri
                        .split('/')
                        .next()
                        .unwrap_or("v")
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                        .collect();
                    let mut attrs = format!("BANDWIDTH={}", v.bandwidth);
                    if let Some(r) = &v.resolution {
                        attrs.push_str(&format!(",RESOLUTION={}x{}", r.width, r.height));
                    }
                    if let Some(c) = &v.codecs {
                        attrs.push_str(&format!(",CODECS=\"{}\"", c.replace('"', "")));
                    }
                    Variant { id, file: v.uri.clone(), attrs }
                })
                .collect();
            if v.is_empty() { Err("the edge's master playlist lists no variant".into()) } else { Ok(v) }
        }
        Err(_) => Err("the edge did not answer with an HLS playlist".into()),
    }
}

/// Pathway ids are edge names restricted to the characters the HLS spec allows.
fn pathway(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect()
}

/// `GET /play/{channel}/main.m3u8`: every edge as a pathway, in this session's order.
pub async fn main_playlist(
    State(t): State<Arc<Traffic>>,
    Path(channel): Path<String>,
    Query(q): Query<SteerQuery>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let steer = match Steer::new(&t, "multivariant", &channel, &q, client) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let first = match steer.first() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Steer { channel, region, session, ranked } = &steer;
    // Learn the channel's variants from the chosen edge (it pulls the channel on demand).
    // Without the session: this fetch is the tracker's, not a viewer the edge should count.
    let mut url = format!("{}/live/{channel}/index.m3u8", first.url);
    if let Some(token) = t.play_token(channel) {
        url.push_str(&format!("?{}={token}", crate::common::playback::PARAM));
    }
    let fetched = async {
        let r = t.client.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url} answered {status}: {}", String::from_utf8_lossy(&body).trim()));
        }
        variants_of(&body)
    }
    .await;
    let variants = match fetched {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("cannot learn channel {channel}'s variants: {e}")),
    };
    t.variants.lock().expect("variants lock").insert(channel.to_string(), variants.clone());
    let mut body = String::from("#EXTM3U\n");
    body.push_str(&format!(
        "#EXT-X-CONTENT-STEERING:SERVER-URI=\"/api/v1/steering/{channel}?session={session}&region={region}\",PATHWAY-ID=\"{}\"\n",
        pathway(&first.name)
    ));
    for edge in ranked {
        for v in &variants {
            body.push_str(&format!(
                "#EXT-X-STREAM-INF:{},PATHWAY-ID=\"{}\",STABLE-VARIANT-ID=\"{}\"\n{}\n",
                v.attrs,
                pathway(&edge.name),
                v.id,
                t.edge_playlist(edge, channel, &v.file, session)
            ));
        }
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/steering/{channel}`: the HLS Content Steering manifest for this session.
pub async fn steering_manifest(
    State(t): State<Arc<Traffic>>,
    Path(channel): Path<String>,
    Query(q): Query<SteerQuery>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Response {
    let steer = match Steer::new(&t, "steering", &channel, &q, client) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // No edge can serve the channel right now: a 503 with Retry-After keeps the player on its
    // current pathway until the next try (as Content Steering clients do on an error).
    if let Err(r) = steer.first() {
        return r;
    }
    let Steer { channel, region: _, session, ranked } = steer;
    let priority: Vec<String> = ranked.iter().map(|e| pathway(&e.name)).collect();
    let variants = t.variants.lock().expect("variants lock").get(channel.as_str()).cloned();
    let clones: Vec<serde_json::Value> = match (&q.pathway, variants) {
        (Some(base), Some(variants)) if !base.is_empty() && base != "." => ranked
            .iter()
            .filter(|e| pathway(&e.name) != *base)
            .map(|e| {
                let uris: serde_json::Map<String, serde_json::Value> = variants
                    .iter()
                    .map(|v| (v.id.clone(), json!(t.edge_playlist(e, &channel, &v.file, &session))))
                    .collect();
                json!({"ID": pathway(&e.name), "BASE-ID": base, "URI-REPLACEMENT": {"PER-VARIANT-URIS": uris}})
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut manifest = json!({ "VERSION": 1, "TTL": t.ttl().as_secs(), "PATHWAY-PRIORITY": priority });
    if !clones.is_empty() {
        manifest["PATHWAY-CLONES"] = json!(clones);
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(manifest)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_come_from_media_or_master_playlists() {
        let media = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:2.0,\n5.ts\n";
        let v = variants_of(media).unwrap();
        assert_eq!((v[0].id.as_str(), v[0].file.as_str()), ("main", "index.m3u8"));
        let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.4d401e,mp4a.40.2\"\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=3000000\nhigh/index.m3u8\n";
        let v = variants_of(master).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].id, "low");
        assert_eq!(v[0].attrs, "BANDWIDTH=800000,RESOLUTION=640x360,CODECS=\"avc1.4d401e,mp4a.40.2\"");
        assert!(variants_of(b"<html>").is_err());
    }
}

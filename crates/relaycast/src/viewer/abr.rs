//! Bitrate adaptation in `relaycast watch`: which rendition each segment came in.
//!
//! - Server-side ABR: point `watch` at an edge's `/live/{channel}/auto.m3u8`. The redirect to the
//!   session's playlist is followed once ([`fetch_following`]), so the viewer keeps one session,
//!   and the rendition the edge chose is read from each segment's `Relaycast-Rendition` header.
//! - Client-side ABR (`--client-abr`, F31): the viewer picks a variant of the master playlist
//!   itself with the core's [`ClientAbr`] rule (hls.js-like), from its own throughput; a switch
//!   swaps the playlist it polls, keeping the sequence numbers (a ladder's renditions share them).
//!
//! Either way the QoE log's `segment` records carry `rendition` and `bitrate_bps`, which
//! `relaycast report --ramp` and `bench/server_abr.py` read.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use relaycast_core::abr::ClientAbr;
use reqwest::Url;

/// hls.js's starting estimate (`abrEwmaDefaultEstimate`).
const DEFAULT_ESTIMATE_BPS: f64 = 500_000.0;
const MAX_PLAYLIST_BYTES: u64 = 1024 * 1024;

/// GET `url` following redirects: the final URL and the body.
pub async fn fetch_following(client: &reqwest::Client, url: &Url) -> Result<(Url, Bytes)> {
    let resp = client.get(url.clone()).send().await.with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: HTTP {}", resp.status());
    }
    if resp.content_length().is_some_and(|l| l > MAX_PLAYLIST_BYTES) {
        bail!("GET {url}: a playlist over {MAX_PLAYLIST_BYTES} bytes");
    }
    let final_url = resp.url().clone();
    let body = resp.bytes().await.with_context(|| format!("reading {url}"))?;
    Ok((final_url, body))
}

/// The rendition a segment came in: the edge's header, else the folder the URL names
/// (`.../{rendition}/{seq}.ts`).
pub fn rendition_of(url: &Url, header: Option<&str>) -> Option<String> {
    if let Some(h) = header {
        return Some(h.to_string());
    }
    let mut parts = url.path_segments()?.rev();
    parts.next()?;
    parts.next().map(String::from)
}

/// A viewer's own ladder and rule.
pub struct ClientLadder {
    /// (bandwidth bit/s, media playlist URL), ascending by bandwidth.
    variants: Vec<(u64, Url)>,
    rule: ClientAbr,
    current: usize,
}

impl ClientLadder {
    /// Read the master playlist at `url`.
    pub async fn load(client: &reqwest::Client, url: &Url) -> Result<Self> {
        let (base, body) = fetch_following(client, url).await?;
        let Ok(m3u8_rs::Playlist::MasterPlaylist(master)) = m3u8_rs::parse_playlist_res(&body) else {
            bail!("--client-abr needs a master playlist with several variants; {url} is not one");
        };
        let mut variants = Vec::new();
        for v in master.variants.iter().filter(|v| !v.is_i_frame) {
            variants.push((v.bandwidth, base.join(&v.uri).with_context(|| format!("variant URI {:?}", v.uri))?));
        }
        if variants.is_empty() {
            bail!("{url} lists no variants");
        }
        variants.sort_by_key(|(bw, _)| *bw);
        let rule = ClientAbr::new(DEFAULT_ESTIMATE_BPS);
        let current = rule.choose(&variants.iter().map(|(bw, _)| *bw).collect::<Vec<_>>(), 0);
        Ok(Self { variants, rule, current })
    }

    /// The media playlist to poll now.
    pub fn url(&self) -> &Url {
        &self.variants[self.current].1
    }

    /// A segment of `bytes` took `elapsed`: returns the new playlist URL when the rule switches.
    pub fn delivered(&mut self, bytes: u64, elapsed: Duration) -> Option<Url> {
        self.rule.sample(bytes, elapsed);
        let ladder: Vec<u64> = self.variants.iter().map(|(bw, _)| *bw).collect();
        let next = self.rule.choose(&ladder, self.current);
        (next != self.current).then(|| {
            self.current = next;
            self.url().clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendition_comes_from_the_header_or_the_path() {
        let u = Url::parse("http://e/live/c/180p/17.ts").unwrap();
        assert_eq!(rendition_of(&u, None).as_deref(), Some("180p"));
        assert_eq!(rendition_of(&u, Some("90p")).as_deref(), Some("90p"));
    }
}

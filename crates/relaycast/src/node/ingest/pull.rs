//! HLS pulled from a URL (F1): a master playlist becomes one rendition per variant, a media
//! playlist one rendition. Each rendition is polled about twice per target duration; new
//! segments are fetched (with a size limit) and published with the source's sequence numbers.
//! Errors are logged with context and retried with backoff; the channel resumes, with a
//! discontinuity if the source restarted. On a `--low-latency` origin the segments are packaged
//! as CMAF parts (LL-HLS) as they arrive.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use relaycast_core::{Name, RenditionInfo, SourceSegment};
use reqwest::Url;

use crate::common::http::fetch;
use crate::node::host::Host;
use crate::node::ingest::cmaf::SegmentPublisher;

/// Largest playlist accepted from a source.
const MAX_PLAYLIST_BYTES: usize = 1024 * 1024;

/// Pull `url` into `channel` forever; `low_latency` packages it as CMAF parts.
pub async fn run(host: Arc<Host>, client: reqwest::Client, channel: Name, url: Url, low_latency: bool) {
    let source = if low_latency { "pull · low latency" } else { "pull" };
    host.input(|n, now| n.set_local_channel(now, channel.clone(), source, Vec::new()));
    let mut backoff = Duration::from_millis(500);
    loop {
        match discover(&client, &url).await {
            Ok(variants) => {
                backoff = Duration::from_millis(500);
                let infos: Vec<RenditionInfo> = variants.iter().map(|(info, _)| info.clone()).collect();
                tracing::info!(%channel, %url, renditions = infos.len(), "pulling HLS");
                host.input(|n, now| n.set_local_channel(now, channel.clone(), source, infos));
                let tasks: Vec<_> = variants
                    .into_iter()
                    .map(|(info, media_url)| {
                        let publisher =
                            SegmentPublisher::new(host.clone(), channel.clone(), info.name, "pull", low_latency);
                        tokio::spawn(poll_rendition(host.clone(), client.clone(), publisher, media_url))
                    })
                    .collect();
                // A rendition task ends only when its playlist stops being a media playlist;
                // then the whole source is discovered again.
                for t in tasks {
                    let _ = t.await;
                }
            }
            Err(e) => {
                tracing::warn!(%channel, %url, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "cannot pull HLS source");
                metrics::counter!("relaycast_ingest_errors_total", "channel" => channel.to_string()).increment(1);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Renditions of the source: the variants of a master playlist, or the one media playlist.
async fn discover(client: &reqwest::Client, url: &Url) -> Result<Vec<(RenditionInfo, Url)>> {
    let body = fetch(client, url, MAX_PLAYLIST_BYTES).await?;
    match m3u8_rs::parse_playlist_res(&body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(master)) => {
            let mut out = Vec::new();
            for (i, v) in master.variants.iter().filter(|v| !v.is_i_frame).enumerate() {
                let media = url.join(&v.uri).with_context(|| format!("variant URI {:?}", v.uri))?;
                let name = Name::new(format!("v{i}")).expect("valid name");
                let info = RenditionInfo {
                    name,
                    bandwidth: u32::try_from(v.bandwidth).ok(),
                    resolution: v.resolution.map(|r| (r.width as u32, r.height as u32)),
                    codecs: v.codecs.clone(),
                    init: None,
                };
                out.push((info, media));
            }
            if out.is_empty() {
                bail!("master playlist lists no variants");
            }
            Ok(out)
        }
        Ok(m3u8_rs::Playlist::MediaPlaylist(_)) => {
            Ok(vec![(RenditionInfo::named(Name::new("src").expect("valid name")), url.clone())])
        }
        Err(_) => Err(anyhow!("{url} is not an HLS playlist (no #EXTM3U or unparsable)")),
    }
}

async fn poll_rendition(host: Arc<Host>, client: reqwest::Client, mut publisher: SegmentPublisher, url: Url) {
    let (channel, rendition) = (publisher.channel().clone(), publisher.rendition().clone());
    let mut last_seq: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let mut wait = Duration::from_secs(1);
        match poll_once(&host, &client, &mut publisher, &url, &mut last_seq).await {
            Ok(target) => {
                failures = 0;
                wait = (target / 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(%channel, %rendition, %url, error = %format!("{e:#}"), failures, "pull failed; channel keeps its window and retries");
                metrics::counter!("relaycast_ingest_errors_total", "channel" => channel.to_string()).increment(1);
                if failures > 30 {
                    return;
                }
            }
        }
        tokio::time::sleep(wait).await;
    }
}

/// Fetch the playlist once and publish new segments. Returns the target duration.
async fn poll_once(
    host: &Arc<Host>,
    client: &reqwest::Client,
    publisher: &mut SegmentPublisher,
    url: &Url,
    last_seq: &mut Option<u64>,
) -> Result<Duration> {
    let (channel, rendition) = (publisher.channel().clone(), publisher.rendition().clone());
    let body = fetch(client, url, MAX_PLAYLIST_BYTES).await?;
    let playlist = match m3u8_rs::parse_playlist_res(&body) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        Ok(_) => bail!("expected a media playlist"),
        Err(_) => bail!("not an HLS playlist"),
    };
    let first = playlist.media_sequence;
    // The source restarted (numbers went backwards): take everything it lists.
    if last_seq.is_some_and(|l| first + (playlist.segments.len() as u64) <= l) {
        tracing::warn!(%channel, %rendition, "source sequence went backwards; continuing with a discontinuity");
        *last_seq = None;
    }
    // On first sight, start near the live edge (the last three segments), as players do.
    let skip = if last_seq.is_none() { playlist.segments.len().saturating_sub(3) } else { 0 };
    for (i, seg) in playlist.segments.iter().enumerate().skip(skip) {
        let seq = first + i as u64;
        if last_seq.is_some_and(|l| seq <= l) {
            continue;
        }
        let seg_url = url.join(&seg.uri).with_context(|| format!("segment URI {:?}", seg.uri))?;
        let data = fetch(client, &seg_url, host.max_segment_bytes).await.with_context(|| format!("segment {seq}"))?;
        let duration_us = (f64::from(seg.duration).max(0.0) * 1e6).min(f64::from(u32::MAX)) as u32;
        let src = SourceSegment { source_seq: Some(seq), discontinuity: seg.discontinuity, duration_us, data };
        publisher.publish(src)?;
        *last_seq = Some(seq);
    }
    Ok(Duration::from_secs(playlist.target_duration.max(1)))
}

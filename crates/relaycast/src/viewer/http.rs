//! The viewer's HTTP servers: finding the media playlist, polling it, fetching segments (with
//! the origin's timestamp, rendition and signature headers), and measuring the path's RTT.
//! Each running fetch or poll is a task that reports [`HttpEvent`]s to the viewer loop.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use relaycast_core::Name;
use relaycast_core::multisource::{RequestId, SourceId};
use relaycast_core::p2p::signing::{Signature, from_hex};
use reqwest::Url;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::abr::{fetch_following, rendition_of};

/// A media playlist's segments (sequence, duration, URL) and its target duration.
pub type Listing = (Vec<(u64, Duration, Url)>, Duration);

/// What the fetch and poll tasks report.
pub enum HttpEvent {
    Playlist {
        source: SourceId,
        result: Result<Listing, String>,
    },
    Headers {
        req: RequestId,
        len: Option<u64>,
        meta: SegmentHeaders,
    },
    Chunk {
        req: RequestId,
        bytes: Bytes,
    },
    /// One part of a low-latency segment arrived whole (its bytes came as chunks); the last
    /// part brings the origin's signature over the whole segment.
    Part {
        req: RequestId,
        index: u32,
        /// The part's size: with the path's bottleneck, its share of the physical bound.
        len: usize,
        origin_ms: Option<u64>,
        signature: Option<Signature>,
    },
    Done {
        req: RequestId,
    },
    Failed {
        req: RequestId,
        error: String,
    },
}

/// What a segment response says about the segment besides its bytes.
#[derive(Clone, Debug, Default)]
pub struct SegmentHeaders {
    /// When the origin had it (Unix ms), for the per-chunk delay.
    pub origin_ms: Option<u64>,
    /// The rendition it came in (server-side ABR may choose per segment).
    pub rendition: Option<String>,
    /// The origin's signature, which sharing viewers check before playing or passing it on.
    pub signature: Option<Signature>,
}

/// The media playlist URL for `url`: itself, or the chosen variant of a master playlist.
pub async fn resolve_media_playlist(client: &reqwest::Client, url: &str, rendition: Option<&str>) -> Result<Url> {
    let url = Url::parse(url).with_context(|| format!("invalid URL {url:?}"))?;
    // Follow a redirect once (an edge's auto.m3u8 opens a session): poll where it led.
    let (url, body) = fetch_following(client, &url).await?;
    match m3u8_rs::parse_playlist_res(&body) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(_)) => Ok(url),
        Ok(m3u8_rs::Playlist::MasterPlaylist(master)) => {
            let variants: Vec<_> = master.variants.iter().filter(|v| !v.is_i_frame).collect();
            let chosen = match rendition {
                Some(r) => variants.iter().find(|v| v.uri == r || v.uri.split('/').next() == Some(r)).copied(),
                None => variants.iter().max_by_key(|v| v.bandwidth).copied(),
            };
            let Some(v) = chosen else { bail!("{url}: no variant matches {rendition:?}") };
            let mut media = url.join(&v.uri).with_context(|| format!("variant URI {:?}", v.uri))?;
            // Keep the master's query (a steering session, an access token) on the variant.
            if media.query().is_none() {
                media.set_query(url.query());
            }
            Ok(media)
        }
        Err(_) => bail!("{url} is not an HLS playlist"),
    }
}

/// GET and parse a media playlist.
pub async fn poll_playlist(client: &reqwest::Client, url: &Url) -> Result<Listing> {
    let body = crate::common::http::fetch(client, url, 1024 * 1024).await?;
    parse_listing(url, &body)
}

/// A low-latency playlist (EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES) can be asked for the
/// next segment and answers the moment it is whole, instead of being polled.
fn can_block(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.lines().any(|l| l.starts_with("#EXT-X-SERVER-CONTROL:") && l.contains("CAN-BLOCK-RELOAD=YES"))
}

/// Whether this media playlist is low-latency (answers blocking reloads).
pub async fn is_low_latency(client: &reqwest::Client, url: &Url) -> bool {
    crate::common::http::fetch(client, url, 1024 * 1024).await.is_ok_and(|b| can_block(&b))
}

/// A client that speaks HTTP/2 from the first byte (h2c prior knowledge), if `url`'s server
/// answers it. Low-latency playback keeps a blocking reload and several held part requests in
/// flight at once: over HTTP/1.1 each needs its own connection (a new one costs a round trip
/// and a slow start, and a request given up on costs its connection); over HTTP/2 they share
/// one. Relaycast nodes speak both; a server that does not keeps the HTTP/1.1 client.
pub async fn http2_client(url: &Url) -> Option<reqwest::Client> {
    let client =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).http2_prior_knowledge().build().ok()?;
    let answered = client.get(url.clone()).timeout(Duration::from_secs(5)).send().await;
    answered.is_ok_and(|r| r.status().is_success()).then_some(client)
}

/// URL fragment marking the segment still being made: fetched part by part (the fragment never
/// reaches the server). A segment already whole is fetched in one request. `parts=K` says the
/// playlist already listed K of its parts.
const OPEN_SEGMENT: &str = "parts";

/// Parts of an open segment the playlist listed, if `url` names an open segment.
fn open_segment(url: &Url) -> Option<u32> {
    let fragment = url.fragment()?;
    let rest = fragment.strip_prefix(OPEN_SEGMENT)?;
    if rest.is_empty() {
        return Some(0);
    }
    rest.strip_prefix('=')?.parse().ok()
}

fn parse_listing(url: &Url, body: &[u8]) -> Result<Listing> {
    let Ok(m3u8_rs::Playlist::MediaPlaylist(p)) = m3u8_rs::parse_playlist_res(body) else {
        bail!("{url} is not a media playlist");
    };
    let mut segments: Vec<(u64, Duration, Url)> = p
        .segments
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let uri = url.join(&s.uri).ok()?;
            Some((p.media_sequence + i as u64, Duration::from_secs_f64(f64::from(s.duration).max(0.0)), uri))
        })
        .collect();
    let target = Duration::from_secs(p.target_duration.max(1));
    // A low-latency playlist hints at the segment being made: list it already (about one target
    // long), so it is fetched part by part as its parts appear. List the one after it too: the
    // playlist names it only once the current one is whole, a round trip too late to have its
    // first parts requested (and held by the server) before they exist.
    let next = segments.last().map(|(seq, _, _)| seq + 1);
    if let (Some(next), Some(hinted)) = (next, preload_hint_segment(body))
        && hinted == next
    {
        let listed = listed_parts(body, next);
        for (seq, parts) in [(next, listed), (next + 1, 0)] {
            if let Ok(uri) = url.join(&format!("{seq}.m4s#{OPEN_SEGMENT}={parts}")) {
                segments.push((seq, target, uri));
            }
        }
    }
    Ok((segments, target))
}

/// How many parts of segment `seq` a playlist lists (`#EXT-X-PART:...,URI="{seq}.{i}.m4s"`).
fn listed_parts(body: &[u8], seq: u64) -> u32 {
    let prefix = format!("{seq}.");
    let text = String::from_utf8_lossy(body);
    let parts = text.lines().filter(|l| l.starts_with("#EXT-X-PART:")).filter_map(|l| l.split("URI=\"").nth(1));
    parts.filter(|uri| uri.rsplit('/').next().is_some_and(|f| f.starts_with(&prefix))).count() as u32
}

/// The segment of a playlist's part preload hint (`#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{seq}.{i}.m4s"`).
fn preload_hint_segment(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:") && l.contains("TYPE=PART"))?;
    let uri = line.split("URI=\"").nth(1)?.split('"').next()?;
    uri.rsplit('/').next()?.split('.').next()?.parse().ok()
}

/// Poll a media playlist about `per_target` times per target duration, forever; a low-latency
/// playlist is instead reloaded with `_HLS_msn` = the next segment (blocking reload), so each
/// segment is listed the moment the server has all of it.
pub fn spawn_poller(
    client: &reqwest::Client,
    source: SourceId,
    url: Url,
    per_target: u32,
    tx: mpsc::UnboundedSender<HttpEvent>,
) -> JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut next: Option<u64> = None;
        loop {
            let mut asked = url.clone();
            if let Some(msn) = next {
                asked.query_pairs_mut().append_pair("_HLS_msn", &msn.to_string());
            }
            let fetched = crate::common::http::fetch(&client, &asked, 1024 * 1024).await;
            let blocking = fetched.as_ref().is_ok_and(|b| can_block(b));
            let result = fetched.and_then(|b| parse_listing(&url, &b)).map_err(|e| format!("{e:#}"));
            let wait = match &result {
                Ok((segments, _)) if blocking => {
                    // Ask for the playlist in which the segment being made is whole.
                    let whole = segments.iter().rev().find(|(_, _, uri)| open_segment(uri).is_none());
                    next = whole.map(|(seq, _, _)| seq + 1);
                    Duration::ZERO
                }
                Ok((_, target)) => (*target / per_target).clamp(Duration::from_millis(200), Duration::from_secs(3)),
                Err(_) => {
                    next = None;
                    Duration::from_secs(1)
                }
            };
            if tx.send(HttpEvent::Playlist { source, result }).is_err() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    })
}

/// GET a segment, reporting headers, each chunk, and the end. A low-latency segment still being
/// made is fetched part by part, each part request held by the server until the part exists,
/// so its bytes arrive as they are made.
pub fn spawn_fetch(
    client: &reqwest::Client,
    req: RequestId,
    url: Url,
    tx: mpsc::UnboundedSender<HttpEvent>,
) -> JoinHandle<()> {
    let client = client.clone();
    if let Some(listed) = open_segment(&url) {
        return tokio::spawn(async move {
            let result = fetch_parts(&client, req, &url, listed, &tx).await;
            let _ = match result {
                Ok(()) => tx.send(HttpEvent::Done { req }),
                Err(e) => tx.send(HttpEvent::Failed { req, error: format!("{e:#}") }),
            };
        });
    }
    tokio::spawn(async move {
        let result: Result<()> = async {
            let mut resp = client.get(url.clone()).timeout(Duration::from_secs(20)).send().await?;
            if !resp.status().is_success() {
                bail!("GET {url}: HTTP {}", resp.status());
            }
            let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
            let meta = SegmentHeaders {
                origin_ms: header("relaycast-origin-time").and_then(|v| v.parse().ok()),
                rendition: rendition_of(resp.url(), header("relaycast-rendition")),
                signature: header("relaycast-signature").and_then(from_hex),
            };
            let _ = tx.send(HttpEvent::Headers { req, len: resp.content_length(), meta });
            while let Some(chunk) = resp.chunk().await? {
                let _ = tx.send(HttpEvent::Chunk { req, bytes: chunk });
            }
            Ok(())
        }
        .await;
        let _ = match result {
            Ok(()) => tx.send(HttpEvent::Done { req }),
            Err(e) => tx.send(HttpEvent::Failed { req, error: format!("{e:#}") }),
        };
    })
}

/// Part requests kept in flight beyond the parts known to exist (the server holds each until
/// its part exists), so a part's transfer never waits for a round trip to ask for it. As many as
/// a server holds ahead of its newest part: on a long path (400 ms round trip, 200 ms parts) a
/// viewer behind the live edge catches up only as fast as it has requests in flight.
const PARTS_AHEAD: u32 = relaycast_core::llhls::PART_AHEAD_LIMIT + 1;

/// Listed parts of one segment asked for at once, at most.
const MAX_LISTED_PARTS: u32 = 32;

/// One part (or whole segment) response.
struct PartAnswer {
    status: reqwest::StatusCode,
    origin_ms: Option<u64>,
    /// The server marks the segment's last part.
    last: bool,
    /// The origin's signature over the whole segment (on a segment and on its last part).
    signature: Option<Signature>,
    body: Bytes,
}

async fn get_part(client: reqwest::Client, url: Result<Url>) -> Result<PartAnswer> {
    let resp = client.get(url?).timeout(Duration::from_secs(10)).send().await?;
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let origin_ms = header("relaycast-origin-time").and_then(|v| v.parse().ok());
    let last = header("relaycast-last-part").is_some();
    let signature = header("relaycast-signature").and_then(|v| from_hex(&v));
    let status = resp.status();
    Ok(PartAnswer { status, origin_ms, last, signature, body: resp.bytes().await? })
}

/// Fetch `{seq}.m4s` as its parts `{seq}.0.m4s`, `{seq}.1.m4s`, ... until the part the server
/// marks as the last: the `listed` parts the playlist named at once, and [`PARTS_AHEAD`] beyond
/// the newest known to exist; when the parts are gone (an older segment), the whole segment.
async fn fetch_parts(
    client: &reqwest::Client,
    req: RequestId,
    url: &Url,
    listed: u32,
    tx: &mpsc::UnboundedSender<HttpEvent>,
) -> Result<()> {
    let file = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default().to_string();
    let seq = file.trim_end_matches(".m4s").to_string();
    let part = |index: u32| get_part(client.clone(), url.join(&format!("{seq}.{index}.m4s")).map_err(Into::into));
    // A playlist's word, so bounded: no server makes hundreds of parts per segment.
    let mut asked = listed.min(MAX_LISTED_PARTS) + PARTS_AHEAD;
    let mut inflight: futures_util::stream::FuturesOrdered<_> = (0..asked).map(part).collect();
    let mut index = 0u32;
    while let Some(answer) = inflight.next().await {
        let answer = answer?;
        if index == 0 && answer.status == reqwest::StatusCode::NOT_FOUND {
            let whole = get_part(client.clone(), Ok(url.clone())).await?;
            let meta = SegmentHeaders {
                origin_ms: whole.origin_ms,
                rendition: rendition_of(url, None),
                signature: whole.signature,
            };
            let _ = tx.send(HttpEvent::Headers { req, len: Some(whole.body.len() as u64), meta });
            let _ = tx.send(HttpEvent::Chunk { req, bytes: whole.body });
            return Ok(());
        }
        if !answer.status.is_success() {
            bail!("GET {seq}.{index}.m4s from {url}: HTTP {}", answer.status);
        }
        if index == 0 {
            let meta =
                SegmentHeaders { origin_ms: answer.origin_ms, rendition: rendition_of(url, None), signature: None };
            let _ = tx.send(HttpEvent::Headers { req, len: None, meta });
        }
        let len = answer.body.len();
        let _ = tx.send(HttpEvent::Chunk { req, bytes: answer.body });
        let (origin_ms, signature) = (answer.origin_ms, answer.signature);
        let _ = tx.send(HttpEvent::Part { req, index, len, origin_ms, signature });
        if answer.last {
            return Ok(());
        }
        index += 1;
        // Parts 0..=index exist now: keep PARTS_AHEAD asked beyond them.
        while asked < index + PARTS_AHEAD {
            inflight.push_back(part(asked));
            asked += 1;
        }
    }
    Ok(())
}

/// The path's minimum RTT: the smallest of four request-to-first-byte times of a tiny request
/// (`/api/v1/ping`) on a connection already open (the first request opens it and is not
/// counted). Unlike a TCP connect time, this crosses every proxy and shaped link the segments
/// cross (a connect to a local proxy completes in microseconds whatever lies behind it).
pub async fn min_rtt_ms(client: &reqwest::Client, url: &Url) -> Option<f64> {
    let ping = url.join("/api/v1/ping").ok()?;
    // Generous: a link can be queued full for seconds while a relay fills its window.
    let ask = || client.get(ping.clone()).timeout(Duration::from_secs(10)).send();
    let _ = ask().await;
    let mut best: Option<f64> = None;
    for _ in 0..4 {
        let t = Instant::now();
        if ask().await.is_ok() {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            best = Some(best.map_or(ms, |b: f64| b.min(ms)));
        }
    }
    best
}

/// Channel and rendition from a Relaycast segment URL (`.../live/{channel}/{rendition}/{seq}.ts`):
/// they name the swarm and are part of what the origin signed.
pub fn names_from_url(url: &Url) -> Result<(Name, Name)> {
    let parts: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    match parts.as_slice() {
        [.., "live", c, r, _] => Ok((Name::new(*c)?, Name::new(*r)?)),
        _ => bail!("--p2p needs a Relaycast stream (segments at /live/CHANNEL/RENDITION/SEQ.ts), got {url}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LL: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6\n\
        #EXT-X-PART-INF:PART-TARGET=0.2\n#EXT-X-MEDIA-SEQUENCE:7\n\
        #EXT-X-PART:DURATION=0.2,URI=\"7.0.m4s\",INDEPENDENT=YES\n#EXTINF:1.0,\n7.m4s\n\
        #EXT-X-PART:DURATION=0.2,URI=\"8.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.2,URI=\"8.1.m4s\"\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"8.2.m4s\"\n";

    #[test]
    fn a_low_latency_listing_names_the_open_segment_and_its_listed_parts() {
        let url = Url::parse("http://edge/live/cam/v/index.m3u8").unwrap();
        let (segments, _) = parse_listing(&url, LL.as_bytes()).unwrap();
        let listed: Vec<(u64, Option<u32>)> = segments.iter().map(|(seq, _, u)| (*seq, open_segment(u))).collect();
        // 7 is whole; 8 is being made with two parts out; 9 comes next, none out yet.
        assert_eq!(listed, vec![(7, None), (8, Some(2)), (9, Some(0))]);
        assert_eq!(segments[1].2.path(), "/live/cam/v/8.m4s");
    }

    #[test]
    fn open_segment_fragments() {
        let at = |f: &str| open_segment(&Url::parse(&format!("http://e/1.m4s{f}")).unwrap());
        assert_eq!((at(""), at("#parts"), at("#parts=3")), (None, Some(0), Some(3)));
        assert_eq!((at("#parts=x"), at("#other")), (None, None));
    }
}

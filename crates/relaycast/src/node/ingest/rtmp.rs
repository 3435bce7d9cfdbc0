//! RTMP publish ingest (F3): OBS, vMix, hardware encoders and `ffmpeg -f flv` publish to
//! `rtmp://HOST/live/CHANNEL` with the stream key as the key, or to `rtmp://HOST/live` with
//! `CHANNEL?key=KEY` as the key (both are how OBS's "Server" and "Stream Key" fields get typed).
//!
//! `rml_rtmp` (sans-IO) does the handshake and the chunk stream; the core's FLV demuxer and
//! packager turn the tags into CMAF parts, so an RTMP channel is a low-latency channel with no
//! ffmpeg in the path. A publisher that goes away closes its segment; the next one (an OBS
//! reconnect) continues the channel after a discontinuity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use relaycast_core::Name;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::node::host::Host;
use crate::node::ingest::claim::{Claim, Publishing};
use crate::node::ingest::cmaf::LiveRendition;
use crate::node::ingest::meter::PublisherMeter;

/// The whole handshake must arrive within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher that sends nothing for this long is cut off.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; past it, new ones are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// What the channel list says feeds an RTMP channel.
const SOURCE: &str = "rtmp · low latency";

/// Listen for RTMP publishers on `addr`; returns the bound address.
pub async fn serve(host: Arc<Host>, publishing: Arc<Publishing>, addr: SocketAddr) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("RTMP: binding {addr}"))?;
    let bound = listener.local_addr()?;
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = open.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "RTMP connection refused: {MAX_CONNECTIONS} already open");
                continue;
            };
            let (host, publishing) = (host.clone(), publishing.clone());
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                match connection(&host, &publishing, socket, peer).await {
                    Ok(()) => tracing::debug!(%peer, "RTMP connection closed"),
                    Err(e) => tracing::warn!(%peer, error = %format!("{e:#}"), "RTMP connection closed"),
                }
                drop(permit);
            });
        }
    });
    Ok(bound)
}

/// The channel and stream key a publish names: the RTMP application (`live`, or `live/CHANNEL`)
/// and the stream name (`KEY`, `CHANNEL?key=KEY` or `CHANNEL/KEY`), read as one path after the
/// application's first element.
pub fn publish_target(app: &str, stream: &str) -> Option<(String, String)> {
    let full = format!("{}/{}", app.trim_matches('/'), stream.trim_matches('/'));
    let (_app, rest) = full.split_once('/')?;
    if let Some((channel, query)) = rest.split_once('?') {
        let key = query.split('&').find_map(|kv| kv.strip_prefix("key="))?;
        return Some((channel.trim_end_matches('/').to_string(), key.to_string()));
    }
    let (channel, key) = rest.split_once('/')?;
    (!channel.is_empty() && !key.contains('/')).then(|| (channel.to_string(), key.to_string()))
}

/// Feed bytes to the RTMP session. rml_rtmp panics on some malformed chunk streams (found by
/// fuzzing: a capacity overflow in its chunk deserializer); the panic is contained here and
/// ends this connection with a reason, like any other malformed input.
fn read_chunks(session: &mut ServerSession, bytes: &[u8]) -> Result<Vec<ServerSessionResult>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.handle_input(bytes))) {
        Ok(Ok(results)) => Ok(results),
        Ok(Err(e)) => Err(anyhow!("malformed RTMP data: {e:?}")),
        Err(_) => Err(anyhow!("malformed RTMP data: the chunk stream broke the RTMP parser")),
    }
}

/// One publishing connection.
struct Publish {
    claim: Claim,
    live: LiveRendition,
    meter: PublisherMeter,
    started: Instant,
    bytes: u64,
    refusals: u64,
}

async fn connection(
    host: &Arc<Host>,
    publishing: &Arc<Publishing>,
    mut socket: TcpStream,
    peer: SocketAddr,
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let leftover = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut socket, &mut buf))
        .await
        .map_err(|_| anyhow!("no RTMP handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()))??;
    let (mut session, initial) =
        ServerSession::new(ServerSessionConfig::new()).map_err(|e| anyhow!("RTMP session: {e:?}"))?;
    let mut publish: Option<Publish> = None;
    let mut pending = initial;
    pending.extend(read_chunks(&mut session, &leftover)?);
    let outcome = loop {
        match handle(host, publishing, &mut session, &mut publish, pending, &mut socket, peer).await {
            Ok(Flow::Go) => {}
            Ok(Flow::Finished) => break Ok(()),
            Ok(Flow::Refused(reason)) => break Err(anyhow!(reason)),
            Err(e) => break Err(e),
        }
        if let Some(p) = &mut publish {
            p.meter.frames(p.live.counts());
        }
        let read = async {
            match &publish {
                Some(p) => tokio::select! {
                    n = socket.read(&mut buf) => n.map(Some),
                    () = p.claim.taken_over() => Ok(None),
                },
                None => socket.read(&mut buf).await.map(Some),
            }
        };
        let n = match tokio::time::timeout(SILENCE_TIMEOUT, read).await {
            Err(_) => break Err(anyhow!("the publisher sent nothing for {} s", SILENCE_TIMEOUT.as_secs())),
            Ok(Err(e)) => break Err(e.into()),
            Ok(Ok(None)) => break Err(anyhow!("another publisher took the channel over")),
            Ok(Ok(Some(0))) => break Ok(()),
            Ok(Ok(Some(n))) => n,
        };
        if let Some(p) = &mut publish {
            p.bytes += n as u64;
            p.meter.received(n);
        }
        pending = match read_chunks(&mut session, &buf[..n]) {
            Ok(results) => results,
            Err(e) => break Err(e),
        };
    };
    if let Some(mut p) = publish {
        let _ = p.live.end();
        p.meter.frames(p.live.counts());
        tracing::info!(
            channel = %p.claim.channel, %peer, bytes = p.bytes, seconds = p.started.elapsed().as_secs(),
            refused_tags = p.refusals, "RTMP publisher gone"
        );
    }
    outcome
}

/// Complete the server side of the handshake; returns the bytes that followed it.
async fn handshake(socket: &mut TcpStream, buf: &mut [u8]) -> Result<Vec<u8>> {
    let mut hs = Handshake::new(PeerType::Server);
    loop {
        let n = socket.read(buf).await?;
        if n == 0 {
            bail!("closed during the RTMP handshake");
        }
        match hs.process_bytes(&buf[..n]).map_err(|e| anyhow!("not an RTMP handshake: {e:?}"))? {
            HandshakeProcessResult::InProgress { response_bytes } => socket.write_all(&response_bytes).await?,
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                socket.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// What the connection does next.
enum Flow {
    Go,
    /// The publisher said it stopped.
    Finished,
    /// The publish was refused (the client was told why): close.
    Refused(String),
}

/// Send what the session wants sent and act on what it raised.
async fn handle(
    host: &Arc<Host>,
    publishing: &Arc<Publishing>,
    session: &mut ServerSession,
    publish: &mut Option<Publish>,
    mut results: Vec<ServerSessionResult>,
    socket: &mut TcpStream,
    peer: SocketAddr,
) -> Result<Flow> {
    let mut flow = Flow::Go;
    while !results.is_empty() {
        let mut more = Vec::new();
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => socket.write_all(&packet.bytes).await?,
                ServerSessionResult::RaisedEvent(event) => {
                    let (replies, next) = on_event(host, publishing, session, publish, event, peer)?;
                    more.extend(replies);
                    if !matches!(next, Flow::Go) {
                        flow = next;
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        results = more;
    }
    Ok(flow)
}

fn on_event(
    host: &Arc<Host>,
    publishing: &Arc<Publishing>,
    session: &mut ServerSession,
    publish: &mut Option<Publish>,
    event: ServerSessionEvent,
    peer: SocketAddr,
) -> Result<(Vec<ServerSessionResult>, Flow)> {
    let rtmp = |e| anyhow!("RTMP session: {e:?}");
    let go = |replies| Ok((replies, Flow::Go));
    match event {
        ServerSessionEvent::ConnectionRequested { request_id, .. } => {
            go(session.accept_request(request_id).map_err(rtmp)?)
        }
        ServerSessionEvent::PublishStreamRequested { request_id, app_name, stream_key, .. } => {
            if publish.is_some() {
                bail!("a second publish on one connection");
            }
            let claim = match publish_target(&app_name, &stream_key) {
                Some((channel, key)) => {
                    publishing.claim(&channel, &key, &peer.to_string(), "rtmp").map_err(|r| r.to_string())
                }
                None => {
                    tracing::warn!(%peer, app = %app_name, "RTMP publish refused: no channel and key in the URL");
                    Err("publish to rtmp://HOST/live/CHANNEL with the stream key, or to rtmp://HOST/live with CHANNEL?key=KEY".to_string())
                }
            };
            let claim = match claim {
                Ok(c) => c,
                Err(reason) => {
                    // Tell the encoder why (OBS shows it), then close.
                    let replies =
                        session.reject_request(request_id, "NetStream.Publish.BadName", &reason).map_err(rtmp)?;
                    return Ok((replies, Flow::Refused(format!("publish refused: {reason}"))));
                }
            };
            let rendition = Name::new("src").expect("valid name");
            let mut live = LiveRendition::for_flv(host.clone(), claim.channel.clone(), rendition, SOURCE);
            // Whatever the channel carried before, this is a new encoder.
            live.discontinuity();
            let accepted = session.accept_request(request_id).map_err(rtmp)?;
            let meter = PublisherMeter::new(&claim.channel, "rtmp");
            *publish = Some(Publish { claim, live, meter, started: Instant::now(), bytes: 0, refusals: 0 });
            go(accepted)
        }
        ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
            let Some(p) = publish else { return go(Vec::new()) };
            if let Err(e) = p.live.video_tag(timestamp.value, &data) {
                refused(p, &e, peer)?;
            }
            go(Vec::new())
        }
        ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
            let Some(p) = publish else { return go(Vec::new()) };
            if let Err(e) = p.live.audio_tag(timestamp.value, &data) {
                refused(p, &e, peer)?;
            }
            go(Vec::new())
        }
        ServerSessionEvent::PublishStreamFinished { .. } => Ok((Vec::new(), Flow::Finished)),
        _ => go(Vec::new()),
    }
}

/// A tag the packager refused (its meter counts it as dropped): logged, the first few; a stream
/// whose video can never be packaged (not H.264) is cut off with the reason.
fn refused(p: &mut Publish, e: &anyhow::Error, peer: SocketAddr) -> Result<()> {
    p.refusals += 1;
    let reason = format!("{e:#}");
    if reason.contains("not supported") && reason.contains("video") {
        bail!("{reason}");
    }
    if p.refusals <= 5 {
        tracing::warn!(channel = %p.claim.channel, %peer, %reason, "RTMP tag refused");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn obs_and_ffmpeg_urls_name_channel_and_key() {
        let t = |app, stream| publish_target(app, stream).map(|(c, k)| format!("{c}:{k}"));
        // OBS: Server rtmp://host/live/cam, Stream Key s3cret.
        assert_eq!(t("live/cam", "s3cret").as_deref(), Some("cam:s3cret"));
        // OBS: Server rtmp://host/live, Stream Key cam?key=s3cret; ffmpeg rtmp://host/live/cam?key=s3cret.
        assert_eq!(t("live", "cam?key=s3cret").as_deref(), Some("cam:s3cret"));
        assert_eq!(t("live", "cam?foo=1&key=s3cret").as_deref(), Some("cam:s3cret"));
        assert_eq!(t("live", "cam/s3cret").as_deref(), Some("cam:s3cret"));
        assert_eq!(t("live", "cam"), None, "no key");
        assert_eq!(t("live", "cam?nokey=1"), None);
        assert_eq!(t("", ""), None);
    }
}

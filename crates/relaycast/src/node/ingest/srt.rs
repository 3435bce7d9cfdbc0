//! SRT publish ingest (F4): MPEG-TS over SRT from OBS, vMix, hardware encoders or
//! `ffmpeg -f mpegts 'srt://HOST:9000?streamid=publish:CHANNEL:KEY'`.
//!
//! The channel and stream key come from the caller's stream id, in either common convention:
//! `publish:CHANNEL:KEY` or the SRT access-control syntax `#!::r=CHANNEL,m=publish,s=KEY`.
//! With `--srt-passphrase` the stream must be encrypted (AES) with that passphrase; without, it
//! must not be. The TS goes through the same packager as an HTTP stream push: a low-latency
//! channel, and a publisher that comes back continues it after a discontinuity.
//!
//! `srt-tokio` is used as surveyed (it interoperates with Debian ffmpeg's libsrt as the caller,
//! with and without encryption: `tests/rtmp_srt_ingest.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt;
use relaycast_core::Name;
use srt_protocol::options::{KeySize, Passphrase};
use srt_protocol::settings::KeySettings;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::{ConnectionRequest, SrtListener};

use crate::node::host::Host;
use crate::node::ingest::claim::{Publishing, Refusal};
use crate::node::ingest::cmaf::LiveRendition;
use crate::node::ingest::meter::PublisherMeter;

/// What the channel list says feeds an SRT channel.
const SOURCE: &str = "srt · low latency";
/// A publisher that sends nothing for this long is cut off.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the listener takes publishers.
#[derive(Clone, Debug)]
pub struct SrtSettings {
    pub passphrase: Option<String>,
    pub latency: Duration,
}

/// Listen for SRT publishers on `addr` (UDP); returns the bound address.
pub async fn serve(
    host: Arc<Host>,
    publishing: Arc<Publishing>,
    addr: SocketAddr,
    settings: SrtSettings,
) -> Result<SocketAddr> {
    let socket = tokio::net::UdpSocket::bind(addr).await.with_context(|| format!("SRT: binding udp {addr}"))?;
    let bound = socket.local_addr()?;
    let (listener, mut incoming) = SrtListener::builder()
        .socket(socket)
        .latency(settings.latency)
        .bind(bound)
        .await
        .with_context(|| format!("SRT: listening on {bound}"))?;
    tokio::spawn(async move {
        // The listener lives as long as its requests are taken.
        let _listener: SrtListener = listener;
        while let Some(request) = incoming.incoming().next().await {
            let (host, publishing, settings) = (host.clone(), publishing.clone(), settings.clone());
            tokio::spawn(async move {
                let peer = request.remote();
                if let Err(e) = connection(&host, &publishing, &settings, request).await {
                    tracing::warn!(%peer, error = %format!("{e:#}"), "SRT connection closed");
                }
            });
        }
    });
    Ok(bound)
}

/// `%XX` escapes decoded: some callers (ffmpeg) pass a URL-encoded stream id through as it is,
/// since `#` cannot appear in their URL unescaped.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Channel and key from a caller's stream id (URL-encoded or not).
pub fn publish_target(stream_id: &str) -> Result<(String, String), String> {
    let stream_id = percent_decode(stream_id);
    if let Some(rest) = stream_id.strip_prefix("#!::") {
        let mut resource = None;
        let (mut key, mut mode) = (String::new(), "request");
        for pair in rest.split(',') {
            match pair.split_once('=') {
                Some(("r", v)) => resource = Some(v.to_string()),
                Some(("s", v)) => key = v.to_string(),
                Some(("m", v)) => mode = v,
                _ => {}
            }
        }
        if mode != "publish" {
            return Err(format!("stream id mode {mode:?}: this server takes publishers only (m=publish)"));
        }
        return resource.map(|r| (r, key)).ok_or_else(|| "stream id has no resource (r=CHANNEL)".to_string());
    }
    match stream_id.split(':').collect::<Vec<_>>().as_slice() {
        ["publish", channel, key] => Ok((channel.to_string(), key.to_string())),
        _ => Err("stream id must be publish:CHANNEL:KEY or #!::r=CHANNEL,m=publish,s=KEY".to_string()),
    }
}

async fn connection(
    host: &Arc<Host>,
    publishing: &Arc<Publishing>,
    settings: &SrtSettings,
    request: ConnectionRequest,
) -> Result<()> {
    let peer = request.remote();
    let stream_id = request.stream_id().map(|s| s.to_string()).unwrap_or_default();
    let reject = |reason: ServerRejectReason| RejectReason::Server(reason);
    let claim = match publish_target(&stream_id) {
        Ok((channel, key)) => publishing.claim(&channel, &key, &peer.to_string(), "srt").map_err(|r| {
            let code = match r {
                Refusal::WrongKey(_) => ServerRejectReason::Forbidden,
                Refusal::Busy(_) => ServerRejectReason::Conflict,
                _ => ServerRejectReason::Notfound,
            };
            (code, r.to_string())
        }),
        Err(reason) => Err((ServerRejectReason::BadRequest, reason)),
    };
    let encrypted = request.key_size() != KeySize::Unspecified;
    let claim = match (claim, &settings.passphrase) {
        (Err((code, reason)), _) => {
            tracing::warn!(%peer, stream_id = %stream_id, %reason, "SRT publish refused");
            request.reject(reject(code)).await?;
            return Ok(());
        }
        (Ok(_), Some(_)) if !encrypted => {
            tracing::warn!(%peer, "SRT publish refused: this listener needs the passphrase (--srt-passphrase)");
            request.reject(reject(ServerRejectReason::Unauthorized)).await?;
            return Ok(());
        }
        (Ok(_), None) if encrypted => {
            tracing::warn!(%peer, "SRT publish refused: encrypted, but this listener has no --srt-passphrase");
            request.reject(reject(ServerRejectReason::KeyNotSup)).await?;
            return Ok(());
        }
        (Ok(claim), _) => claim,
    };
    let keys = settings.passphrase.as_ref().map(|p| KeySettings {
        key_size: request.key_size(),
        passphrase: Passphrase::try_from(p.clone()).expect("length checked at start"),
    });
    let mut socket =
        request.accept(keys).await.context("the SRT handshake failed (a wrong passphrase, or the caller left)")?;
    let channel = claim.channel.clone();
    let mut live = LiveRendition::new(host.clone(), channel.clone(), Name::new("src").expect("valid name"), SOURCE);
    live.discontinuity();
    let mut meter = PublisherMeter::new(&channel, "srt");
    let (started, mut bytes) = (Instant::now(), 0u64);
    let outcome: Result<()> = loop {
        let next = tokio::select! {
            next = tokio::time::timeout(SILENCE_TIMEOUT, socket.next()) => next,
            () = claim.taken_over() => break Err(anyhow!("another publisher took the channel over")),
        };
        match next {
            Err(_) => break Err(anyhow!("the publisher sent nothing for {} s", SILENCE_TIMEOUT.as_secs())),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(e.into()),
            Ok(Some(Ok((_, data)))) => {
                bytes += data.len() as u64;
                meter.received(data.len());
                let pushed = live.push(&data);
                meter.frames(live.counts());
                if let Err(e) = pushed {
                    break Err(e);
                }
            }
        }
    };
    let _ = live.end();
    meter.frames(live.counts());
    tracing::info!(%channel, %peer, bytes, seconds = started.elapsed().as_secs(), "SRT publisher gone");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_stream_id_conventions_name_channel_and_key() {
        assert_eq!(publish_target("publish:cam:s3cret"), Ok(("cam".into(), "s3cret".into())));
        assert_eq!(publish_target("#!::r=cam,m=publish,u=alice,s=s3cret"), Ok(("cam".into(), "s3cret".into())));
        assert_eq!(
            publish_target("%23%21%3A%3Ar%3Dcam%2Cm%3Dpublish%2Cs%3Ds3cret"),
            Ok(("cam".into(), "s3cret".into()))
        );
        assert!(publish_target("#!::r=cam,m=request,s=k").unwrap_err().contains("publishers only"));
        assert!(publish_target("%ZZ%").is_err(), "bad escapes are kept, not panicked on");
        assert!(publish_target("#!::m=publish,s=k").is_err());
        assert!(publish_target("cam").is_err());
        assert!(publish_target("").is_err());
    }
}

//! QUIC between nodes: one control stream per connection (length-prefixed [`Message`]s) and one
//! unidirectional stream per segment, so a slow segment never blocks the next one.
//!
//! TLS uses a certificate generated at start-up; nodes authenticate each other with the shared
//! cluster token carried in `Hello` over that encrypted channel (see docs/PROTOCOL.md).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use relaycast_core::wire::{self, Message, SegmentHeader};
use relaycast_core::{PeerId, Segment};
use tokio::sync::mpsc;

use crate::common::cluster_ca::is_certificate_refusal;
use crate::node::arriving::{Feed, PartHead};
use crate::node::host::{Host, PeerLink};

/// Accept neighbours (usually children) until the endpoint closes.
pub async fn accept_neighbours(endpoint: Endpoint, host: Arc<Host>) {
    while let Some(incoming) = endpoint.accept().await {
        let host = host.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) if is_certificate_refusal(&e.to_string()) => {
                    return tracing::warn!(node = %host.name, %remote, error = %e, "refused a neighbour: certificates not from the same cluster CA (or it showed none)");
                }
                Err(e) => {
                    return tracing::warn!(node = %host.name, %remote, error = %e, "QUIC handshake failed");
                }
            };
            let (send, recv) = match tokio::time::timeout(Duration::from_secs(5), conn.accept_bi()).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return tracing::warn!(node = %host.name, %remote, error = %e, "no control stream");
                }
                Err(_) => {
                    conn.close(1u32.into(), b"no control stream in time");
                    return tracing::warn!(node = %host.name, %remote, "peer opened no control stream in time");
                }
            };
            let peer = host.next_peer_id();
            let mut guard = register(&host, peer, conn.clone(), send);
            host.input(|n, now| n.peer_accepted(now, peer));
            tracing::info!(node = %host.name, %remote, peer = peer.0, "peer connected");
            guard.reason = serve_connection(&host, peer, conn, recv).await;
        });
    }
}

/// Keep a connection to the neighbour at `addr`, reconnecting with backoff; never returns (abort
/// the task to drop the neighbour). The tree decides whether it becomes our parent.
pub async fn keep_neighbour(endpoint: Endpoint, addr: String, host: Arc<Host>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match dial(&endpoint, &addr).await {
            Ok((conn, send, recv)) => {
                let peer = host.next_peer_id();
                let mut guard = register(&host, peer, conn.clone(), send);
                host.input(|n, now| n.peer_dialed(now, peer));
                let started = std::time::Instant::now();
                let reason = serve_connection(&host, peer, conn, recv).await;
                guard.reason = reason.clone();
                drop(guard);
                tracing::warn!(node = %host.name, neighbour = %addr, %reason, "neighbour connection ended");
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(200);
                }
            }
            Err(e) if is_certificate_refusal(&format!("{e:#}")) => {
                tracing::warn!(node = %host.name, neighbour = %addr, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "neighbour refused: the certificates are not from the same cluster CA")
            }
            Err(e) => {
                tracing::warn!(node = %host.name, neighbour = %addr, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "cannot reach neighbour")
            }
        }
        // Jitter from the clock's sub-millisecond digits keeps reconnecting children apart.
        let jitter = Duration::from_micros(
            u64::from(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_micros()),
            ) % 100_000,
        );
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn dial(endpoint: &Endpoint, addr: &str) -> Result<(Connection, SendStream, RecvStream)> {
    let sock = tokio::net::lookup_host(addr).await?.next().with_context(|| format!("{addr} resolves to nothing"))?;
    let conn =
        tokio::time::timeout(Duration::from_secs(5), endpoint.connect(sock, crate::common::cluster_ca::SERVER_NAME)?)
            .await
            .context("QUIC handshake timed out")??;
    let (send, recv) = conn.open_bi().await?;
    Ok((conn, send, recv))
}

/// Tells the node a connection is gone when dropped — also when its task is aborted (a tracker
/// dropping a neighbour), so the node never keeps a dead peer.
struct Registered {
    host: Arc<Host>,
    peer: PeerId,
    reason: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.host.peer_closed(self.peer, &self.reason);
    }
}

/// Spawn the writer tasks for a peer and hand its link to the host.
fn register(host: &Arc<Host>, peer: PeerId, conn: Connection, mut send: SendStream) -> Registered {
    // Keep-alives and subscriptions must not wait behind segment data on a congested link.
    let _ = send.set_priority(1);
    let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Message>();
    let (seg_tx, mut seg_rx) = mpsc::unbounded_channel::<(Vec<(Bytes, Bytes)>, i32)>();
    tokio::spawn(async move {
        while let Some(msg) = control_rx.recv().await {
            if send.write_all(&wire::encode_message(&msg)).await.is_err() {
                break;
            }
        }
    });
    let seg_conn = conn.clone();
    let sent = metrics::counter!("relaycast_peer_egress_bytes_total", "node" => host.name.clone());
    tokio::spawn(async move {
        while let Some((frames, priority)) = seg_rx.recv().await {
            let conn = seg_conn.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let Ok(mut s) = conn.open_uni().await else { return };
                let _ = s.set_priority(priority);
                for (header, payload) in frames {
                    if s.write_all(&header).await.is_err() || s.write_all(&payload).await.is_err() {
                        return;
                    }
                    sent.increment((header.len() + payload.len()) as u64);
                }
                let _ = s.finish();
            });
        }
    });
    host.add_peer(peer, PeerLink { control: control_tx, segments: seg_tx, connection: conn });
    Registered { host: host.clone(), peer, reason: "connection dropped".into() }
}

/// Read control messages and segments from a peer until the connection ends; returns why.
/// Whether a peer may send segments at all is the core's decision (children may not).
async fn serve_connection(host: &Arc<Host>, peer: PeerId, conn: Connection, mut recv: RecvStream) -> String {
    let segments = {
        let host = host.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            loop {
                let stream = match conn.accept_uni().await {
                    Ok(s) => s,
                    Err(e) => return e.to_string(),
                };
                tokio::spawn(read_stream(stream, host.clone(), peer));
            }
        })
    };

    let mut buf = BytesMut::with_capacity(4096);
    let reason = loop {
        match wire::decode_message(&buf) {
            Ok(Some((msg, used))) => {
                let _ = buf.split_to(used);
                host.input(|n, now| n.handle_message(now, peer, msg));
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                let reason = format!("malformed control stream: {e}");
                conn.close(2u32.into(), reason.as_bytes());
                break reason;
            }
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => break "control stream closed".to_string(),
            // Keep the peer's own reason (e.g. "presented a wrong cluster token").
            Err(quinn::ReadError::ConnectionLost(c)) => break c.to_string(),
            Err(e) => break e.to_string(),
        }
    };
    segments.abort();
    reason
}

/// Read one segment stream to its end. Parts go to the core as they arrive (cut-through); whole
/// segments go when the stream ends, all at once: a stream of several is a new child's backfill
/// or a resume, and listing it only once it is all here keeps a restarted relay's playlist from
/// starting below where it was before (a live segment travels alone, so it waits for nothing).
async fn read_stream(mut stream: RecvStream, host: Arc<Host>, peer: PeerId) {
    let mut segments = Vec::new();
    loop {
        let alive = || host.input(|n, now| n.peer_alive(now, peer));
        match read_segment(&mut stream, &host, alive).await {
            Ok(Some((h, data, feed))) => {
                let (channel, rendition) = (h.channel.clone(), h.rendition.clone());
                let (meta, signature) = (h.meta, h.signature);
                match h.into_part(data.clone()) {
                    Some(part) => {
                        host.input(|n, now| n.handle_part(now, peer, channel, rendition, part));
                        if let Some(feed) = feed {
                            feed.whole();
                        }
                    }
                    None => segments.push((channel, rendition, Segment { meta, data, signature })),
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(node = %host.name, peer = peer.0, error = %format!("{e:#}"), "bad segment stream");
                let _ = stream.stop(1u32.into());
                break;
            }
        }
    }
    // Whole segments read before a broken stream are still good.
    if !segments.is_empty() {
        host.input(|n, now| {
            for (channel, rendition, segment) in segments {
                n.handle_segment(now, peer, channel, rendition, segment);
            }
        });
    }
}

/// Read the next segment or part frame from a stream: fixed header, names, then exactly
/// `payload_len` bytes. `Ok(None)` when the stream ended cleanly between frames. Limits are checked on the
/// fixed header, before anything else is read or allocated. A part's bytes are also offered to
/// the host's arriving parts as they come (viewers holding a request for it get them at once); the returned
/// feed is to be marked whole once the core has the part.
async fn read_segment(
    stream: &mut RecvStream,
    host: &Host,
    alive: impl Fn(),
) -> Result<Option<(SegmentHeader, Bytes, Option<Feed>)>> {
    let max_payload = host.max_segment_bytes;
    let mut fixed = [0u8; wire::SEGMENT_HEADER_LEN];
    match stream.read_exact(&mut fixed).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e).context("reading a segment header"),
    }
    // Validates magic, version and the payload limit; asks for the names that follow.
    if let Some((header, _)) = SegmentHeader::decode(&fixed, max_payload)? {
        anyhow::bail!("segment header without names: {header:?}");
    }
    let names_len = SegmentHeader::trailer_len(&fixed);
    let mut head = fixed.to_vec();
    head.resize(wire::SEGMENT_HEADER_LEN + names_len, 0);
    stream.read_exact(&mut head[wire::SEGMENT_HEADER_LEN..]).await.context("reading segment names")?;
    let Some((header, _)) = SegmentHeader::decode(&head, max_payload)? else {
        anyhow::bail!("incomplete segment header");
    };
    let feed = header.part.map(|p| {
        let key = (header.channel.clone(), header.rendition.clone(), header.meta.seq, p.index);
        let head = PartHead {
            len: header.payload_len,
            origin_ms: header.meta.origin_ms,
            last: p.last,
            signature: header.signature,
        };
        let feed = host.arriving.start(key, head);
        // Requests held for this part can be answered now.
        host.changed.notify_waiters();
        feed
    });
    let mut payload = BytesMut::with_capacity(header.payload_len);
    let mut last_alive = std::time::Instant::now();
    while payload.len() < header.payload_len {
        let chunk = stream
            .read_chunk(header.payload_len - payload.len(), true)
            .await
            .with_context(|| format!("reading a {}-byte segment", header.payload_len))?
            .with_context(|| format!("segment stream ended after {} of {} bytes", payload.len(), header.payload_len))?;
        payload.extend_from_slice(&chunk.bytes);
        if let Some(feed) = &feed {
            feed.push(chunk.bytes);
        }
        // A long segment on a slow link is still proof of life for the keep-alive.
        if last_alive.elapsed() >= std::time::Duration::from_millis(100) {
            last_alive = std::time::Instant::now();
            alive();
        }
    }
    Ok(Some((header, payload.freeze(), feed)))
}

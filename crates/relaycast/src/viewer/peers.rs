//! QUIC between viewers (F50): the handshake, have-map updates, and one stream per request.
//!
//! The dialer opens the control stream and says `Hello`; the other side answers `Hello`. After
//! that either side opens a bidirectional stream per request (`Request` → `Piece` + bytes, or
//! `Reject`). Everything read is bounded by the core's peer wire limits. This module moves
//! bytes only; what to ask, whom to serve and what to trust is decided by the viewer loop
//! around the core's [`relaycast_core::p2p::Swarm`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use relaycast_core::Name;
use relaycast_core::p2p::PeerKey;
use relaycast_core::p2p::signing::{SIGNATURE_LEN, Signature};
use relaycast_core::p2p::wire::{self, PeerMessage, RejectReason};
use tokio::sync::{mpsc, oneshot};

/// Who we are, as said in `Hello`.
#[derive(Clone, Debug)]
pub struct Me {
    pub id: u64,
    pub channel: Name,
    pub rendition: Name,
    pub region: String,
    pub max_segment: usize,
}

/// A verified segment ready to upload.
#[derive(Clone, Debug)]
pub struct Held {
    pub data: Bytes,
    pub signature: Signature,
    pub origin_ms: u64,
}

/// What the link tasks tell the viewer loop.
pub enum NetEvent {
    /// A handshake completed. `dialed` is true when we dialed.
    Up {
        peer: PeerKey,
        region: String,
        conn: Connection,
        control: mpsc::UnboundedSender<PeerMessage>,
        dialed: bool,
    },
    Have {
        peer: PeerKey,
        seqs: Vec<u64>,
    },
    /// The connection with stable id `conn_id` to `peer` ended.
    Down {
        peer: PeerKey,
        conn_id: usize,
    },
    /// `peer` asks for `seq`: answer with the bytes, or why not.
    Upload {
        peer: PeerKey,
        seq: u64,
        reply: oneshot::Sender<Result<Held, RejectReason>>,
    },
    UploadDone {
        bytes: u64,
    },
}

/// Dial `addr` and run the link until it ends.
pub async fn dial(endpoint: Endpoint, addr: SocketAddr, me: Me, tx: mpsc::UnboundedSender<NetEvent>, uploads: Uploads) {
    let result: Result<()> = async {
        let conn = tokio::time::timeout(Duration::from_secs(3), endpoint.connect(addr, "relaycast")?)
            .await
            .context("QUIC handshake timed out")??;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&wire::encode(&hello(&me))).await?;
        let mut buf = BytesMut::new();
        let theirs = tokio::time::timeout(Duration::from_secs(3), read_frame(&mut recv, &mut buf, me.max_segment))
            .await
            .context("no Hello from the peer")??;
        run_link(conn, send, recv, buf, theirs, me, tx, uploads, true).await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(%addr, error = %format!("{e:#}"), "peer link ended");
    }
}

/// Accept viewers until the endpoint closes.
pub async fn accept(endpoint: Endpoint, me: Me, tx: mpsc::UnboundedSender<NetEvent>, uploads: Uploads) {
    while let Some(incoming) = endpoint.accept().await {
        let (me, tx, uploads) = (me.clone(), tx.clone(), uploads.clone());
        tokio::spawn(async move {
            let result: Result<()> = async {
                let conn = incoming.await?;
                let (mut send, mut recv) = tokio::time::timeout(Duration::from_secs(3), conn.accept_bi())
                    .await
                    .context("no control stream")??;
                let mut buf = BytesMut::new();
                let theirs =
                    tokio::time::timeout(Duration::from_secs(3), read_frame(&mut recv, &mut buf, me.max_segment))
                        .await
                        .context("no Hello from the peer")??;
                send.write_all(&wire::encode(&hello(&me))).await?;
                run_link(conn, send, recv, buf, theirs, me, tx, uploads, false).await
            }
            .await;
            if let Err(e) = result {
                tracing::debug!(error = %format!("{e:#}"), "incoming peer link ended");
            }
        });
    }
}

fn hello(me: &Me) -> PeerMessage {
    PeerMessage::Hello {
        channel: me.channel.clone(),
        rendition: me.rendition.clone(),
        viewer: me.id,
        region: me.region.clone(),
    }
}

/// How uploads are paced and whether they are deliberately corrupted (test hook).
#[derive(Clone)]
pub struct Uploads {
    pub pacer: Arc<crate::common::egress::Egress>,
    /// Flip bits in every uploaded segment (the lying-peer test; hidden flag).
    pub corrupt: bool,
}

#[allow(clippy::too_many_arguments)]
async fn run_link(
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    mut buf: BytesMut,
    theirs: PeerMessage,
    me: Me,
    tx: mpsc::UnboundedSender<NetEvent>,
    uploads: Uploads,
    dialed: bool,
) -> Result<()> {
    let PeerMessage::Hello { channel, rendition, viewer, region } = theirs else {
        bail!("first message is not Hello");
    };
    if channel != me.channel || rendition != me.rendition {
        bail!("peer watches {channel}/{rendition}, not {}/{}", me.channel, me.rendition);
    }
    if viewer == me.id {
        bail!("connected to myself");
    }
    let peer = viewer;
    let (control, mut outgoing) = mpsc::unbounded_channel::<PeerMessage>();
    let conn_id = conn.stable_id();
    if tx.send(NetEvent::Up { peer, region, conn: conn.clone(), control, dialed }).is_err() {
        return Ok(());
    }
    // Writer: have-map updates from the viewer loop.
    let writer = tokio::spawn(async move {
        while let Some(msg) = outgoing.recv().await {
            if send.write_all(&wire::encode(&msg)).await.is_err() {
                break;
            }
        }
    });
    // Requests from the peer.
    let server = tokio::spawn(serve_requests(conn.clone(), peer, me.max_segment, tx.clone(), uploads));
    // Reader: have-maps from the peer.
    let read: Result<()> = async {
        loop {
            match read_frame(&mut recv, &mut buf, me.max_segment).await? {
                PeerMessage::Have { seqs } => {
                    let _ = tx.send(NetEvent::Have { peer, seqs });
                }
                other => bail!("unexpected message on the control stream: {other:?}"),
            }
        }
    }
    .await;
    writer.abort();
    server.abort();
    let _ = tx.send(NetEvent::Down { peer, conn_id });
    conn.close(0u32.into(), b"bye");
    read
}

async fn serve_requests(
    conn: Connection,
    peer: PeerKey,
    max: usize,
    tx: mpsc::UnboundedSender<NetEvent>,
    uploads: Uploads,
) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let (tx, uploads) = (tx.clone(), uploads.clone());
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let Ok(Ok(PeerMessage::Request { seq })) =
                tokio::time::timeout(Duration::from_secs(3), read_frame(&mut recv, &mut buf, max)).await
            else {
                return;
            };
            let (reply, answer) = oneshot::channel();
            if tx.send(NetEvent::Upload { peer, seq, reply }).is_err() {
                return;
            }
            let held = match answer.await {
                Ok(Ok(h)) => h,
                Ok(Err(reason)) => {
                    let _ = send.write_all(&wire::encode(&PeerMessage::Reject { seq, reason })).await;
                    let _ = send.finish();
                    return;
                }
                Err(_) => return,
            };
            let mut data = held.data;
            if uploads.corrupt && !data.is_empty() {
                let mut bad = data.to_vec();
                let mid = bad.len() / 2;
                bad[mid] ^= 0x5a;
                data = Bytes::from(bad);
            }
            let head = PeerMessage::Piece {
                seq,
                len: data.len() as u32,
                origin_ms: held.origin_ms,
                signature: held.signature.to_vec(),
            };
            let mut sent = 0u64;
            let ok = async {
                send.write_all(&wire::encode(&head)).await?;
                let mut paced = std::pin::pin!(uploads.pacer.clone().pace(data));
                while let Some(chunk) = paced.next().await {
                    let chunk = chunk?;
                    send.write_all(&chunk).await?;
                    sent += chunk.len() as u64;
                }
                send.finish()?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = ok {
                tracing::debug!(peer, seq, error = %format!("{e:#}"), "upload ended early");
            }
            let _ = tx.send(NetEvent::UploadDone { bytes: sent });
        });
    }
}

/// Ask `conn` for `seq`: the bytes, the signature and the origin timestamp, or why not.
pub async fn fetch(conn: Connection, seq: u64, max: usize) -> Result<(Bytes, Signature, u64)> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&wire::encode(&PeerMessage::Request { seq })).await?;
    send.finish()?;
    let mut buf = BytesMut::new();
    match read_frame(&mut recv, &mut buf, max).await? {
        PeerMessage::Piece { seq: s, len, origin_ms, signature } if s == seq => {
            let len = len as usize;
            let mut data = BytesMut::with_capacity(len);
            data.extend_from_slice(&buf[..buf.len().min(len)]);
            while data.len() < len {
                let Some(chunk) = recv.read_chunk(len - data.len(), true).await? else {
                    bail!("piece {seq} ended after {} of {len} bytes", data.len());
                };
                data.extend_from_slice(&chunk.bytes);
            }
            if buf.len() > len {
                bail!("piece {seq} longer than announced");
            }
            let mut sig = [0u8; SIGNATURE_LEN];
            sig.copy_from_slice(&signature);
            Ok((data.freeze(), sig, origin_ms))
        }
        PeerMessage::Reject { reason, .. } => bail!("peer refused segment {seq}: {reason:?}"),
        other => bail!("unexpected answer to a request: {other:?}"),
    }
}

/// Read one frame, keeping any bytes after it in `buf`.
async fn read_frame(recv: &mut RecvStream, buf: &mut BytesMut, max_piece: usize) -> Result<PeerMessage> {
    loop {
        if let Some((msg, used)) = wire::decode(buf, max_piece)? {
            buf.advance(used);
            return Ok(msg);
        }
        match recv.read_chunk(wire::MAX_PEER_FRAME + 4, true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => bail!("stream ended"),
        }
    }
}

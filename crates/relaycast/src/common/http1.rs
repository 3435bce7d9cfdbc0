//! Plain HTTP/1.1 connections served by our own loop, so a stored response (a live segment,
//! status line to last byte) goes out with one `sendfile` from a memory file instead of being
//! copied from user memory into the socket (issue 21: serving segments as fast as nginx).
//!
//! Only what players send is handled here: requests without a body. Every other request is
//! answered by the same axum router, and the response framed here (length or chunked). A
//! connection that sends anything else — a body (ingest PUT), an upgrade, HTTP/1.0, HTTP/2 — is
//! handed to hyper for the rest of its life, with the bytes already read replayed first, so
//! nothing a client can send is served differently than before.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A request head larger than this is refused (431); players send well under 1 KB, and nginx
/// refuses header lines over 8 KB.
const MAX_HEAD: usize = 16 * 1024;
/// Headers a request may carry.
const MAX_HEADERS: usize = 64;
/// A request head that has started must be complete within this (slow clients hold nothing).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// What an HTTP/2 client sends first without upgrading (prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A whole HTTP/1.1 response (head and body) in a sealed memory file: sent with `sendfile`, so
/// the kernel hands the file's pages to the socket without a copy through user memory.
pub struct StoredResponse {
    file: OwnedFd,
    len: u64,
}

impl StoredResponse {
    /// `head` is the status line and headers (ending in the blank line), `body` the payload.
    pub fn new(head: &[u8], body: &[u8]) -> io::Result<Self> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let file = rustix::fs::memfd_create("relaycast-response", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        for part in [head, body] {
            let mut rest = part;
            while !rest.is_empty() {
                let n = rustix::io::write(&file, rest)?;
                rest = &rest[n..];
            }
        }
        // Nothing can change or resize it now: what a client is sent is what was stored.
        rustix::fs::fcntl_add_seals(&file, SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)?;
        Ok(Self { file, len: (head.len() + body.len()) as u64 })
    }

    /// Bytes on the wire: head and body.
    pub fn wire_len(&self) -> u64 {
        self.len
    }

    async fn send(&self, stream: &TcpStream) -> io::Result<()> {
        let mut offset = 0u64;
        while offset < self.len {
            stream.writable().await?;
            let left = (self.len - offset) as usize;
            let sent = stream.try_io(Interest::WRITABLE, || {
                let mut at = offset;
                rustix::fs::sendfile(stream.as_fd(), self.file.as_fd(), Some(&mut at), left).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => offset += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Answers some GET requests from storage, ahead of the router.
pub trait Shortcut: Send + Sync + 'static {
    /// The stored answer to `GET target`, or None to let the router answer. Called only for
    /// GET requests without a body; whoever answers does its own accounting.
    fn stored(&self, target: &str) -> Option<Arc<StoredResponse>>;
}

/// Serve one plain-TCP connection: body-less HTTP/1.1 requests here (stored answers first,
/// then `app`), anything else by `hyper` from the first byte it did not understand.
pub async fn serve_connection(
    mut stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    shortcut: Arc<dyn Shortcut>,
    hyper: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let request = match read_head(&mut stream, &mut buf).await {
            Ok(Head::Request(r)) => r,
            Ok(Head::Closed) | Err(_) => return,
            Ok(Head::NotOurs) => {
                let io = hyper_util::rt::TokioIo::new(Replay { first: buf, stream });
                let app = tower::ServiceExt::map_request(app, move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(axum::extract::ConnectInfo(remote));
                    req
                });
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper.serve_connection_with_upgrades(io, service).await;
                return;
            }
            Ok(Head::Refused(status, reason)) => {
                let _ = write_response(&mut stream, plain_error(status, reason), false, true).await;
                return;
            }
        };
        let close = request.close;
        let head_only = request.method == Method::HEAD;
        let stored = (request.method == Method::GET).then(|| shortcut.stored(&request.target)).flatten();
        let sent = match stored {
            Some(response) => response.send(&stream).await,
            None => match into_request(request) {
                Ok(mut req) => {
                    // As `common::http::serve` does for hyper's requests.
                    req.extensions_mut().insert(axum::extract::ConnectInfo(remote));
                    let resp = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap_or_else(|e| match e {});
                    write_response(&mut stream, resp, head_only, close).await
                }
                Err(reason) => {
                    let _ =
                        write_response(&mut stream, plain_error(StatusCode::BAD_REQUEST, reason), false, true).await;
                    return;
                }
            },
        };
        if sent.is_err() || close {
            return;
        }
    }
}

/// A parsed request head of a body-less HTTP/1.1 request.
struct RequestHead {
    method: Method,
    target: String,
    /// The whole head as received; the router's requests parse their headers from it again, so
    /// the stored path never copies them.
    raw: Bytes,
    /// The client asked to close after this answer (`Connection: close`).
    close: bool,
}

enum Head {
    Request(RequestHead),
    /// The client closed between requests.
    Closed,
    /// A request this loop leaves to hyper; `buf` still holds every byte read.
    NotOurs,
    /// A bad or oversized head: answered with this status and reason, then closed.
    Refused(StatusCode, String),
}

/// Read the next request head into `buf` and take it out; bytes after it stay for the next.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Head> {
    // A head that has started (pipelined bytes, or the first read) must finish in time.
    let mut deadline = (!buf.is_empty()).then(|| tokio::time::Instant::now() + HEAD_TIMEOUT);
    loop {
        if !buf.is_empty() {
            if H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
                if buf.len() >= H2_PREFACE.len() {
                    return Ok(Head::NotOurs);
                }
            } else if let Some(head) = parse_head(buf) {
                return Ok(head);
            }
            if buf.len() > MAX_HEAD {
                return Ok(Head::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large".into()));
            }
        }
        let read = match deadline {
            None => stream.read_buf(buf).await?,
            Some(at) => match tokio::time::timeout_at(at, stream.read_buf(buf)).await {
                Ok(n) => n?,
                Err(_) => return Ok(Head::Closed),
            },
        };
        if read == 0 {
            // A client that closes mid-head (or mid-preface) gets nothing; between requests it is done.
            return Ok(Head::Closed);
        }
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + HEAD_TIMEOUT);
    }
}

/// The head at the start of `buf`, taken out of it; None if more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Option<Head> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Some(Head::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large".into()));
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => {
            return Some(Head::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many request headers".into()));
        }
        Err(e) => return Some(Head::Refused(StatusCode::BAD_REQUEST, format!("malformed request: {e}"))),
    };
    if req.version != Some(1) {
        return Some(Head::NotOurs);
    }
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name;
        let has_body = name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && h.value.iter().any(|b| *b != b'0'));
        if has_body || name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            return Some(Head::NotOurs);
        }
        if name.eq_ignore_ascii_case("connection") {
            close |= String::from_utf8_lossy(h.value).split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    let Ok(method) = Method::from_bytes(req.method.unwrap_or("").as_bytes()) else {
        return Some(Head::Refused(StatusCode::BAD_REQUEST, "malformed request method".into()));
    };
    let target = req.path.unwrap_or("/").to_string();
    let raw = buf.split_to(used).freeze();
    Some(Head::Request(RequestHead { method, target, raw, close }))
}

/// The head as a request for the router (no body).
fn into_request(head: RequestHead) -> Result<Request<Body>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    parsed.parse(&head.raw).map_err(|e| format!("malformed request: {e}"))?;
    let mut req = Request::builder().method(head.method).uri(&head.target).version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        req = req.header(h.name, h.value);
    }
    req.body(Body::empty()).map_err(|e| format!("malformed request: {e}"))
}

/// Write a router's response: its length when known (else chunked), no body for HEAD, 204 and
/// 304, a `date` as hyper adds one, and `connection: close` when this is the last.
async fn write_response(stream: &mut TcpStream, resp: Response<Body>, head_only: bool, close: bool) -> io::Result<()> {
    let (mut parts, mut body) = resp.into_parts();
    let no_body = head_only || parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::NOT_MODIFIED;
    let mut length = parts.headers.contains_key(header::CONTENT_LENGTH);
    if !length && let Some(n) = hyper::body::Body::size_hint(&body).exact() {
        length = true;
        // An empty body of an answer sent without one (HEAD, 204, 304) says nothing of its length.
        if !no_body || n > 0 {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    let chunked = !no_body && !length;
    if chunked {
        parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    if !parts.headers.contains_key(header::DATE) {
        parts.headers.insert(header::DATE, date_now());
    }
    if close {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut out = response_head(parts.status, &parts.headers);
    if no_body {
        return stream.write_all(&out).await;
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        // A small piece goes out in one write with what precedes it (the head, a chunk size);
        // a large one after it, without copying it.
        if out.len() + data.len() <= 16 * 1024 {
            out.extend_from_slice(&data);
        } else {
            stream.write_all(&out).await?;
            out.clear();
            stream.write_all(&data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        // Every piece is sent before the next is awaited: a paced body (egress cap) or a part
        // still arriving must reach the viewer as it comes, not when pieces pile up.
        stream.write_all(&out).await?;
        out.clear();
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    stream.write_all(&out).await
}

/// An HTTP/1.1 status line and headers, ending in the blank line.
pub fn response_head(status: StatusCode, headers: &axum::http::HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The `date` header for a response made now.
pub fn date_now() -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
        .expect("an HTTP date is a valid header value")
}

/// A refusal with its reason, as `common::http::error` words them (this module sits below it).
fn plain_error(status: StatusCode, reason: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(reason + "\n"));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A connection handed to hyper: the bytes this loop already read, then the socket.
struct Replay {
    first: BytesMut,
    stream: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(out.remaining());
            out.put_slice(&self.first[..n]);
            self.first.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, out)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: (client, server).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn each_piece_of_a_streamed_body_is_sent_before_the_next_is_ready() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let pieces =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, io::Error>(b), rx)) },
            );
        let (mut client, mut server) = pair().await;
        let writing = tokio::spawn(async move {
            write_response(&mut server, Response::new(Body::from_stream(pieces)), false, false).await
        });
        tx.send(Bytes::from_static(b"first piece")).await.unwrap();
        // The second piece is not ready yet: the first must already be on the wire.
        let mut got = Vec::new();
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            while !got.windows(11).any(|w| w == b"first piece") {
                let mut buf = [0u8; 4096];
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(first.is_ok(), "the first piece was held back: {}", String::from_utf8_lossy(&got));
        tx.send(Bytes::from_static(b"second")).await.unwrap();
        drop(tx);
        writing.await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(text.contains("transfer-encoding: chunked"), "{text}");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap_or_default();
        let all = [got, rest].concat();
        assert!(all.ends_with(b"6\r\nsecond\r\n0\r\n\r\n"), "{}", String::from_utf8_lossy(&all));
    }

    #[tokio::test]
    async fn a_stored_response_arrives_whole() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 300000\r\n\r\n";
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let stored = StoredResponse::new(head, &body).unwrap();
        assert_eq!(stored.wire_len(), (head.len() + body.len()) as u64);
        let (mut client, server) = pair().await;
        // More than a socket buffer holds at first: sent in several calls.
        let sending = tokio::spawn(async move { stored.send(&server).await });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        sending.await.unwrap().unwrap();
        assert!(got == [&head[..], &body].concat(), "the client reads exactly head and body");
    }
}

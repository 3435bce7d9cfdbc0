//! HTTP plumbing every role uses: serving a router (nodes, the tracker), plain-text errors with
//! a reason, a bounded GET and a JSON POST to the tracker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use reqwest::Url;
use serde::Serialize;

/// Serve `router` on `listener` (HTTP/1.1, and HTTP/2 when the client offers it; over TLS when
/// `tls` is given, with h2 chosen by ALPN) until the process ends. Plain connections of a server
/// with a `shortcut` (a node's stored segments) go through `http1`, which sends stored answers
/// with `sendfile`.
///
/// Connections are served with hyper directly rather than `axum::serve` for one setting:
/// HTTP/1 half-close. ffmpeg's HTTP PUT shuts down its write side after the last chunk and only
/// then reads the response; without half-close hyper would drop that request mid-flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shortcut: Option<Arc<dyn crate::common::http1::Shortcut>>,
) -> anyhow::Result<()> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().half_close(true);
    let builder = Arc::new(builder);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let (None, Some(shortcut)) = (&tls, &shortcut) {
            let task =
                crate::common::http1::serve_connection(stream, remote, app.clone(), shortcut.clone(), builder.clone());
            tokio::spawn(task);
            continue;
        }
        // Handlers and layers that need the client's address (viewer counting, steering by
        // address range, address-bound playback tokens) read it as `ConnectInfo<SocketAddr>`.
        let app = tower::ServiceExt::map_request(app.clone(), move |mut req: axum::http::Request<_>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(remote));
            req
        });
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service).await;
                }
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        // rustls has checked any certificate the client showed against the
                        // listener's verifier (the cluster CA); mark its requests as a node's.
                        let node = tls_stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                        let app = tower::ServiceExt::map_request(app, move |mut req: axum::http::Request<_>| {
                            if node {
                                req.extensions_mut().insert(ClusterPeer);
                            }
                            req
                        });
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        let io = hyper_util::rt::TokioIo::new(tls_stream);
                        let _ = builder.serve_connection_with_upgrades(io, service).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                },
            }
        });
    }
}

/// A request that came over a TLS connection whose client showed a certificate the listener's
/// verifier accepted (a node of the cluster CA). Only `serve` inserts it; a client cannot.
#[derive(Clone, Copy, Debug)]
pub struct ClusterPeer;

/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Answer every plain-HTTP request on `listener` with a permanent redirect to the same path
/// on `https_port` (`--redirect-http`), so old links and typed addresses land on TLS.
pub async fn redirect_to_https(listener: tokio::net::TcpListener, https_port: u16) -> anyhow::Result<()> {
    let app = Router::new().fallback(move |req: axum::http::Request<axum::body::Body>| async move {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        // Drop any port the client used for plain HTTP; keep IPv6 brackets.
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name,
            _ => host,
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let to = format!("https://{name}:{https_port}{path}");
        (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response()
    });
    serve(listener, app, None, None).await
}

/// A plain-text error with a reason. A 503 is always transient here (no parent yet, no
/// segments yet, too many held requests), so it says when to retry, as players expect.
pub fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    let mut reason = reason.into();
    reason.push('\n');
    let mut resp =
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], reason)
            .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    }
    resp
}

/// GET a URL into memory, refusing bodies over `limit` bytes.
pub async fn fetch(client: &reqwest::Client, url: &Url, limit: usize) -> Result<Bytes> {
    let mut resp = client.get(url.clone()).send().await.with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: HTTP {}", resp.status());
    }
    if resp.content_length().is_some_and(|l| l as usize > limit) {
        bail!("GET {url}: body of {} bytes exceeds the {limit}-byte limit", resp.content_length().unwrap_or(0));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("reading {url}"))? {
        if buf.len() + chunk.len() > limit {
            bail!("GET {url}: body exceeds the {limit}-byte limit");
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Whether a request carries `Authorization: Bearer TOKEN` for this token (constant time).
pub fn bearer_matches(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    presented.is_some_and(|p| relaycast_core::node::constant_time_eq(p.as_bytes(), token.as_bytes()))
}

/// POST `body` as JSON to a tracker route (with the cluster token when given) and decode its JSON
/// answer; a refusal is an error carrying the tracker's reason. Shared by the node heartbeat and
/// the P2P viewer's announce.
pub async fn post_json<B: Serialize, R: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: Option<&str>,
    body: &B,
) -> Result<R> {
    let mut req = client.post(url.clone());
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body)?)
        .timeout(Duration::from_secs(3))
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        anyhow::bail!("tracker answered {status}: {}", String::from_utf8_lossy(&bytes).trim());
    }
    serde_json::from_slice(&bytes).context("tracker reply")
}

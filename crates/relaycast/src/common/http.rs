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

/// Serve `router` on `listener` (HTTP/1.1, and HTTP/2 when the client offers it) until the
/// process ends.
///
/// Connections are served with hyper directly rather than `axum::serve` for one setting:
/// HTTP/1 half-close. ffmpeg's HTTP PUT shuts down its write side after the last chunk and only
/// then reads the response; without half-close hyper would drop that request mid-flight.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> anyhow::Result<()> {
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
        // Handlers and layers that need the client's address (viewer counting, steering by
        // address range) read it as `ConnectInfo<SocketAddr>`.
        let app = tower::ServiceExt::map_request(app.clone(), move |mut req: axum::http::Request<_>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(remote));
            req
        });
        let service = hyper_util::service::TowerToHyperService::new(app);
        let builder = builder.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = builder.serve_connection_with_upgrades(io, service).await;
        });
    }
}

/// A plain-text error with a reason, counted by status.
pub fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    let mut reason = reason.into();
    reason.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], reason)
        .into_response()
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

/// POSTs `body` as JSON to a tracker route and decodes its JSON answer; a refusal is an error
/// carrying the tracker's reason. Shared by the node heartbeat and the P2P viewer's announce.
pub async fn post_json<B: Serialize, R: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &B,
) -> Result<R> {
    let resp = client
        .post(url.clone())
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

//! Where `relaycast watch` should download from, when it is told by someone else:
//!
//! - `--steer URL` (F20, F23): follow the tracker's steering answers. The viewer asks
//!   `/api/v1/rank/{channel}` (a `/play/{channel}` URL is accepted too) with its own session id,
//!   starts on the first edge, re-asks every TTL, and when the first edge changes — a secondary
//!   takes it, a drain or a rebalancing moves it — switches at the next segment boundary with the
//!   same seamless switch as `--switch-at` (no sequence gap).
//! - `--pop URL,URL,...` (F24): probe every candidate edge (HTTP round trip plus the edge's
//!   reported latency to the origin) every [`POP_PROBE`], and switch when another is better by
//!   a margin for a sustained time (the core's [`PopChooser`]).
//!
//! Either way the watcher's loop only sees a [`Follower`] saying "now use this URL".

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use relaycast_core::steering::PopChooser;
use reqwest::Url;
use tokio::sync::watch;

/// How often POP candidates are probed.
pub const POP_PROBE: Duration = Duration::from_secs(2);
/// A POP must be this much better (relative, absolute ms) for [`POP_SUSTAIN`] to be chosen.
pub const POP_MARGIN: f64 = 0.2;
pub const POP_MARGIN_MS: f64 = 5.0;
pub const POP_SUSTAIN: Duration = Duration::from_secs(4);

/// A background task that names the URL to watch, and the latest name not yet taken.
pub struct Follower {
    rx: watch::Receiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// The new URL to switch to, once per change.
    pub fn take_change(&mut self) -> Option<String> {
        if self.rx.has_changed().unwrap_or(false) { Some(self.rx.borrow_and_update().clone()) } else { None }
    }
}

/// The ranking URL for `url` (`/play/{ch}` → `/api/v1/rank/{ch}`), with a session id.
pub fn rank_url(url: &str) -> Result<Url> {
    let mut u = Url::parse(url).with_context(|| format!("invalid --steer URL {url:?}"))?;
    if let Some(ch) = u.path().strip_prefix("/play/") {
        let ch = ch.trim_end_matches("/main.m3u8").to_string();
        u.set_path(&format!("/api/v1/rank/{ch}"));
    }
    if !u.path().starts_with("/api/v1/rank/") {
        bail!("--steer takes a tracker URL like http://tracker:7070/play/CHANNEL?region=R, got {url:?}");
    }
    if !u.query_pairs().any(|(k, _)| k == "session") {
        let session = format!("{:016x}", rand::random::<u64>());
        u.query_pairs_mut().append_pair("session", &session);
    }
    Ok(u)
}

async fn ask(client: &reqwest::Client, url: &Url) -> Result<(String, Duration)> {
    let resp = client.get(url.clone()).timeout(Duration::from_secs(5)).send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    let v: serde_json::Value = serde_json::from_slice(&body).context("steering answer is not JSON")?;
    let playlist = v["edges"][0]["playlist"].as_str().context("steering answer names no edge")?.to_string();
    let ttl = Duration::from_secs(v["ttl_s"].as_u64().unwrap_or(2).clamp(1, 300));
    Ok((playlist, ttl))
}

/// Follow the tracker at `url`: the first playlist URL and the follower of later answers.
pub async fn steer(client: &reqwest::Client, url: &str) -> Result<(String, Follower)> {
    let url = rank_url(url)?;
    let (first, mut ttl) = ask(client, &url).await?;
    let (tx, rx) = watch::channel(first.clone());
    let client = client.clone();
    let task = tokio::spawn(async move {
        let mut current = first;
        loop {
            tokio::time::sleep(ttl).await;
            match ask(&client, &url).await {
                Ok((playlist, t)) => {
                    ttl = t;
                    if playlist != current {
                        tracing::info!(from = %current, to = %playlist, "steered to another edge");
                        current = playlist.clone();
                        if tx.send(playlist).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "steering poll failed; staying on the current edge")
                }
            }
        }
    });
    let initial = rx.borrow().clone();
    Ok((initial, Follower { rx, task }))
}

/// Probe one candidate: the round trip of a small HTTP request (the best of three, so a cold
/// connection does not count; an application-level RTT also sees proxies and middleboxes that
/// a TCP handshake would not) and the edge's reported latency to the origin.
async fn probe(client: &reqwest::Client, playlist: &Url) -> Option<(f64, f64)> {
    let node = playlist.join("/api/v1/node").ok()?;
    let mut best: Option<f64> = None;
    let mut info: Option<serde_json::Value> = None;
    for _ in 0..3 {
        let t = Instant::now();
        let Ok(r) = client.get(node.clone()).timeout(Duration::from_secs(2)).send().await else { continue };
        let Ok(body) = r.bytes().await else { continue };
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        best = Some(best.map_or(ms, |b: f64| b.min(ms)));
        info = serde_json::from_slice(&body).ok().or(info);
    }
    let (rtt, v) = (best?, info?);
    // An origin has no latency to itself; a relay without a route yet is not a candidate.
    let origin = match v["latency_to_origin_ms"].as_f64() {
        Some(ms) => ms,
        None if v["role"] == "origin" => 0.0,
        None => return None,
    };
    Some((rtt, origin))
}

/// Choose among `candidates` (playlist URLs) and keep choosing.
pub async fn pop(client: &reqwest::Client, candidates: &[String]) -> Result<(String, Follower)> {
    let urls: Vec<Url> = candidates
        .iter()
        .map(|c| Url::parse(c).with_context(|| format!("invalid --pop URL {c:?}")))
        .collect::<Result<_>>()?;
    if urls.is_empty() {
        bail!("--pop needs at least one URL");
    }
    let mut chooser = PopChooser::new(POP_MARGIN, POP_MARGIN_MS, POP_SUSTAIN);
    let results = futures_util::future::join_all(urls.iter().map(|u| probe(client, u))).await;
    for (c, r) in candidates.iter().zip(&results) {
        tracing::info!(candidate = %c, probe = ?r, "POP probe (RTT ms, latency to origin ms)");
    }
    chooser.observe_round(Instant::now(), &results);
    let Some(first) = chooser.current() else { bail!("no --pop candidate answered a probe") };
    tracing::info!(pop = %candidates[first], score_ms = ?chooser.score(first), "POP chosen");
    let (tx, rx) = watch::channel(candidates[first].clone());
    let client = client.clone();
    let names = candidates.to_vec();
    let task = tokio::spawn(async move {
        let mut current = first;
        loop {
            tokio::time::sleep(POP_PROBE).await;
            let results = futures_util::future::join_all(urls.iter().map(|u| probe(&client, u))).await;
            chooser.observe_round(Instant::now(), &results);
            if let Some(best) = chooser.current()
                && best != current
            {
                tracing::info!(from = %names[current], to = %names[best], score_ms = ?chooser.score(best), "switching POP");
                current = best;
                if tx.send(names[best].clone()).is_err() {
                    return;
                }
            }
        }
    });
    let initial = rx.borrow().clone();
    Ok((initial, Follower { rx, task }))
}

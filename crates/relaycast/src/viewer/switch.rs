//! Moving a viewer to other servers mid-stream (F45): at a set time (`--switch-at`), when the
//! tracker steers it elsewhere (`--steer`), or when a better point of presence is found
//! (`--pop`). The new servers are resolved in the background — the first request may wait for
//! the server to pull the channel — and the viewer keeps its old ones until they answer; a
//! failed attempt is retried a second later.

use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::http::{min_rtt_ms, resolve_media_playlist};
use super::steering::Follower;

/// One new server, ready to use: the URL asked for, its media playlist, its RTT.
pub struct Resolved {
    pub url: String,
    pub media: Url,
    pub rtt_ms: Option<f64>,
}

/// The outcome of a switch attempt: the URLs asked for and what they resolved to.
pub struct Attempt {
    pub urls: Vec<String>,
    pub result: Result<Vec<Resolved>, String>,
}

pub struct Switcher {
    client: reqwest::Client,
    rendition: Option<String>,
    follower: Option<Follower>,
    /// `--switch-at`: when, and to what; taken once.
    planned: Option<(Instant, Vec<String>)>,
    retry: Option<(Vec<String>, Instant)>,
    resolving: Option<JoinHandle<()>>,
    tx: mpsc::UnboundedSender<Attempt>,
}

impl Switcher {
    pub fn new(
        client: reqwest::Client,
        rendition: Option<String>,
        follower: Option<Follower>,
        planned: Option<(Instant, Vec<String>)>,
        tx: mpsc::UnboundedSender<Attempt>,
    ) -> Self {
        Self { client, rendition, follower, planned, retry: None, resolving: None, tx }
    }

    /// Start resolving whatever is due: a planned switch, a steering change, a retry. A newer
    /// target replaces one still being resolved.
    pub fn poll(&mut self, now: Instant) {
        let mut target = None;
        if self.planned.as_ref().is_some_and(|(at, _)| now >= *at) {
            target = self.planned.take().map(|(_, urls)| urls);
        }
        if let Some(url) = self.follower.as_mut().and_then(|f| f.take_change()) {
            target = Some(vec![url]);
        }
        if target.is_none() && self.retry.as_ref().is_some_and(|(_, at)| now >= *at) {
            target = self.retry.take().map(|(urls, _)| urls);
        }
        let Some(urls) = target else { return };
        self.retry = None;
        if let Some(task) = self.resolving.take() {
            task.abort();
        }
        let (client, rendition, tx) = (self.client.clone(), self.rendition.clone(), self.tx.clone());
        self.resolving = Some(tokio::spawn(async move {
            let mut resolved = Vec::new();
            for url in &urls {
                match resolve_media_playlist(&client, url, rendition.as_deref()).await {
                    Ok(media) => {
                        let rtt_ms = min_rtt_ms(&client, &media).await;
                        resolved.push(Resolved { url: url.clone(), media, rtt_ms });
                    }
                    Err(e) => {
                        let _ = tx.send(Attempt { urls, result: Err(format!("{e:#}")) });
                        return;
                    }
                }
            }
            let _ = tx.send(Attempt { urls, result: Ok(resolved) });
        }));
    }

    /// An attempt failed: try the same servers again in a second (unless told otherwise).
    pub fn failed(&mut self, urls: Vec<String>, now: Instant) {
        self.resolving = None;
        self.retry = Some((urls, now + Duration::from_secs(1)));
    }

    /// An attempt succeeded.
    pub fn done(&mut self) {
        self.resolving = None;
    }
}

impl Drop for Switcher {
    fn drop(&mut self) {
        if let Some(task) = self.resolving.take() {
            task.abort();
        }
    }
}

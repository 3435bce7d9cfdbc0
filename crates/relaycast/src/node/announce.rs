//! The node's side of the tracker (F10): announce this node every heartbeat and keep one QUIC
//! link per neighbour the tracker names (dialing only where the answer says so, so each pair
//! has one connection).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use relaycast_core::neighbours::{AnnounceReply, Announcement};

use super::host::Host;
use super::transport;
use crate::common::http::post_json;

/// What a node announces about itself (besides the RTTs it measured).
#[derive(Clone, Debug)]
pub struct Identity {
    pub tracker: reqwest::Url,
    pub region: String,
    /// Where neighbours dial this node (`host:port`).
    pub quic: Option<String>,
    /// Where viewers reach this node (`host:port`).
    pub http: String,
    /// The cluster token: the tracker takes announcements with it (or with the node certificate
    /// `client` shows over HTTPS).
    pub token: String,
    pub client: reqwest::Client,
}

/// A neighbour the tracker named, and the task keeping its link.
struct Managed {
    task: Option<tokio::task::JoinHandle<()>>,
    /// Consecutive answers that did not name it.
    missing: u32,
}

/// Announce this node every heartbeat and keep a link to each neighbour the tracker names.
/// A neighbour is dropped only after three answers in a row leave it out, so a tracker that
/// restarts (and briefly knows few nodes) does not tear the tree down.
pub async fn run_client(host: Arc<Host>, endpoint: quinn::Endpoint, me: Identity) {
    let client = me.client.clone();
    let url = match me.tracker.join("/api/v1/announce") {
        Ok(u) => u,
        Err(e) => return tracing::error!(error = %e, "bad tracker URL"),
    };
    let mut managed: BTreeMap<String, Managed> = BTreeMap::new();
    let mut heartbeat = Duration::from_secs(1);
    let mut reachable = true;
    loop {
        let announcement = Announcement {
            name: host.name.clone(),
            role: if host.role == relaycast_core::Role::Origin { "origin" } else { "relay" }.into(),
            region: me.region.clone(),
            quic: me.quic.clone(),
            http: Some(me.http.clone()),
            rtt_ms: host.read(|n| {
                n.neighbours()
                    .filter_map(|(_, name, rtt)| Some((name.to_string(), rtt?.as_secs_f64() * 1000.0)))
                    .collect()
            }),
        };
        match post_json::<_, AnnounceReply>(&client, &url, Some(&me.token), &announcement).await {
            Ok(reply) => {
                if !reachable {
                    tracing::info!(node = %host.name, tracker = %me.tracker, "tracker reachable again");
                    reachable = true;
                }
                heartbeat = Duration::from_millis(reply.heartbeat_ms.clamp(100, 60_000));
                for m in managed.values_mut() {
                    m.missing += 1;
                }
                for n in reply.neighbours {
                    let entry = managed.entry(n.name.clone()).or_insert(Managed { task: None, missing: 0 });
                    entry.missing = 0;
                    if n.dial && entry.task.is_none() {
                        let Some(addr) = n.quic.clone() else { continue };
                        tracing::info!(node = %host.name, neighbour = %n.name, %addr, "linking to neighbour");
                        entry.task =
                            Some(tokio::spawn(transport::keep_neighbour(endpoint.clone(), addr, host.clone())));
                    }
                }
                managed.retain(|name, m| {
                    let keep = m.missing < 3;
                    if !keep {
                        tracing::info!(node = %host.name, neighbour = %name, "tracker no longer lists neighbour; dropping link");
                        if let Some(t) = &m.task {
                            t.abort();
                        }
                    }
                    keep
                });
            }
            Err(e) => {
                if reachable {
                    tracing::warn!(node = %host.name, tracker = %me.tracker, error = %format!("{e:#}"), "tracker unreachable; keeping current neighbours");
                    reachable = false;
                }
            }
        }
        tokio::time::sleep(heartbeat).await;
    }
}

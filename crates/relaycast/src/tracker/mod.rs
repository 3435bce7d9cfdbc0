//! The tracker (the seed's bootstrapper, F10): nodes announce themselves every heartbeat and get
//! their neighbour list back. State is soft: a restarted tracker has the whole picture again
//! within one heartbeat, and nodes keep their links while it is away.
//!
//! The node side (announcing, linking to neighbours) is `node::announce`.

pub mod limit;
pub mod p2p;
pub mod traffic;
pub mod webtorrent;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use relaycast_core::neighbours::{AnnounceReply, Announcement, NeighbourPolicy, neighbours_of};
use serde::Deserialize;
use serde_json::json;

use crate::common::http::error;
use crate::tracker::traffic::NodeCredentials;

#[derive(Args, Debug, Clone)]
pub struct TrackerArgs {
    /// HTTP address nodes announce to.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub http: SocketAddr,
    /// Topology file: `[neighbours]` then `name = ["other", ...]` per node (made symmetric).
    /// Without it, neighbours are chosen automatically (see --k).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Automatic mode: neighbours per node (same region first, then lowest measured RTT).
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// How often nodes announce themselves, in milliseconds; silent for 3 heartbeats = gone.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Requests per second one client address may make to the open, viewer-facing routes
    /// (/play, steering, P2P), with bursts of twice that; past it 429. 0 = no limit.
    #[arg(long, default_value_t = 200)]
    pub viewer_rate: u32,
    #[command(flatten)]
    pub tls: crate::common::tls::TlsArgs,
    /// With --tls-cert: the cluster CA (`relaycast cluster-ca`). Nodes that show a certificate
    /// from it are let in to the calls that change the tracker's state, token or not; a
    /// certificate from elsewhere fails the handshake. Viewers need no certificate.
    #[arg(long, value_name = "FILE", env = "RELAYCAST_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    #[command(flatten)]
    pub p2p: crate::tracker::p2p::P2pTrackerArgs,
    /// The traffic manager: steering, secondaries, dashboard (see docs/TRAFFIC.md).
    #[command(flatten)]
    pub traffic: crate::tracker::traffic::TrafficArgs,
}

#[derive(Deserialize)]
struct TopologyFile {
    neighbours: BTreeMap<String, Vec<String>>,
}

/// A topology file's links: node name → the neighbours listed under it.
pub fn load_topology(path: &std::path::Path) -> Result<BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading topology {}", path.display()))?;
    let file: TopologyFile = toml::from_str(&text).with_context(|| format!("parsing topology {}", path.display()))?;
    Ok(file.neighbours)
}

struct Tracker {
    policy: NeighbourPolicy,
    heartbeat: Duration,
    nodes: Mutex<BTreeMap<String, (Announcement, Instant)>>,
    traffic: Arc<crate::tracker::traffic::Traffic>,
    metrics: PrometheusHandle,
}

impl Tracker {
    /// The registry without nodes silent for three heartbeats.
    fn live(&self) -> BTreeMap<String, Announcement> {
        let mut nodes = self.nodes.lock().expect("tracker lock");
        nodes.retain(|_, (_, seen)| seen.elapsed() < self.heartbeat * 3);
        nodes.iter().map(|(k, (a, _))| (k.clone(), a.clone())).collect()
    }
}

pub async fn run(args: TrackerArgs, metrics: PrometheusHandle) -> Result<()> {
    let policy = match &args.topology {
        Some(path) => NeighbourPolicy::Topology(load_topology(path)?),
        None => NeighbourPolicy::Auto { k: args.k.max(1) },
    };
    let traffic = crate::tracker::traffic::Traffic::new(&args.traffic)?;
    let tracker = Arc::new(Tracker {
        traffic: traffic.clone(),
        policy,
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(100)),
        nodes: Mutex::new(BTreeMap::new()),
        metrics,
    });
    let for_p2p = tracker.clone();
    let node_list: crate::tracker::p2p::NodesFn = Arc::new(move || {
        let live = for_p2p.live();
        live.values()
            .map(|a| relaycast_core::p2p::peers::NodeRecord {
                name: a.name.clone(),
                ingest: a.role == "origin",
                region: a.region.clone(),
                http: a.http.clone(),
            })
            .collect()
    });
    let p2p = crate::tracker::p2p::router(&args.p2p, node_list)?;
    let app = Router::new()
        .route("/api/v1/announce", post(announce))
        .route("/api/v1/nodes", get(nodes))
        .route("/metrics", get(serve_metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "tracker endpoints: POST /api/v1/announce, GET /api/v1/nodes, GET /play/{channel}, \
                 GET /api/v1/steering/{channel}, GET /api/v1/traffic, GET /dashboard, GET /metrics, \
                 GET /announce (WebTorrent tracker, WebSocket)",
            )
        })
        .with_state(tracker)
        .merge(p2p)
        .merge(crate::tracker::traffic::routes(traffic.clone()))
        .layer(axum::middleware::from_fn_with_state(
            crate::tracker::limit::RateLimit::new(args.viewer_rate),
            crate::tracker::limit::limit,
        ));
    let listener = tokio::net::TcpListener::bind(args.http).await.with_context(|| format!("binding {}", args.http))?;
    let addr = listener.local_addr()?;
    let clients = match &args.cluster_ca {
        Some(_) if args.tls.tls_cert.is_none() => {
            anyhow::bail!(
                "--cluster-ca on the tracker checks node certificates over HTTPS: give --tls-cert and --tls-key too"
            )
        }
        Some(ca) => Some(crate::common::cluster_ca::optional_client_verifier(ca)?),
        None => None,
    };
    let tls = args.tls.start(addr.port(), clients).await?;
    let url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    println!("tracker listening: {url}/");
    crate::tracker::traffic::spawn(traffic, url);
    tokio::select! {
        r = crate::common::http::serve(listener, app, tls, None) => r,
        _ = crate::common::shutdown_signal() => Ok(()),
    }
}

async fn announce(State(t): State<Arc<Tracker>>, node: NodeCredentials, body: axum::body::Bytes) -> Response {
    if !t.traffic.authorized(&node) {
        tracing::warn!("node announcement refused: no cluster certificate and no or wrong cluster token");
        return error(StatusCode::UNAUTHORIZED, crate::tracker::traffic::NEEDS_TOKEN);
    }
    let a: Announcement = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not an announcement: {e}")),
    };
    if a.name.is_empty() || a.name.len() > 128 || !matches!(a.role.as_str(), "origin" | "relay") {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "announcement needs a name (≤128 bytes) and role origin|relay");
    }
    let name = a.name.clone();
    let a_copy = a.clone();
    let fresh = t.nodes.lock().expect("tracker lock").insert(name.clone(), (a, Instant::now())).is_none();
    if fresh {
        tracing::info!(node = %name, "node registered");
    }
    t.traffic.announced(&a_copy);
    let mut neighbours = neighbours_of(&t.live(), &name, &t.policy);
    // A temporary secondary re-streams from the primary it relieves, and from nothing else.
    if let Some(parent) = t.traffic.parent_of(&name) {
        neighbours.retain(|n| n.name == parent);
    }
    Json(AnnounceReply { neighbours, heartbeat_ms: t.heartbeat.as_millis() as u64 }).into_response()
}

async fn nodes(State(t): State<Arc<Tracker>>) -> Response {
    let live = t.live();
    let list: Vec<_> = live
        .values()
        .map(|a| {
            let n: Vec<String> = neighbours_of(&live, &a.name, &t.policy).into_iter().map(|n| n.name).collect();
            json!({ "name": a.name, "role": a.role, "region": a.region, "quic": a.quic, "http": a.http, "neighbours": n })
        })
        .collect();
    Json(json!({ "nodes": list })).into_response()
}

/// `GET /metrics`: the tracker's series (docs/METRICS.md), the node counts taken now.
async fn serve_metrics(State(t): State<Arc<Tracker>>) -> Response {
    let live = t.live();
    for role in ["origin", "relay"] {
        let n = live.values().filter(|a| a.role == role).count();
        metrics::gauge!("relaycast_tracker_nodes", "role" => role).set(n as f64);
    }
    crate::common::metrics::response(&t.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_topology_parses_and_links_every_node() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/topology.toml");
        let file: TopologyFile = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let policy = NeighbourPolicy::Topology(file.neighbours);
        let registry: BTreeMap<String, Announcement> = ["origin", "r1", "r2", "r3", "r4", "r5", "r6"]
            .iter()
            .map(|n| {
                let role = if *n == "origin" { "origin" } else { "relay" };
                let a = Announcement {
                    name: n.to_string(),
                    role: role.into(),
                    region: String::new(),
                    quic: Some(format!("{n}:1")),
                    http: None,
                    rtt_ms: BTreeMap::new(),
                };
                (n.to_string(), a)
            })
            .collect();
        for name in registry.keys() {
            assert!(!neighbours_of(&registry, name, &policy).is_empty(), "{name} has no neighbour");
        }
        let r6: Vec<String> = neighbours_of(&registry, "r6", &policy).into_iter().map(|n| n.name).collect();
        assert_eq!(r6, vec!["r4", "r5"], "links are symmetric");
    }
}

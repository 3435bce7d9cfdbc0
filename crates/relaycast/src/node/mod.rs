//! Starting a node: bind HTTP and QUIC, attach its sources, keep its parent connection.

pub mod announce;
pub mod arriving;
pub mod auto_abr;
pub mod host;
pub mod http;
pub mod ingest;
pub mod lowlatency;
pub mod playback;
pub mod stored_segments;
pub mod telemetry;
pub mod transport;
pub mod viewers;
pub mod web;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::PrometheusHandle;
use relaycast_core::{Name, NodeConfig, Playback, Role};
use reqwest::Url;

use crate::common::http::serve;
use crate::common::playback::PlaybackKey;
use crate::node::host::Host;
use crate::node::http::{AppState, router};
use crate::node::ingest::{file::LoopedFile, pull, push::PushIngest};

/// Everything needed to start one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    pub http: SocketAddr,
    /// UDP address for children to connect to (QUIC); `None` for a leaf edge.
    pub quic: Option<SocketAddr>,
    pub token: String,
    /// QUIC addresses (`host:port`) of neighbours to dial; the tree picks the parent among them.
    pub neighbours: Vec<String>,
    /// Children accepted at most.
    pub max_children: usize,
    /// Tracker to announce to; its neighbours are linked as well as `neighbours`.
    pub tracker: Option<Url>,
    /// Region announced to the tracker.
    pub region: String,
    /// Host announced to the tracker instead of the bound IP.
    pub advertise: Option<String>,
    /// Cap on viewer egress (HLS segments), kbit/s; 0 = none.
    pub egress_kbps: u64,
    pub window: usize,
    pub keepalive: Duration,
    pub max_segment_bytes: usize,
    /// Folder of media files looped as channels (origin).
    pub videos: Option<PathBuf>,
    /// Package those files as low-latency (CMAF) channels instead of MPEG-TS.
    pub low_latency: bool,
    /// Channels pulled from HLS URLs (origin).
    pub pulls: Vec<(Name, Url)>,
    /// Push channels and their stream keys (origin).
    pub pushes: BTreeMap<Name, String>,
    /// RTMP/SRT listeners and publisher rules (origin).
    pub publish: crate::node::ingest::claim::PublishArgs,
    /// Loop the embedded sample clip as channel `demo` (origin).
    pub sample: bool,
    /// Also loop it as low-latency (CMAF, LL-HLS) channel `demo-ll` (origin).
    pub sample_ll: bool,
    /// Ed25519 key file: sign every published segment (origin, F53).
    pub signing_key: Option<PathBuf>,
    /// Channels encoded into a bitrate ladder by an ffmpeg child (origin).
    pub ladders: Vec<crate::node::ingest::ladder::LadderSpec>,
    /// Capacity server-side ABR shares among auto viewers, kbit/s; 0 = the egress cap.
    pub abr_capacity_kbps: u64,
    /// The cluster's playback key: signs and checks links to `signed` channels (an origin
    /// creates the file when it is missing).
    pub playback_key: Option<PathBuf>,
    /// AES-128 channels of this origin and their segments per key.
    pub encrypted: BTreeMap<Name, u32>,
    /// Who may watch this origin's channels, unless `playback` names the channel.
    pub default_playback: Playback,
    pub playback: BTreeMap<Name, Playback>,
    /// HTTPS for the HTTP listener (`--tls-cert`, `--tls-key`, `--redirect-http`).
    pub tls: crate::common::tls::TlsArgs,
    /// Mutual TLS on QUIC links with certificates from the cluster CA; `None`: token only.
    pub cluster: Option<crate::common::cluster_ca::ClusterIdentity>,
}

/// A started node.
pub struct RunningNode {
    pub host: Arc<Host>,
    pub http: SocketAddr,
    pub quic: Option<SocketAddr>,
    /// Where RTMP publishers connect (origin with --rtmp).
    pub rtmp: Option<SocketAddr>,
    /// Where SRT publishers connect, UDP (origin with --srt).
    pub srt: Option<SocketAddr>,
    /// Whether the HTTP listener speaks TLS (its URLs are https://).
    pub https: bool,
    /// The viewers this node serves (for draining).
    pub viewers: Arc<crate::node::viewers::Viewers>,
}

impl RunningNode {
    /// Drain before stopping: take no new viewers, offer no channel to the tracker (which
    /// moves the steered viewers elsewhere), and serve those still watching until they have
    /// left or `limit` has passed.
    pub async fn drain(&self, limit: Duration) {
        self.viewers.start_draining();
        let deadline = tokio::time::Instant::now() + limit;
        let watching = self.viewers.active(std::time::Instant::now());
        tracing::info!(node = %self.host.name, watching, limit_s = limit.as_secs_f64(), "draining: no new viewers");
        loop {
            let left = self.viewers.active(std::time::Instant::now());
            if left == 0 {
                tracing::info!(node = %self.host.name, "drained: no viewer left");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(node = %self.host.name, still_watching = left, "drain time is up");
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `addr` as other nodes and viewers should dial it: the advertised host with its port.
fn advertised(spec: &NodeSpec, addr: SocketAddr) -> String {
    match &spec.advertise {
        Some(host) if host.contains(':') => format!("[{host}]:{}", addr.port()),
        Some(host) => format!("{host}:{}", addr.port()),
        None => addr.to_string(),
    }
}

pub async fn start(spec: NodeSpec, metrics: PrometheusHandle) -> Result<RunningNode> {
    let config = node_config(&spec);
    let playback_key = playback_key(&spec)?;
    let host = Host::new(config, spec.max_segment_bytes);
    tokio::spawn(host.clone().run_timers());
    if let Some(path) = &spec.signing_key {
        let signer = crate::common::signing::Ed25519Signer::load_or_create(path)?;
        tracing::info!(node = %spec.name, public_key = %signer.public_hex(), "signing segments");
        host.input(|n, _| n.set_signer(Arc::new(signer)));
    }
    if let (Some(key), false) = (&playback_key, spec.encrypted.is_empty()) {
        let cipher = crate::common::encryption::Aes128Cbc { key: key.clone() };
        host.input(|n, _| n.set_cipher(Arc::new(cipher)));
    }

    let listener =
        tokio::net::TcpListener::bind(spec.http).await.with_context(|| format!("binding HTTP on tcp {}", spec.http))?;
    let http = listener.local_addr()?;
    let tls = spec.tls.start(http.port(), None).await?;
    let https = tls.is_some();

    let endpoint = match spec.quic {
        Some(addr) => Some(crate::common::quic::server_endpoint(addr, spec.cluster.as_ref())?),
        None if !spec.neighbours.is_empty() || spec.tracker.is_some() => {
            Some(crate::common::quic::client_endpoint(spec.cluster.as_ref())?)
        }
        None => None,
    };
    let quic = match (&endpoint, spec.quic) {
        (Some(e), Some(_)) => {
            tokio::spawn(transport::accept_neighbours(e.clone(), host.clone()));
            Some(e.local_addr()?)
        }
        _ => None,
    };
    let tracker_client = tracker_client(spec.cluster.as_ref())?;
    if let Some(e) = &endpoint {
        for addr in &spec.neighbours {
            tokio::spawn(transport::keep_neighbour(e.clone(), addr.clone(), host.clone()));
        }
        if let Some(tracker) = &spec.tracker {
            let me = announce::Identity {
                tracker: tracker.clone(),
                region: spec.region.clone(),
                quic: quic.map(|q| advertised(&spec, q)),
                http: advertised(&spec, http),
                token: spec.token.clone(),
                client: tracker_client.clone(),
            };
            tokio::spawn(announce::run_client(host.clone(), e.clone(), me));
        }
    }

    start_sources(&spec, &host, http, playback_key.as_deref()).await?;
    let push = (!spec.pushes.is_empty())
        .then(|| PushIngest::new(&host, spec.pushes.clone(), spec.low_latency, spec.publish.takeover));
    let (rtmp, srt) = match &push {
        Some(push) => publish_listeners(&spec, &host, push).await?,
        None => (None, None),
    };

    let egress = Arc::new(crate::common::egress::Egress::new(spec.egress_kbps));
    let abr = crate::node::auto_abr::AutoAbr::new(host.clone(), egress.clone(), spec.abr_capacity_kbps);
    let viewers = crate::node::viewers::Viewers::new();
    let running_viewers = viewers.clone();
    tokio::spawn(crate::node::telemetry::run(host.clone(), viewers.clone()));
    let publisher_timeout = Duration::from_secs(spec.publish.publisher_timeout.max(1));
    let state = AppState {
        host: host.clone(),
        push,
        metrics,
        egress,
        token: spec.token.clone().into(),
        publisher_timeout,
        playback_key: playback_key.clone(),
        viewers: viewers.clone(),
        sharing: spec.tracker.as_ref().map(|t| (t.to_string(), spec.region.clone())),
    };
    let stored = crate::node::stored_segments::StoredSegments::new(host.clone(), state.egress.clone(), viewers.clone());
    let door = crate::node::playback::Door { host: host.clone(), key: playback_key };
    let app = router(state)
        .merge(crate::node::auto_abr::router(abr))
        .layer(axum::middleware::from_fn_with_state(door, crate::node::playback::door))
        .layer(axum::middleware::from_fn_with_state(viewers.clone(), crate::node::viewers::track));
    if let (Some(tracker), Role::Relay) = (&spec.tracker, spec.role) {
        let reporter = crate::node::viewers::Reporter {
            name: spec.name.clone(),
            tracker: tracker.clone(),
            token: spec.token.clone(),
            client: tracker_client,
            host: host.clone(),
        };
        tokio::spawn(crate::node::viewers::report_loop(viewers, reporter));
    }
    let name = spec.name.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, app, tls, Some(stored)).await {
            tracing::error!(node = %name, error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(node = %spec.name, %http, quic = ?quic, neighbours = ?spec.neighbours, "node started");
    Ok(RunningNode { host, http, quic, rtmp, srt, https, viewers: running_viewers })
}

/// The core's configuration from the node's flags.
fn node_config(spec: &NodeSpec) -> NodeConfig {
    NodeConfig {
        role: spec.role,
        name: spec.name.clone(),
        token: spec.token.clone(),
        id: relaycast_core::node::node_id(&spec.name),
        window_len: spec.window,
        keepalive: spec.keepalive,
        max_children: spec.max_children,
        // Only an origin seeds its flood ids from the clock (a relay follows the floods it hears).
        flood_base: if spec.role == Role::Origin { crate::common::wall_ms() / 1000 } else { 0 },
        default_playback: spec.default_playback,
        playback: spec.playback.clone(),
        encrypted: spec.encrypted.clone(),
        rtt_from_transport: true,
        ..NodeConfig::default()
    }
}

/// The RTMP and SRT listeners a publishing origin asked for (`--rtmp`, `--srt`): their addresses.
async fn publish_listeners(
    spec: &NodeSpec,
    host: &Arc<Host>,
    push: &PushIngest,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>)> {
    let rtmp = match spec.publish.rtmp {
        Some(addr) => Some(crate::node::ingest::rtmp::serve(host.clone(), push.publishing.clone(), addr).await?),
        None => None,
    };
    let srt = match spec.publish.srt {
        Some(addr) => {
            let settings = crate::node::ingest::srt::SrtSettings {
                passphrase: spec.publish.srt_passphrase.clone(),
                latency: Duration::from_millis(spec.publish.srt_latency_ms),
            };
            Some(crate::node::ingest::srt::serve(host.clone(), push.publishing.clone(), addr, settings).await?)
        }
        None => None,
    };
    Ok((rtmp, srt))
}

/// The client for calls to the tracker: with a cluster identity it shows the node certificate
/// (credentials the tracker accepts over HTTPS) and trusts the cluster CA.
fn tracker_client(cluster: Option<&crate::common::cluster_ca::ClusterIdentity>) -> Result<reqwest::Client> {
    const TIMEOUT: Duration = Duration::from_secs(3);
    match cluster {
        Some(id) => id.tracker_client(TIMEOUT),
        None => reqwest::Client::builder().timeout(TIMEOUT).build().context("building the tracker client"),
    }
}

/// The cluster's playback key (an origin creates it), refused if missing where channels are
/// signed or encrypted.
fn playback_key(spec: &NodeSpec) -> Result<Option<Arc<PlaybackKey>>> {
    let key = match (&spec.playback_key, spec.role) {
        (Some(path), Role::Origin) => Some(Arc::new(PlaybackKey::load_or_create(path)?)),
        (Some(path), Role::Relay) => Some(Arc::new(PlaybackKey::load(path)?)),
        (None, _) => None,
    };
    let signs_anything =
        spec.default_playback == Playback::Signed || spec.playback.values().any(|p| *p == Playback::Signed);
    if (signs_anything || !spec.encrypted.is_empty()) && key.is_none() {
        anyhow::bail!(
            "signed and encrypted channels need --playback-key FILE (created if missing; copy it to every edge)"
        );
    }
    Ok(key)
}

/// An origin's sources (the embedded sample, files, pulls, ladders); push channels come with
/// the HTTP routes.
async fn start_sources(spec: &NodeSpec, host: &Arc<Host>, http: SocketAddr, key: Option<&PlaybackKey>) -> Result<()> {
    if spec.sample {
        let sample = LoopedFile::from_ts(
            Name::new("demo").expect("valid name"),
            &crate::node::ingest::file::embedded_sample(),
            crate::node::ingest::file::TARGET_SEGMENT.as_micros() as u64,
        )?;
        tokio::spawn(sample.run(host.clone()));
    }
    if spec.sample_ll {
        let segment = crate::node::ingest::cmaf::PACKAGING.segment_target_us.into();
        let f = LoopedFile::from_ts(
            Name::new("demo-ll").expect("valid name"),
            &crate::node::ingest::file::embedded_sample(),
            segment,
        )?;
        tokio::spawn(crate::node::ingest::cmaf::loop_cuts(host.clone(), f.channel, f.cuts));
    }
    if let Some(dir) = &spec.videos {
        for path in crate::node::ingest::file::media_files(dir)? {
            let segment = if spec.low_latency {
                crate::node::ingest::cmaf::PACKAGING.segment_target_us.into()
            } else {
                crate::node::ingest::file::TARGET_SEGMENT.as_micros() as u64
            };
            match LoopedFile::load(&path, segment).await {
                Ok(f) if spec.low_latency => {
                    tracing::info!(node = %spec.name, channel = %f.channel, file = %path.display(), "looping file as a low-latency channel");
                    tokio::spawn(crate::node::ingest::cmaf::loop_cuts(host.clone(), f.channel, f.cuts));
                }
                Ok(f) => {
                    tracing::info!(node = %spec.name, channel = %f.channel, file = %path.display(), segments = f.cuts.len(), "looping file as a live channel");
                    tokio::spawn(f.run(host.clone()));
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %format!("{e:#}"), "skipping media file")
                }
            }
        }
    }
    if !spec.pulls.is_empty() {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .context("building HTTP client")?;
        for (name, url) in &spec.pulls {
            tokio::spawn(pull::run(host.clone(), client.clone(), name.clone(), url.clone(), spec.low_latency));
        }
    }
    for ladder in &spec.ladders {
        let input = crate::node::ingest::ladder::resolve_input(&ladder.input, http, key);
        let ladder = crate::node::ingest::ladder::LadderSpec { input, ..ladder.clone() };
        tokio::spawn(crate::node::ingest::ladder::run(host.clone(), ladder, spec.low_latency));
    }
    Ok(())
}

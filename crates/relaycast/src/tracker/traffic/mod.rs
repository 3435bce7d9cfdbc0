//! The traffic manager on the tracker (F20–F25): steering answers, live tracking of viewers per
//! region and edge, temporary secondary servers, rebalancing, and a dashboard.
//!
//! The decisions are the core's [`SteeringPolicy`]; this module feeds it (announcements, edge
//! reports, steering polls, cordons), runs its clock once every [`TICK`], carries out its actions
//! through a [`provision::Provisioner`], and serves:
//!
//! | route | what |
//! |---|---|
//! | `GET /play/{channel}` | 302 to the chosen edge's playlist (region from `?region=` or `--region-range`) |
//! | `GET /play/{channel}/main.m3u8` | a main playlist with every edge as an HLS Content Steering pathway |
//! | `GET /api/v1/steering/{channel}` | the HLS Content Steering manifest (TTL, PATHWAY-PRIORITY, PATHWAY-CLONES) |
//! | `GET /api/v1/rank/{channel}` | the ranking as JSON (what `relaycast watch --steer` follows) |
//! | `POST /api/v1/edge-report` | an edge's active viewers and egress |
//! | `POST`/`DELETE /api/v1/edges/{name}/cordon` | stop / resume sending viewers to an edge (token) |
//! | `GET /api/v1/traffic` | edges, regions, secondaries, tree and history as JSON |
//! | `GET /dashboard` | a page charting the above live |

pub mod hls;
pub mod provision;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use axum::Extension;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::{Args, ValueEnum};
use relaycast_core::neighbours::Announcement;
use relaycast_core::steering::{Action, EdgeKind, EdgeReport, EdgeState, Ranked, SteeringConfig, SteeringPolicy};
use serde::Deserialize;
use serde_json::json;

use crate::common::http::error;
use crate::common::playback::{self, PlaybackKey};
use crate::common::valid_session;
use provision::{Provisioner, StartSpec};

/// How often the policy's clock runs.
pub const TICK: Duration = Duration::from_millis(500);
/// Dashboard history kept (one sample a second): the five minutes the console draws.
const HISTORY: usize = 300;
/// Secondary events kept (started, serving, draining, retired, stopped): the newest ones.
const EVENTS: usize = 2_000;

/// One second of the dashboard: load per region and per edge, and the nodes' median delay.
/// Typed rather than a JSON value: a `serde_json::Value` map took about 5 kB a sample.
#[derive(Clone, Debug, serde::Serialize)]
struct Sample {
    t_s: f64,
    unix_ms: u64,
    regions: BTreeMap<String, u32>,
    edges: BTreeMap<String, EdgeSample>,
    delay_p50_ms: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, serde::Serialize)]
struct EdgeSample {
    load: u32,
    viewers: u32,
    egress_bps: f64,
    kind: EdgeKind,
    state: EdgeState,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionerKind {
    /// Spawn `relaycast relay` child processes on this machine.
    Local,
    /// Run --start-cmd / --stop-cmd (kubectl, systemctl, a cloud CLI...).
    Exec,
    /// Never start secondaries (steering only).
    None,
}

/// The traffic manager's flags on `relaycast tracker`.
#[derive(Args, Debug, Clone)]
pub struct TrafficArgs {
    /// Viewers per primary edge beyond which new viewers of its region go to a secondary.
    #[arg(long, default_value_t = 100)]
    pub threshold: u32,
    /// Viewers a secondary takes before the region gets another [default: 2 × threshold].
    #[arg(long)]
    pub secondary_capacity: Option<u32>,
    /// A secondary drains once its region's demand stays below this fraction of the capacity
    /// left without it for --grace-ms.
    #[arg(long, default_value_t = 0.5)]
    pub low_water: f64,
    /// Grace period before a secondary drains, in milliseconds (hysteresis).
    #[arg(long, default_value_t = 10_000)]
    pub grace_ms: u64,
    /// Secondaries per region at most.
    #[arg(long, default_value_t = 4)]
    pub max_secondaries: usize,
    /// Look-ahead in seconds (about a secondary's boot time): start a secondary when the
    /// region's demand, growing at its current rate, would reach capacity this much later.
    #[arg(long, default_value_t = 0.0)]
    pub lead_s: f64,
    /// How secondaries are started and stopped.
    #[arg(long, value_enum, default_value = "local")]
    pub provisioner: ProvisionerKind,
    /// With --provisioner exec: command run by `sh -c` to start a secondary; placeholders
    /// {name} {region} {tracker} {port} {parent}.
    #[arg(long)]
    pub start_cmd: Option<String>,
    /// With --provisioner exec: command to stop secondary {name}.
    #[arg(long)]
    pub stop_cmd: Option<String>,
    /// Viewers whose address is in CIDR belong to REGION (when they give no ?region=). Repeatable.
    #[arg(long = "region-range", value_name = "CIDR=REGION")]
    pub region_ranges: Vec<String>,
    /// Steering sessions remembered at most; past it new sessions are steered by load without
    /// being remembered, so a flood of made-up session ids cannot exhaust the tracker.
    #[arg(long, default_value_t = 200_000)]
    pub max_sessions: usize,
    /// Seconds a client keeps a steering answer before asking again.
    #[arg(long, default_value_t = 2)]
    pub steering_ttl: u64,
    /// Cluster token (the nodes' `--token`): required by every call that changes the tracker's
    /// state — node announcements, edge reports, cordons — and given to secondaries.
    #[arg(long, env = "RELAYCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Playback key shared with the edges (their `--playback-key`; created if missing): `/play`
    /// and the steering playlists then hand out signed links, which `signed` channels need.
    #[arg(long, value_name = "FILE")]
    pub playback_key: Option<std::path::PathBuf>,
    /// How long a link handed out by `/play` stays valid (e.g. 7200, 90m, 12h).
    #[arg(long, default_value = "12h", value_parser = crate::common::playback::parse_ttl)]
    pub play_ttl: u64,
}

/// An address range and its region.
#[derive(Clone, Debug)]
pub struct RegionRange {
    net: IpAddr,
    prefix: u8,
    region: String,
}

impl RegionRange {
    pub fn parse(s: &str) -> Result<Self> {
        let Some((cidr, region)) = s.split_once('=') else { bail!("--region-range must be CIDR=REGION, got {s:?}") };
        let (addr, prefix) = cidr.split_once('/').unwrap_or((cidr, ""));
        let net: IpAddr = addr.parse().map_err(|e| anyhow::anyhow!("{addr:?} in {s:?} is not an IP address: {e}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() { max } else { prefix.parse().unwrap_or(u8::MAX) };
        if prefix > max || region.is_empty() {
            bail!("bad --region-range {s:?}: prefix must be 0-{max} and the region non-empty");
        }
        Ok(Self { net, prefix, region: region.to_string() })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> Option<u128> {
            match (ip, self.net) {
                (IpAddr::V4(a), IpAddr::V4(_)) => Some(u128::from(u32::from(a)) << 96),
                (IpAddr::V6(a), IpAddr::V6(_)) => Some(u128::from(a)),
                _ => None,
            }
        };
        let (Some(a), Some(n)) = (bits(ip), bits(self.net)) else { return false };
        let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
        a & mask == n & mask
    }
}

/// A node as the tracker last heard of it (for the tree view and secondaries' parents).
#[derive(Clone, Debug, Default)]
struct NodeView {
    role: String,
    region: String,
    http: Option<String>,
    quic: Option<String>,
    parent: Option<String>,
    seen: Option<Instant>,
    /// What the node's `/api/v1/node` said at the last poll (`None`: it did not answer).
    info: Option<NodeInfo>,
}

/// A node's own figures, polled for the operator console.
#[derive(Clone, Debug, Default, serde::Serialize)]
struct NodeInfo {
    viewers: u64,
    egress_bps: f64,
    children: usize,
    delay_p50_ms: Option<u64>,
    delay_p99_ms: Option<u64>,
}

impl NodeInfo {
    fn from_api(v: &serde_json::Value) -> Self {
        let delay = &v["delay_ms"];
        let has_delay = delay["segments"].as_u64().unwrap_or(0) > 0;
        Self {
            viewers: v["viewers"].as_u64().unwrap_or(0),
            egress_bps: v["egress_bps"].as_f64().unwrap_or(0.0),
            children: v["children"].as_array().map_or(0, Vec::len),
            delay_p50_ms: delay["p50"].as_u64().filter(|_| has_delay),
            delay_p99_ms: delay["p99"].as_u64().filter(|_| has_delay),
        }
    }
}

pub struct Traffic {
    policy: Mutex<SteeringPolicy>,
    ranges: Vec<RegionRange>,
    ttl: Duration,
    token: String,
    provisioner: Provisioner,
    tracker_url: Mutex<String>,
    nodes: Mutex<BTreeMap<String, NodeView>>,
    history: Mutex<VecDeque<Sample>>,
    /// Secondary events (started, serving, draining, retired) with times, for figures.
    events: Mutex<VecDeque<serde_json::Value>>,
    /// Each secondary's phase at the last tick (to log transitions once).
    phases: Mutex<BTreeMap<String, &'static str>>,
    /// Channel → the variants of its main playlist, learned when serving one (for clones).
    pub(crate) variants: Mutex<BTreeMap<String, Vec<hls::Variant>>>,
    pub(crate) client: reqwest::Client,
    started: Instant,
    /// Signs the links handed to viewers (with `--playback-key`), valid for `play_ttl_s`.
    playback: Option<PlaybackKey>,
    play_ttl_s: u64,
}

impl Traffic {
    pub fn new(args: &TrafficArgs) -> Result<Arc<Self>> {
        if args.threshold == 0 {
            bail!("--threshold must be at least 1");
        }
        if !(0.0..1.0).contains(&args.low_water) {
            bail!("--low-water must be in [0, 1)");
        }
        let provisioner = match args.provisioner {
            ProvisionerKind::Local => Provisioner::local()?,
            ProvisionerKind::None => Provisioner::None,
            ProvisionerKind::Exec => match &args.start_cmd {
                Some(start) => Provisioner::Exec { start: start.clone(), stop: args.stop_cmd.clone() },
                None => bail!("--provisioner exec needs --start-cmd (and usually --stop-cmd)"),
            },
        };
        let config = SteeringConfig {
            threshold: args.threshold,
            secondary_capacity: args.secondary_capacity.unwrap_or(args.threshold.saturating_mul(2)).max(1),
            low_water: args.low_water,
            grace: Duration::from_millis(args.grace_ms),
            max_secondaries: if args.provisioner == ProvisionerKind::None { 0 } else { args.max_secondaries },
            lead: Duration::from_secs_f64(args.lead_s.clamp(0.0, 3600.0)),
            // A session that missed four steering polls (and that no edge reports) has left.
            session_ttl: Duration::from_secs(args.steering_ttl.clamp(1, 300) * 4).max(Duration::from_secs(6)),
            max_sessions: args.max_sessions.max(1),
            ..SteeringConfig::default()
        };
        let ranges = args.region_ranges.iter().map(|r| RegionRange::parse(r)).collect::<Result<_>>()?;
        Ok(Arc::new(Self {
            policy: Mutex::new(SteeringPolicy::new(config)),
            ranges,
            ttl: Duration::from_secs(args.steering_ttl.clamp(1, 300)),
            token: args.token.clone().unwrap_or_else(|| crate::common::DEV_TOKEN.to_string()),
            provisioner,
            tracker_url: Mutex::new(String::new()),
            nodes: Mutex::new(BTreeMap::new()),
            history: Mutex::new(VecDeque::new()),
            events: Mutex::new(VecDeque::new()),
            phases: Mutex::new(BTreeMap::new()),
            variants: Mutex::new(BTreeMap::new()),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(12))
                .build()
                .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?,
            started: Instant::now(),
            playback: args.playback_key.as_deref().map(PlaybackKey::load_or_create).transpose()?,
            play_ttl_s: args.play_ttl,
        }))
    }

    /// A node announced itself to the tracker: relays with an HTTP address are edges.
    pub fn announced(&self, a: &Announcement) {
        let now = Instant::now();
        {
            let mut nodes = self.nodes.lock().expect("nodes lock");
            let n = nodes.entry(a.name.clone()).or_default();
            n.role = a.role.clone();
            n.region = a.region.clone();
            n.http = a.http.clone();
            n.quic = a.quic.clone();
            n.seen = Some(now);
        }
        if a.role == "relay"
            && let Some(http) = &a.http
        {
            self.policy.lock().expect("policy lock").edge_seen(now, &a.name, &a.region, Some(format!("http://{http}")));
        }
    }

    /// For a secondary: the primary it re-streams from.
    pub fn parent_of(&self, name: &str) -> Option<String> {
        let p = self.policy.lock().expect("policy lock");
        p.edge(name).filter(|e| e.kind == EdgeKind::Secondary)?.parent.clone()
    }

    fn region_of(&self, given: Option<&str>, client: Option<IpAddr>) -> String {
        if let Some(r) = given {
            return r.to_string();
        }
        client.and_then(|ip| self.ranges.iter().find(|r| r.contains(ip))).map(|r| r.region.clone()).unwrap_or_default()
    }

    fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn event(&self, what: &str, name: &str) {
        let t = self.elapsed_s();
        tracing::info!(secondary = %name, event = what, "traffic manager");
        let mut events = self.events.lock().expect("events lock");
        events.push_back(json!({"t_s": t, "unix_ms": crate::common::wall_ms(), "event": what, "name": name}));
        if events.len() > EVENTS {
            events.pop_front();
        }
    }

    /// One run of the policy's clock, its actions carried out.
    async fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let (actions, transitions) = {
            let mut p = self.policy.lock().expect("policy lock");
            p.tick(now);
            // Secondaries' phases (and their first reported viewers) since the last tick.
            let mut last = self.phases.lock().expect("phases lock");
            let mut transitions = Vec::new();
            for e in p.edges().filter(|e| e.kind == EdgeKind::Secondary) {
                let phase = match e.state {
                    EdgeState::Serving if e.report.viewers > 0 => "viewers",
                    s => match s {
                        EdgeState::Starting => "starting",
                        EdgeState::Serving => "serving",
                        EdgeState::Draining => "draining",
                        EdgeState::Retired => "retired",
                    },
                };
                let before = last.insert(e.name.clone(), phase);
                if before != Some(phase) && !(before == Some("viewers") && phase == "serving") {
                    if phase == "viewers" && before != Some("serving") {
                        transitions.push((e.name.clone(), "serving"));
                    }
                    transitions.push((e.name.clone(), phase));
                }
            }
            (std::iter::from_fn(|| p.poll_action()).collect::<Vec<_>>(), transitions)
        };
        for (name, phase) in transitions {
            self.event(phase, &name);
        }
        for action in actions {
            let me = self.clone();
            tokio::spawn(async move {
                match action {
                    Action::Start { name, region, parent } => {
                        let parent_quic =
                            parent.and_then(|p| me.nodes.lock().expect("nodes lock").get(&p)?.quic.clone());
                        let spec = StartSpec {
                            name: name.clone(),
                            region,
                            tracker: me.tracker_url.lock().expect("url lock").clone(),
                            parent: parent_quic,
                            token: me.token.clone(),
                        };
                        if let Err(e) = me.provisioner.start(&spec).await {
                            tracing::error!(secondary = %name, error = %format!("{e:#}"), "could not start a secondary");
                        }
                    }
                    Action::Stop { name } => {
                        if let Err(e) = me.provisioner.stop(&name, &me.token).await {
                            tracing::error!(secondary = %name, error = %format!("{e:#}"), "could not stop a secondary");
                        }
                        me.event("stopped", &name);
                    }
                }
            });
        }
    }

    fn sample(&self) -> Sample {
        let delay_p50_ms: BTreeMap<String, u64> = {
            let nodes = self.nodes.lock().expect("nodes lock");
            nodes.iter().filter_map(|(k, n)| Some((k.clone(), n.info.as_ref()?.delay_p50_ms?))).collect()
        };
        let p = self.policy.lock().expect("policy lock");
        let mut regions: BTreeMap<String, u32> = BTreeMap::new();
        let mut edges = BTreeMap::new();
        for e in p.edges().filter(|e| e.state != EdgeState::Retired) {
            let load = p.load(&e.name);
            *regions.entry(e.region.clone()).or_default() += load;
            let sample = EdgeSample {
                load,
                viewers: e.report.viewers,
                egress_bps: e.report.egress_bps,
                kind: e.kind,
                state: e.state,
            };
            edges.insert(e.name.clone(), sample);
        }
        publish_gauges(&p, &regions);
        Sample { t_s: self.elapsed_s(), unix_ms: crate::common::wall_ms(), regions, edges, delay_p50_ms }
    }

    /// Ask every known node for its parent (the dashboard's tree), best effort.
    async fn refresh_tree(&self) {
        let targets: Vec<(String, String)> = {
            let mut nodes = self.nodes.lock().expect("nodes lock");
            nodes.retain(|_, n| n.seen.is_some_and(|s| s.elapsed() < Duration::from_secs(10)));
            nodes.iter().filter_map(|(k, n)| Some((k.clone(), n.http.clone()?))).collect()
        };
        for (name, http) in targets {
            let url = format!("http://{http}/api/v1/node");
            let answer = async {
                let r = self.client.get(&url).timeout(Duration::from_secs(1)).send().await.ok()?;
                serde_json::from_slice::<serde_json::Value>(&r.bytes().await.ok()?).ok()
            }
            .await;
            if let Some(n) = self.nodes.lock().expect("nodes lock").get_mut(&name) {
                n.parent = answer.as_ref().and_then(|v| v["parent"].as_str().map(String::from));
                n.info = answer.as_ref().map(NodeInfo::from_api);
            }
        }
    }
}

/// The traffic manager's gauges (docs/METRICS.md): viewers per region, edges by kind and
/// state, steering sessions. Regions and states are the tracker's own, so labels stay bounded.
fn publish_gauges(p: &SteeringPolicy, regions: &BTreeMap<String, u32>) {
    for (region, viewers) in regions {
        metrics::gauge!("relaycast_region_viewers", "region" => region.clone()).set(f64::from(*viewers));
    }
    for kind in [EdgeKind::Primary, EdgeKind::Secondary] {
        for state in [EdgeState::Starting, EdgeState::Serving, EdgeState::Draining] {
            let n = p.edges().filter(|e| e.kind == kind && e.state == state).count();
            let labels = [("kind", format!("{kind:?}").to_lowercase()), ("state", format!("{state:?}").to_lowercase())];
            metrics::gauge!("relaycast_edges", &labels).set(n as f64);
        }
    }
    metrics::gauge!("relaycast_steering_sessions").set(p.sessions().count() as f64);
}

/// Run the policy's clock and the dashboard's sampling until the process ends.
pub fn spawn(traffic: Arc<Traffic>, url: String) {
    *traffic.tracker_url.lock().expect("url lock") = url;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            traffic.tick().await;
            n += 1;
            if n.is_multiple_of(2) {
                let s = traffic.sample();
                let mut h = traffic.history.lock().expect("history lock");
                h.push_back(s);
                while h.len() > HISTORY {
                    h.pop_front();
                }
            }
            if n.is_multiple_of(4) {
                let t = traffic.clone();
                tokio::spawn(async move { t.refresh_tree().await });
            }
        }
    });
}

pub fn routes(traffic: Arc<Traffic>) -> Router {
    Router::new()
        .route("/play/{channel}", get(play))
        .route("/play/{channel}/main.m3u8", get(hls::main_playlist))
        .route("/api/v1/steering/{channel}", get(hls::steering_manifest))
        .route("/api/v1/rank/{channel}", get(rank))
        .route("/api/v1/edge-report", post(edge_report))
        .route("/api/v1/edges/{name}/cordon", post(cordon).delete(uncordon))
        .route("/api/v1/traffic", get(traffic_json))
        .route("/dashboard", get(dashboard))
        .layer(tower_http::cors::CorsLayer::very_permissive())
        .with_state(traffic)
}

/// Query parameters of the steering routes.
#[derive(Deserialize, Debug, Default)]
pub struct SteerQuery {
    pub region: Option<String>,
    pub session: Option<String>,
    #[serde(rename = "_HLS_pathway")]
    pub pathway: Option<String>,
}

/// A steering request, parsed: its channel, region and session, and the edges ranked for it.
pub(crate) struct Steer {
    pub channel: relaycast_core::Name,
    pub region: String,
    pub session: String,
    pub ranked: Vec<Ranked>,
}

impl Steer {
    /// Parses the channel, the region (query or client address) and the session (or makes one),
    /// and ranks the edges; bad parameters are a 400 with the reason. `kind` names the route in
    /// the steering-decision metric.
    pub(crate) fn new(
        t: &Traffic,
        kind: &'static str,
        channel: &str,
        q: &SteerQuery,
        client: Option<Extension<ConnectInfo<SocketAddr>>>,
    ) -> Result<Self, Response> {
        let channel = crate::common::parse_name(channel).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        if let Some(r) = &q.region
            && (r.len() > 64 || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        {
            return Err(error(StatusCode::BAD_REQUEST, "region must be 1-64 characters of [A-Za-z0-9._-]"));
        }
        let session = match &q.session {
            Some(s) if valid_session(s) => s.clone(),
            Some(_) => return Err(error(StatusCode::BAD_REQUEST, "session must be 1-64 characters of [A-Za-z0-9_-]")),
            None => format!("{:016x}", rand::random::<u64>()),
        };
        let region = t.region_of(q.region.as_deref(), client.map(|c| c.0.0.ip()));
        let ranked = t.rank(&region, &session, channel.as_str());
        let edge = ranked.first().map_or_else(|| "none".to_string(), |e| e.name.clone());
        metrics::counter!("relaycast_steering_decisions_total", "kind" => kind, "edge" => edge).increment(1);
        Ok(Self { channel, region, session, ranked })
    }

    /// The best edge, or a 503 with `Retry-After` while no edge can serve the channel yet
    /// (none attached to the tree, or the channel not on offer).
    pub(crate) fn first(&self) -> Result<&Ranked, Response> {
        self.ranked.first().ok_or_else(|| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no edge can serve channel {} yet (region {:?}); retry shortly", self.channel, self.region),
            )
        })
    }
}

/// What a state-changing call without credentials is told.
pub(crate) const NEEDS_TOKEN: &str = "this call changes the tracker's state: it needs `Authorization: Bearer <cluster token>` \
     (the nodes' --token) or, over HTTPS, a node certificate from the cluster CA";

/// What a caller showed: the headers (for the token) and whether its TLS connection carried a
/// certificate from the cluster CA.
pub(crate) struct NodeCredentials {
    headers: HeaderMap,
    certificate: bool,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NodeCredentials {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let certificate = parts.extensions.get::<crate::common::http::ClusterPeer>().is_some();
        Ok(Self { headers: parts.headers.clone(), certificate })
    }
}

impl Traffic {
    /// Whether a caller is a node of the cluster: it showed a cluster certificate, or the token.
    pub(crate) fn authorized(&self, node: &NodeCredentials) -> bool {
        node.certificate || crate::common::http::bearer_matches(&node.headers, &self.token)
    }

    pub(crate) fn rank(&self, region: &str, session: &str, channel: &str) -> Vec<Ranked> {
        self.policy.lock().expect("policy lock").rank(Instant::now(), region, session, channel)
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl Traffic {
    /// A playlist URL on an edge, carrying the steering session and, with a playback key, a
    /// token for the channel.
    pub(crate) fn edge_playlist(
        &self,
        edge: &Ranked,
        channel: &relaycast_core::Name,
        file: &str,
        session: &str,
    ) -> String {
        let mut url = format!("{}/live/{channel}/{file}?session={session}", edge.url);
        if let Some(token) = self.play_token(channel) {
            url.push_str(&format!("&{}={token}", playback::PARAM));
        }
        url
    }

    /// A playback token for `channel` valid for `--play-ttl`, if the tracker has the key.
    pub(crate) fn play_token(&self, channel: &relaycast_core::Name) -> Option<String> {
        let expires = crate::common::wall_ms() / 1000 + self.play_ttl_s;
        Some(self.playback.as_ref()?.token(channel, expires, None))
    }
}

async fn play(
    State(t): State<Arc<Traffic>>,
    Path(channel): Path<String>,
    Query(q): Query<SteerQuery>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, Response> {
    let s = Steer::new(&t, "play", &channel, &q, client)?;
    let location = t.edge_playlist(s.first()?, &s.channel, "index.m3u8", &s.session);
    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn rank(
    State(t): State<Arc<Traffic>>,
    Path(channel): Path<String>,
    Query(q): Query<SteerQuery>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, Response> {
    let s = Steer::new(&t, "rank", &channel, &q, client)?;
    s.first()?;
    let edges: Vec<_> = s
        .ranked
        .iter()
        .map(|e| {
            json!({
                "name": e.name, "region": e.region, "kind": e.kind, "load": e.load, "url": e.url,
                "playlist": t.edge_playlist(e, &s.channel, "index.m3u8", &s.session),
            })
        })
        .collect();
    let body = json!({ "session": s.session, "region": s.region, "ttl_s": t.ttl.as_secs(), "edges": edges });
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

#[derive(Deserialize)]
struct ReportIn {
    name: String,
    #[serde(flatten)]
    report: EdgeReport,
}

async fn edge_report(State(t): State<Arc<Traffic>>, node: NodeCredentials, body: axum::body::Bytes) -> Response {
    if !t.authorized(&node) {
        return error(StatusCode::UNAUTHORIZED, NEEDS_TOKEN);
    }
    let r: ReportIn = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not an edge report: {e}")),
    };
    if r.name.is_empty() || r.name.len() > 128 || r.report.sessions.len() > 100_000 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "a report needs a name (≤128 bytes) and ≤100000 sessions");
    }
    if t.policy.lock().expect("policy lock").edge_report(Instant::now(), &r.name, r.report) {
        Json(json!({"ok": true})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("unknown edge {:?}: announce it first", r.name))
    }
}

async fn set_cordon(t: Arc<Traffic>, node: NodeCredentials, name: String, on: bool) -> Response {
    if !t.authorized(&node) {
        return error(StatusCode::UNAUTHORIZED, NEEDS_TOKEN);
    }
    if !t.policy.lock().expect("policy lock").set_cordon(&name, on) {
        return error(StatusCode::NOT_FOUND, format!("no edge named {name:?}"));
    }
    tracing::info!(edge = %name, cordoned = on, "cordon changed");
    Json(json!({"name": name, "cordoned": on})).into_response()
}

async fn cordon(State(t): State<Arc<Traffic>>, node: NodeCredentials, Path(name): Path<String>) -> Response {
    set_cordon(t, node, name, true).await
}

async fn uncordon(State(t): State<Arc<Traffic>>, node: NodeCredentials, Path(name): Path<String>) -> Response {
    set_cordon(t, node, name, false).await
}

async fn traffic_json(State(t): State<Arc<Traffic>>) -> Response {
    let now = Instant::now();
    let (edges, regions, sessions, config) = {
        let p = t.policy.lock().expect("policy lock");
        let mut regions: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let edges: Vec<_> = p
            .edges()
            .map(|e| {
                let load = p.load(&e.name);
                if e.state != EdgeState::Retired {
                    let r = regions
                        .entry(e.region.clone())
                        .or_insert_with(|| json!({"viewers": 0, "edges": 0, "secondaries": 0}));
                    r["viewers"] = json!(r["viewers"].as_u64().unwrap_or(0) + u64::from(load));
                    r["edges"] = json!(r["edges"].as_u64().unwrap_or(0) + 1);
                    if e.kind == EdgeKind::Secondary {
                        r["secondaries"] = json!(r["secondaries"].as_u64().unwrap_or(0) + 1);
                    }
                }
                json!({
                    "name": e.name, "region": e.region, "url": e.url, "kind": e.kind, "state": e.state,
                    "cordoned": e.cordoned, "load": load, "viewers": e.report.viewers,
                    "anonymous": e.report.anonymous, "egress_bps": e.report.egress_bps,
                    "channels": e.report.channels, "parent": e.parent, "pid": t.provisioner.pid(&e.name),
                    "since_s": now.saturating_duration_since(e.since).as_secs_f64(),
                })
            })
            .collect();
        let c = &p.config;
        let config = json!({
            "threshold": c.threshold, "secondary_capacity": c.secondary_capacity, "low_water": c.low_water,
            "grace_s": c.grace.as_secs_f64(), "max_secondaries": c.max_secondaries,
            "provisioner": t.provisioner.name(), "steering_ttl_s": t.ttl.as_secs(),
        });
        (edges, regions, p.sessions().count(), config)
    };
    let tree: Vec<_> = t
        .nodes
        .lock()
        .expect("nodes lock")
        .iter()
        .map(|(k, n)| {
            json!({
                "name": k, "role": n.role, "region": n.region, "parent": n.parent, "http": n.http,
                "answered": n.info.is_some(), "info": n.info,
            })
        })
        .collect();
    let history: Vec<_> = t.history.lock().expect("history lock").iter().cloned().collect();
    let events = t.events.lock().expect("events lock").clone();
    Json(json!({
        "t_s": t.elapsed_s(), "config": config, "regions": regions, "edges": edges, "sessions": sessions,
        "tree": tree, "events": events, "history": history,
    }))
    .into_response()
}

async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("console.html"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_ranges_match_by_prefix() {
        let r = RegionRange::parse("10.1.0.0/16=eu").unwrap();
        assert!(r.contains("10.1.200.3".parse().unwrap()));
        assert!(!r.contains("10.2.0.1".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
        let lo = RegionRange::parse("127.0.0.2=lab").unwrap();
        assert!(lo.contains("127.0.0.2".parse().unwrap()) && !lo.contains("127.0.0.1".parse().unwrap()));
        assert!(RegionRange::parse("::/0=any").unwrap().contains("2001:db8::1".parse().unwrap()));
        for bad in ["10.0.0.0/8", "10.0.0.0/33=x", "nope/8=x", "10.0.0.0/8="] {
            assert!(RegionRange::parse(bad).is_err(), "{bad} accepted");
        }
    }
}

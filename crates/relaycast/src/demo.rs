//! `relaycast demo`: an origin, a relay and an edge in one process, chained over real QUIC on
//! loopback, with the embedded sample clip looped as channel `demo` and, when ffmpeg is
//! installed, a live test pattern pushed as channel `clock`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use metrics_exporter_prometheus::PrometheusHandle;
use relaycast_core::wire::DEFAULT_MAX_SEGMENT;
use relaycast_core::{Name, Role};

use crate::node::NodeSpec;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// HTTP port of the edge viewers use; the relay takes PORT+1 and the origin PORT+2 (TCP for
    /// HTTP, UDP for QUIC).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to bind (loopback by default; 0.0.0.0 to show it on your LAN).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Do not start the ffmpeg test-pattern channel even if ffmpeg is installed.
    #[arg(long)]
    pub no_ffmpeg: bool,
}

pub async fn run(args: DemoArgs, metrics: PrometheusHandle) -> Result<()> {
    let token = format!("demo-{}", crate::common::wall_ms());
    let at = |offset: u16| -> Result<SocketAddr> {
        let port = args.port.checked_add(offset).context("--port too high: the demo needs PORT..PORT+2")?;
        Ok(SocketAddr::new(args.bind, port))
    };
    // A throw-away cluster CA: the demo's nodes authenticate each other like a real cluster's.
    let ca = crate::common::cluster_ca::ClusterCa::generate()?;
    let spec = |name: &str, role, http, quic, parent: Option<SocketAddr>| -> Result<NodeSpec> {
        Ok(NodeSpec {
            name: name.into(),
            role,
            http,
            quic,
            token: token.clone(),
            neighbours: parent.map(|p| loopback_if_unspecified(p).to_string()).into_iter().collect(),
            max_children: 64,
            tracker: None,
            region: String::new(),
            advertise: None,
            egress_kbps: 0,
            window: 30,
            keepalive: Duration::from_millis(500),
            max_segment_bytes: DEFAULT_MAX_SEGMENT,
            videos: None,
            pulls: Vec::new(),
            pushes: Default::default(),
            sample: false,
            sample_ll: false,
            low_latency: false,
            publish: Default::default(),
            signing_key: None,
            ladders: Vec::new(),
            abr_capacity_kbps: 0,
            playback_key: None,
            encrypted: Default::default(),
            tls: Default::default(),
            cluster: Some(ca.identity(name)?),
            default_playback: Default::default(),
            playback: Default::default(),
        })
    };

    let clock_key = format!("k{}", crate::common::wall_ms() % 1_000_000_007);
    let ffmpeg = !args.no_ffmpeg && ffmpeg_available().await;
    let mut origin_spec = spec("origin", Role::Origin, at(2)?, Some(at(2)?), None)?;
    origin_spec.sample = true;
    origin_spec.sample_ll = true;
    if ffmpeg {
        origin_spec.pushes.insert(Name::new("clock").expect("valid name"), clock_key.clone());
    }
    let origin = crate::node::start(origin_spec, metrics.clone()).await.context("starting the origin")?;
    let relay = crate::node::start(spec("relay-1", Role::Relay, at(1)?, Some(at(1)?), origin.quic)?, metrics.clone())
        .await
        .context("starting relay-1")?;
    let edge = crate::node::start(spec("edge", Role::Relay, at(0)?, None, relay.quic)?, metrics)
        .await
        .context("starting the edge")?;

    let _pattern = if ffmpeg { Some(start_test_pattern(origin.http, &clock_key)?) } else { None };

    let edge_url = format!("http://{}", loopback_if_unspecified(edge.http));
    println!("Relaycast demo: origin → relay-1 → edge, chained over QUIC");
    println!("  player page:  {edge_url}/");
    println!("  playlist:     {edge_url}/live/demo/index.m3u8  (MPEG-TS, 2 s segments)");
    println!("  low latency:  {edge_url}/live/demo-ll/index.m3u8  (LL-HLS: fMP4 parts, blocking reload)");
    if ffmpeg {
        println!(
            "  live clock:   {edge_url}/live/clock/index.m3u8  (LL-HLS; ffmpeg test pattern streamed to the origin)"
        );
    } else if !args.no_ffmpeg {
        println!("  (install ffmpeg to add a live test-pattern channel)");
    }
    println!(
        "  channels:     {edge_url}/api/v1/channels    node: {edge_url}/api/v1/node    metrics: {edge_url}/metrics"
    );
    println!(
        "  origin:       http://{}/   relay-1: http://{}/",
        loopback_if_unspecified(origin.http),
        loopback_if_unspecified(relay.http)
    );
    println!("  try:          ffplay {edge_url}/live/demo/index.m3u8");
    println!("Press Ctrl-C to stop.");
    crate::common::shutdown_signal().await;
    Ok(())
}

fn loopback_if_unspecified(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() { SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port()) } else { a }
}

async fn ffmpeg_available() -> bool {
    tokio::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// ffmpeg streaming a live test pattern (with its running timer) to the origin as MPEG-TS over
/// one chunked HTTP PUT; the origin packages it as low-latency parts as it arrives.
fn start_test_pattern(origin_http: SocketAddr, key: &str) -> Result<tokio::process::Child> {
    let url = format!("http://{}/ingest/clock/{key}", loopback_if_unspecified(origin_http));
    let child = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "800k"])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-c:a", "aac", "-b:a", "64k"])
        // No mux delay and a flush per packet: every frame leaves ffmpeg as soon as it is encoded.
        .args(["-f", "mpegts", "-muxdelay", "0", "-flush_packets", "1", "-method", "PUT", &url])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting ffmpeg")?;
    Ok(child)
}

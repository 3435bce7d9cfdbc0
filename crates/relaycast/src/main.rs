//! `relaycast`: the live-video delivery network's binary. Each role is a subcommand.
// Handlers return `Result<_, Response>` so an error carries its HTTP status and reason.
#![allow(clippy::result_large_err)]

mod ca_cmd;
mod check_cmd;
mod common;
mod config;
mod demo;
mod lab;
mod node;
mod report;
mod sign_cmd;
mod sim_cmd;
mod tracker;
mod viewer;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Relaycast — live video from one origin, through a tree of relays, to any HLS player.
///
/// Start with `relaycast demo`: an origin and two chained relays in one process, a looped
/// sample channel, and a player page at http://127.0.0.1:8080/.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an origin: channels from media files, HLS URLs and ffmpeg pushes, served as HLS and
    /// fed to relays over QUIC.
    Origin(Box<config::OriginArgs>),
    /// Run a relay: pulls channels from its parent on demand and serves them as HLS.
    Relay(config::RelayArgs),
    /// Watch a live HLS stream from one or more servers at once: buffer model, stall count,
    /// QoE log, output to a file or a player; can follow steering and share with other viewers.
    Watch(viewer::WatchArgs),
    /// Run an emulated network of real processes from a topology file (per-link delay, rate,
    /// loss) and write logs, a summary and a report with pictures: the seeds' experiments.
    Lab(lab::LabArgs),
    /// Run the tracker: nodes announce themselves and get their neighbours (from a topology
    /// file, or automatically by region and measured RTT).
    Tracker(tracker::TrackerArgs),
    /// One command, a whole local network: origin → relay → edge, a sample channel, a player.
    Demo(demo::DemoArgs),
    /// Charts and a summary page from QoE logs written by `relaycast watch`.
    ///
    /// Reads one or more QoE logs (JSON lines) and writes into DIR: throughput.svg (throughput
    /// per source over time, one panel per log), buffer.svg (playback buffer level), stalls.svg
    /// (a stall timeline, one row per log), delay_cdf.svg (CDF of per-segment origin delay
    /// against each log's minimum RTT) and index.html, which shows the charts under a summary
    /// table: stalls, stall time and ratio, throughput and bytes per source, duplicate bytes,
    /// delay percentiles, RTT. Prints the path of index.html.
    ///
    /// Example: relaycast report single.jsonl dual.jsonl -o report/
    Report(report::ReportArgs),
    /// Simulate a network of 1 000-100 000 relays from a scenario file: the same core state
    /// machines over simulated links, faults on a schedule, invariants checked as it runs.
    ///
    /// Example: relaycast sim scenarios/tree-1k.toml --seed 1 --json summary.json
    ///
    /// It restarts itself once with glibc's heap on transparent huge pages
    /// (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), which makes large runs ~10 % faster; set
    /// GLIBC_TUNABLES yourself to keep your own setting.
    Sim(sim_cmd::SimArgs),
    /// Print a link to a `signed` channel (origin --playback signed), valid for --ttl.
    ///
    /// Example: relaycast sign --key playback.key --channel cam --ttl 2h --base https://edge.example.com
    Sign(sign_cmd::SignArgs),
    /// Make the cluster CA and node certificates: nodes started with --cluster-ca, --node-cert
    /// and --node-key accept only neighbours whose certificate comes from the same CA.
    ///
    /// Example: relaycast cluster-ca init && relaycast cluster-ca issue relay-1
    ClusterCa(ca_cmd::CaArgs),
    /// Check a config file (origin, relay or tracker topology) without starting anything:
    /// prints what it sets up, or what is wrong and exits non-zero.
    ///
    /// Example: relaycast check-config configs/relay.toml
    CheckConfig(check_cmd::CheckArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Sim(_)) {
        common::memory::restart_with_huge_pages();
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    common::quic::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let metrics = common::metrics::install()?;
        // A simulation is a batch job that ends soon; trimming would only split its huge pages.
        if !matches!(cli.command, Command::Sim(_)) {
            common::memory::spawn_release();
        }
        match cli.command {
            Command::Origin(args) => {
                let spec = args.into_spec()?;
                let node = node::start(spec, metrics).await?;
                print_endpoints(&node);
                common::shutdown_signal().await;
            }
            Command::Relay(args) => {
                let drain = std::time::Duration::from_secs(args.drain_timeout);
                let spec = args.into_spec()?;
                let node = node::start(spec, metrics).await?;
                print_endpoints(&node);
                common::shutdown_signal().await;
                tokio::select! {
                    _ = node.drain(drain) => {}
                    _ = common::shutdown_signal() => tracing::info!("second signal: stopping now"),
                }
            }
            Command::Demo(args) => demo::run(args, metrics).await?,
            Command::Tracker(args) => tracker::run(args, metrics).await?,
            Command::Lab(args) => lab::run(args).await?,
            Command::Watch(args) => viewer::run(args).await?,
            Command::Report(args) => report::run(args)?,
            Command::Sign(args) => sign_cmd::run(args)?,
            Command::ClusterCa(args) => ca_cmd::run(args)?,
            Command::CheckConfig(args) => check_cmd::run(args)?,
            Command::Sim(args) => tokio::task::block_in_place(|| sim_cmd::run(args))?,
        }
        Ok(())
    })
}

fn print_endpoints(node: &node::RunningNode) {
    let scheme = if node.https { "https" } else { "http" };
    println!("{} listening: {scheme}://{}/", node.host.name, node.http);
    if let Some(q) = node.quic {
        println!("{} accepting relays on udp {q}", node.host.name);
    }
    if let Some(r) = node.rtmp {
        println!("{} accepting RTMP publishers on rtmp://{r}/live/CHANNEL", node.host.name);
    }
    if let Some(s) = node.srt {
        println!("{} accepting SRT publishers on srt://{s}?streamid=publish:CHANNEL:KEY", node.host.name);
    }
}

//! `relaycast watch`: a viewer that downloads one live HLS stream from one or more servers at
//! once (F40), models its playback buffer and counts stalls (F41), logs every segment (F42),
//! plays through ffplay/mpv or writes a file (F44), can switch server mid-stream (F45), follow
//! a tracker's steering or probe points of presence, adapt bitrate itself, and share segments
//! with other viewers (F50). It works against any HLS server, not only Relaycast edges.
//!
//! The policy is the core's one viewer [`relaycast_core::viewer::Session`]; [`watch`] is the one
//! loop that drives it, and the other modules are its I/O: `http` (servers), `p2p` and `peers`
//! (other viewers), `switch` and `steering` (moving between servers), `abr`, `output`, `qoe`
//! (the log) and `status` (the terminal line).

mod abr;
mod http;
mod output;
pub mod p2p;
mod peers;
mod qoe;
mod status;
mod steering;
mod switch;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use watch::watch_one;

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Playlist URL(s) of the same stream on one or more servers (master or media playlist).
    #[arg(value_name = "URL", required_unless_present_any = ["steer", "pop"])]
    pub sources: Vec<String>,
    /// Follow a tracker's steering answers instead of fixed URLs, e.g.
    /// http://tracker:7070/play/CHANNEL?region=eu (switches edge seamlessly when told).
    #[arg(long, value_name = "URL", conflicts_with_all = ["sources", "pop"])]
    pub steer: Option<String>,
    /// Probe these edges' playlist URLs (RTT + their latency to the origin) and watch the best,
    /// switching when another is better by a margin for a sustained time.
    #[arg(long, value_name = "URL,URL,...", value_delimiter = ',', conflicts_with = "sources")]
    pub pop: Vec<String>,
    /// How segments are spread over several servers [default: adaptive with 2+ servers].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Rendition to play from a master playlist (its URI or name); default: highest bandwidth.
    #[arg(long)]
    pub rendition: Option<String>,
    /// Write the stream (MPEG-TS) to this file; `-` for stdout.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Play through a player reading stdin.
    #[arg(long, value_enum)]
    pub play: Option<Player>,
    /// Write the QoE log (JSON lines: segments, stalls, buffer, throughput) here.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Label for this run in the log and in reports [default: single / dual / multi-N].
    #[arg(long)]
    pub label: Option<String>,
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Buffer needed to start playing and to resume after a stall, in seconds.
    #[arg(long, default_value_t = 4.0)]
    pub startup: f64,
    /// Run N independent viewers in this process (load tests); each gets its own log
    /// (`LOG.1`, `LOG.2`, ...) and no player or output file.
    #[arg(long, default_value_t = 1)]
    pub viewers: usize,
    /// At this many seconds, switch to the servers given by --switch-to (seamless: the old
    /// servers are used until the new ones answer).
    #[arg(long, requires = "switch_to")]
    pub switch_at: Option<f64>,
    /// Playlist URL(s) to switch to at --switch-at.
    #[arg(long)]
    pub switch_to: Vec<String>,
    /// No status line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Client-side ABR: pick the master playlist's variant per segment from this viewer's own
    /// throughput (an hls.js-like rule). For server-side ABR, watch an edge's `auto.m3u8` instead.
    #[arg(long, conflicts_with = "rendition")]
    pub client_abr: bool,
    #[command(flatten)]
    pub p2p: p2p::P2pArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    /// Segment k from server k mod n; late ones are re-requested elsewhere.
    Alternate,
    /// Everything from the fastest server; late segments also from another.
    Hedge,
    /// Each segment from the server expected to deliver it first.
    Adaptive,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Player {
    Ffplay,
    Mpv,
}

/// What one viewer ended with.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub segments: u64,
    pub stalls: usize,
    pub stall_time: Duration,
    pub bytes: u64,
    pub duplicate_bytes: u64,
    pub skipped: u64,
}

pub async fn run(mut args: WatchArgs) -> Result<()> {
    if args.viewers == 0 {
        bail!("--viewers must be at least 1");
    }
    p2p::apply_bypass(&mut args).await?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(4)
        .build()
        .context("building HTTP client")?;
    if args.viewers == 1 {
        let summary = watch_one(&args, client, 0).await?;
        print_summary(&args, &summary);
        if summary.segments == 0 {
            bail!("the viewer played no segment");
        }
        return Ok(());
    }
    let mut tasks = Vec::new();
    for i in 1..=args.viewers {
        let (args, client) = (args.clone(), client.clone());
        tasks.push(tokio::spawn(async move { watch_one(&args, client, i).await }));
    }
    let mut total = Summary::default();
    let mut failed = 0;
    let mut first_reason: Option<String> = None;
    for t in tasks {
        let outcome = match t.await {
            Ok(Ok(s)) if s.segments == 0 => Err("played no segment".to_string()),
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(e) => Err(format!("the viewer task panicked: {e}")),
        };
        match outcome {
            Ok(s) => {
                total.segments += s.segments;
                total.stalls += s.stalls;
                total.stall_time += s.stall_time;
                total.bytes += s.bytes;
                total.duplicate_bytes += s.duplicate_bytes;
                total.skipped += s.skipped;
            }
            Err(reason) => {
                failed += 1;
                tracing::warn!(error = %reason, "a viewer failed");
                first_reason.get_or_insert(reason);
            }
        }
    }
    eprintln!("{} viewers ({failed} failed)", args.viewers);
    print_summary(&args, &total);
    match first_reason {
        // A script running a load test must notice: exit non-zero with the count and a reason.
        Some(reason) => bail!("{failed} of {} viewers failed; the first: {reason}", args.viewers),
        None => Ok(()),
    }
}

fn print_summary(args: &WatchArgs, s: &Summary) {
    let dup = if s.bytes > 0 { s.duplicate_bytes as f64 * 100.0 / s.bytes as f64 } else { 0.0 };
    eprintln!(
        "segments {}  stalls {} ({:.1} s)  bytes {}  duplicate {:.1} %  skipped {}",
        s.segments,
        s.stalls,
        s.stall_time.as_secs_f64(),
        s.bytes,
        dup,
        s.skipped
    );
    if let Some(log) = &args.log {
        eprintln!("QoE log: {}", log.display());
    }
}

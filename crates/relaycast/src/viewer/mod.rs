//! `relaycast watch`: a viewer that downloads one live HLS stream from one or more servers at
//! once (F40), models its playback buffer and counts stalls (F41), logs every segment (F42),
//! plays through ffplay/mpv or writes a file (F44), and can switch server mid-stream (F45).
//! It works against any HLS server, not only Relaycast edges.
//!
//! The download policy is the core's [`Scheduler`]; this module does the HTTP, the playlist
//! polling, the output and the log.

pub mod abr;
pub mod p2p_old;
pub mod peers;
pub mod qoe;
pub mod status;
pub mod steering;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use relaycast_core::multisource::{Action, Mode, RequestId, Scheduler, SchedulerConfig, SourceId};
use reqwest::Url;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::common::wall_ms;
use crate::viewer::qoe::QoeLog;

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
    /// At this many seconds, switch to the servers given by --switch-to (seamless, F45).
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
    pub p2p: crate::viewer::p2p_old::P2pArgs,
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
    crate::viewer::p2p_old::apply_bypass(&mut args).await?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(4)
        .build()
        .context("building HTTP client")?;
    if args.viewers == 1 {
        let summary = watch_one(&args, client, 0).await?;
        print_summary(&args, &summary);
        return Ok(());
    }
    let mut tasks = Vec::new();
    for i in 1..=args.viewers {
        let (args, client) = (args.clone(), client.clone());
        tasks.push(tokio::spawn(async move { watch_one(&args, client, i).await }));
    }
    let mut total = Summary::default();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => {
                total.segments += s.segments;
                total.stalls += s.stalls;
                total.stall_time += s.stall_time;
                total.bytes += s.bytes;
                total.duplicate_bytes += s.duplicate_bytes;
                total.skipped += s.skipped;
            }
            Ok(Err(e)) => {
                failed += 1;
                tracing::warn!(error = %format!("{e:#}"), "a viewer failed");
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(error = %e, "a viewer task panicked");
            }
        }
    }
    eprintln!("{} viewers ({failed} failed)", args.viewers);
    print_summary(&args, &total);
    Ok(())
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

/// One source: its media playlist URL and what its playlist last listed.
struct Source {
    url: Url,
    /// Segment URIs and durations by sequence, from the latest playlist.
    uris: BTreeMap<u64, (Url, Duration)>,
    oldest: Option<u64>,
    target: Duration,
}

/// A media playlist's segments (sequence, duration, URL) and its target duration.
pub(crate) type Listing = (Vec<(u64, Duration, Url)>, Duration);

/// Events from the fetch tasks.
enum Fetched {
    Headers { req: RequestId, len: Option<u64>, origin_ms: Option<u64>, rendition: Option<String> },
    Chunk { req: RequestId, bytes: Bytes },
    Done { req: RequestId },
    Failed { req: RequestId, error: String },
    Playlist { source: SourceId, result: Result<Listing, String> },
}

struct InFlight {
    source: SourceId,
    seq: u64,
    task: tokio::task::JoinHandle<()>,
    data: BytesMut,
    requested_ms: f64,
    first_byte_ms: Option<f64>,
    origin_ms: Option<u64>,
    hedge: bool,
    rendition: Option<String>,
}

async fn watch_one(args: &WatchArgs, client: reqwest::Client, index: usize) -> Result<Summary> {
    if args.p2p.p2p {
        return crate::viewer::p2p_old::watch_one(args, client, index).await;
    }
    let started = Instant::now();
    let elapsed_ms = move || started.elapsed().as_secs_f64() * 1000.0;
    let mode = match args.mode {
        Some(ModeArg::Alternate) => Mode::Alternate,
        Some(ModeArg::Hedge) => Mode::Hedge,
        Some(ModeArg::Adaptive) | None => Mode::Adaptive,
    };
    let label = args.label.clone().unwrap_or_else(|| match args.sources.len() {
        1 => "single".into(),
        2 => "dual".into(),
        n => format!("multi-{n}"),
    });
    let log_path = args
        .log
        .as_ref()
        .map(|p| if index == 0 { p.clone() } else { PathBuf::from(format!("{}.{index}", p.display())) });
    let (initial, mut follower) = match (&args.steer, args.pop.is_empty()) {
        (Some(url), _) => {
            let (first, f) = crate::viewer::steering::steer(&client, url).await?;
            (vec![first], Some(f))
        }
        (None, false) => {
            let (first, f) = crate::viewer::steering::pop(&client, &args.pop).await?;
            (vec![first], Some(f))
        }
        (None, true) => (args.sources.clone(), None),
    };
    let mut log = QoeLog::create(log_path.as_deref()).await?;
    log.write(json!({"type": "start", "unix_ms": wall_ms(), "label": label, "mode": format!("{mode:?}").to_lowercase(), "sources": initial}))
        .await?;

    let mut sources = Vec::new();
    let mut ladder = match (args.client_abr, initial.as_slice()) {
        (false, _) => None,
        (true, [one]) => {
            Some(crate::viewer::abr::ClientLadder::load(&client, &Url::parse(one).context("invalid URL")?).await?)
        }
        (true, _) => bail!("--client-abr works with one server"),
    };
    for (i, s) in initial.iter().enumerate() {
        let media = match &ladder {
            Some(l) => l.url().clone(),
            None => resolve_media_playlist(&client, s, args.rendition.as_deref()).await?,
        };
        log.write(json!({"type": "rtt", "source": i, "rtt_ms": min_rtt_ms(&media).await})).await?;
        sources.push(Source { url: media, uris: BTreeMap::new(), oldest: None, target: Duration::from_secs(2) });
    }

    let config =
        SchedulerConfig { mode, startup: Duration::from_secs_f64(args.startup.max(0.0)), ..Default::default() };
    let mut sched = Scheduler::new(config, sources.len());
    let (tx, mut rx) = mpsc::unbounded_channel::<Fetched>();
    let mut output = if index == 0 { Output::open(args).await? } else { Output::None };
    let mut flights: BTreeMap<RequestId, InFlight> = BTreeMap::new();
    let mut summary = Summary::default();
    let mut polls: Vec<tokio::task::JoinHandle<()>> =
        sources.iter().enumerate().map(|(i, s)| spawn_poller(&client, i, s.url.clone(), tx.clone())).collect();
    let status = crate::viewer::status::Status::new(args.quiet || index > 0, sources.len());
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let switch_at = args.switch_at.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut switched = false;
    // A switch being resolved (the URLs and the task), and one to retry after a failure.
    type Resolved = Result<Vec<(String, Url, Option<f64>)>>;
    let mut resolving: Option<(Vec<String>, tokio::task::JoinHandle<Resolved>)> = None;
    let mut retry_switch: Option<(Vec<String>, Instant)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_buffer_log = 0.0f64;

    loop {
        tokio::select! {
            Some(ev) = rx.recv() => {
                let now = Instant::now();
                match ev {
                    Fetched::Playlist { source, result: Ok((segments, target)) } => {
                        let s = &mut sources[source];
                        s.target = target;
                        s.oldest = segments.first().map(|x| x.0);
                        s.uris = segments.iter().map(|(seq, d, uri)| (*seq, (uri.clone(), *d))).collect();
                        let listed: Vec<(u64, Duration)> = segments.iter().map(|(seq, d, _)| (*seq, *d)).collect();
                        sched.playlist(now, source, &listed);
                        // Segments older than every live source's window can no longer be had.
                        if let Some(oldest) = sources.iter().filter(|s| !s.uris.is_empty()).filter_map(|s| s.oldest).min() {
                            sched.oldest_listed(now, oldest);
                        }
                    }
                    Fetched::Playlist { source, result: Err(e) } => {
                        tracing::warn!(viewer = index, source, error = %e, "playlist reload failed");
                    }
                    Fetched::Headers { req, len, origin_ms, rendition } => {
                        if let Some(f) = flights.get_mut(&req) {
                            f.first_byte_ms = Some(elapsed_ms());
                            f.origin_ms = origin_ms;
                            f.rendition = rendition;
                        }
                        sched.first_byte(now, req, len);
                    }
                    Fetched::Chunk { req, bytes } => {
                        if let Some(f) = flights.get_mut(&req) {
                            f.data.extend_from_slice(&bytes);
                            summary.bytes += bytes.len() as u64;
                            sched.progress(now, req, bytes.len() as u64);
                        }
                    }
                    Fetched::Done { req } => sched.completed(now, req),
                    Fetched::Failed { req, error } => {
                        if let Some(f) = flights.remove(&req) {
                            tracing::warn!(viewer = index, source = f.source, seq = f.seq, %error, "segment request failed; retrying elsewhere");
                            summary.duplicate_bytes += f.data.len() as u64;
                        }
                        sched.failed(now, req);
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                sched.handle_timeout(now);
                if elapsed_ms() - last_buffer_log >= 250.0 {
                    last_buffer_log = elapsed_ms();
                    let level = sched.buffer().level().as_millis() as u64;
                    log.write(json!({"type": "buffer", "t_ms": elapsed_ms(), "level_ms": level})).await?;
                    status.update(&sched, &summary);
                }
                let mut switch_to = None;
                if let Some(at) = switch_at && !switched && tokio::time::Instant::now() >= at {
                    switched = true;
                    switch_to = Some(args.switch_to.clone());
                }
                if let Some(url) = follower.as_mut().and_then(|f| f.take_change()) {
                    switch_to = Some(vec![url]);
                }
                if let Some((urls, at)) = &retry_switch && switch_to.is_none() && Instant::now() >= *at {
                    switch_to = Some(urls.clone());
                }
                // Resolve the new servers in the background (the first request may wait for the
                // server to pull the channel); switch once they answer, keep the old ones until then.
                if let Some(urls) = switch_to {
                    retry_switch = None;
                    if let Some((_, task)) = resolving.take() {
                        task.abort();
                    }
                    let (client, rendition, list) = (client.clone(), args.rendition.clone(), urls.clone());
                    resolving = Some((urls, tokio::spawn(async move {
                        let mut media = Vec::new();
                        for url in &list {
                            let m = resolve_media_playlist(&client, url, rendition.as_deref()).await?;
                            let rtt = min_rtt_ms(&m).await;
                            media.push((url.clone(), m, rtt));
                        }
                        Ok::<_, anyhow::Error>(media)
                    })));
                }
                if resolving.as_ref().is_some_and(|(_, t)| t.is_finished()) {
                    let (urls, task) = resolving.take().expect("checked above");
                    match task.await {
                        Ok(Ok(media)) => {
                            for old in 0..sources.len() {
                                sched.remove_source(now, old);
                            }
                            for p in polls.drain(..) {
                                p.abort();
                            }
                            for (url, media, rtt) in media {
                                let id = sched.add_source(now);
                                log.write(json!({"type": "rtt", "source": id, "rtt_ms": rtt})).await?;
                                log.write(json!({"type": "switch", "t_ms": elapsed_ms(), "source": id, "url": url})).await?;
                                polls.push(spawn_poller(&client, id, media.clone(), tx.clone()));
                                sources.push(Source { url: media, uris: BTreeMap::new(), oldest: None, target: Duration::from_secs(2) });
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(viewer = index, error = %format!("{e:#}"), "cannot switch yet; staying and retrying in 1 s");
                            retry_switch = Some((urls, Instant::now() + Duration::from_secs(1)));
                        }
                        Err(_) => {}
                    }
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
            }
            _ = crate::common::shutdown_signal(), if index <= 1 => break,
        }
        // Carry out what the scheduler decided.
        while let Some(action) = sched.poll_action() {
            match action {
                Action::Fetch { req, source, seq } => {
                    let Some((uri, _)) = sources[source].uris.get(&seq).cloned() else {
                        sched.failed(Instant::now(), req);
                        continue;
                    };
                    let hedge = flights.values().any(|f| f.seq == seq);
                    let task = spawn_fetch(&client, req, uri, tx.clone());
                    flights.insert(
                        req,
                        InFlight {
                            source,
                            seq,
                            task,
                            data: BytesMut::new(),
                            requested_ms: elapsed_ms(),
                            first_byte_ms: None,
                            origin_ms: None,
                            hedge,
                            rendition: None,
                        },
                    );
                }
                Action::Cancel { req } => {
                    if let Some(f) = flights.remove(&req) {
                        f.task.abort();
                        summary.duplicate_bytes += f.data.len() as u64;
                        log.write(
                            json!({"type": "duplicate", "seq": f.seq, "source": f.source, "bytes": f.data.len()}),
                        )
                        .await?;
                    }
                }
                Action::Deliver { req, seq, source } => {
                    let Some(f) = flights.remove(&req) else { continue };
                    let done_ms = elapsed_ms();
                    let bytes = f.data.len();
                    let busy_s = ((done_ms - f.first_byte_ms.unwrap_or(f.requested_ms)) / 1000.0).max(0.001);
                    let duration_ms = sources[source].uris.get(&seq).map_or(0, |(_, d)| d.as_millis());
                    log.write(json!({
                        "type": "segment", "seq": seq, "source": source,
                        "request_ms": f.requested_ms, "first_byte_ms": f.first_byte_ms, "done_ms": done_ms,
                        "bytes": bytes, "duration_ms": duration_ms,
                        "origin_delay_ms": f.origin_ms.map(|o| wall_ms().saturating_sub(o)), "hedge": f.hedge,
                        "rendition": f.rendition,
                        "bitrate_bps": (duration_ms > 0).then(|| bytes as f64 * 8000.0 / duration_ms as f64),
                    }))
                    .await?;
                    if let Some(l) = ladder.as_mut()
                        && let Some(url) = l.delivered(bytes as u64, Duration::from_secs_f64(busy_s))
                    {
                        log.write(json!({"type": "abr_switch", "t_ms": done_ms, "url": url.as_str()})).await?;
                        for p in polls.drain(..) {
                            p.abort();
                        }
                        polls.push(spawn_poller(&client, source, url.clone(), tx.clone()));
                        sources[source].url = url;
                    }
                    log.write(json!({"type": "throughput", "t_ms": done_ms, "source": source, "bps": bytes as f64 * 8.0 / busy_s})).await?;
                    summary.segments += 1;
                    output.write(f.data.freeze()).await?;
                }
                Action::Skip { seq } => {
                    summary.skipped += 1;
                    tracing::warn!(viewer = index, seq, "segment expired before it could be fetched; skipping");
                    log.write(json!({"type": "skip", "seq": seq, "t_ms": elapsed_ms()})).await?;
                }
            }
        }
    }

    for p in polls {
        p.abort();
    }
    if let Some((_, task)) = resolving {
        task.abort();
    }
    for f in flights.into_values() {
        f.task.abort();
    }
    let now = Instant::now();
    sched.finish(now);
    for stall in sched.buffer().stalls() {
        let start_ms = stall.start.saturating_duration_since(started).as_secs_f64() * 1000.0;
        log.write(json!({"type": "stall", "start_ms": start_ms, "duration_ms": stall.duration.as_millis()})).await?;
    }
    summary.stalls = sched.buffer().stalls().len();
    summary.stall_time = sched.buffer().stall_time();
    log.write(json!({
        "type": "end", "t_ms": elapsed_ms(), "segments": summary.segments, "stalls": summary.stalls,
        "stall_ms": summary.stall_time.as_millis(), "bytes": summary.bytes, "duplicate_bytes": summary.duplicate_bytes,
        "skipped": summary.skipped,
    }))
    .await?;
    log.flush().await?;
    output.close().await?;
    status.finish();
    Ok(summary)
}

/// Where delivered segments go.
pub(crate) enum Output {
    None,
    Writer(Box<dyn tokio::io::AsyncWrite + Unpin + Send>),
    Player(tokio::process::Child),
}

impl Output {
    pub(crate) async fn open(args: &WatchArgs) -> Result<Self> {
        if let Some(player) = args.play {
            let (cmd, player_args): (&str, &[&str]) = match player {
                Player::Ffplay => ("ffplay", &["-hide_banner", "-loglevel", "error", "-i", "pipe:0"]),
                Player::Mpv => ("mpv", &["--really-quiet", "-"]),
            };
            let child = tokio::process::Command::new(cmd)
                .args(player_args)
                .stdin(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {cmd} (is it installed?)"))?;
            return Ok(Self::Player(child));
        }
        match &args.out {
            None => Ok(Self::None),
            Some(p) if p.as_os_str() == "-" => Ok(Self::Writer(Box::new(tokio::io::stdout()))),
            Some(p) => {
                let f = tokio::fs::File::create(p).await.with_context(|| format!("creating {}", p.display()))?;
                Ok(Self::Writer(Box::new(tokio::io::BufWriter::new(f))))
            }
        }
    }

    pub(crate) async fn write(&mut self, data: Bytes) -> Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Writer(w) => w.write_all(&data).await.context("writing the stream"),
            Self::Player(child) => match child.stdin.as_mut() {
                // A closed player (window shut) ends the output, not the session.
                Some(stdin) => {
                    if stdin.write_all(&data).await.is_err() {
                        child.stdin = None;
                    }
                    Ok(())
                }
                None => Ok(()),
            },
        }
    }

    pub(crate) async fn close(self) -> Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Writer(mut w) => w.shutdown().await.context("closing the output"),
            Self::Player(mut child) => {
                drop(child.stdin.take());
                let _ = child.wait().await;
                Ok(())
            }
        }
    }
}

/// The media playlist URL for `url`: itself, or the chosen variant of a master playlist.
pub(crate) async fn resolve_media_playlist(
    client: &reqwest::Client,
    url: &str,
    rendition: Option<&str>,
) -> Result<Url> {
    let url = Url::parse(url).with_context(|| format!("invalid URL {url:?}"))?;
    // Follow a redirect once (an edge's auto.m3u8 opens a session): poll where it led.
    let (url, body) = crate::viewer::abr::fetch_following(client, &url).await?;
    match m3u8_rs::parse_playlist_res(&body) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(_)) => Ok(url),
        Ok(m3u8_rs::Playlist::MasterPlaylist(master)) => {
            let variants: Vec<_> = master.variants.iter().filter(|v| !v.is_i_frame).collect();
            let chosen = match rendition {
                Some(r) => variants.iter().find(|v| v.uri == r || v.uri.split('/').next() == Some(r)).copied(),
                None => variants.iter().max_by_key(|v| v.bandwidth).copied(),
            };
            let Some(v) = chosen else { bail!("{url}: no variant matches {rendition:?}") };
            let mut media = url.join(&v.uri).with_context(|| format!("variant URI {:?}", v.uri))?;
            // Keep the master's query (a steering session, an access token) on the variant.
            if media.query().is_none() {
                media.set_query(url.query());
            }
            Ok(media)
        }
        Err(_) => bail!("{url} is not an HLS playlist"),
    }
}

/// Poll a media playlist about twice per target duration, forever.
fn spawn_poller(
    client: &reqwest::Client,
    source: SourceId,
    url: Url,
    tx: mpsc::UnboundedSender<Fetched>,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        loop {
            let result = poll_playlist(&client, &url).await.map_err(|e| format!("{e:#}"));
            let wait = match &result {
                Ok((_, target)) => (*target / 2).clamp(Duration::from_millis(200), Duration::from_secs(3)),
                Err(_) => Duration::from_secs(1),
            };
            if tx.send(Fetched::Playlist { source, result }).is_err() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    })
}

pub(crate) async fn poll_playlist(client: &reqwest::Client, url: &Url) -> Result<Listing> {
    let body = crate::common::http::fetch(client, url, 1024 * 1024).await?;
    let Ok(m3u8_rs::Playlist::MediaPlaylist(p)) = m3u8_rs::parse_playlist_res(&body) else {
        bail!("{url} is not a media playlist");
    };
    let segments = p
        .segments
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let uri = url.join(&s.uri).ok()?;
            Some((p.media_sequence + i as u64, Duration::from_secs_f64(f64::from(s.duration).max(0.0)), uri))
        })
        .collect();
    Ok((segments, Duration::from_secs(p.target_duration.max(1))))
}

fn spawn_fetch(
    client: &reqwest::Client,
    req: RequestId,
    url: Url,
    tx: mpsc::UnboundedSender<Fetched>,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        let result: Result<()> = async {
            let mut resp = client.get(url.clone()).timeout(Duration::from_secs(20)).send().await?;
            if !resp.status().is_success() {
                bail!("GET {url}: HTTP {}", resp.status());
            }
            let origin_ms =
                resp.headers().get("relaycast-origin-time").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            let header = resp.headers().get("relaycast-rendition").and_then(|v| v.to_str().ok());
            let rendition = crate::viewer::abr::rendition_of(resp.url(), header);
            let _ = tx.send(Fetched::Headers { req, len: resp.content_length(), origin_ms, rendition });
            while let Some(chunk) = resp.chunk().await? {
                let _ = tx.send(Fetched::Chunk { req, bytes: chunk });
            }
            Ok(())
        }
        .await;
        let _ = match result {
            Ok(()) => tx.send(Fetched::Done { req }),
            Err(e) => tx.send(Fetched::Failed { req, error: format!("{e:#}") }),
        };
    })
}

/// The smallest of three TCP connect times to the URL's host: the path's minimum RTT.
pub(crate) async fn min_rtt_ms(url: &Url) -> Option<f64> {
    let host = url.host_str()?.to_string();
    let port = url.port_or_known_default()?;
    let mut best: Option<f64> = None;
    for _ in 0..3 {
        let t = Instant::now();
        if tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            best = Some(best.map_or(ms, |b: f64| b.min(ms)));
        }
    }
    best
}

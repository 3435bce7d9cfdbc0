//! A bitrate ladder made at the origin (F6): one ffmpeg child turns a single-rendition input
//! into several renditions (default: the input's height, ⅔ and ⅓ of it) with keyframes forced at
//! every segment boundary, so segment k of every rendition covers the same time span and the
//! same sequence number. That alignment is what lets an edge switch a viewer between renditions
//! at any segment boundary (server-side ABR, `auto_abr.rs`) and players switch themselves from
//! the master playlist (client-side ABR).
//!
//! ffmpeg writes HLS renditions and a master playlist into a private temp folder; this module
//! reads them and publishes the segments into the channel, with the master playlist's
//! BANDWIDTH, RESOLUTION and CODECS. A watchdog restarts ffmpeg when it exits or stops producing
//! segments (a hang), with backoff from 1 to 30 s; the channel continues after a discontinuity,
//! and every restart is logged and counted in `relaycast_ladder_restarts_total{channel,reason}`.
//! ffmpeg dies with the origin: it is killed on drop and, through `setpriv --pdeathsig KILL`
//! when util-linux is installed, also when the origin is killed outright.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use relaycast_core::{Name, RenditionInfo, SourceSegment};
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

use crate::common::playback::PlaybackKey;
use crate::common::wall_ms;
use crate::node::host::Host;
use crate::node::ingest::cmaf::SegmentPublisher;

/// Audio bit rate of every rendition when the input has audio.
const AUDIO_KBPS: u32 = 64;
/// Bits per pixel per frame for the default video rates (about 2.2 Mbit/s at 720p30).
const BITS_PER_PIXEL: f64 = 0.08;
/// How often the output folder is read.
const POLL: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run that produced segments for this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// `relaycast origin` flags for ladders.
#[derive(Args, Debug, Clone, Default)]
pub struct LadderArgs {
    /// Encode a multi-bitrate ladder of channel NAME from INPUT (a media file, looped in real
    /// time, any live URL ffmpeg reads: rtmp://, srt://, http://...m3u8, or channel:CHANNEL for
    /// another channel of this origin, e.g. one published over RTMP or SRT). Repeatable.
    #[arg(long, value_name = "NAME=INPUT")]
    pub ladder: Vec<String>,
    /// Heights of the ladder's renditions, e.g. 720,480,240 [default: the input's height, ⅔ and ⅓ of it].
    #[arg(long, value_name = "H,H,...", value_delimiter = ',')]
    pub ladder_rungs: Vec<u32>,
    /// Video bit rate of each rendition in kbit/s, highest rendition first [default: 0.08 bit per pixel per frame].
    #[arg(long, value_name = "KBPS,KBPS,...", value_delimiter = ',')]
    pub ladder_kbps: Vec<u32>,
    /// Segment duration of the ladder in seconds; keyframes are forced at every boundary.
    #[arg(long, default_value_t = 2.0)]
    pub ladder_segment_s: f64,
    /// x264 preset (ultrafast ... veryslow): CPU against quality.
    #[arg(long, default_value = "veryfast")]
    pub ladder_preset: String,
    /// Restart ffmpeg when it has produced no segment for this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub ladder_stall_timeout_s: f64,
}

/// One ladder channel to run.
#[derive(Debug, Clone)]
pub struct LadderSpec {
    pub channel: Name,
    pub input: String,
    pub rungs: Vec<u32>,
    pub kbps: Vec<u32>,
    pub segment: Duration,
    pub preset: String,
    pub stall_timeout: Duration,
}

impl LadderArgs {
    pub fn into_specs(self) -> Result<Vec<LadderSpec>> {
        if self.ladder.is_empty() {
            return Ok(Vec::new());
        }
        if !(0.2..=30.0).contains(&self.ladder_segment_s) {
            bail!("--ladder-segment-s must be between 0.2 and 30, got {}", self.ladder_segment_s);
        }
        if !(0.5..=600.0).contains(&self.ladder_stall_timeout_s) {
            bail!("--ladder-stall-timeout-s must be between 0.5 and 600, got {}", self.ladder_stall_timeout_s);
        }
        if self.ladder_rungs.iter().any(|&h| !(16..=4320).contains(&h)) {
            bail!("--ladder-rungs heights must be between 16 and 4320, got {:?}", self.ladder_rungs);
        }
        let rungs = if self.ladder_rungs.is_empty() { 3 } else { self.ladder_rungs.len() };
        if !self.ladder_kbps.is_empty() && self.ladder_kbps.len() != rungs {
            bail!("--ladder-kbps needs one rate per rendition ({rungs}: --ladder-rungs, or the default three)");
        }
        if self.ladder_kbps.contains(&0) {
            bail!("--ladder-kbps rates must be positive");
        }
        if self.ladder_preset.is_empty() || !self.ladder_preset.chars().all(|c| c.is_ascii_lowercase()) {
            bail!("--ladder-preset must be an x264 preset name such as veryfast, got {:?}", self.ladder_preset);
        }
        self.ladder
            .iter()
            .map(|l| {
                let Some((name, input)) = l.split_once('=') else { bail!("--ladder must be NAME=INPUT, got {l:?}") };
                let channel = Name::new(name).with_context(|| format!("channel name in --ladder {l:?}"))?;
                if input.is_empty() {
                    bail!("--ladder {l:?} has an empty input");
                }
                Ok(LadderSpec {
                    channel,
                    input: input.to_string(),
                    rungs: self.ladder_rungs.clone(),
                    kbps: self.ladder_kbps.clone(),
                    segment: Duration::from_secs_f64(self.ladder_segment_s),
                    preset: self.ladder_preset.clone(),
                    stall_timeout: Duration::from_secs_f64(self.ladder_stall_timeout_s),
                })
            })
            .collect()
    }
}

/// What ffprobe says about the input.
#[derive(Debug, Clone, Copy)]
struct Probe {
    width: u32,
    height: u32,
    fps: f64,
    audio: bool,
}

/// One rendition of the ladder.
#[derive(Debug, Clone)]
struct Rung {
    name: Name,
    width: u32,
    height: u32,
    video_kbps: u32,
}

impl Rung {
    fn info(&self, audio: bool) -> RenditionInfo {
        let kbps = self.video_kbps + if audio { AUDIO_KBPS } else { 0 };
        RenditionInfo {
            name: self.name.clone(),
            bandwidth: Some(kbps * 1000),
            resolution: Some((self.width, self.height)),
            codecs: None,
            init: None,
        }
    }
}

/// A ladder input naming a channel of this origin (`channel:CHANNEL`) as the URL ffmpeg reads:
/// that channel's playlist on `http`, the origin's own HTTP address.
///
/// With a playback key the URL carries a long-lived token, so a `signed` source channel feeds
/// its ladder too.
pub fn resolve_input(input: &str, http: std::net::SocketAddr, key: Option<&PlaybackKey>) -> String {
    match input.strip_prefix("channel:") {
        Some(channel) => {
            let host = if http.ip().is_unspecified() { "127.0.0.1".to_string() } else { http.ip().to_string() };
            let mut url = format!("http://{host}:{}/live/{channel}/index.m3u8", http.port());
            if let (Some(key), Ok(name)) = (key, Name::new(channel)) {
                const TEN_YEARS_S: u64 = 10 * 365 * 86_400;
                let token = key.token(&name, crate::common::wall_ms() / 1000 + TEN_YEARS_S, None);
                url.push_str(&format!("?{}={token}", crate::common::playback::PARAM));
            }
            url
        }
        None => input.to_string(),
    }
}

/// Run a ladder channel forever: probe, encode, publish, restart on failure; `low_latency`
/// packages every rendition's segments as CMAF parts.
pub async fn run(host: Arc<Host>, spec: LadderSpec, low_latency: bool) {
    let channel = spec.channel.clone();
    let source = if low_latency { "ladder · low latency" } else { "ladder" };
    let mut sinks = Sinks { host: host.clone(), channel: channel.clone(), low_latency, by_rendition: BTreeMap::new() };
    let work = std::env::temp_dir().join(format!("relaycast-ladder-{}-{}", std::process::id(), channel));
    let mut backoff = Duration::from_secs(1);
    // Numbering starts from the clock, so a restarted origin never reuses a cached URL; after an
    // ffmpeg restart every rendition continues from the same next number, keeping them aligned.
    let mut next_seq = wall_ms() / 1000;
    let mut runs = 0u64;
    let mut registered = false;
    loop {
        let probe = match probe(&spec.input).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%channel, input = %spec.input, error = %format!("{e:#}"), retry_in_s = backoff.as_secs(), "cannot probe ladder input");
                metrics::counter!("relaycast_ladder_restarts_total", "channel" => channel.to_string(), "reason" => "probe").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let rungs = rungs_for(&spec, probe);
        if !registered {
            let infos = rungs.iter().map(|r| r.info(probe.audio)).collect();
            host.input(|n, now| n.set_local_channel(now, channel.clone(), source, infos));
            tracing::info!(%channel, input = %spec.input, rungs = ?rungs.iter().map(|r| format!("{}x{}@{}k", r.width, r.height, r.video_kbps)).collect::<Vec<_>>(), "ladder channel");
            registered = true;
        }
        let dir = work.join(format!("run-{runs}"));
        let outcome = encode(&mut sinks, &spec, probe, &rungs, &dir, runs > 0, &mut next_seq).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        runs += 1;
        let (reason, healthy) = match &outcome {
            Ok(o) => (o.reason, o.produced_for >= HEALTHY_RUN),
            Err(_) => ("spawn", false),
        };
        if healthy {
            backoff = Duration::from_secs(1);
        }
        match outcome {
            Ok(o) => {
                tracing::warn!(%channel, reason, detail = %o.detail, restart_in_s = backoff.as_secs(), "ladder ffmpeg stopped; restarting")
            }
            Err(e) => {
                tracing::error!(%channel, error = %format!("{e:#}"), restart_in_s = backoff.as_secs(), "cannot start ladder ffmpeg")
            }
        }
        metrics::counter!("relaycast_ladder_restarts_total", "channel" => channel.to_string(), "reason" => reason)
            .increment(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Where the ladder's segments go: one publisher per rendition, kept across ffmpeg restarts.
struct Sinks {
    host: Arc<Host>,
    channel: Name,
    low_latency: bool,
    by_rendition: BTreeMap<Name, SegmentPublisher>,
}

impl Sinks {
    fn publish(&mut self, rendition: &Name, src: SourceSegment) -> Result<()> {
        let publisher = self.by_rendition.entry(rendition.clone()).or_insert_with(|| {
            SegmentPublisher::new(
                self.host.clone(),
                self.channel.clone(),
                rendition.clone(),
                "ladder",
                self.low_latency,
            )
        });
        publisher.publish(src)
    }
}

/// How one ffmpeg run ended.
struct Outcome {
    /// `exit` or `stall`.
    reason: &'static str,
    detail: String,
    produced_for: Duration,
}

/// The ladder's renditions for this input.
fn rungs_for(spec: &LadderSpec, probe: Probe) -> Vec<Rung> {
    let even = |x: f64| ((x / 2.0).round() as u32 * 2).max(2);
    let heights: Vec<u32> = if spec.rungs.is_empty() {
        let h = f64::from(probe.height);
        let mut v = vec![even(h), even(h * 2.0 / 3.0), even(h / 3.0)];
        v.dedup();
        v
    } else {
        spec.rungs.iter().map(|&h| even(f64::from(h))).collect()
    };
    heights
        .iter()
        .enumerate()
        .map(|(i, &height)| {
            let width = even(f64::from(height) * f64::from(probe.width) / f64::from(probe.height.max(1)));
            let default_kbps = (f64::from(width * height) * probe.fps * BITS_PER_PIXEL / 1000.0).round() as u32;
            let video_kbps = spec.kbps.get(i).copied().unwrap_or(default_kbps.max(64));
            // Invariant: "{digits}p" is a valid name.
            Rung { name: Name::new(format!("{height}p")).expect("valid name"), width, height, video_kbps }
        })
        .collect()
}

fn is_file(input: &str) -> bool {
    !input.contains("://") && Path::new(input).is_file()
}

/// Width, height and frame rate of the first video stream, and whether there is audio.
async fn probe(input: &str) -> Result<Probe> {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type,width,height,avg_frame_rate", "-of", "json"])
        .arg(input)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .context("ffprobe took over 20 s")?
        .context("running ffprobe (is ffmpeg installed? `apt-get install ffmpeg`)")?;
    if !out.status.success() {
        bail!("ffprobe cannot read {input}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ffprobe output")?;
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let video = streams.iter().find(|s| s["codec_type"] == "video").context("the input has no video stream")?;
    let (Some(width), Some(height)) = (video["width"].as_u64(), video["height"].as_u64()) else {
        bail!("ffprobe gives no size for the video of {input}");
    };
    let fps = video["avg_frame_rate"]
        .as_str()
        .and_then(|r| r.split_once('/'))
        .and_then(|(a, b)| Some(a.parse::<f64>().ok()? / b.parse::<f64>().ok()?))
        .filter(|f| f.is_finite() && *f > 0.0 && *f <= 240.0)
        .unwrap_or(30.0);
    let audio = streams.iter().any(|s| s["codec_type"] == "audio");
    Ok(Probe { width: width as u32, height: height as u32, fps, audio })
}

/// The ffmpeg arguments for one run writing into `dir`.
fn ffmpeg_args(spec: &LadderSpec, probe: Probe, rungs: &[Rung], dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "warning"].map(String::from).to_vec();
    if is_file(&spec.input) {
        a.extend(["-re", "-stream_loop", "-1"].map(String::from));
    }
    a.extend(["-i".into(), spec.input.clone()]);
    let n = rungs.len();
    let mut graph = format!("[0:v]split={n}");
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, r) in rungs.iter().enumerate() {
        graph.push_str(&format!(";[s{i}]scale={}:{}[v{i}]", r.width, r.height));
    }
    a.extend(["-filter_complex".into(), graph]);
    for i in 0..n {
        a.extend(["-map".into(), format!("[v{i}]")]);
    }
    if probe.audio {
        for _ in 0..n {
            a.extend(["-map".into(), "0:a:0".into()]);
        }
    }
    let seg = spec.segment.as_secs_f64();
    a.extend(
        [
            "-c:v",
            "libx264",
            "-preset",
            &spec.preset,
            "-pix_fmt",
            "yuv420p",
            "-sc_threshold",
            "0",
            "-force_key_frames",
            &format!("expr:gte(t,n_forced*{seg})"),
        ]
        .map(String::from),
    );
    for (i, r) in rungs.iter().enumerate() {
        let k = r.video_kbps;
        // CBR-ish: the bandwidth a rendition announces is what it really peaks at.
        a.extend([format!("-b:v:{i}"), format!("{k}k"), format!("-maxrate:v:{i}"), format!("{k}k")]);
        a.extend([format!("-bufsize:v:{i}"), format!("{}k", (f64::from(k) * seg).max(f64::from(k) / 2.0) as u32)]);
    }
    if probe.audio {
        a.extend(["-c:a", "aac", "-ac", "2", "-b:a"].map(String::from));
        a.push(format!("{AUDIO_KBPS}k"));
    }
    let map: Vec<String> = rungs
        .iter()
        .enumerate()
        .map(
            |(i, r)| {
                if probe.audio { format!("v:{i},a:{i},name:{}", r.name) } else { format!("v:{i},name:{}", r.name) }
            },
        )
        .collect();
    a.extend(
        [
            "-f",
            "hls",
            "-hls_time",
            &format!("{seg}"),
            "-hls_list_size",
            "6",
            "-hls_flags",
            "delete_segments+independent_segments+temp_file",
            "-master_pl_name",
            "master.m3u8",
            "-var_stream_map",
            &map.join(" "),
            "-hls_segment_filename",
            &dir.join("%v").join("%d.ts").to_string_lossy(),
            &dir.join("%v").join("index.m3u8").to_string_lossy(),
        ]
        .map(String::from),
    );
    a
}

/// One ffmpeg run: start it, publish what it writes, return when it exits or hangs.
async fn encode(
    sinks: &mut Sinks,
    spec: &LadderSpec,
    probe: Probe,
    rungs: &[Rung],
    dir: &Path,
    after_restart: bool,
    next_seq: &mut u64,
) -> Result<Outcome> {
    let channel = &spec.channel;
    let _ = tokio::fs::remove_dir_all(dir).await;
    for r in rungs {
        tokio::fs::create_dir_all(dir.join(r.name.as_str()))
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let (mut child, last_line) = spawn_ffmpeg(spec, probe, rungs, dir)?;
    let pid = child.id().unwrap_or(0);

    let started = Instant::now();
    let base = *next_seq;
    let mut published: BTreeMap<Name, u64> = BTreeMap::new();
    let mut first_segment: Option<Instant> = None;
    let mut last_segment = started;
    let mut master_seen = false;
    let mut first_of_run = true;
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let last = last_line.lock().expect("line lock").clone();
                return Ok(Outcome {
                    reason: "exit",
                    detail: format!("ffmpeg {status}: {last}"),
                    produced_for: first_segment.map_or(Duration::ZERO, |f| last_segment - f),
                });
            }
            _ = tick.tick() => {}
        }
        if !master_seen && let Some(infos) = read_master(dir, rungs, probe.audio).await {
            let source = if sinks.low_latency { "ladder · low latency" } else { "ladder" };
            sinks.host.input(|n, now| n.set_local_channel(now, channel.clone(), source, infos));
            master_seen = true;
        }
        let new = publish_new(sinks, rungs, dir, (base, after_restart), &mut published, next_seq).await;
        if new > 0 {
            last_segment = Instant::now();
            first_segment.get_or_insert(last_segment);
            if first_of_run {
                tracing::info!(%channel, pid, "ladder producing segments");
                first_of_run = false;
            }
        }
        if last_segment.elapsed() > spec.stall_timeout {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Ok(Outcome {
                reason: "stall",
                detail: format!("no new segment for {:.1} s; killed pid {pid}", last_segment.elapsed().as_secs_f64()),
                produced_for: first_segment.map_or(Duration::ZERO, |f| last_segment - f),
            });
        }
    }
}

/// Start ffmpeg (tied to this process's life with setpriv where available); its warnings go
/// to the log with the channel, and the last one is kept to explain an exit.
fn spawn_ffmpeg(
    spec: &LadderSpec,
    probe: Probe,
    rungs: &[Rung],
    dir: &Path,
) -> Result<(tokio::process::Child, Arc<std::sync::Mutex<String>>)> {
    let channel = &spec.channel;
    let args = ffmpeg_args(spec, probe, rungs, dir);
    let mut cmd = crate::common::command_dying_with_us("ffmpeg");
    cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting ffmpeg (is it installed? `apt-get install ffmpeg`)")?;
    tracing::info!(%channel, pid = child.id().unwrap_or(0), dir = %dir.display(), "ladder ffmpeg started");
    let last_line = Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let (channel, last_line) = (channel.clone(), last_line.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(%channel, ffmpeg = %line, "ladder ffmpeg");
                *last_line.lock().expect("line lock") = line;
            }
        });
    }

    Ok((child, last_line))
}

/// Publish, in sequence order, every segment ffmpeg finished since the last call: segment k of
/// every rendition together, numbered from `base`. Returns how many were published.
async fn publish_new(
    sinks: &mut Sinks,
    rungs: &[Rung],
    dir: &Path,
    (base, after_restart): (u64, bool),
    published: &mut BTreeMap<Name, u64>,
    next_seq: &mut u64,
) -> usize {
    let mut new = 0;
    for r in rungs {
        let Some(listing) = read_playlist(&dir.join(r.name.as_str()).join("index.m3u8")).await else { continue };
        for (index, duration, file) in listing {
            let seq = base + index;
            if published.get(&r.name).is_some_and(|&p| seq <= p) {
                continue;
            }
            let Ok(data) = tokio::fs::read(dir.join(r.name.as_str()).join(&file)).await else { break };
            let src = SourceSegment {
                source_seq: Some(seq),
                // Every rendition's first segment after a restart follows a discontinuity.
                discontinuity: after_restart && !published.contains_key(&r.name),
                duration_us: (duration.as_micros()).min(u128::from(u32::MAX)) as u32,
                data: Bytes::from(data),
            };
            if let Err(e) = sinks.publish(&r.name, src) {
                tracing::error!(channel = %sinks.channel, rendition = %r.name, error = %format!("{e:#}"), "cannot publish ladder segment");
                break;
            }
            published.insert(r.name.clone(), seq);
            *next_seq = (*next_seq).max(seq + 1);
            new += 1;
        }
    }
    new
}

/// (index, duration, file name) of each segment a media playlist lists; `None` until it exists.
async fn read_playlist(path: &Path) -> Option<Vec<(u64, Duration, String)>> {
    let body = tokio::fs::read(path).await.ok()?;
    let Ok(m3u8_rs::Playlist::MediaPlaylist(p)) = m3u8_rs::parse_playlist_res(&body) else { return None };
    Some(
        p.segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let file = s.uri.rsplit('/').next().unwrap_or(&s.uri).to_string();
                (p.media_sequence + i as u64, Duration::from_secs_f64(f64::from(s.duration).max(0.0)), file)
            })
            .collect(),
    )
}

/// The renditions as ffmpeg's master playlist describes them (its CODECS come from the encoded
/// stream), matched to `rungs` by URI; `None` until ffmpeg has written it.
async fn read_master(dir: &Path, rungs: &[Rung], audio: bool) -> Option<Vec<RenditionInfo>> {
    let body = tokio::fs::read(dir.join("master.m3u8")).await.ok()?;
    let Ok(m3u8_rs::Playlist::MasterPlaylist(m)) = m3u8_rs::parse_playlist_res(&body) else { return None };
    let infos: Vec<RenditionInfo> = rungs
        .iter()
        .map(|r| {
            let ours = r.info(audio);
            let Some(v) = m.variants.iter().find(|v| v.uri.split('/').next() == Some(r.name.as_str())) else {
                return ours;
            };
            RenditionInfo {
                // The configured rate is the cap (maxrate); ffmpeg's figure adds its own overhead.
                bandwidth: ours.bandwidth.max(u32::try_from(v.bandwidth).ok()),
                resolution: v.resolution.map(|r| (r.width as u32, r.height as u32)).or(ours.resolution),
                codecs: v.codecs.clone(),
                init: None,
                ..ours
            }
        })
        .collect();
    infos.iter().any(|i| i.codecs.is_some()).then_some(infos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rungs: Vec<u32>, kbps: Vec<u32>) -> LadderSpec {
        LadderSpec {
            channel: Name::new("c").unwrap(),
            input: "in.mp4".into(),
            rungs,
            kbps,
            segment: Duration::from_secs(2),
            preset: "ultrafast".into(),
            stall_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn default_rungs_step_down_from_the_input() {
        let p = Probe { width: 1280, height: 720, fps: 30.0, audio: true };
        let r = rungs_for(&spec(vec![], vec![]), p);
        let sizes: Vec<_> = r.iter().map(|r| (r.width, r.height, r.name.to_string())).collect();
        assert_eq!(sizes, vec![(1280, 720, "720p".into()), (854, 480, "480p".into()), (426, 240, "240p".into())]);
        assert!(r[0].video_kbps > r[1].video_kbps && r[1].video_kbps > r[2].video_kbps);
        assert_eq!(r[0].info(true).bandwidth, Some((r[0].video_kbps + AUDIO_KBPS) * 1000));
    }

    #[test]
    fn configured_rungs_and_rates_are_used() {
        let p = Probe { width: 480, height: 270, fps: 25.0, audio: false };
        let r = rungs_for(&spec(vec![270, 90], vec![700, 150]), p);
        assert_eq!((r[1].width, r[1].height, r[1].video_kbps), (160, 90, 150));
        let args = ffmpeg_args(&spec(vec![270, 90], vec![700, 150]), p, &r, Path::new("/tmp/x"));
        let joined = args.join(" ");
        assert!(joined.contains("-force_key_frames expr:gte(t,n_forced*2)"), "{joined}");
        assert!(joined.contains("-var_stream_map v:0,name:270p v:1,name:90p"), "{joined}");
        assert!(joined.contains("-maxrate:v:1 150k"), "{joined}");
    }

    #[test]
    fn a_channel_of_this_origin_is_read_from_its_own_playlist() {
        let http = "0.0.0.0:8081".parse().unwrap();
        assert_eq!(resolve_input("channel:cam", http, None), "http://127.0.0.1:8081/live/cam/index.m3u8");
        assert_eq!(resolve_input("in.mp4", http, None), "in.mp4");
    }

    #[test]
    fn bad_flags_are_refused() {
        let base = LadderArgs {
            ladder: vec!["c=in.mp4".into()],
            ladder_segment_s: 2.0,
            ladder_preset: "veryfast".into(),
            ladder_stall_timeout_s: 10.0,
            ..Default::default()
        };
        assert!(base.clone().into_specs().is_ok());
        let bad = |f: fn(&mut LadderArgs)| {
            let mut a = base.clone();
            f(&mut a);
            a.into_specs().is_err()
        };
        assert!(bad(|a| a.ladder = vec!["noequals".into()]));
        assert!(bad(|a| a.ladder = vec!["bad/name=x".into()]));
        assert!(bad(|a| a.ladder_segment_s = 0.0));
        assert!(bad(|a| a.ladder_rungs = vec![5]));
        assert!(bad(|a| {
            a.ladder_rungs = vec![720, 480];
            a.ladder_kbps = vec![1000];
        }));
        assert!(bad(|a| a.ladder_preset = "-y; rm".into()));
    }
}

//! Media files looped as live channels (F5): each file is remuxed to MPEG-TS if needed (ffmpeg
//! `-c copy`, no re-encode), cut at keyframes by the core, and published in real time, with a
//! discontinuity at every loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use relaycast_core::ts::{TsCut, cut_at_keyframes};
use relaycast_core::{Name, RenditionInfo, SourceSegment};

use crate::common::wall_ms;
use crate::node::host::Host;

/// Target segment duration for looped files.
pub const TARGET_SEGMENT: Duration = Duration::from_secs(2);
/// File extensions picked up from a videos folder.
const MEDIA_EXTENSIONS: &[&str] = &["ts", "mp4", "mkv", "mov", "flv", "m4v", "webm"];

/// A channel made from one media file.
pub struct LoopedFile {
    pub channel: Name,
    pub cuts: Vec<TsCut>,
}

impl LoopedFile {
    /// Cut in-memory MPEG-TS bytes into a looped channel of segments of about `segment_us`.
    pub fn from_ts(channel: Name, ts: &[u8], segment_us: u64) -> Result<Self> {
        let cuts = cut_at_keyframes(ts, segment_us).with_context(|| format!("cutting channel {channel}"))?;
        if cuts.is_empty() {
            bail!("channel {channel}: no segments in file");
        }
        Ok(Self { channel, cuts })
    }

    /// Load a file, remuxing it to TS with ffmpeg unless it already is TS.
    pub async fn load(path: &Path, segment_us: u64) -> Result<Self> {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let channel =
            channel_name_for(stem).with_context(|| format!("{} has no usable channel name", path.display()))?;
        let is_ts = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ts"));
        let bytes = if is_ts {
            tokio::fs::read(path).await.with_context(|| format!("reading {}", path.display()))?
        } else {
            remux_to_ts(path).await?
        };
        Self::from_ts(channel, &bytes, segment_us).with_context(|| format!("loading {}", path.display()))
    }

    /// Publish the cuts forever, one per its duration, looping with a discontinuity.
    pub async fn run(self, host: Arc<Host>) {
        let rendition = Name::new("src").expect("valid name");
        let info = RenditionInfo::named(rendition.clone());
        host.input(|n, now| n.set_local_channel(now, self.channel.clone(), "file", vec![info]));
        // Start numbering from the clock, so a restarted origin never reuses a cached URL.
        let mut source_seq = wall_ms() / 1000;
        let mut next = tokio::time::Instant::now();
        let mut first_loop = true;
        loop {
            for (i, cut) in self.cuts.iter().enumerate() {
                let src = SourceSegment {
                    source_seq: Some(source_seq),
                    discontinuity: i == 0 && !first_loop,
                    duration_us: cut.duration_us.min(u64::from(u32::MAX)) as u32,
                    data: cut.data.clone(),
                };
                source_seq += 1;
                if let Err(e) = host.input(|n, now| n.publish(now, &self.channel, &rendition, src, wall_ms())) {
                    tracing::error!(channel = %self.channel, error = %e, "cannot publish looped file");
                    return;
                }
                // The next segment is "complete" one duration later, as from a live encoder.
                next += Duration::from_micros(cut.duration_us.max(100_000));
                tokio::time::sleep_until(next).await;
            }
            first_loop = false;
        }
    }
}

/// Every media file in `dir`, sorted by name.
pub fn media_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading videos folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| MEDIA_EXTENSIONS.iter().any(|m| m.eq_ignore_ascii_case(e)))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A channel name from a file stem: unsupported characters become `_`.
pub fn channel_name_for(stem: &str) -> Option<Name> {
    let cleaned: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(relaycast_core::media::MAX_NAME_LEN)
        .collect();
    Name::new(cleaned).ok()
}

async fn remux_to_ts(path: &Path) -> Result<Vec<u8>> {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-f", "mpegts", "-"])
        .kill_on_drop(true)
        .output()
        .await
        .context("running ffmpeg to remux (is ffmpeg installed? `apt-get install ffmpeg`)")?;
    if !out.status.success() {
        bail!("ffmpeg could not remux {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

/// The sample clip embedded in the binary (made by `scripts/make-sample.sh`).
pub fn embedded_sample() -> Bytes {
    Bytes::from_static(include_bytes!("../../../../../assets/sample.ts"))
}

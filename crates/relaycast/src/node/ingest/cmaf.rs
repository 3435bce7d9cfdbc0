//! Low-latency sources (F32): MPEG-TS packaged at the origin as CMAF parts by the core's
//! packager, published part by part.
//!
//! Three feeds: a live TS stream pushed over HTTP (`ffmpeg ... -f mpegts -method PUT
//! http://origin/ingest/{channel}/{key}`), packaged as its bytes arrive; a looped file whose
//! segments are packaged whole and released part by part at the pace of a live encoder; and the
//! whole TS segments of the other ingests (HLS push, HLS pull, ladders) on an origin started with
//! `--low-latency`, each packaged as one CMAF segment whose parts are published at once
//! ([`SegmentPublisher`]). Those sources only hand over whole segments, so their parts save no
//! time at the origin; they still travel the tree cut-through and play with LL-HLS players.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use relaycast_core::cmaf::{FrameCounts, Packaged, Packager, PackagerConfig};
use relaycast_core::ts::TsCut;
use relaycast_core::{Name, RenditionInfo, SourcePart, SourceSegment};

use crate::common::wall_ms;
use crate::node::host::Host;

/// Parts of at most 200 ms inside one-second segments: five whole parts per segment at 25, 30,
/// 50 or 60 frames per second, and a player hold-back (three parts) of 0.6 s.
pub const PACKAGING: PackagerConfig = PackagerConfig { part_target_us: 200_000, segment_target_us: 1_000_000 };
/// Whole source segments: the same parts, and a segment ends only where the source's does.
const WHOLE_SEGMENTS: PackagerConfig = PackagerConfig { segment_target_us: u32::MAX, ..PACKAGING };

/// One low-latency rendition fed by a packager.
pub struct LiveRendition {
    host: Arc<Host>,
    channel: Name,
    rendition: Name,
    packager: Packager,
    /// Numbers the packager's segments from the clock, so a restart never reuses a URL.
    seq_base: u64,
    /// What the channel list says feeds it (e.g. "push · low latency").
    source: String,
}

impl LiveRendition {
    pub fn new(host: Arc<Host>, channel: Name, rendition: Name, source: &str) -> Self {
        Self::with(host, channel, rendition, source, PACKAGING)
    }

    fn with(host: Arc<Host>, channel: Name, rendition: Name, source: &str, config: PackagerConfig) -> Self {
        Self::with_packager(host, channel, rendition, source, Packager::new(config))
    }

    fn with_packager(host: Arc<Host>, channel: Name, rendition: Name, source: &str, packager: Packager) -> Self {
        Self { host, channel, rendition, packager, seq_base: wall_ms() / 1000, source: source.to_string() }
    }

    /// A rendition fed with the FLV tags of an RTMP publish ([`Self::video_tag`], [`Self::audio_tag`]).
    pub fn for_flv(host: Arc<Host>, channel: Name, rendition: Name, source: &str) -> Self {
        Self::with_packager(host, channel, rendition, source, Packager::for_flv(PACKAGING))
    }

    /// Feed one FLV video tag at RTMP time `ms` and publish the parts it completes. A tag the
    /// packager refuses (a codec it can't package, a damaged tag) is an error; the stream may go
    /// on.
    pub fn video_tag(&mut self, ms: u32, tag: &[u8]) -> Result<()> {
        let refused = self.packager.push_video_tag(ms, tag);
        self.publish_ready()?;
        refused.map_err(|e| anyhow::anyhow!("channel {}: {e}", self.channel))
    }

    /// Feed one FLV audio tag (see [`Self::video_tag`]).
    pub fn audio_tag(&mut self, ms: u32, tag: &[u8]) -> Result<()> {
        let refused = self.packager.push_audio_tag(ms, tag);
        self.publish_ready()?;
        refused.map_err(|e| anyhow::anyhow!("channel {}: {e}", self.channel))
    }

    /// Close the segment being made (the publisher is gone): its parts so far stay playable.
    pub fn end(&mut self) -> Result<()> {
        self.packager.end_segment();
        self.publish_ready()
    }

    /// Feed TS bytes and publish every part they complete.
    pub fn push(&mut self, ts: &[u8]) -> Result<()> {
        if let Err(e) = self.packager.push(ts) {
            bail!("channel {}: {e}", self.channel);
        }
        self.publish_ready()
    }

    /// Frames taken in so far (for the publisher's metrics).
    pub fn counts(&self) -> FrameCounts {
        self.packager.counts()
    }

    /// The next bytes do not continue the previous ones (loop, new encoder).
    pub fn discontinuity(&mut self) {
        self.packager.discontinuity();
    }

    /// Package whole TS segment bytes as one segment; returns its parts, in order, without publishing.
    fn package_segment(&mut self, ts: &[u8]) -> Result<Vec<SourcePart>> {
        if let Err(e) = self.packager.push(ts) {
            bail!("channel {}: {e}", self.channel);
        }
        self.packager.end_segment();
        let mut parts = Vec::new();
        while let Some(out) = self.packager.poll() {
            match out {
                Packaged::Init(init) => self.announce(init.to_vec()),
                Packaged::Part(p) => parts.push(self.source_part(p)),
            }
        }
        Ok(parts)
    }

    fn publish_ready(&mut self) -> Result<()> {
        while let Some(out) = self.packager.poll() {
            match out {
                Packaged::Init(init) => self.announce(init.to_vec()),
                Packaged::Part(p) => {
                    let part = self.source_part(p);
                    self.publish(part)?;
                }
            }
        }
        Ok(())
    }

    fn source_part(&self, p: relaycast_core::cmaf::PackagedPart) -> SourcePart {
        SourcePart {
            source_seq: self.seq_base + p.segment,
            index: p.index,
            independent: p.independent,
            last: p.last,
            discontinuity: p.discontinuity,
            duration_us: p.duration_us,
            data: p.data,
        }
    }

    fn publish(&self, part: SourcePart) -> Result<()> {
        let (channel, rendition) = (&self.channel, &self.rendition);
        self.host.input(|n, now| n.publish_part(now, channel, rendition, part, wall_ms()))?;
        Ok(())
    }

    /// A new init segment: the rendition now describes it (relays learn it from the catalogue).
    /// What the source declared (a ladder's or master playlist's BANDWIDTH) is kept.
    fn announce(&self, init: Vec<u8>) {
        let declared = self
            .host
            .read(|n| n.channel(&self.channel).and_then(|c| c.renditions.get(&self.rendition)).map(|r| r.info.clone()));
        let info = RenditionInfo {
            codecs: self.packager.codecs(),
            resolution: self.packager.resolution().map(|(w, h)| (u32::from(w), u32::from(h))),
            init: Some(init),
            ..declared.unwrap_or_else(|| RenditionInfo::named(self.rendition.clone()))
        };
        tracing::info!(channel = %self.channel, rendition = %self.rendition, codecs = ?info.codecs, "low-latency rendition ready (CMAF)");
        self.host.input(|n, now| n.set_local_channel(now, self.channel.clone(), &self.source, vec![info]));
    }
}

/// Publishes an ingest's whole MPEG-TS segments into one rendition: as they are (HLS with TS
/// segments), or, on a low-latency origin, packaged first as one CMAF segment of parts.
pub struct SegmentPublisher {
    host: Arc<Host>,
    channel: Name,
    rendition: Name,
    cmaf: Option<LiveRendition>,
}

impl SegmentPublisher {
    /// `source` names the ingest in the channel list ("pull", "ladder"...).
    pub fn new(host: Arc<Host>, channel: Name, rendition: Name, source: &str, low_latency: bool) -> Self {
        let cmaf = low_latency.then(|| {
            let label = format!("{source} · low latency");
            LiveRendition::with(host.clone(), channel.clone(), rendition.clone(), &label, WHOLE_SEGMENTS)
        });
        Self { host, channel, rendition, cmaf }
    }

    pub fn channel(&self) -> &Name {
        &self.channel
    }

    pub fn rendition(&self) -> &Name {
        &self.rendition
    }

    /// Publish one whole segment.
    pub fn publish(&mut self, src: SourceSegment) -> Result<()> {
        let (channel, rendition) = (&self.channel, &self.rendition);
        let Some(live) = &mut self.cmaf else {
            // A rendition the source did not declare up front (a pushed playlist) appears now.
            let known = self.host.read(|n| n.channel(channel).is_some_and(|c| c.renditions.contains_key(rendition)));
            if !known {
                let info = RenditionInfo::named(rendition.clone());
                let source = self.host.read(|n| n.channel(channel).map(|c| c.source.clone())).unwrap_or_default();
                self.host.input(|n, now| n.set_local_channel(now, channel.clone(), &source, vec![info]));
            }
            self.host.input(|n, now| n.publish(now, channel, rendition, src, wall_ms()))?;
            return Ok(());
        };
        if src.discontinuity {
            live.discontinuity();
        }
        for mut part in live.package_segment(&src.data)? {
            // One source segment makes one packaged segment: it keeps the source's number (the
            // node maps it to the channel's sequence as for TS, so a ladder's renditions align).
            if let Some(seq) = src.source_seq {
                part.source_seq = seq;
            }
            live.publish(part)?;
        }
        Ok(())
    }
}

/// Loop TS cuts forever as a low-latency channel: each part is published when a live encoder
/// would have finished it, with a discontinuity at every loop.
pub async fn loop_cuts(host: Arc<Host>, channel: Name, cuts: Vec<TsCut>) {
    let rendition = Name::new("src").expect("valid name");
    const SOURCE: &str = "file · low latency";
    host.input(|n, now| n.set_local_channel(now, channel.clone(), SOURCE, Vec::new()));
    let mut live = LiveRendition::new(host, channel.clone(), rendition, SOURCE);
    let mut next = tokio::time::Instant::now();
    loop {
        for cut in &cuts {
            let parts = match live.package_segment(&cut.data) {
                Ok(parts) => parts,
                Err(e) => {
                    tracing::error!(%channel, error = %format!("{e:#}"), "cannot package looped file");
                    return;
                }
            };
            for part in parts {
                next += Duration::from_micros(u64::from(part.duration_us).max(10_000));
                tokio::time::sleep_until(next).await;
                if let Err(e) = live.publish(part) {
                    tracing::error!(%channel, error = %format!("{e:#}"), "cannot publish looped file");
                    return;
                }
            }
        }
        live.discontinuity();
    }
}

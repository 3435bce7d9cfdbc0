//! Low-latency sources (F32): MPEG-TS packaged at the origin as CMAF parts by the core's
//! packager, published part by part.
//!
//! Two feeds: a live TS stream pushed over HTTP (`ffmpeg ... -f mpegts -method PUT
//! http://origin/ingest/{channel}/{key}`), packaged as its bytes arrive, and a looped file whose
//! segments are packaged whole and released part by part at the pace of a live encoder.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use relaycast_core::cmaf::{Packaged, Packager, PackagerConfig};
use relaycast_core::ts::TsCut;
use relaycast_core::{Name, RenditionInfo, SourcePart};

use crate::common::wall_ms;
use crate::node::host::Host;

/// Parts of at most 200 ms inside one-second segments: five whole parts per segment at 25, 30,
/// 50 or 60 frames per second, and a player hold-back (three parts) of 0.6 s.
pub const PACKAGING: PackagerConfig = PackagerConfig { part_target_us: 200_000, segment_target_us: 1_000_000 };

/// One low-latency rendition fed by a packager.
pub struct LiveRendition {
    host: Arc<Host>,
    channel: Name,
    rendition: Name,
    packager: Packager,
    /// Numbers the packager's segments from the clock, so a restart never reuses a URL.
    seq_base: u64,
    /// What the channel list says feeds it (e.g. "push · low latency").
    source: &'static str,
}

impl LiveRendition {
    pub fn new(host: Arc<Host>, channel: Name, rendition: Name, source: &'static str) -> Self {
        Self { host, channel, rendition, packager: Packager::new(PACKAGING), seq_base: wall_ms() / 1000, source }
    }

    /// Feed TS bytes and publish every part they complete.
    pub fn push(&mut self, ts: &[u8]) -> Result<()> {
        if let Err(e) = self.packager.push(ts) {
            bail!("channel {}: {e}", self.channel);
        }
        self.publish_ready()
    }

    /// The next bytes do not continue the previous ones (loop, new encoder).
    pub fn discontinuity(&mut self) {
        self.packager.discontinuity();
    }

    /// Package a whole TS cut as one segment; returns its parts, in order, without publishing.
    fn package_cut(&mut self, cut: &TsCut) -> Result<Vec<SourcePart>> {
        if let Err(e) = self.packager.push(&cut.data) {
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
    fn announce(&self, init: Vec<u8>) {
        let info = RenditionInfo {
            codecs: self.packager.codecs(),
            resolution: self.packager.resolution().map(|(w, h)| (u32::from(w), u32::from(h))),
            init: Some(init),
            ..RenditionInfo::named(self.rendition.clone())
        };
        tracing::info!(channel = %self.channel, rendition = %self.rendition, codecs = ?info.codecs, "low-latency rendition ready (CMAF)");
        self.host.input(|n, now| n.set_local_channel(now, self.channel.clone(), self.source, vec![info]));
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
            let parts = match live.package_cut(cut) {
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

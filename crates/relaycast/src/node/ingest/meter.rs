//! Per-publisher metrics, the same for every live ingest (RTMP, SRT, a pushed TS stream): bytes
//! in (the bitrate), frames, drops, and the keyframe interval a streamer checks against the
//! 1–2 s players expect. Handles are registered once per publish, so counting costs no lookup
//! per frame.

use metrics::{Counter, Gauge};
use relaycast_core::Name;
use relaycast_core::cmaf::FrameCounts;

pub struct PublisherMeter {
    bytes: Counter,
    video: Counter,
    audio: Counter,
    dropped: Counter,
    keyframe_interval: Gauge,
    seen: FrameCounts,
}

impl PublisherMeter {
    pub fn new(channel: &Name, protocol: &'static str) -> Self {
        let ch = channel.to_string();
        Self {
            bytes: metrics::counter!("relaycast_publisher_bytes_total", "channel" => ch.clone(), "protocol" => protocol),
            video: metrics::counter!("relaycast_publisher_frames_total", "channel" => ch.clone(), "kind" => "video"),
            audio: metrics::counter!("relaycast_publisher_frames_total", "channel" => ch.clone(), "kind" => "audio"),
            dropped: metrics::counter!("relaycast_publisher_dropped_total", "channel" => ch.clone()),
            keyframe_interval: metrics::gauge!("relaycast_publisher_keyframe_interval_seconds", "channel" => ch),
            seen: FrameCounts::default(),
        }
    }

    pub fn received(&self, bytes: usize) {
        self.bytes.increment(bytes as u64);
    }

    /// Catch the frame counters up with what the publish's packager has taken in.
    pub fn frames(&mut self, now: FrameCounts) {
        self.video.increment(now.video.saturating_sub(self.seen.video));
        self.audio.increment(now.audio.saturating_sub(self.seen.audio));
        self.dropped.increment(now.dropped.saturating_sub(self.seen.dropped));
        if let Some(ticks) = now.keyframe_interval {
            self.keyframe_interval.set(ticks as f64 / 90_000.0);
        }
        self.seen = now;
    }
}

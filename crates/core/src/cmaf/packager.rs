//! The origin's CMAF packager: an MPEG-TS stream (or an RTMP publish's FLV tags) in, an init
//! segment and LL-HLS parts out.
//!
//! Segments start on a video keyframe once at least the segment target has passed; inside a
//! segment, a part is closed before the frame that would take it past the part target. A part
//! is handed out when the first frame after it arrives (that frame fixes the last one's
//! duration), so a part leaves the packager one frame after its last frame was captured.
//! Audio frames go into the part whose video time span they start in; ones that arrive late (TS
//! muxers interleave audio loosely) go into the next part, which fMP4 allows since each track
//! carries its own decode time.

use std::collections::VecDeque;

use bytes::Bytes;

use super::demux::{AudioConfig, DemuxError, Frame, Track, TsDemux, VideoConfig};
use super::flv::{FlvDemux, FlvError};
use super::mux::{self, AAC_FRAME, AUDIO_TRACK, Sample, TrackRun, VIDEO_TIMESCALE, VIDEO_TRACK};

/// How long to hold the first frames while waiting for the audio track the tables announce.
const AUDIO_WAIT_TICKS: u64 = 2 * VIDEO_TIMESCALE as u64;
/// Frame duration assumed until two frames have been seen (25 fps).
const DEFAULT_FRAME_TICKS: u64 = 3600;

/// Part and segment durations the packager aims for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackagerConfig {
    pub part_target_us: u32,
    pub segment_target_us: u32,
}

impl Default for PackagerConfig {
    fn default() -> Self {
        Self { part_target_us: 333_000, segment_target_us: 1_000_000 }
    }
}

/// One part, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagedPart {
    /// The packager's own segment counter (the source sequence for the node).
    pub segment: u64,
    /// Position of the part in its segment, from 0.
    pub index: u32,
    /// The part starts with a keyframe (EXT-X-PART INDEPENDENT=YES).
    pub independent: bool,
    /// The last part of its segment.
    pub last: bool,
    /// A discontinuity precedes this part's segment (set on part 0).
    pub discontinuity: bool,
    pub duration_us: u32,
    /// `moof` + `mdat`.
    pub data: Bytes,
}

/// What the packager produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packaged {
    /// A new init segment: the first one, or one for changed codec parameters (which also
    /// starts a discontinuity).
    Init(Bytes),
    Part(PackagedPart),
}

/// What a packager has taken in so far: a publisher's frame counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounts {
    pub video: u64,
    pub audio: u64,
    /// Frames or PES the demuxer could not read.
    pub dropped: u64,
    /// Decode-time distance between the last two keyframes, 90 kHz ticks.
    pub keyframe_interval: Option<u64>,
}

/// Where the frames come from.
#[derive(Debug)]
enum Source {
    Ts(TsDemux),
    Flv(FlvDemux),
}

impl Default for Source {
    fn default() -> Self {
        Self::Ts(TsDemux::new())
    }
}

impl Source {
    fn poll(&mut self) -> Option<Frame> {
        match self {
            Self::Ts(d) => d.poll(),
            Self::Flv(d) => d.poll(),
        }
    }

    fn video_config(&self) -> Option<&VideoConfig> {
        match self {
            Self::Ts(d) => d.video_config(),
            Self::Flv(d) => d.video_config(),
        }
    }

    fn audio_config(&self) -> Option<AudioConfig> {
        match self {
            Self::Ts(d) => d.audio_config(),
            Self::Flv(d) => d.audio_config(),
        }
    }

    /// Whether to hold the first frames for an audio track: TS announces it in its tables; an
    /// RTMP publisher sends its AAC config first if it has audio at all, so wait briefly.
    fn expects_audio(&self) -> bool {
        match self {
            Self::Ts(d) => d.expects_audio(),
            Self::Flv(_) => true,
        }
    }

    fn dropped(&self) -> u64 {
        match self {
            Self::Ts(d) => d.dropped,
            Self::Flv(d) => d.dropped,
        }
    }
}

/// The packager state machine. Feed TS with [`Packager::push`] (or FLV tags, for a packager
/// made with [`Packager::for_flv`]), take output with [`Packager::poll`].
#[derive(Debug, Default)]
pub struct Packager {
    config: PackagerConfig,
    source: Source,
    /// Frames held until the init segment can be written.
    held: Vec<Frame>,
    init: Option<(VideoConfig, Option<AudioConfig>)>,
    video: Vec<Frame>,
    audio: VecDeque<Frame>,
    /// Decode time where the open segment and part began (`None`: waiting for a keyframe).
    segment_start: Option<u64>,
    part_start: u64,
    segment: u64,
    index: u32,
    frame_ticks: u64,
    fragments: u32,
    discontinuity: bool,
    out: VecDeque<Packaged>,
    counts: FrameCounts,
    last_keyframe: Option<u64>,
}

impl Packager {
    pub fn new(config: PackagerConfig) -> Self {
        Self { config, frame_ticks: DEFAULT_FRAME_TICKS, ..Default::default() }
    }

    /// A packager fed with the FLV tags of an RTMP publish ([`Packager::push_video_tag`],
    /// [`Packager::push_audio_tag`]).
    pub fn for_flv(config: PackagerConfig) -> Self {
        Self { source: Source::Flv(FlvDemux::new()), ..Self::new(config) }
    }

    /// The codec strings of the current init segment (RFC 6381), once known.
    pub fn codecs(&self) -> Option<String> {
        let (v, a) = self.init.as_ref()?;
        Some(match a {
            Some(a) => format!("{},{}", v.codec(), a.codec()),
            None => v.codec(),
        })
    }

    /// Width and height of the video, once known.
    pub fn resolution(&self) -> Option<(u16, u16)> {
        self.init.as_ref().map(|(v, _)| (v.width, v.height))
    }

    /// Frames or PES the demuxer could not read so far.
    pub fn dropped(&self) -> u64 {
        self.source.dropped()
    }

    /// Frames taken in so far, and the keyframe interval.
    pub fn counts(&self) -> FrameCounts {
        FrameCounts { dropped: self.source.dropped(), ..self.counts }
    }

    /// Feed bytes of the TS stream.
    ///
    /// # Errors
    /// What [`TsDemux::push`] refuses: input that is not TS, or video that is not H.264.
    pub fn push(&mut self, ts: &[u8]) -> Result<(), DemuxError> {
        let Source::Ts(demux) = &mut self.source else { return Err(DemuxError::NotTs) };
        demux.push(ts)?;
        self.drain_demux();
        Ok(())
    }

    /// Feed one FLV video tag body at RTMP time `ms` (a packager made with [`Packager::for_flv`]).
    ///
    /// # Errors
    /// What [`FlvDemux::video_tag`] refuses (the tag is skipped; the stream may go on).
    pub fn push_video_tag(&mut self, ms: u32, tag: &[u8]) -> Result<(), FlvError> {
        let Source::Flv(flv) = &mut self.source else { return Err(FlvError::Malformed("FLV tag for a TS packager")) };
        let result = flv.video_tag(ms, tag);
        if flv.take_restart() {
            // The publisher's clock went back: close what was made, start over after a break.
            flv.reset_clock();
            self.end_segment();
            self.discontinuity = true;
        }
        self.drain_demux();
        result
    }

    /// Feed one FLV audio tag body at RTMP time `ms`.
    ///
    /// # Errors
    /// What [`FlvDemux::audio_tag`] refuses.
    pub fn push_audio_tag(&mut self, ms: u32, tag: &[u8]) -> Result<(), FlvError> {
        let Source::Flv(flv) = &mut self.source else { return Err(FlvError::Malformed("FLV tag for a TS packager")) };
        let result = flv.audio_tag(ms, tag);
        self.drain_demux();
        result
    }

    /// The input reached the end of a segment (a whole TS cut was fed): close the open part as
    /// the segment's last. The next segment starts at the next keyframe.
    pub fn end_segment(&mut self) {
        if let Source::Ts(demux) = &mut self.source {
            demux.flush();
        }
        self.drain_demux();
        self.start_held(true);
        if let Some(last) = self.video.last() {
            let until = last.dts + self.frame_ticks;
            self.emit_part(until, true);
            self.segment += 1;
            self.index = 0;
            self.segment_start = None;
        }
    }

    /// What follows does not continue what came before (a file looped, a source restarted):
    /// the next segment is marked as a discontinuity.
    pub fn discontinuity(&mut self) {
        self.discontinuity = true;
        match &mut self.source {
            Source::Ts(demux) => *demux = TsDemux::new(),
            // A reconnecting RTMP encoder may not send its codec configuration again.
            Source::Flv(flv) => flv.reset_clock(),
        }
        self.audio.clear();
    }

    pub fn poll(&mut self) -> Option<Packaged> {
        self.out.pop_front()
    }

    fn drain_demux(&mut self) {
        while let Some(frame) = self.source.poll() {
            self.count(&frame);
            if self.init.is_none() {
                self.held.push(frame);
                self.start_held(false);
            } else {
                self.frame(frame);
            }
        }
    }

    /// Write the init segment once the tracks are known, then process the held frames.
    fn start_held(&mut self, force: bool) {
        if self.init.is_some() {
            return;
        }
        let Some(video) = self.source.video_config().cloned() else { return };
        let audio = self.source.audio_config();
        let span = match (self.held.first(), self.held.last()) {
            (Some(a), Some(b)) => b.dts.saturating_sub(a.dts),
            _ => 0,
        };
        let waiting_for_audio = self.source.expects_audio() && audio.is_none() && span < AUDIO_WAIT_TICKS;
        if waiting_for_audio && !force {
            return;
        }
        self.out.push_back(Packaged::Init(mux::init_segment(&video, audio.as_ref())));
        self.init = Some((video, audio));
        for frame in std::mem::take(&mut self.held) {
            self.frame(frame);
        }
    }

    fn count(&mut self, frame: &Frame) {
        match frame.track {
            Track::Audio => self.counts.audio += 1,
            Track::Video => {
                self.counts.video += 1;
                if frame.keyframe {
                    if let Some(last) = self.last_keyframe.filter(|&l| l < frame.dts) {
                        self.counts.keyframe_interval = Some(frame.dts - last);
                    }
                    self.last_keyframe = Some(frame.dts);
                }
            }
        }
    }

    fn frame(&mut self, frame: Frame) {
        match frame.track {
            Track::Audio => {
                // Audio before the first keyframe has no segment to go into.
                if self.audio_config().is_some() && self.segment_start.is_some() {
                    self.audio.push_back(frame);
                }
            }
            Track::Video => self.video_frame(frame),
        }
    }

    fn audio_config(&self) -> Option<AudioConfig> {
        self.init.as_ref().and_then(|(_, a)| *a)
    }

    fn video_frame(&mut self, frame: Frame) {
        let Some(segment_start) = self.segment_start else {
            if frame.keyframe {
                self.open_segment(frame.dts);
                self.video.push(frame);
            }
            return;
        };
        if let Some(last) = self.video.last() {
            let gap = frame.dts.saturating_sub(last.dts);
            if gap > 0 && gap < u64::from(VIDEO_TIMESCALE) {
                self.frame_ticks = gap;
            }
        }
        let part_target = u64::from(self.config.part_target_us) * 90 / 1000;
        let segment_target = u64::from(self.config.segment_target_us) * 90 / 1000;
        let elapsed = frame.dts.saturating_sub(segment_start);
        let new_segment = frame.keyframe && elapsed + self.frame_ticks / 2 >= segment_target;
        let part_full = frame.dts.saturating_sub(self.part_start) + self.frame_ticks > part_target;
        if !self.video.is_empty() && (new_segment || part_full) {
            self.emit_part(frame.dts, new_segment);
            if new_segment {
                self.segment += 1;
                self.index = 0;
            }
        }
        if new_segment {
            self.open_segment(frame.dts);
        }
        if self.video.is_empty() {
            self.part_start = frame.dts;
        }
        self.video.push(frame);
    }

    fn open_segment(&mut self, dts: u64) {
        self.segment_start = Some(dts);
        self.part_start = dts;
        self.index = 0;
        self.audio.retain(|a| a.dts >= dts.saturating_sub(u64::from(VIDEO_TIMESCALE)));
    }

    /// Close the open part at decode time `until` and queue it.
    fn emit_part(&mut self, until: u64, last: bool) {
        let video = std::mem::take(&mut self.video);
        let Some(first) = video.first() else { return };
        let independent = first.keyframe;
        let start = first.dts;
        let mut samples = Vec::with_capacity(video.len());
        for (i, f) in video.iter().enumerate() {
            let next = video.get(i + 1).map_or(until, |n| n.dts);
            samples.push(Sample {
                duration: next.saturating_sub(f.dts).min(u64::from(u32::MAX)) as u32,
                cts: f.pts.saturating_sub(f.dts).min(i32::MAX as u64) as i32,
                sync: f.keyframe,
                data: f.data.clone(),
            });
        }
        let mut runs = vec![TrackRun { track: VIDEO_TRACK, base: start, samples }];
        if let Some(config) = self.audio_config() {
            let rate = u64::from(config.sample_rate);
            let take = self.audio.iter().take_while(|a| a.dts < until).count();
            let audio: Vec<Frame> = self.audio.drain(..take).collect();
            if let Some(first) = audio.first() {
                let samples = audio
                    .iter()
                    .map(|a| Sample { duration: AAC_FRAME, cts: 0, sync: true, data: a.data.clone() })
                    .collect();
                runs.push(TrackRun { track: AUDIO_TRACK, base: first.dts * rate / 90_000, samples });
            }
        }
        self.fragments = self.fragments.wrapping_add(1);
        let data = mux::fragment(self.fragments, &runs);
        let discontinuity = self.index == 0 && std::mem::take(&mut self.discontinuity);
        self.out.push_back(Packaged::Part(PackagedPart {
            segment: self.segment,
            index: self.index,
            independent,
            last,
            discontinuity,
            duration_us: (until.saturating_sub(start) * 1000 / 90).min(u64::from(u32::MAX)) as u32,
            data,
        }));
        self.index += 1;
    }
}

#[cfg(test)]
mod tests {
    use mp4_atom::{Any, Decode};

    use super::*;

    const SAMPLE: &[u8] = include_bytes!("../../../../assets/sample.ts");

    fn package(config: PackagerConfig, chunk: usize) -> (Bytes, Vec<PackagedPart>) {
        let mut p = Packager::new(config);
        for c in SAMPLE.chunks(chunk) {
            p.push(c).unwrap();
        }
        p.end_segment();
        let (mut init, mut parts) = (None, Vec::new());
        while let Some(out) = p.poll() {
            match out {
                Packaged::Init(b) => init = Some(b),
                Packaged::Part(part) => parts.push(part),
            }
        }
        assert_eq!(p.codecs().as_deref(), Some("avc1.4d4015,mp4a.40.2"));
        (init.expect("an init segment"), parts)
    }

    fn atoms(mut bytes: &[u8]) -> Vec<Any> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            out.push(Any::decode(&mut bytes).expect("a well-formed box"));
        }
        out
    }

    #[test]
    fn sample_clip_becomes_keyframe_aligned_segments_of_short_parts() {
        let (init, parts) = package(PackagerConfig::default(), 1316);
        let kinds: Vec<_> = atoms(&init).iter().map(|a| a.kind().to_string()).collect();
        assert_eq!(kinds, ["ftyp", "moov"]);
        let total: u64 = parts.iter().map(|p| u64::from(p.duration_us)).sum();
        assert!((11_000_000..=12_100_000).contains(&total), "total {total} us");
        for p in &parts {
            assert!(p.duration_us <= 333_000, "part {}.{} lasts {} us", p.segment, p.index, p.duration_us);
            assert_eq!(p.independent, p.index == 0, "part {}.{}", p.segment, p.index);
            let kinds: Vec<_> = atoms(&p.data).iter().map(|a| a.kind().to_string()).collect();
            assert_eq!(kinds, ["moof", "mdat"]);
        }
        // Segments: numbered from 0 without gaps, each closed by exactly one `last` part, about 1 s.
        let segments = parts.iter().filter(|p| p.last).count() as u64;
        assert_eq!(parts.last().map(|p| p.segment + 1), Some(segments));
        for s in 0..segments {
            let d: u32 = parts.iter().filter(|p| p.segment == s).map(|p| p.duration_us).sum();
            assert!(d >= 900_000, "segment {s} lasts {d} us");
        }
    }

    #[test]
    fn parts_do_not_depend_on_how_the_stream_was_chunked() {
        let (a_init, a) = package(PackagerConfig::default(), 188);
        let (b_init, b) = package(PackagerConfig::default(), 65536);
        assert_eq!(a_init, b_init);
        assert_eq!(a, b);
    }

    #[test]
    fn a_cut_ends_its_segment_and_a_discontinuity_marks_the_next() {
        let cuts = crate::ts::cut_at_keyframes(SAMPLE, 2_000_000).unwrap();
        let mut p = Packager::new(PackagerConfig { part_target_us: 500_000, segment_target_us: 10_000_000 });
        for (n, cut) in cuts.iter().take(2).enumerate() {
            if n == 1 {
                p.discontinuity();
            }
            p.push(&cut.data).unwrap();
            p.end_segment();
        }
        let parts: Vec<_> = std::iter::from_fn(|| p.poll())
            .filter_map(|o| if let Packaged::Part(p) = o { Some(p) } else { None })
            .collect();
        let lasts: Vec<_> = parts.iter().filter(|p| p.last).map(|p| p.segment).collect();
        assert_eq!(lasts, [0, 1]);
        let first_of_second = parts.iter().find(|p| p.segment == 1).unwrap();
        assert!(first_of_second.discontinuity && first_of_second.independent);
        let d0: u32 = parts.iter().filter(|p| p.segment == 0).map(|p| p.duration_us).sum();
        assert!(u64::from(d0).abs_diff(cuts[0].duration_us) <= 40_000, "{d0} vs {}", cuts[0].duration_us);
    }

    #[test]
    fn counts_every_frame_taken_in_and_the_keyframe_interval() {
        let mut p = Packager::new(PackagerConfig::default());
        p.push(SAMPLE).unwrap();
        p.end_segment();
        // ffprobe: 300 video packets, 564 audio, a keyframe every 90 000 ticks (1 s).
        let c = p.counts();
        assert_eq!((c.video, c.audio, c.dropped), (300, 564, 0));
        assert_eq!(c.keyframe_interval, Some(90_000));
    }
}

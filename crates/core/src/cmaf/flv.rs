//! FLV tags, as an RTMP publisher (OBS, ffmpeg `-f flv`) sends them, into the packager's frames:
//! H.264 (AVC) video and AAC audio. Sans-IO and total: any bytes give a frame, nothing, or an
//! error that names what was wrong, never a panic.
//!
//! - Video tag: `frame type (4 bits) | codec (4 bits)`, then for AVC (codec 7) the packet type
//!   (0 = AVCDecoderConfigurationRecord, 1 = NAL units), a signed 24-bit composition offset (ms),
//!   and the data. NAL units are length-prefixed (the record says how long the prefix is); they
//!   become 4-byte-prefixed samples without parameter sets or access-unit delimiters, as from
//!   the TS demuxer.
//! - Audio tag: `format (4 bits) | rate, size, channels`, then for AAC (format 10) the packet type
//!   (0 = AudioSpecificConfig, 1 = a raw frame).
//! - Timestamps are RTMP milliseconds (32 bits, wrapping); they are unwrapped and turned into the
//!   90 kHz clock. Video going back in time is dropped; a jump back of more than a second (an
//!   encoder restarted on the same connection) is also reported, so the packager closes the
//!   segment and starts the new timeline after a discontinuity.

use std::collections::VecDeque;

use bytes::Bytes;

use super::demux::{AudioConfig, Frame, Track, VideoConfig};
use super::sps;

/// AAC sampling frequencies by index (ISO/IEC 14496-3).
const AAC_RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
/// A jump back in time larger than this is a restart, not jitter.
const RESTART_BACK_MS: u64 = 1000;

/// Why a tag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("video codec {0} is not supported (only H.264/AVC; set the encoder to x264 or another H.264 encoder)")]
    VideoCodec(u8),
    #[error("audio format {0} is not supported (only AAC)")]
    AudioFormat(u8),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Unwraps a 32-bit millisecond clock onto 64 bits.
#[derive(Debug, Default, Clone, Copy)]
struct Clock {
    last: Option<u32>,
    epoch: u64,
}

impl Clock {
    fn unwrap(&mut self, raw: u32) -> u64 {
        if let Some(last) = self.last
            && raw < last
            && last - raw > u32::MAX / 2
        {
            self.epoch += 1 << 32;
        }
        self.last = Some(raw);
        self.epoch + u64::from(raw)
    }
}

/// The FLV demuxer state of one publish.
#[derive(Debug, Default)]
pub struct FlvDemux {
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    /// Bytes of each NAL unit's length prefix (from the decoder configuration record).
    nal_len: usize,
    clock: Clock,
    last_video_ms: Option<u64>,
    frames: VecDeque<Frame>,
    restarted: bool,
    /// Tags refused or dropped so far.
    pub dropped: u64,
}

impl FlvDemux {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn video_config(&self) -> Option<&VideoConfig> {
        self.video.as_ref()
    }

    pub fn audio_config(&self) -> Option<AudioConfig> {
        self.audio
    }

    pub fn poll(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// Whether the timestamps jumped back (cleared by reading it).
    pub fn take_restart(&mut self) -> bool {
        std::mem::take(&mut self.restarted)
    }

    /// Forget the timeline (a new publisher), keeping the codec configurations: an encoder that
    /// reconnects does not always send them again before its first frames.
    pub fn reset_clock(&mut self) {
        self.clock = Clock::default();
        self.last_video_ms = None;
        self.frames.clear();
    }

    /// One video tag's body at RTMP time `ms`.
    ///
    /// # Errors
    /// A codec other than AVC, or a body too short for its header or record.
    pub fn video_tag(&mut self, ms: u32, tag: &[u8]) -> Result<(), FlvError> {
        let &[head, packet_type, c0, c1, c2, ref body @ ..] = tag else {
            return Err(self.refuse(FlvError::Malformed("video tag (shorter than its 5-byte header)")));
        };
        let codec = head & 0x0F;
        if head & 0x80 != 0 {
            // Enhanced RTMP (HEVC, AV1...): the low bits are a packet type, not a codec.
            return Err(self.refuse(FlvError::VideoCodec(0x80 | codec)));
        }
        if codec != 7 {
            return Err(self.refuse(FlvError::VideoCodec(codec)));
        }
        match packet_type {
            0 => self.decoder_config(body),
            1 => {
                let time = self.clock.unwrap(ms);
                if let Some(last) = self.last_video_ms
                    && time < last
                {
                    // Either way this frame is dropped; after a restart the next keyframe opens
                    // a new segment.
                    self.restarted |= last - time > RESTART_BACK_MS;
                    self.dropped += 1;
                    return Ok(());
                }
                self.last_video_ms = Some(time);
                // Composition offset: signed 24 bits, milliseconds.
                let cts = (i32::from_be_bytes([c0, c1, c2, 0]) >> 8).max(0) as u64;
                self.nal_units(time, cts, head >> 4 == 1, body)
            }
            _ => Ok(()), // end of sequence
        }
    }

    /// One audio tag's body at RTMP time `ms`.
    ///
    /// # Errors
    /// A format other than AAC, or a body too short for its header or config.
    pub fn audio_tag(&mut self, ms: u32, tag: &[u8]) -> Result<(), FlvError> {
        let &[head, packet_type, ref body @ ..] = tag else {
            return Err(self.refuse(FlvError::Malformed("audio tag (shorter than its 2-byte header)")));
        };
        if head >> 4 != 10 {
            return Err(self.refuse(FlvError::AudioFormat(head >> 4)));
        }
        if packet_type == 0 {
            let &[b0, b1, ..] = body else {
                return Err(self.refuse(FlvError::Malformed("AudioSpecificConfig")));
            };
            let freq_index = ((b0 & 0x07) << 1) | (b1 >> 7);
            let Some(&sample_rate) = AAC_RATES.get(usize::from(freq_index)) else {
                return Err(self.refuse(FlvError::Malformed("AudioSpecificConfig (sampling frequency index)")));
            };
            self.audio =
                Some(AudioConfig { object_type: b0 >> 3, freq_index, sample_rate, channels: (b1 >> 3) & 0x0F });
            return Ok(());
        }
        if self.audio.is_none() || body.is_empty() {
            self.dropped += 1;
            return Ok(());
        }
        let at = self.clock.unwrap(ms) * 90;
        let frame = Frame { track: Track::Audio, dts: at, pts: at, keyframe: true, data: Bytes::copy_from_slice(body) };
        self.frames.push_back(frame);
        Ok(())
    }

    fn refuse(&mut self, e: FlvError) -> FlvError {
        self.dropped += 1;
        e
    }

    /// An AVCDecoderConfigurationRecord: the NAL length size, the first SPS and PPS.
    fn decoder_config(&mut self, record: &[u8]) -> Result<(), FlvError> {
        let bad = FlvError::Malformed("AVCDecoderConfigurationRecord");
        let (Some(&size), Some(&sps_count)) = (record.get(4), record.get(5)) else { return Err(self.refuse(bad)) };
        let mut at = 6;
        let take = |at: &mut usize| -> Option<Vec<u8>> {
            let len = usize::from(u16::from_be_bytes([*record.get(*at)?, *record.get(*at + 1)?]));
            let unit = record.get(*at + 2..*at + 2 + len)?.to_vec();
            *at += 2 + len;
            Some(unit)
        };
        let mut sps = None;
        for _ in 0..(sps_count & 0x1F) {
            let unit = take(&mut at);
            sps = sps.or(unit);
        }
        let pps_count = record.get(at).copied().unwrap_or(0);
        at += 1;
        let mut pps = None;
        for _ in 0..pps_count {
            let unit = take(&mut at);
            pps = pps.or(unit);
        }
        let (Some(sps), Some(pps)) = (sps, pps) else { return Err(self.refuse(bad)) };
        let (width, height) = sps::dimensions(&sps).unwrap_or((0, 0));
        self.nal_len = usize::from(size & 0x03) + 1;
        self.video = Some(VideoConfig { sps, pps, width, height });
        Ok(())
    }

    /// Length-prefixed NAL units into a 4-byte-prefixed sample.
    fn nal_units(&mut self, ms: u64, cts_ms: u64, keyframe: bool, mut body: &[u8]) -> Result<(), FlvError> {
        if self.video.is_none() {
            self.dropped += 1;
            return Ok(());
        }
        let n = self.nal_len;
        let mut sample = Vec::with_capacity(body.len() + 16);
        while !body.is_empty() {
            let Some(prefix) = body.get(..n) else { return Err(self.refuse(FlvError::Malformed("NAL unit length"))) };
            let len = prefix.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            let Some(nal) = body.get(n..n + len).filter(|nal| !nal.is_empty()) else {
                return Err(self.refuse(FlvError::Malformed("NAL unit (longer than its tag)")));
            };
            body = &body[n + len..];
            // Parameter sets live in the init segment; delimiters carry nothing.
            if !matches!(nal[0] & 0x1F, 7..=9) {
                sample.extend_from_slice(&(len as u32).to_be_bytes());
                sample.extend_from_slice(nal);
            }
        }
        if sample.is_empty() {
            return Ok(());
        }
        let dts = ms * 90;
        let frame = Frame { track: Track::Video, dts, pts: dts + cts_ms * 90, keyframe, data: Bytes::from(sample) };
        self.frames.push_back(frame);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SPS of a 320x180 x264 stream and a PPS.
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0x9f, 0x9e, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
        0x03, 0x03, 0x20, 0xf1, 0x42, 0x99, 0x60,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn record() -> Vec<u8> {
        let mut r = vec![1, SPS[1], SPS[2], SPS[3], 0xFF, 0xE1];
        r.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
        r.extend_from_slice(SPS);
        r.push(1);
        r.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        r.extend_from_slice(PPS);
        r
    }

    fn video(key: bool, packet: u8, cts: i32, body: &[u8]) -> Vec<u8> {
        let c = cts.to_be_bytes();
        let mut t = vec![if key { 0x17 } else { 0x27 }, packet, c[1], c[2], c[3]];
        t.extend_from_slice(body);
        t
    }

    #[test]
    fn avc_and_aac_tags_become_frames_and_configs() {
        let mut d = FlvDemux::new();
        d.video_tag(0, &video(true, 0, 0, &record())).unwrap();
        let v = d.video_config().unwrap();
        assert_eq!((v.sps.as_slice(), v.pps.as_slice()), (SPS, PPS));
        d.audio_tag(0, &[0xAF, 0, 0x11, 0x90]).unwrap(); // AAC LC, 48 kHz, stereo
        assert_eq!(
            d.audio_config(),
            Some(AudioConfig { object_type: 2, freq_index: 3, sample_rate: 48000, channels: 2 })
        );

        // An IDR with an AUD and an SPS in front: only the slice stays.
        let mut nals = Vec::new();
        for nal in [&[0x09u8, 0xF0][..], SPS, &[0x65, 1, 2, 3][..]] {
            nals.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            nals.extend_from_slice(nal);
        }
        d.video_tag(40, &video(true, 1, 80, &nals)).unwrap();
        d.audio_tag(41, &[0xAF, 1, 0xDE, 0xAD]).unwrap();
        let f = d.poll().unwrap();
        assert_eq!((f.track, f.dts, f.pts, f.keyframe), (Track::Video, 3600, 3600 + 7200, true));
        assert_eq!(f.data.as_ref(), &[0, 0, 0, 4, 0x65, 1, 2, 3]);
        let a = d.poll().unwrap();
        assert_eq!((a.track, a.dts, a.data.as_ref()), (Track::Audio, 41 * 90, &[0xDE, 0xAD][..]));
    }

    #[test]
    fn bad_tags_are_refused_and_time_is_unwrapped() {
        let mut d = FlvDemux::new();
        assert_eq!(d.video_tag(0, &[0x12, 0]), Err(FlvError::Malformed("video tag (shorter than its 5-byte header)")));
        assert_eq!(
            d.video_tag(0, &video(true, 1, 0, &[])[..5].iter().map(|b| b & 0xF0 | 2).collect::<Vec<_>>()),
            Err(FlvError::VideoCodec(2))
        );
        assert!(matches!(d.video_tag(0, &[0x9C, 1, 0, 0, 0]), Err(FlvError::VideoCodec(_))), "enhanced RTMP");
        assert_eq!(d.audio_tag(0, &[0x2F, 1, 0]), Err(FlvError::AudioFormat(2)));
        assert!(d.video_tag(0, &video(true, 0, 0, &[1, 2, 3])).is_err(), "a truncated record");
        d.video_tag(0, &video(true, 0, 0, &record())).unwrap();
        // A NAL length past the end of the tag.
        assert!(d.video_tag(0, &video(true, 1, 0, &[0, 0, 0, 9, 0x65])).is_err());
        // Wrapping 32-bit timestamps keep counting up; a jump back of seconds is a restart.
        let slice = [0, 0, 0, 2, 0x41, 0];
        d.video_tag(u32::MAX - 10, &video(false, 1, 0, &slice)).unwrap();
        d.video_tag(20, &video(false, 1, 0, &slice)).unwrap();
        let (a, b) = (d.poll().unwrap().dts, d.poll().unwrap().dts);
        assert_eq!(b - a, 31 * 90);
        assert!(!d.take_restart());
        d.video_tag(15, &video(false, 1, 0, &slice)).unwrap();
        assert!(d.poll().is_none() && !d.take_restart(), "a few ms back: dropped");
        d.video_tag(5000, &video(false, 1, 0, &slice)).unwrap();
        d.video_tag(100, &video(false, 1, 0, &slice)).unwrap();
        assert!(d.take_restart(), "seconds back: a restart");
        d.reset_clock();
        d.video_tag(0, &video(false, 1, 0, &slice)).unwrap();
        assert!(d.poll().is_some() && d.video_config().is_some(), "a reset keeps the codec configuration");
    }
}

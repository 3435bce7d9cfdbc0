//! A streaming MPEG-TS demuxer: bytes in, timed H.264 and AAC frames out.
//!
//! Unlike [`crate::ts`], which cuts whole files, this reads a live stream as it arrives (any
//! chunking, packets split across pushes) and hands out each frame as soon as its PES is
//! complete. Video frames come out in AVCC form (4-byte lengths, no start codes) with the
//! parameter sets and access unit delimiters taken out, since fMP4 carries parameter sets in the
//! init segment; audio frames are raw AAC with the ADTS header removed.

use std::collections::VecDeque;

use bytes::Bytes;

use super::sps;
use crate::ts::{self, PACKET_LEN, PAT_PID, Packet, SYNC_BYTE, VideoCodec};

/// Largest PES accepted (a 4K keyframe fits many times over); a bigger one is dropped.
const MAX_PES: usize = 8 * 1024 * 1024;
/// Bytes searched for a sync byte before the input is called garbage.
const MAX_RESYNC: usize = 64 * PACKET_LEN;
/// The 33-bit timestamps are unwrapped onto a 64-bit clock that starts this far up, so a clock
/// that steps backwards (a looped file) never goes below zero.
const CLOCK_BASE: u64 = 1 << 33;

/// Which track a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video,
    Audio,
}

/// One decoded-order frame. Timestamps are 90 kHz, unwrapped onto a 64-bit clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub track: Track,
    pub dts: u64,
    pub pts: u64,
    /// An IDR picture (always true for audio).
    pub keyframe: bool,
    pub data: Bytes,
}

/// What the init segment needs to describe the video track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub width: u16,
    pub height: u16,
}

impl VideoConfig {
    /// RFC 6381 codec string, e.g. `avc1.4d401e`.
    pub fn codec(&self) -> String {
        let b = |i: usize| self.sps.get(i).copied().unwrap_or(0);
        format!("avc1.{:02x}{:02x}{:02x}", b(1), b(2), b(3))
    }
}

/// What the init segment needs to describe the audio track (AAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioConfig {
    /// MPEG-4 audio object type (2 = AAC LC).
    pub object_type: u8,
    pub freq_index: u8,
    pub sample_rate: u32,
    pub channels: u8,
}

impl AudioConfig {
    pub fn codec(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

/// Why the input cannot be demuxed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    #[error("not an MPEG transport stream: no sync byte in {0} bytes")]
    NoSync(usize),
    #[error("the program's video is {0:?}; low-latency (fMP4) packaging needs H.264")]
    UnsupportedVideo(VideoCodec),
    #[error("this packager takes FLV tags (RTMP), not MPEG-TS")]
    NotTs,
}

/// A PES being gathered.
#[derive(Debug, Default)]
struct Pes {
    data: Vec<u8>,
    /// Declared PES length (0 = unbounded, ends with the next PES).
    declared: usize,
    overflow: bool,
}

/// The streaming demuxer. Feed it with [`TsDemux::push`], take frames with [`TsDemux::poll`].
#[derive(Debug, Default)]
pub struct TsDemux {
    pending: Vec<u8>,
    program: Option<u16>,
    pmt_pid: Option<u16>,
    video_pid: Option<u16>,
    audio_pid: Option<u16>,
    video_pes: Option<Pes>,
    audio_pes: Option<Pes>,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    clock: Option<(u64, u64)>,
    frames: VecDeque<Frame>,
    /// Bytes skipped since the last good packet.
    unsynced: usize,
    /// PES or frames that could not be read (counted, not fatal).
    pub dropped: u64,
}

impl TsDemux {
    pub fn new() -> Self {
        Self::default()
    }

    /// The video parameters, once an SPS and PPS have been seen.
    pub fn video_config(&self) -> Option<&VideoConfig> {
        self.video.as_ref()
    }

    /// The audio parameters, once an AAC frame has been seen.
    pub fn audio_config(&self) -> Option<AudioConfig> {
        self.audio
    }

    /// Whether the program tables announce an AAC track (so a packager knows to wait for it).
    pub fn expects_audio(&self) -> bool {
        self.audio_pid.is_some()
    }

    /// The next complete frame, in arrival order.
    pub fn poll(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// Feed bytes of the stream, in any chunking.
    ///
    /// # Errors
    /// [`DemuxError::NoSync`] when no packet sync can be found, [`DemuxError::UnsupportedVideo`]
    /// for a program whose video is not H.264. Damaged packets and PES are skipped and counted in
    /// [`TsDemux::dropped`].
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), DemuxError> {
        while !bytes.is_empty() {
            if self.pending.is_empty() && bytes.len() >= PACKET_LEN && bytes[0] == SYNC_BYTE {
                let (packet, rest) = bytes.split_at(PACKET_LEN);
                self.packet(packet)?;
                bytes = rest;
                continue;
            }
            let take = (PACKET_LEN - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending[0] != SYNC_BYTE {
                self.resync()?;
                continue;
            }
            if self.pending.len() == PACKET_LEN {
                let packet = std::mem::take(&mut self.pending);
                self.packet(&packet)?;
            }
        }
        Ok(())
    }

    /// The input ended: hand out the frames still being gathered.
    pub fn flush(&mut self) {
        if let Some(pes) = self.video_pes.take() {
            self.finish_video(pes);
        }
        if let Some(pes) = self.audio_pes.take() {
            self.finish_audio(pes);
        }
    }

    fn resync(&mut self) -> Result<(), DemuxError> {
        match self.pending.iter().position(|&b| b == SYNC_BYTE) {
            Some(at) => {
                self.pending.drain(..at);
            }
            None => {
                self.dropped += 1;
                self.unsynced += self.pending.len();
                self.pending.clear();
                if self.unsynced >= MAX_RESYNC {
                    return Err(DemuxError::NoSync(self.unsynced));
                }
            }
        }
        Ok(())
    }

    fn packet(&mut self, raw: &[u8]) -> Result<(), DemuxError> {
        let Ok(p) = Packet::parse(raw, 0) else {
            self.dropped += 1;
            return Ok(());
        };
        self.unsynced = 0;
        if p.pid == PAT_PID && p.unit_start {
            if let Some((program, pmt)) = ts::parse_pat(p.payload) {
                self.program = Some(program);
                self.pmt_pid = Some(pmt);
            }
        } else if Some(p.pid) == self.pmt_pid && p.unit_start {
            self.program_map(p.payload)?;
        } else if Some(p.pid) == self.video_pid {
            if let Some(done) = gather(&mut self.video_pes, &p) {
                self.finish_video(done);
            }
        } else if Some(p.pid) == self.audio_pid
            && let Some(done) = gather(&mut self.audio_pes, &p)
        {
            self.finish_audio(done);
        }
        Ok(())
    }

    fn program_map(&mut self, payload: &[u8]) -> Result<(), DemuxError> {
        let Some(streams) = self.program.and_then(|n| ts::parse_pmt(payload, n)) else {
            return Ok(());
        };
        match streams.video {
            Some((pid, VideoCodec::H264)) => self.video_pid = Some(pid),
            Some((_, other)) => return Err(DemuxError::UnsupportedVideo(other)),
            None => {}
        }
        self.audio_pid = streams.audio.filter(|_| streams.audio_type == 0x0F);
        Ok(())
    }

    fn timestamps(&mut self, pes: &[u8]) -> Option<(u64, u64, usize)> {
        let (pts, dts, offset) = pes_header(pes)?;
        let pts = self.unwrap(pts);
        let dts = dts.map_or(pts, |d| self.unwrap(d));
        Some((pts, dts, offset))
    }

    /// Map a 33-bit timestamp onto the 64-bit clock, following the shorter way from the last one.
    fn unwrap(&mut self, raw: u64) -> u64 {
        let ext = match self.clock {
            None => CLOCK_BASE + raw,
            Some((last_raw, last_ext)) => last_ext.saturating_add_signed(ts::pts_delta(last_raw, raw)),
        };
        self.clock = Some((raw, ext));
        ext
    }

    fn finish_video(&mut self, pes: Pes) {
        let Some((pts, dts, offset)) = self.timestamps(&pes.data).filter(|_| !pes.overflow) else {
            self.dropped += 1;
            return;
        };
        let mut sample = Vec::with_capacity(pes.data.len() + 16);
        let (mut keyframe, mut sps, mut pps) = (false, None, None);
        for nal in nal_units(&pes.data[offset..]) {
            match nal[0] & 0x1F {
                5 => keyframe = true,
                7 => sps = Some(nal.to_vec()),
                8 => pps = Some(nal.to_vec()),
                9 => continue,
                _ => {}
            }
            if matches!(nal[0] & 0x1F, 7 | 8) {
                continue;
            }
            sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            sample.extend_from_slice(nal);
        }
        if let (Some(sps), Some(pps)) = (sps, pps)
            && self.video.as_ref().is_none_or(|v| v.sps != sps || v.pps != pps)
        {
            let (width, height) = sps::dimensions(&sps).unwrap_or((0, 0));
            self.video = Some(VideoConfig { sps, pps, width, height });
        }
        if sample.is_empty() || self.video.is_none() {
            self.dropped += 1;
            return;
        }
        self.frames.push_back(Frame { track: Track::Video, dts, pts, keyframe, data: Bytes::from(sample) });
    }

    fn finish_audio(&mut self, pes: Pes) {
        let Some((pts, _, offset)) = self.timestamps(&pes.data).filter(|_| !pes.overflow) else {
            self.dropped += 1;
            return;
        };
        let mut rest = &pes.data[offset..];
        let mut n = 0u64;
        while let Some((config, header, len)) = adts_header(rest) {
            let Some(raw) = rest.get(header..len) else { break };
            self.audio = Some(config);
            let at = pts + n * 1024 * 90_000 / u64::from(config.sample_rate);
            self.frames.push_back(Frame {
                track: Track::Audio,
                dts: at,
                pts: at,
                keyframe: true,
                data: Bytes::copy_from_slice(raw),
            });
            rest = &rest[len..];
            n += 1;
        }
        if !rest.is_empty() {
            self.dropped += 1;
        }
    }
}

/// Add a packet to the PES being gathered; return the previous PES when this packet starts a new
/// one, or the current one when its declared length is reached.
fn gather(slot: &mut Option<Pes>, p: &Packet<'_>) -> Option<Pes> {
    let mut done = None;
    if p.unit_start {
        done = slot.take();
        let declared = match p.payload {
            [0, 0, 1, _, hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => 0,
        };
        *slot = Some(Pes { data: Vec::with_capacity(declared.max(4096)), declared, overflow: false });
    }
    let pes = slot.as_mut()?;
    if pes.data.len() + p.payload.len() > MAX_PES {
        pes.overflow = true;
    } else {
        pes.data.extend_from_slice(p.payload);
    }
    if pes.declared > 0 && pes.data.len() >= pes.declared + 6 {
        return done.or_else(|| slot.take());
    }
    done
}

/// (PTS, DTS, offset of the elementary stream) of a PES that carries a PTS.
fn pes_header(pes: &[u8]) -> Option<(u64, Option<u64>, usize)> {
    let [0x00, 0x00, 0x01, _, _, _, _, flags, header_len, ..] = *pes else {
        return None;
    };
    let stamp = |b: &[u8]| {
        (u64::from(b[0] >> 1) & 0x07) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1)
    };
    if flags & 0x80 == 0 {
        return None;
    }
    let pts = stamp(pes.get(9..14)?);
    let dts = if flags & 0x40 != 0 { Some(stamp(pes.get(14..19)?)) } else { None };
    let offset = 9 + usize::from(header_len);
    (offset <= pes.len()).then_some((pts, dts, offset))
}

/// The NAL units of an Annex B byte stream (start codes removed, trailing zeros trimmed).
fn nal_units(es: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= es.len() {
        if es[i] == 0 && es[i + 1] == 0 && es[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts.iter().skip(1).map(|&s| s - 3).chain(std::iter::once(es.len())).collect();
    starts.into_iter().zip(ends).filter_map(move |(s, e)| {
        let mut nal = es.get(s..e)?;
        while let [head @ .., 0] = nal {
            nal = head;
        }
        (!nal.is_empty()).then_some(nal)
    })
}

/// Parse an ADTS header: (config, header length, frame length incl. header).
fn adts_header(b: &[u8]) -> Option<(AudioConfig, usize, usize)> {
    if b.len() < 7 || b[0] != 0xFF || b[1] & 0xF0 != 0xF0 {
        return None;
    }
    let protection_absent = b[1] & 0x01 != 0;
    let object_type = (b[2] >> 6) + 1;
    let freq_index = (b[2] >> 2) & 0x0F;
    let channels = ((b[2] & 0x01) << 2) | (b[3] >> 6);
    let len = (usize::from(b[3] & 0x03) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
    let header = if protection_absent { 7 } else { 9 };
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let sample_rate = *RATES.get(usize::from(freq_index))?;
    (len > header).then_some((AudioConfig { object_type, freq_index, sample_rate, channels }, header, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = include_bytes!("../../../../assets/sample.ts");

    fn demux_all(chunk: usize) -> (TsDemux, Vec<Frame>) {
        let mut d = TsDemux::new();
        for c in SAMPLE.chunks(chunk) {
            d.push(c).unwrap();
        }
        d.flush();
        let frames = std::iter::from_fn(|| d.poll()).collect();
        (d, frames)
    }

    #[test]
    fn sample_clip_gives_h264_and_aac_frames_whatever_the_chunking() {
        let (d, frames) = demux_all(1000);
        let video: Vec<_> = frames.iter().filter(|f| f.track == Track::Video).collect();
        let audio: Vec<_> = frames.iter().filter(|f| f.track == Track::Audio).collect();
        // 12 s at 25 fps; 48 kHz AAC is 46.875 frames per second.
        assert!((290..=302).contains(&video.len()), "{} video frames", video.len());
        assert!((540..=570).contains(&audio.len()), "{} audio frames", audio.len());
        assert!(video[0].keyframe);
        let v = d.video_config().unwrap();
        assert_eq!((v.width, v.height), (426, 240));
        assert_eq!(v.codec(), "avc1.4d4015");
        let a = d.audio_config().unwrap();
        assert_eq!((a.sample_rate, a.channels, a.object_type), (48000, 1, 2));
        // Every sample is AVCC: lengths add up exactly.
        for f in &video {
            let mut rest = &f.data[..];
            while rest.len() >= 4 {
                let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                rest = &rest[4 + n..];
            }
            assert!(rest.is_empty());
        }
        let (_, odd) = demux_all(7);
        assert_eq!(odd, frames);
    }

    #[test]
    fn garbage_is_refused_and_damage_is_skipped() {
        let mut d = TsDemux::new();
        assert!(matches!(d.push(&[0x11; 20_000]), Err(DemuxError::NoSync(_))));
        let mut d = TsDemux::new();
        let mut damaged = SAMPLE.to_vec();
        for i in (5000..damaged.len()).step_by(9973) {
            damaged[i] ^= 0x5A;
        }
        d.push(&damaged).unwrap();
        d.flush();
        assert!(std::iter::from_fn(|| d.poll()).count() > 500);
    }
}

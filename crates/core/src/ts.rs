//! MPEG transport stream keyframe cutter.
//!
//! [`cut_at_keyframes`] splits a whole MPEG-TS file into [`TsCut`]s that each open with the program
//! tables (PAT + PMT) and a video keyframe, so every cut decodes on its own: the shape of an HLS
//! media segment. The module is pure: it reads only the bytes it is given, never the clock or the
//! file system, and never panics; bad input comes back as a [`TsError`].
//!
//! Scope: one program (the first one in the PAT), PSI sections that fit in one packet, and a
//! continuous PTS timeline (33-bit wraparound is handled, discontinuities are not).

use bytes::Bytes;

/// Size of one transport stream packet in bytes.
pub const PACKET_LEN: usize = 188;

/// PTS/DTS clock rate in Hz.
pub const PTS_HZ: u64 = 90_000;

/// One cut of a transport stream: starts with PAT+PMT and a video keyframe, so it decodes alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsCut {
    /// Whole 188-byte packets: a copy of the PAT, a copy of the PMT, then the stream's own packets
    /// from the keyframe up to the next cut.
    pub data: Bytes,
    /// Playback duration in microseconds, measured on the video PTS.
    pub duration_us: u64,
    /// PTS of the keyframe that opens the cut (90 kHz, 33 bits).
    pub first_pts: Option<u64>,
}

/// Why a buffer could not be cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    /// Fewer than two packets, or no 0x47 sync byte at the first two packet starts.
    #[error("not an MPEG transport stream (need 188-byte packets starting with 0x47)")]
    NotTransportStream,
    /// A packet later in the buffer does not start with the sync byte.
    #[error("lost packet sync at byte {offset}")]
    LostSync {
        /// Byte offset of the packet without sync.
        offset: usize,
    },
    /// An adaptation field claims to be longer than its packet.
    #[error("adaptation field overruns the packet at byte {offset}")]
    BadAdaptationField {
        /// Byte offset of the offending packet.
        offset: usize,
    },
    /// No valid PAT, or no valid PMT for the PAT's first program.
    #[error("no usable PAT and PMT in the stream")]
    NoProgramTables,
    /// The PMT lists no H.264, HEVC or MPEG-2 video stream.
    #[error("the program has no H.264, HEVC or MPEG-2 video stream")]
    NoVideoStream,
    /// The video stream has no keyframe carrying a PTS.
    #[error("no video keyframe with a PTS in the stream")]
    NoKeyframes,
}

/// Video codec of the elementary stream the cutter follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// Stream type 0x1B.
    H264,
    /// Stream type 0x24.
    Hevc,
    /// Stream type 0x02.
    Mpeg2,
}

/// The program the cutter works on, from the first valid PAT and PMT in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsProgram {
    /// Program number from the PAT.
    pub program_number: u16,
    /// PID carrying the PMT.
    pub pmt_pid: u16,
    /// PID of the first video elementary stream.
    pub video_pid: u16,
    /// Codec of that video stream.
    pub video_codec: VideoCodec,
    /// PID of the first audio elementary stream (AAC, MPEG audio, AC-3, E-AC-3), if any.
    pub audio_pid: Option<u16>,
}

/// Read the program tables of a transport stream without cutting it.
///
/// # Errors
///
/// [`TsError::NotTransportStream`], [`TsError::LostSync`] or [`TsError::BadAdaptationField`] for
/// bytes that are not whole TS packets; [`TsError::NoProgramTables`] or [`TsError::NoVideoStream`]
/// when no PAT/PMT pair describes a supported video stream.
pub fn probe(file: &[u8]) -> Result<TsProgram, TsError> {
    Ok(Tables::find(&packets(file)?)?.program)
}

/// Split a whole MPEG-TS file into segments that begin at video keyframes, each at least
/// `target_us` long (the last may be shorter).
///
/// Every cut opens with copies of the first valid PAT and PMT packets. Continuity counters on the
/// PAT and PMT PIDs are renumbered so they run on without a gap both inside a cut and across the
/// cuts played back to back; all other packets are copied unchanged, in file order. Video packets
/// before the first keyframe cannot be decoded and are dropped; any other packets before it go
/// into the first cut.
///
/// A keyframe is a packet that starts a video PES and has the random access indicator set; if no
/// video packet in the file sets that flag, it is a PES whose first picture is an H.264 IDR, an
/// HEVC IRAP or an MPEG-2 I picture. Keyframes without a PTS are not used as cut points.
///
/// Trailing bytes after the last whole packet are ignored, so a truncated file still cuts.
///
/// # Errors
///
/// Everything [`probe`] returns, and [`TsError::NoKeyframes`] when the video stream has no
/// keyframe with a PTS.
pub fn cut_at_keyframes(file: &[u8], target_us: u64) -> Result<Vec<TsCut>, TsError> {
    let packets = packets(file)?;
    let tables = Tables::find(&packets)?;
    let program = tables.program;
    let mut pes = video_pes(&packets, program.video_pid);
    let has_rai = pes.iter().any(|p| p.rai);
    if !has_rai {
        mark_keyframe_pictures(&packets, program, &mut pes);
    }
    let keyframes: Vec<(usize, u64)> = pes
        .iter()
        .filter(|p| if has_rai { p.rai } else { p.picture_keyframe })
        .filter_map(|p| Some((p.packet, p.pts?)))
        .collect();
    let Some(&first_keyframe) = keyframes.first() else {
        return Err(TsError::NoKeyframes);
    };

    // Greedy: the next cut is the first keyframe at least `target_us` after the current one.
    let mut starts = vec![first_keyframe];
    for &(packet, pts) in &keyframes[1..] {
        let Some(&(_, current)) = starts.last() else {
            break;
        };
        let delta = pts_delta(current, pts);
        if delta > 0 && ticks_to_us(delta.unsigned_abs()) >= target_us {
            starts.push((packet, pts));
        }
    }

    let frame_ticks = frame_interval(&pes, first_keyframe.1);
    let mut psi_cc = PsiCounters::default();
    let mut cuts = Vec::with_capacity(starts.len());
    for (n, &(start, first_pts)) in starts.iter().enumerate() {
        let next = starts.get(n + 1).copied();
        let end = next.map_or(packets.len(), |(packet, _)| packet);
        let ticks = match next {
            Some((_, next_pts)) => pts_delta(first_pts, next_pts).max(0).unsigned_abs(),
            None => {
                let last = pes
                    .iter()
                    .filter(|p| p.packet >= start)
                    .filter_map(|p| p.pts)
                    .map(|pts| pts_delta(first_pts, pts).max(0).unsigned_abs())
                    .max()
                    .unwrap_or(0);
                last + frame_ticks
            }
        };
        let from = if n == 0 { 0 } else { start };
        let mut data = Vec::with_capacity((end - from + 2) * PACKET_LEN);
        psi_cc.push(&mut data, tables.pat, program.pmt_pid);
        psi_cc.push(&mut data, tables.pmt, program.pmt_pid);
        for (index, packet) in packets.iter().enumerate().take(end).skip(from) {
            if packet.pid == program.video_pid && index < first_keyframe.0 {
                continue;
            }
            if packet.pid == PAT_PID || packet.pid == program.pmt_pid {
                psi_cc.push(&mut data, packet.raw, program.pmt_pid);
            } else {
                data.extend_from_slice(packet.raw);
            }
        }
        cuts.push(TsCut { data: Bytes::from(data), duration_us: ticks_to_us(ticks), first_pts: Some(first_pts) });
    }
    Ok(cuts)
}

/// Sum of the cuts' durations in microseconds.
pub fn total_duration_us(cuts: &[TsCut]) -> u64 {
    cuts.iter().fold(0, |sum, cut| sum.saturating_add(cut.duration_us))
}

pub(crate) const SYNC_BYTE: u8 = 0x47;
pub(crate) const PAT_PID: u16 = 0x0000;
const NULL_PID: u16 = 0x1FFF;
const PTS_MASK: u64 = (1 << 33) - 1;
/// Most bytes of one video PES searched for a keyframe picture when the stream sets no random
/// access indicators (x264 puts a ~1 KB SEI before the first IDR slice).
const MAX_PICTURE_SCAN: usize = 64 * 1024;

/// One 188-byte packet, parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packet<'a> {
    raw: &'a [u8],
    pub(crate) pid: u16,
    /// Payload unit start indicator.
    pub(crate) unit_start: bool,
    /// Random access indicator from the adaptation field.
    random_access: bool,
    /// Empty when the packet carries no payload.
    pub(crate) payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// `raw` must be exactly [`PACKET_LEN`] bytes starting with the sync byte.
    pub(crate) fn parse(raw: &'a [u8], offset: usize) -> Result<Self, TsError> {
        if raw.len() != PACKET_LEN || raw[0] != SYNC_BYTE {
            return Err(TsError::LostSync { offset });
        }
        let pid = u16::from_be_bytes([raw[1] & 0x1F, raw[2]]);
        let mut packet = Packet { raw, pid, unit_start: false, random_access: false, payload: &[] };
        // A packet the demodulator flagged as damaged is passed through but not interpreted.
        let transport_error = raw[1] & 0x80 != 0;
        if transport_error {
            return Ok(packet);
        }
        packet.unit_start = raw[1] & 0x40 != 0;
        let control = (raw[3] >> 4) & 0x3;
        let mut payload_start = 4;
        if control & 0x2 != 0 {
            let field_len = usize::from(raw[4]);
            if 5 + field_len > PACKET_LEN {
                return Err(TsError::BadAdaptationField { offset });
            }
            packet.random_access = field_len > 0 && raw[5] & 0x40 != 0;
            payload_start = 5 + field_len;
        }
        if control & 0x1 != 0 {
            packet.payload = raw.get(payload_start..).unwrap_or(&[]);
        }
        Ok(packet)
    }

    fn has_payload(raw: &[u8]) -> bool {
        raw.get(3).is_some_and(|b| b & 0x10 != 0)
    }
}

/// Split `file` into packets, ignoring a trailing partial packet.
fn packets(file: &[u8]) -> Result<Vec<Packet<'_>>, TsError> {
    let looks_like_ts =
        file.len() >= 2 * PACKET_LEN && file.first() == Some(&SYNC_BYTE) && file.get(PACKET_LEN) == Some(&SYNC_BYTE);
    if !looks_like_ts {
        return Err(TsError::NotTransportStream);
    }
    file.chunks_exact(PACKET_LEN).enumerate().map(|(i, raw)| Packet::parse(raw, i * PACKET_LEN)).collect()
}

/// The program tables every cut starts with.
struct Tables<'a> {
    pat: &'a [u8],
    pmt: &'a [u8],
    program: TsProgram,
}

impl<'a> Tables<'a> {
    fn find(packets: &[Packet<'a>]) -> Result<Self, TsError> {
        let Some((pat, program_number, pmt_pid)) = packets
            .iter()
            .filter(|p| p.pid == PAT_PID && p.unit_start)
            .find_map(|p| parse_pat(p.payload).map(|(number, pid)| (p.raw, number, pid)))
        else {
            return Err(TsError::NoProgramTables);
        };
        let mut saw_pmt = false;
        for packet in packets.iter().filter(|p| p.pid == pmt_pid && p.unit_start) {
            let Some(streams) = parse_pmt(packet.payload, program_number) else {
                continue;
            };
            saw_pmt = true;
            let Some((video_pid, video_codec)) = streams.video else {
                continue;
            };
            if video_pid == pmt_pid {
                continue;
            }
            let program = TsProgram {
                program_number,
                pmt_pid,
                video_pid,
                video_codec,
                audio_pid: streams.audio.filter(|&pid| pid != video_pid && pid != pmt_pid),
            };
            return Ok(Tables { pat, pmt: packet.raw, program });
        }
        Err(if saw_pmt { TsError::NoVideoStream } else { TsError::NoProgramTables })
    }
}

/// The complete PSI section that starts in this payload, CRC checked.
fn psi_section(payload: &[u8], table_id: u8) -> Option<&[u8]> {
    let pointer = usize::from(*payload.first()?);
    let section = payload.get(1 + pointer..)?;
    if *section.first()? != table_id {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([*section.get(1)? & 0x0F, *section.get(2)?]));
    // Extended header (5 bytes after the length) plus CRC (4 bytes).
    if length < 9 {
        return None;
    }
    let section = section.get(..3 + length)?;
    let syntax_and_current = section[1] & 0x80 != 0 && section[5] & 0x01 != 0;
    (syntax_and_current && crc32_mpeg2(section) == 0).then_some(section)
}

/// First program in a PAT: (program number, PMT PID).
pub(crate) fn parse_pat(payload: &[u8]) -> Option<(u16, u16)> {
    let section = psi_section(payload, 0x00)?;
    let entries = section.get(8..section.len() - 4)?;
    entries.chunks_exact(4).find_map(|entry| {
        let number = u16::from_be_bytes([entry[0], entry[1]]);
        let pid = u16::from_be_bytes([entry[2] & 0x1F, entry[3]]);
        (number != 0 && pid != PAT_PID && pid != NULL_PID).then_some((number, pid))
    })
}

pub(crate) struct PmtStreams {
    pub(crate) video: Option<(u16, VideoCodec)>,
    pub(crate) audio: Option<u16>,
    /// Stream type of `audio` (0x0F is AAC in ADTS).
    pub(crate) audio_type: u8,
}

pub(crate) fn parse_pmt(payload: &[u8], program_number: u16) -> Option<PmtStreams> {
    let section = psi_section(payload, 0x02)?;
    if u16::from_be_bytes([section[3], section[4]]) != program_number {
        return None;
    }
    let info_len = usize::from(u16::from_be_bytes([*section.get(10)? & 0x0F, *section.get(11)?]));
    let mut rest = section.get(12 + info_len..section.len() - 4)?;
    let mut streams = PmtStreams { video: None, audio: None, audio_type: 0 };
    while let [stream_type, pid_hi, pid_lo, len_hi, len_lo, tail @ ..] = rest {
        let pid = u16::from_be_bytes([pid_hi & 0x1F, *pid_lo]);
        let usable = pid != PAT_PID && pid != NULL_PID;
        let codec = match stream_type {
            0x1B => Some(VideoCodec::H264),
            0x24 => Some(VideoCodec::Hevc),
            0x02 => Some(VideoCodec::Mpeg2),
            _ => None,
        };
        let is_audio = matches!(stream_type, 0x03 | 0x04 | 0x0F | 0x11 | 0x81 | 0x87);
        if usable && streams.video.is_none() {
            streams.video = codec.map(|codec| (pid, codec));
        }
        if usable && is_audio && streams.audio.is_none() {
            streams.audio = Some(pid);
            streams.audio_type = *stream_type;
        }
        let info_len = usize::from(u16::from_be_bytes([len_hi & 0x0F, *len_lo]));
        rest = tail.get(info_len..)?;
    }
    Some(streams)
}

/// CRC-32/MPEG-2; over a whole section including its CRC field the result is 0.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04C1_1DB7 } else { crc << 1 };
        }
    }
    crc
}

/// A video PES, located by the packet that starts it.
#[derive(Debug, Clone, Copy)]
struct VideoPes {
    packet: usize,
    pts: Option<u64>,
    rai: bool,
    /// Where the elementary stream data begins in the first packet's payload.
    es_offset: usize,
    /// The first picture is an IDR / IRAP / I picture (filled in only when no packet has RAI).
    picture_keyframe: bool,
}

fn video_pes(packets: &[Packet<'_>], video_pid: u16) -> Vec<VideoPes> {
    packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.pid == video_pid && p.unit_start)
        .map(|(index, p)| {
            let (pts, es_offset) = parse_pes_header(p.payload).unwrap_or((None, p.payload.len()));
            VideoPes { packet: index, pts, rai: p.random_access, es_offset, picture_keyframe: false }
        })
        .collect()
}

/// (PTS, offset of the elementary stream data) from the start of a PES packet.
fn parse_pes_header(payload: &[u8]) -> Option<(Option<u64>, usize)> {
    let [0x00, 0x00, 0x01, stream_id, ..] = *payload else {
        return None;
    };
    // Stream ids without the optional PES header (padding, private_stream_2, ECM, EMM, ...).
    if matches!(stream_id, 0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF) {
        return Some((None, 6));
    }
    let flags = *payload.get(7)?;
    let header_len = usize::from(*payload.get(8)?);
    let pts = if flags & 0x80 != 0 {
        payload.get(9..14).map(|b| {
            (u64::from(b[0] >> 1) & 0x07) << 30
                | u64::from(b[1]) << 22
                | u64::from(b[2] >> 1) << 15
                | u64::from(b[3]) << 7
                | u64::from(b[4] >> 1)
        })
    } else {
        None
    };
    Some((pts, 9 + header_len))
}

/// Fill in [`VideoPes::picture_keyframe`] by reading the start of each PES's elementary stream.
fn mark_keyframe_pictures(packets: &[Packet<'_>], program: TsProgram, pes: &mut [VideoPes]) {
    let mut es = Vec::new();
    let mut current: Option<usize> = None;
    let mut next = 0;
    for (index, packet) in packets.iter().enumerate() {
        if packet.pid != program.video_pid {
            continue;
        }
        let starts = pes.get(next).filter(|p| p.packet == index).copied();
        if let Some(started) = starts {
            if let Some(done) = current.and_then(|c| pes.get_mut(c)) {
                done.picture_keyframe = starts_with_keyframe(program.video_codec, &es);
            }
            es.clear();
            es.extend_from_slice(packet.payload.get(started.es_offset..).unwrap_or(&[]));
            current = Some(next);
            next += 1;
        } else if current.is_some() && es.len() < MAX_PICTURE_SCAN {
            es.extend_from_slice(packet.payload);
        }
        es.truncate(MAX_PICTURE_SCAN);
    }
    if let Some(done) = current.and_then(|c| pes.get_mut(c)) {
        done.picture_keyframe = starts_with_keyframe(program.video_codec, &es);
    }
}

/// Whether the first picture in this elementary stream data is a random access point.
fn starts_with_keyframe(codec: VideoCodec, es: &[u8]) -> bool {
    let mut from = 0;
    while let Some(found) = es.get(from..).and_then(|rest| rest.windows(3).position(|w| w == [0, 0, 1])) {
        let header = from + found + 3;
        let Some(&byte) = es.get(header) else {
            return false;
        };
        match codec {
            VideoCodec::H264 => match byte & 0x1F {
                5 => return true,
                1..=4 => return false,
                _ => {}
            },
            VideoCodec::Hevc => match (byte >> 1) & 0x3F {
                16..=23 => return true,
                0..=15 | 24..=31 => return false,
                _ => {}
            },
            // Picture start code; picture_coding_type 1 is an I picture.
            VideoCodec::Mpeg2 if byte == 0x00 => {
                return es.get(header + 2).is_some_and(|b| (b >> 3) & 0x07 == 1);
            }
            VideoCodec::Mpeg2 => {}
        }
        from = header;
    }
    false
}

/// Median distance between consecutive distinct video PTS values, in 90 kHz ticks (0 if unknown).
fn frame_interval(pes: &[VideoPes], origin: u64) -> u64 {
    // Sort presentation times: with B-frames, PES order is decode order, not display order.
    let mut times: Vec<i64> = pes.iter().filter_map(|p| p.pts).map(|pts| pts_delta(origin, pts)).collect();
    times.sort_unstable();
    times.dedup();
    let mut gaps: Vec<u64> = times.windows(2).map(|w| w[1].abs_diff(w[0])).collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied().unwrap_or(0)
}

/// `to - from` on the 33-bit PTS clock, taking the shorter way round.
pub(crate) fn pts_delta(from: u64, to: u64) -> i64 {
    let forward = to.wrapping_sub(from) & PTS_MASK;
    // Both casts are lossless: `forward` has at most 33 bits.
    if forward > PTS_MASK / 2 { forward as i64 - (PTS_MASK as i64 + 1) } else { forward as i64 }
}

fn ticks_to_us(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000) / PTS_HZ
}

/// Continuity counters for the PAT and PMT packets written to the cuts.
#[derive(Default)]
struct PsiCounters {
    pat: u8,
    pmt: u8,
}

impl PsiCounters {
    /// Append a PAT or PMT packet with the next continuity counter for its PID.
    fn push(&mut self, out: &mut Vec<u8>, raw: &[u8], pmt_pid: u16) {
        let start = out.len();
        out.extend_from_slice(raw);
        let pid = u16::from_be_bytes([raw[1] & 0x1F, raw[2]]);
        let counter = if pid == pmt_pid { &mut self.pmt } else { &mut self.pat };
        if let Some(byte) = out.get_mut(start + 3) {
            *byte = (*byte & 0xF0) | *counter;
        }
        if Packet::has_payload(raw) {
            *counter = (*counter + 1) & 0x0F;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = include_bytes!("../../../assets/sample.ts");
    const SECOND: u64 = 1_000_000;
    /// The sample is 25 fps.
    const FRAME_US: u64 = 40_000;

    fn pid(packet: &[u8]) -> u16 {
        u16::from_be_bytes([packet[1] & 0x1F, packet[2]])
    }

    fn rai(packet: &[u8]) -> bool {
        packet[3] & 0x20 != 0 && packet[4] > 0 && packet[5] & 0x40 != 0
    }

    fn unit_start(packet: &[u8]) -> bool {
        packet[1] & 0x40 != 0
    }

    /// Tiny deterministic PRNG so the fuzz cases replay exactly.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn garbage_is_not_a_transport_stream() {
        let cases: [&[u8]; 5] = [b"", &[0x47], &[0xFF; 1000], b"#EXTM3U\n#EXT-X-VERSION:3\n", &SAMPLE[..PACKET_LEN]];
        for case in cases {
            assert_eq!(cut_at_keyframes(case, SECOND), Err(TsError::NotTransportStream));
        }
        // An M2TS file: every packet has a 4-byte timestamp in front.
        let mut m2ts = Vec::new();
        for packet in SAMPLE.chunks_exact(PACKET_LEN).take(100) {
            m2ts.extend_from_slice(&[0, 0, 0, 0]);
            m2ts.extend_from_slice(packet);
        }
        assert_eq!(cut_at_keyframes(&m2ts, SECOND), Err(TsError::NotTransportStream));
    }

    #[test]
    fn lost_sync_is_reported_with_its_offset() {
        let mut file = SAMPLE.to_vec();
        file[10 * PACKET_LEN] = 0x00;
        assert_eq!(cut_at_keyframes(&file, SECOND), Err(TsError::LostSync { offset: 10 * PACKET_LEN }));
    }

    #[test]
    fn truncated_files_cut_or_fail_cleanly() {
        // Only the first few packets: tables, maybe, but no whole keyframe with a PTS after them.
        let head = &SAMPLE[..3 * PACKET_LEN];
        assert!(cut_at_keyframes(head, SECOND).is_err());

        // Cut mid-packet, a bit past the middle: the partial packet is ignored.
        let half = SAMPLE.len() / 2 + 100;
        let cuts = cut_at_keyframes(&SAMPLE[..half], SECOND).expect("half a file still cuts");
        let full = cut_at_keyframes(SAMPLE, SECOND).expect("sample cuts");
        assert!(cuts.len() < full.len() && cuts.len() >= 4, "{} cuts", cuts.len());
        for cut in &cuts {
            assert_eq!(cut.data.len() % PACKET_LEN, 0);
        }
        for (short, long) in cuts.iter().zip(&full).take(cuts.len() - 1) {
            assert_eq!(short.duration_us, long.duration_us);
        }
    }

    #[test]
    fn stream_without_pat_has_no_program_tables() {
        let file: Vec<u8> = SAMPLE.chunks_exact(PACKET_LEN).filter(|p| pid(p) != PAT_PID).flatten().copied().collect();
        assert_eq!(cut_at_keyframes(&file, SECOND), Err(TsError::NoProgramTables));
    }

    #[test]
    fn stream_without_video_packets_has_no_keyframes() {
        let program = probe(SAMPLE).expect("sample has tables");
        let file: Vec<u8> =
            SAMPLE.chunks_exact(PACKET_LEN).filter(|p| pid(p) != program.video_pid).flatten().copied().collect();
        assert_eq!(cut_at_keyframes(&file, SECOND), Err(TsError::NoKeyframes));
    }

    #[test]
    fn probe_finds_h264_and_audio() {
        let program = probe(SAMPLE).expect("sample has tables");
        assert_eq!(program.video_codec, VideoCodec::H264);
        let audio = program.audio_pid.expect("sample has audio");
        assert_ne!(audio, program.video_pid);
        assert_ne!(program.pmt_pid, PAT_PID);
    }

    #[test]
    fn sample_cuts_at_keyframes() {
        let target = 2 * SECOND;
        let program = probe(SAMPLE).expect("sample has tables");
        let cuts = cut_at_keyframes(SAMPLE, target).expect("sample cuts");
        assert!(cuts.len() >= 4, "only {} cuts", cuts.len());

        let mut body = Vec::new();
        for (n, cut) in cuts.iter().enumerate() {
            assert_eq!(cut.data.len() % PACKET_LEN, 0, "cut {n} has a partial packet");
            let packets: Vec<&[u8]> = cut.data.chunks_exact(PACKET_LEN).collect();
            assert!(packets.iter().all(|p| p[0] == SYNC_BYTE));
            assert_eq!(pid(packets[0]), PAT_PID, "cut {n} must open with the PAT");
            assert_eq!(pid(packets[1]), program.pmt_pid, "cut {n} must follow with the PMT");
            let first_video = packets.iter().find(|p| pid(p) == program.video_pid).expect("every cut has video");
            assert!(unit_start(first_video) && rai(first_video), "cut {n} must open on a keyframe");
            if n + 1 < cuts.len() {
                assert!(cut.duration_us >= target, "cut {n} is {} us", cut.duration_us);
            }
            assert!(cut.first_pts.is_some());
            body.extend(packets[2..].iter().copied());
        }

        // Without the repeated tables, the cuts are the original packets in order. PAT/PMT
        // continuity counters are renumbered, so compare those packets without that nibble.
        let original: Vec<&[u8]> = SAMPLE.chunks_exact(PACKET_LEN).collect();
        assert_eq!(body.len(), original.len());
        for (i, (got, want)) in body.iter().zip(&original).enumerate() {
            if pid(want) == PAT_PID || pid(want) == program.pmt_pid {
                assert_eq!(got[..3], want[..3], "packet {i}");
                assert_eq!(got[3] & 0xF0, want[3] & 0xF0, "packet {i}");
                assert_eq!(got[4..], want[4..], "packet {i}");
            } else {
                assert_eq!(got, want, "packet {i}");
            }
        }

        // PAT and PMT counters run on without a gap across the concatenated cuts.
        for psi in [PAT_PID, program.pmt_pid] {
            let counters: Vec<u8> = cuts
                .iter()
                .flat_map(|c| c.data.chunks_exact(PACKET_LEN).map(<[u8]>::to_vec))
                .filter(|p| pid(p) == psi)
                .map(|p| p[3] & 0x0F)
                .collect();
            for pair in counters.windows(2) {
                assert_eq!(pair[1], (pair[0] + 1) & 0x0F);
            }
        }

        // The script makes 12 s at 25 fps; the cuts add up to it within one frame.
        let total = total_duration_us(&cuts);
        assert!(total.abs_diff(12 * SECOND) <= FRAME_US, "total {total} us");
        let keyframe_times: Vec<u64> = cuts.iter().filter_map(|c| c.first_pts).collect();
        for pair in keyframe_times.windows(2) {
            assert_eq!(pair[1] - pair[0], 2 * PTS_HZ);
        }
    }

    #[test]
    fn zero_target_cuts_at_every_keyframe() {
        let cuts = cut_at_keyframes(SAMPLE, 0).expect("sample cuts");
        // The script sets a keyframe every 25 frames = 1 s.
        assert_eq!(cuts.len(), 12);
        for cut in &cuts {
            assert_eq!(cut.duration_us, SECOND);
        }
    }

    #[test]
    fn without_random_access_flags_falls_back_to_idr_pictures() {
        let mut file = SAMPLE.to_vec();
        for packet in file.chunks_exact_mut(PACKET_LEN) {
            if packet[3] & 0x20 != 0 && packet[4] > 0 {
                packet[5] &= !0x40;
            }
        }
        assert!(file.chunks_exact(PACKET_LEN).all(|p| !rai(p)));
        let with_flags = cut_at_keyframes(SAMPLE, SECOND).expect("sample cuts");
        let without = cut_at_keyframes(&file, SECOND).expect("IDR fallback cuts");
        let starts =
            |cuts: &[TsCut]| -> Vec<(Option<u64>, u64)> { cuts.iter().map(|c| (c.first_pts, c.duration_us)).collect() };
        assert_eq!(starts(&with_flags), starts(&without));
    }

    #[test]
    fn keyframe_pictures_by_codec() {
        let aud_sps_idr = [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x65, 0x88];
        let p_slice = [0, 0, 0, 1, 0x09, 0x30, 0, 0, 1, 0x41, 0x9A];
        assert!(starts_with_keyframe(VideoCodec::H264, &aud_sps_idr));
        assert!(!starts_with_keyframe(VideoCodec::H264, &p_slice));
        // HEVC: VPS (32), then IDR_W_RADL (19); then a TRAIL_R (1).
        assert!(starts_with_keyframe(VideoCodec::Hevc, &[0, 0, 1, 0x40, 1, 0, 0, 1, 0x26, 1]));
        assert!(!starts_with_keyframe(VideoCodec::Hevc, &[0, 0, 1, 0x02, 1]));
        // MPEG-2: sequence header, then a picture with picture_coding_type 1 (I) or 2 (P).
        assert!(starts_with_keyframe(VideoCodec::Mpeg2, &[0, 0, 1, 0xB3, 0, 0, 0, 1, 0, 0, 0x08]));
        assert!(!starts_with_keyframe(VideoCodec::Mpeg2, &[0, 0, 1, 0, 0, 0x10]));
        assert!(!starts_with_keyframe(VideoCodec::H264, &[0, 0, 1]));
        assert!(!starts_with_keyframe(VideoCodec::H264, &[]));
    }

    #[test]
    fn pts_arithmetic_wraps_at_33_bits() {
        assert_eq!(pts_delta(100, 3700), 3600);
        assert_eq!(pts_delta(3700, 100), -3600);
        assert_eq!(pts_delta(PTS_MASK - 1799, 1800), 3600);
        assert_eq!(pts_delta(1800, PTS_MASK - 1799), -3600);
        assert_eq!(ticks_to_us(PTS_HZ), SECOND);
        assert_eq!(ticks_to_us(3600), FRAME_US);
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    #[test]
    fn random_and_damaged_input_never_panics() {
        let mut rng = XorShift(0x5EED_CAFE_F00D_D00D);
        let program = probe(SAMPLE).expect("sample has tables");
        let pids = [PAT_PID, program.pmt_pid, program.video_pid, NULL_PID];
        // The sample's opening packets: tables, the first keyframe's PES header, audio.
        let pool: Vec<&[u8]> = SAMPLE.chunks_exact(PACKET_LEN).take(60).collect();

        // Pure noise, and noise shaped like packets: sync bytes, the sample's PIDs, and damaged
        // copies of real packets, so the table, PES and picture parsers all see junk.
        for round in 0..1000 {
            let len = rng.below(40 * PACKET_LEN);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if round % 2 == 1 {
                for packet in buf.chunks_exact_mut(PACKET_LEN) {
                    if rng.below(3) == 0 {
                        packet.copy_from_slice(pool[rng.below(pool.len())]);
                        let at = rng.below(PACKET_LEN);
                        packet[at] ^= 1 << rng.below(8);
                    } else {
                        let [hi, lo] = pids[rng.below(pids.len())].to_be_bytes();
                        packet[1] = (packet[1] & 0xE0) | hi;
                        packet[2] = lo;
                    }
                    packet[0] = SYNC_BYTE;
                }
            }
            let _ = cut_at_keyframes(&buf, rng.next() % (3 * SECOND));
            let _ = probe(&buf);
        }

        // Truncations and bit flips of the real file.
        for _ in 0..100 {
            let len = rng.below(SAMPLE.len() + 1);
            let _ = cut_at_keyframes(&SAMPLE[..len], SECOND);
        }
        for _ in 0..100 {
            let mut file = SAMPLE.to_vec();
            for _ in 0..1 + rng.below(64) {
                let at = rng.below(file.len());
                file[at] ^= 1 << rng.below(8);
            }
            if let Ok(cuts) = cut_at_keyframes(&file, rng.next() % (3 * SECOND)) {
                assert!(cuts.iter().all(|c| c.data.len() % PACKET_LEN == 0));
            }
        }
    }
}

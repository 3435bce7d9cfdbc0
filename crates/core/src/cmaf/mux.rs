//! fMP4 (CMAF) boxes: the init segment of a rendition and the `moof`+`mdat` fragments its
//! parts are made of, encoded with `mp4-atom`.
//!
//! Track 1 is H.264 video on a 90 kHz timescale, track 2 (when present) AAC audio on its sample
//! rate. Fragments use `default-base-is-moof`, so a part decodes wherever it is cut out.

use bytes::Bytes;
use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
use mp4_atom::{
    Audio, Avc1, Avcc, Codec, Dinf, Dref, Encode, Esds, Ftyp, Hdlr, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex,
    Mvhd, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

use super::demux::{AudioConfig, VideoConfig};

pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Samples per AAC frame.
pub const AAC_FRAME: u32 = 1024;

/// Sample flags: a sync sample (depends on nothing) and a non-sync one.
const SYNC: u32 = 0x0200_0000;
const NON_SYNC: u32 = 0x0101_0000;

/// One sample of a fragment, in its track's timescale.
#[derive(Debug, Clone)]
pub struct Sample {
    pub duration: u32,
    /// Presentation minus decode time.
    pub cts: i32,
    pub sync: bool,
    pub data: Bytes,
}

/// A track's share of one fragment.
#[derive(Debug, Clone)]
pub struct TrackRun {
    pub track: u32,
    /// Decode time of the first sample (`tfdt`), in the track's timescale.
    pub base: u64,
    pub samples: Vec<Sample>,
}

fn encode(atom: &impl Encode, out: &mut Vec<u8>) {
    // Encoding into a Vec cannot run out of room; the only errors are values a box cannot hold,
    // which the caller's types rule out.
    atom.encode(out).expect("fMP4 box encodes");
}

/// The init segment (`ftyp` + `moov`) for a video track and an optional audio track.
pub fn init_segment(video: &VideoConfig, audio: Option<&AudioConfig>) -> Bytes {
    let mut out = Vec::with_capacity(1024);
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    encode(&ftyp, &mut out);
    let mut trak = vec![video_trak(video)];
    let mut trex = vec![Trex { track_id: VIDEO_TRACK, default_sample_description_index: 1, ..Default::default() }];
    if let Some(a) = audio {
        trak.push(audio_trak(a));
        trex.push(Trex { track_id: AUDIO_TRACK, default_sample_description_index: 1, ..Default::default() });
    }
    let moov = Moov {
        mvhd: Mvhd { timescale: 1000, rate: 1.into(), volume: 1.into(), next_track_id: 3, ..Default::default() },
        mvex: Some(Mvex { mehd: None, trex }),
        trak,
        ..Default::default()
    };
    encode(&moov, &mut out);
    Bytes::from(out)
}

fn stbl(codec: Codec) -> Stbl {
    Stbl { stsd: Stsd { codecs: vec![codec] }, stco: Some(Stco::default()), ..Default::default() }
}

fn dinf() -> Dinf {
    Dinf { dref: Dref { entries: vec![Url::default().into()] } }
}

fn video_trak(v: &VideoConfig) -> Trak {
    let b = |i: usize| v.sps.get(i).copied().unwrap_or(0);
    let avc1 = Avc1 {
        visual: Visual {
            data_reference_index: 1,
            width: v.width,
            height: v.height,
            compressor: "".into(),
            ..Default::default()
        },
        avcc: Avcc {
            configuration_version: 1,
            avc_profile_indication: b(1),
            profile_compatibility: b(2),
            avc_level_indication: b(3),
            length_size: 4,
            sequence_parameter_sets: vec![v.sps.clone()],
            picture_parameter_sets: vec![v.pps.clone()],
            ext: None,
        },
        ..Default::default()
    };
    Trak {
        tkhd: Tkhd {
            track_id: VIDEO_TRACK,
            enabled: true,
            in_movie: true,
            width: v.width.into(),
            height: v.height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale: VIDEO_TIMESCALE, language: "und".into(), ..Default::default() },
            hdlr: Hdlr { handler: b"vide".into(), name: "Relaycast video".into() },
            minf: Minf { vmhd: Some(Vmhd::default()), dinf: dinf(), stbl: stbl(avc1.into()), ..Default::default() },
        },
        ..Default::default()
    }
}

fn audio_trak(a: &AudioConfig) -> Trak {
    let mp4a = Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(a.channels.max(1)),
            sample_size: 16,
            sample_rate: (a.sample_rate.min(u32::from(u16::MAX)) as u16).into(),
        },
        esds: Esds {
            es_desc: EsDescriptor {
                es_id: AUDIO_TRACK as u16,
                dec_config: DecoderConfig {
                    object_type_indication: 0x40,
                    stream_type: 0x05,
                    up_stream: 0,
                    dec_specific: Some(DecoderSpecific {
                        profile: a.object_type,
                        freq_index: a.freq_index,
                        chan_conf: a.channels,
                        raw: Vec::new(),
                    }),
                    ..Default::default()
                },
                sl_config: SLConfig::default(),
                ..Default::default()
            },
        },
        btrt: None,
        taic: None,
    };
    Trak {
        tkhd: Tkhd {
            track_id: AUDIO_TRACK,
            enabled: true,
            in_movie: true,
            alternate_group: 1,
            volume: 1.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale: a.sample_rate, language: "und".into(), ..Default::default() },
            hdlr: Hdlr { handler: b"soun".into(), name: "Relaycast audio".into() },
            minf: Minf { smhd: Some(Smhd::default()), dinf: dinf(), stbl: stbl(mp4a.into()), ..Default::default() },
        },
        ..Default::default()
    }
}

/// One `moof` + `mdat` carrying `runs` (tracks without samples are left out).
pub fn fragment(sequence_number: u32, runs: &[TrackRun]) -> Bytes {
    let runs: Vec<&TrackRun> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let moof_with = |offsets: &[i32]| Moof {
        mfhd: Mfhd { sequence_number },
        traf: runs
            .iter()
            .zip(offsets)
            .map(|(run, &offset)| Traf {
                tfhd: Tfhd { track_id: run.track, default_base_is_moof: true, ..Default::default() },
                tfdt: Some(Tfdt { base_media_decode_time: run.base }),
                trun: vec![Trun {
                    data_offset: Some(offset),
                    samples: TrunSamples::Explicit(
                        run.samples
                            .iter()
                            .map(|s| TrunEntry {
                                duration: Some(s.duration),
                                size: Some(s.data.len() as u32),
                                flags: Some(if s.sync { SYNC } else { NON_SYNC }),
                                cts: Some(i64::from(s.cts)),
                            })
                            .collect(),
                    ),
                }],
                ..Default::default()
            })
            .collect(),
    };
    // The data offsets point from the start of the moof into the mdat; the moof's size does
    // not depend on their values, so measure it once with zeros.
    let mut probe = Vec::new();
    encode(&moof_with(&vec![0; runs.len()]), &mut probe);
    let mut offsets = Vec::with_capacity(runs.len());
    let mut at = probe.len() + 8;
    for run in &runs {
        offsets.push(at as i32);
        at += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let mut out = Vec::with_capacity(at);
    encode(&moof_with(&offsets), &mut out);
    let mdat_len = (at - out.len()) as u32;
    out.extend_from_slice(&mdat_len.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for run in &runs {
        for s in &run.samples {
            out.extend_from_slice(&s.data);
        }
    }
    Bytes::from(out)
}

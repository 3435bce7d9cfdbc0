//! The wire format between nodes.
//!
//! Two kinds of frames travel between a parent and a child:
//! - **control messages** ([`Message`]) on one bidirectional stream, each a big-endian `u32`
//!   length followed by a postcard body, at most [`MAX_CONTROL_FRAME`] bytes;
//! - **segments**, one per unidirectional stream: a fixed [`SEGMENT_HEADER_LEN`]-byte header, the
//!   channel and rendition names, then the payload (see [`SegmentHeader`]).
//!
//! Every decoder returns `Ok(None)` when it needs more bytes, an error for anything malformed or
//! over a limit, and never panics: these bytes come from the network.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::media::{Name, Part, PartMeta, RenditionInfo, Segment, SegmentMeta};
use crate::p2p::signing::{SIGNATURE_LEN, Signature};

/// Version of this wire format; a peer with another version is refused at `Hello`.
pub const PROTOCOL_VERSION: u16 = 6;
/// Largest control frame body, in bytes.
pub const MAX_CONTROL_FRAME: usize = 256 * 1024;
/// Size of the fixed part of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 34;
/// Default limit on a segment payload (a 2 s segment at 60 Mbit/s is 15 MB).
pub const DEFAULT_MAX_SEGMENT: usize = 32 * 1024 * 1024;

const SEGMENT_MAGIC: [u8; 2] = *b"RC";
const SEGMENT_VERSION: u8 = 1;
const FLAG_DISCONTINUITY: u8 = 0x01;
/// The names are followed by the origin's 64-byte signature (F53). Frames without it decode as
/// before, so unsigned clusters are unaffected.
const FLAG_SIGNED: u8 = 0x02;
/// The frame carries one part of a segment; a part trailer follows the names.
const FLAG_PART: u8 = 0x04;
/// Part trailer: index (4), then part flags (1).
const PART_TRAILER_LEN: usize = 5;
const PART_INDEPENDENT: u8 = 0x01;
const PART_LAST: u8 = 0x02;

/// A control message between two nodes.
///
/// Links are symmetric once the handshake is done: the dialer says `Hello`, the other side
/// answers `Welcome`; then both advertise their route to the origin, and either may attach to
/// the other as its parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message from the dialing side: who it is and the cluster token that admits it.
    Hello {
        version: u16,
        node: String,
        id: u64,
        token: String,
    },
    /// The answer to an accepted `Hello`.
    Welcome {
        node: String,
        id: u64,
    },
    /// The sender's route to the origin (a tree flood, F11): flood id, accumulated one-way
    /// latency in microseconds, hop count, and the node ids from the origin to the sender.
    Route(Route),
    /// The sender's route in a new flood over the same path as the last `Route` it sent this
    /// receiver (the control stream is ordered, so the sender knows what the receiver holds):
    /// 24 bytes instead of the whole path. `path_digest` ([`path_digest`]) lets the receiver
    /// check that it holds that path.
    RouteRefresh {
        flood: u64,
        latency_us: u64,
        path_digest: u64,
    },
    /// The sender has no route to the origin at the moment.
    NoRoute,
    /// Asks for a route from a flood newer than `flood` (Babel's seqno request, RFC 8966
    /// §3.8.2.2): sent by a relay that must repair and has no feasible route; relays pass it
    /// up to their parent, and the origin answers with a new flood.
    RouteRequest {
        flood: u64,
    },
    /// The sender takes the receiver as its parent.
    Attach,
    /// The receiver accepted `Attach`.
    Attached,
    /// The receiver refused `Attach` (at capacity, or it would make a loop).
    AttachRefused {
        reason: String,
    },
    /// The sender no longer takes the receiver as its parent.
    Detach,
    /// The channels the sender can deliver; sent to attached children, and on change.
    Catalog {
        channels: Vec<ChannelEntry>,
    },
    /// Start sending a channel. `resume` lists, per rendition, the last sequence the child holds,
    /// so the parent sends only what is newer.
    ///
    /// `joining`: the child holds nothing of the channel yet. The parent then sends at least its
    /// join backfill as well, and `resume` is the point of the grandchild whose subscription made
    /// the child carry the channel: what that grandchild misses is still sent, and the child
    /// starts with the backfill every new carrier gets.
    Subscribe {
        channel: Name,
        resume: Vec<(Name, u64)>,
        joining: bool,
    },
    /// Stop sending a channel.
    Unsubscribe {
        channel: Name,
    },
    /// The parent cannot deliver this channel.
    Refused {
        channel: Name,
        reason: String,
    },
    /// Keep-alive probe and its answer (also an RTT sample). `rtt_us` is the sender's smoothed
    /// RTT to the receiver (0: none yet), so that only one side of a link need probe.
    Ping {
        nonce: u64,
        rtt_us: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Parent to child, every keep-alive: the parent is alive (one way; the child's floods
    /// prove the child alive in turn).
    Alive,
}

/// A route to the origin, as advertised in a tree flood.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Flood round, started by the origin; newer floods win.
    pub flood: u64,
    /// Accumulated one-way latency from the origin to the sender, microseconds.
    pub latency_us: u64,
    /// Hops from the origin to the sender.
    pub hops: u32,
    /// Node ids from the origin to the sender, inclusive; a node never takes a route that
    /// already contains itself, so no loop can form. Shared: a flood sends the same path to
    /// every neighbour, and cloning it is then a reference count, not a copy.
    pub path: std::sync::Arc<[u64]>,
}

/// A digest of a route path (FNV-1a over the ids), to check a [`Message::RouteRefresh`]
/// against the path the receiver holds.
pub fn path_digest(path: &[u64]) -> u64 {
    path.iter().fold(0xcbf2_9ce4_8422_2325, |h, id| (h ^ id).wrapping_mul(0x0100_0000_01b3))
}

/// Longest route path accepted (a deeper tree is refused as malformed).
pub const MAX_PATH: usize = 256;

/// One channel in a catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEntry {
    pub name: Name,
    pub renditions: Vec<RenditionInfo>,
    /// What feeds it at the origin: "file", "pull", "push", ...
    pub source: String,
    /// Who may watch it; every edge enforces what the origin declared.
    pub playback: Playback,
    /// AES-128 encrypted with this many segments per key (F7); `None`: in the clear.
    pub encryption: Option<u32>,
}

/// Who may watch a channel (F71).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Playback {
    /// Anyone who knows the URL.
    #[default]
    Public,
    /// Only viewers holding a valid playback token for the channel.
    Signed,
}

impl Playback {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Signed => "signed",
        }
    }
}

impl std::str::FromStr for Playback {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "public" => Ok(Self::Public),
            "signed" => Ok(Self::Signed),
            other => Err(format!("playback must be `public` or `signed`, got {other:?}")),
        }
    }
}

/// Why bytes from a peer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("control frame of {0} bytes exceeds the {MAX_CONTROL_FRAME}-byte limit")]
    ControlTooLarge(usize),
    #[error("malformed control message: {0}")]
    BadControl(String),
    #[error("not a segment frame (bad magic)")]
    BadMagic,
    #[error("unsupported segment frame version {0}")]
    BadVersion(u8),
    #[error("segment payload of {len} bytes exceeds the {limit}-byte limit")]
    SegmentTooLarge { len: usize, limit: usize },
    #[error("invalid name in segment header: {0}")]
    BadName(String),
}

/// Encode a control message as a length-prefixed frame.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    // Invariant: postcard serialisation of our own types into a Vec cannot fail.
    let body = postcard::to_stdvec(msg).expect("postcard encodes Message");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decode one control frame from the front of `buf`: `Ok(Some((msg, consumed)))`, or `Ok(None)`
/// when `buf` does not yet hold a whole frame.
pub fn decode_message(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len > MAX_CONTROL_FRAME {
        return Err(WireError::ControlTooLarge(len));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let msg = postcard::from_bytes(body).map_err(|e| WireError::BadControl(e.to_string()))?;
    Ok(Some((msg, 4 + len)))
}

/// The header in front of every segment payload.
///
/// Layout (big-endian): magic `RC` (2), version (1), flags (1), channel name length (1),
/// rendition name length (1), duration_us (4), seq (8), disc_seq (4), origin_ms (8),
/// payload length (4) — 34 bytes — then the channel and rendition names, then (flag `0x04`) a
/// part trailer, then (flag `0x02`) the origin's 64-byte signature.
///
/// A part frame (flag `0x04`) carries one part of segment `seq`: `duration_us` and `origin_ms`
/// are the part's, and the trailer gives its index and whether it is independent and the last.
/// Older decoders refuse nothing they used to accept: whole-segment frames are unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub channel: Name,
    pub rendition: Name,
    pub meta: SegmentMeta,
    pub payload_len: usize,
    pub signature: Option<Signature>,
    pub part: Option<PartInfo>,
}

/// What a part frame adds to the segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartInfo {
    pub index: u32,
    pub independent: bool,
    pub last: bool,
}

impl SegmentHeader {
    /// Encode the header (fixed part + names); the payload follows it on the stream.
    pub fn encode(&self) -> Bytes {
        let (c, r) = (self.channel.as_str().as_bytes(), self.rendition.as_str().as_bytes());
        let mut out = BytesMut::with_capacity(SEGMENT_HEADER_LEN + c.len() + r.len() + SIGNATURE_LEN);
        out.put_slice(&SEGMENT_MAGIC);
        out.put_u8(SEGMENT_VERSION);
        let mut flags = if self.meta.discontinuity { FLAG_DISCONTINUITY } else { 0 };
        if self.signature.is_some() {
            flags |= FLAG_SIGNED;
        }
        if self.part.is_some() {
            flags |= FLAG_PART;
        }
        out.put_u8(flags);
        out.put_u8(c.len() as u8);
        out.put_u8(r.len() as u8);
        out.put_u32(self.meta.duration_us);
        out.put_u64(self.meta.seq);
        out.put_u32(self.meta.disc_seq);
        out.put_u64(self.meta.origin_ms);
        out.put_u32(self.payload_len as u32);
        debug_assert_eq!(out.len(), SEGMENT_HEADER_LEN);
        out.put_slice(c);
        out.put_slice(r);
        if let Some(p) = &self.part {
            out.put_u32(p.index);
            let independent = if p.independent { PART_INDEPENDENT } else { 0 };
            out.put_u8(independent | if p.last { PART_LAST } else { 0 });
        }
        if let Some(sig) = &self.signature {
            out.put_slice(sig);
        }
        out.freeze()
    }

    /// Bytes that follow the fixed header (names, and the signature if flagged): what a reader
    /// must read after the fixed part before [`Self::decode`] can succeed.
    pub fn trailer_len(fixed: &[u8; SEGMENT_HEADER_LEN]) -> usize {
        let sig = if fixed[3] & FLAG_SIGNED != 0 { SIGNATURE_LEN } else { 0 };
        let part = if fixed[3] & FLAG_PART != 0 { PART_TRAILER_LEN } else { 0 };
        usize::from(fixed[4]) + usize::from(fixed[5]) + part + sig
    }

    /// Decode a header from the front of `buf`: `Ok(Some((header, consumed)))`, or `Ok(None)`
    /// when more bytes are needed. Payloads over `max_payload` are refused here, before any of
    /// them is read.
    pub fn decode(buf: &[u8], max_payload: usize) -> Result<Option<(Self, usize)>, WireError> {
        let Some(fixed) = buf.get(..SEGMENT_HEADER_LEN) else {
            // Reject garbage as early as possible rather than waiting for 32 bytes.
            if buf.len() >= 2 && buf[..2] != SEGMENT_MAGIC {
                return Err(WireError::BadMagic);
            }
            return Ok(None);
        };
        if fixed[..2] != SEGMENT_MAGIC {
            return Err(WireError::BadMagic);
        }
        if fixed[2] != SEGMENT_VERSION {
            return Err(WireError::BadVersion(fixed[2]));
        }
        let flags = fixed[3];
        let (clen, rlen) = (fixed[4] as usize, fixed[5] as usize);
        let u32_at = |i: usize| u32::from_be_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        let duration_us = u32_at(6);
        let seq = u64_at(10);
        let disc_seq = u32_at(18);
        let origin_ms = u64_at(22);
        let payload_len = u32_at(30) as usize;
        if payload_len > max_payload {
            return Err(WireError::SegmentTooLarge { len: payload_len, limit: max_payload });
        }
        let sig_len = if flags & FLAG_SIGNED != 0 { SIGNATURE_LEN } else { 0 };
        let part_len = if flags & FLAG_PART != 0 { PART_TRAILER_LEN } else { 0 };
        let Some(names) = buf.get(SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + clen + rlen + part_len + sig_len) else {
            return Ok(None);
        };
        let name = |b: &[u8]| {
            let s = std::str::from_utf8(b).map_err(|e| WireError::BadName(e.to_string()))?;
            Name::new(s).map_err(|e| WireError::BadName(e.to_string()))
        };
        let channel = name(&names[..clen])?;
        let rendition = name(&names[clen..clen + rlen])?;
        let trailer = &names[clen + rlen..];
        let part = (part_len > 0).then(|| PartInfo {
            index: u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]),
            independent: trailer[4] & PART_INDEPENDENT != 0,
            last: trailer[4] & PART_LAST != 0,
        });
        let signature = (sig_len > 0).then(|| {
            let mut sig = [0u8; SIGNATURE_LEN];
            sig.copy_from_slice(&trailer[part_len..]);
            sig
        });
        let meta =
            SegmentMeta { seq, disc_seq, discontinuity: flags & FLAG_DISCONTINUITY != 0, duration_us, origin_ms };
        Ok(Some((
            Self { channel, rendition, meta, payload_len, signature, part },
            SEGMENT_HEADER_LEN + clen + rlen + part_len + sig_len,
        )))
    }

    /// The header for sending `segment` of `channel`/`rendition`.
    pub fn for_segment(channel: &Name, rendition: &Name, segment: &Segment) -> Self {
        Self {
            channel: channel.clone(),
            rendition: rendition.clone(),
            meta: segment.meta,
            payload_len: segment.data.len(),
            signature: segment.signature,
            part: None,
        }
    }

    /// The header for sending one part of a segment.
    pub fn for_part(channel: &Name, rendition: &Name, part: &Part) -> Self {
        let m = part.meta;
        Self {
            channel: channel.clone(),
            rendition: rendition.clone(),
            meta: SegmentMeta {
                seq: m.seq,
                disc_seq: m.disc_seq,
                discontinuity: m.discontinuity,
                duration_us: m.duration_us,
                origin_ms: m.origin_ms,
            },
            payload_len: part.data.len(),
            signature: part.signature,
            part: Some(PartInfo { index: m.index, independent: m.independent, last: m.last }),
        }
    }

    /// The part this frame carries, with its payload; `None` for a whole-segment frame.
    pub fn into_part(self, data: Bytes) -> Option<Part> {
        let p = self.part?;
        let m = self.meta;
        let meta = PartMeta {
            seq: m.seq,
            index: p.index,
            disc_seq: m.disc_seq,
            discontinuity: m.discontinuity,
            duration_us: m.duration_us,
            independent: p.independent,
            last: p.last,
            origin_ms: m.origin_ms,
        };
        Some(Part { meta, data, signature: self.signature })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn name_strategy() -> impl Strategy<Value = Name> {
        "[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,63}".prop_map(|s| Name::new(s).unwrap())
    }

    fn meta_strategy() -> impl Strategy<Value = SegmentMeta> {
        (any::<u64>(), any::<u32>(), any::<bool>(), any::<u32>(), any::<u64>()).prop_map(
            |(seq, disc_seq, discontinuity, duration_us, origin_ms)| SegmentMeta {
                seq,
                disc_seq,
                discontinuity,
                duration_us,
                origin_ms,
            },
        )
    }

    fn message_strategy() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u16>(), ".{0,40}", any::<u64>(), ".{0,40}").prop_map(|(version, node, id, token)| Message::Hello {
                version,
                node,
                id,
                token
            }),
            (any::<u64>(), any::<u64>(), any::<u32>(), proptest::collection::vec(any::<u64>(), 0..20)).prop_map(
                |(flood, latency_us, hops, path)| Message::Route(Route { flood, latency_us, hops, path: path.into() })
            ),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(flood, latency_us, path_digest)| {
                Message::RouteRefresh { flood, latency_us, path_digest }
            }),
            Just(Message::Attach),
            Just(Message::NoRoute),
            (name_strategy(), proptest::collection::vec((name_strategy(), any::<u64>()), 0..4), any::<bool>())
                .prop_map(|(channel, resume, joining)| Message::Subscribe { channel, resume, joining }),
            name_strategy().prop_map(|channel| Message::Unsubscribe { channel }),
            (name_strategy(), ".{0,80}").prop_map(|(channel, reason)| Message::Refused { channel, reason }),
            (any::<u64>(), any::<u64>()).prop_map(|(nonce, rtt_us)| Message::Ping { nonce, rtt_us }),
            Just(Message::Alive),
            proptest::collection::vec(
                (name_strategy(), name_strategy(), proptest::option::of(any::<u32>()), "[a-z]{0,8}"),
                0..5
            )
            .prop_map(|v| Message::Catalog {
                channels: v
                    .into_iter()
                    .map(|(name, r, bandwidth, source)| ChannelEntry {
                        name,
                        renditions: vec![RenditionInfo { bandwidth, ..RenditionInfo::named(r) }],
                        source,
                        playback: if bandwidth.is_some() { Playback::Signed } else { Playback::Public },
                        encryption: bandwidth.map(|b| b % 16 + 1),
                    })
                    .collect()
            }),
        ]
    }

    proptest! {
        #[test]
        fn control_round_trip(msg in message_strategy()) {
            let bytes = encode_message(&msg);
            let (decoded, used) = decode_message(&bytes).unwrap().unwrap();
            prop_assert_eq!(decoded, msg);
            prop_assert_eq!(used, bytes.len());
            // Every strict prefix asks for more bytes instead of failing or panicking.
            for cut in 0..bytes.len() {
                let r = decode_message(&bytes[..cut]);
                prop_assert!(matches!(r, Ok(None) | Err(_)));
            }
        }

        #[test]
        fn segment_header_round_trip(c in name_strategy(), r in name_strategy(), meta in meta_strategy(), len in 0usize..1_000_000, sig in proptest::option::of(any::<u8>()), part in proptest::option::of((any::<u32>(), any::<bool>(), any::<bool>()))) {
            let signature = sig.map(|b| [b; SIGNATURE_LEN]);
            let part = part.map(|(index, independent, last)| PartInfo { index, independent, last });
            let h = SegmentHeader { channel: c, rendition: r, meta, payload_len: len, signature, part };
            let bytes = h.encode();
            let (decoded, used) = SegmentHeader::decode(&bytes, DEFAULT_MAX_SEGMENT).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(decoded, h);
            for cut in 0..bytes.len() {
                prop_assert_eq!(SegmentHeader::decode(&bytes[..cut], DEFAULT_MAX_SEGMENT), Ok(None));
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_message(&bytes);
            let _ = SegmentHeader::decode(&bytes, DEFAULT_MAX_SEGMENT);
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading_them() {
        let mut buf = (MAX_CONTROL_FRAME as u32 + 1).to_be_bytes().to_vec();
        buf.extend_from_slice(&[0; 16]);
        assert_eq!(decode_message(&buf), Err(WireError::ControlTooLarge(MAX_CONTROL_FRAME + 1)));

        let h = SegmentHeader {
            channel: Name::new("a").unwrap(),
            rendition: Name::new("b").unwrap(),
            meta: SegmentMeta { seq: 1, disc_seq: 0, discontinuity: false, duration_us: 1, origin_ms: 1 },
            payload_len: 1000,
            signature: None,
            part: None,
        };
        assert_eq!(SegmentHeader::decode(&h.encode(), 999), Err(WireError::SegmentTooLarge { len: 1000, limit: 999 }));
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(SegmentHeader::decode(b"GET / HTTP/1.1\r\n", 100), Err(WireError::BadMagic));
        let mut h = SegmentHeader {
            channel: Name::new("a").unwrap(),
            rendition: Name::new("b").unwrap(),
            meta: SegmentMeta { seq: 1, disc_seq: 0, discontinuity: true, duration_us: 1, origin_ms: 1 },
            payload_len: 0,
            signature: None,
            part: None,
        }
        .encode()
        .to_vec();
        h[SEGMENT_HEADER_LEN] = b'/';
        assert!(matches!(SegmentHeader::decode(&h, 100), Err(WireError::BadName(_))));
        // A length prefix followed by bytes that are not a Message.
        let mut bad = 3u32.to_be_bytes().to_vec();
        bad.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(decode_message(&bad), Err(WireError::BadControl(_))));
    }
}

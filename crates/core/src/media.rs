//! The media model: channels have renditions, renditions are sequences of numbered segments.
//!
//! Segments are opaque, immutable byte blobs (MPEG-TS today) with the metadata every node needs to
//! serve them as HLS and to measure delay: sequence number, duration, discontinuity sequence and the
//! wall-clock time at which the origin had the whole segment.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Longest channel or rendition name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A validated channel or rendition name: 1–64 bytes of `[A-Za-z0-9_.-]`, not starting with `.`.
///
/// Names appear in URLs and file names, so the alphabet is kept URL- and path-safe.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("name may only contain letters, digits, '_', '-' and '.', and may not start with '.'")]
    BadCharacter,
}

impl Name {
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if s.starts_with('.') || !s.chars().all(ok) {
            return Err(NameError::BadCharacter);
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::new(s).map_err(serde::de::Error::custom)
    }
}

/// What a player needs to know about a rendition to pick it from a master playlist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenditionInfo {
    pub name: Name,
    /// Peak bits per second, if known (EXT-X-STREAM-INF BANDWIDTH).
    pub bandwidth: Option<u32>,
    /// Width and height in pixels, if known.
    pub resolution: Option<(u32, u32)>,
    /// RFC 6381 codec string, if known.
    pub codecs: Option<String>,
    /// The fMP4 init segment (`ftyp`+`moov`) of a low-latency rendition, whose segments are
    /// made of CMAF parts; `None` for an MPEG-TS rendition.
    pub init: Option<Vec<u8>>,
}

impl RenditionInfo {
    pub fn named(name: Name) -> Self {
        Self { name, bandwidth: None, resolution: None, codecs: None, init: None }
    }
}

/// Metadata of one segment: everything except its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Media sequence number; strictly increasing within a rendition, shared across renditions.
    pub seq: u64,
    /// Discontinuity sequence number of this segment (EXT-X-DISCONTINUITY-SEQUENCE semantics).
    pub disc_seq: u32,
    /// True when a discontinuity precedes this segment (source looped, restarted or changed).
    pub discontinuity: bool,
    /// Duration in microseconds.
    pub duration_us: u32,
    /// Unix time in milliseconds at which the origin had the whole segment (F8).
    pub origin_ms: u64,
}

/// Length of a signature (Ed25519).
pub const SIGNATURE_LEN: usize = 64;
/// A segment signature.
pub type Signature = [u8; SIGNATURE_LEN];

/// A segment: metadata plus its immutable bytes (cheap to clone, fan-out by refcount).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub meta: SegmentMeta,
    pub data: Bytes,
    /// The origin's signature over the segment's digest (F53), when the origin signs; it travels
    /// with the segment down the tree so edges can hand it to viewers (the layout it signs is in `p2p::signing`).
    pub signature: Option<Signature>,
}

/// Metadata of one part of a segment (an LL-HLS partial segment: one `moof`+`mdat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    /// Sequence number of the segment the part belongs to.
    pub seq: u64,
    /// Position in the segment, from 0.
    pub index: u32,
    /// The segment's discontinuity sequence and flag (the same on every part of a segment).
    pub disc_seq: u32,
    pub discontinuity: bool,
    pub duration_us: u32,
    /// Starts with a keyframe (EXT-X-PART INDEPENDENT=YES).
    pub independent: bool,
    /// The segment's last part: with it, the segment is whole.
    pub last: bool,
    /// Unix time in milliseconds at which the origin had the whole part.
    pub origin_ms: u64,
}

/// A part: metadata plus its bytes. The last part of a segment carries the origin's signature
/// over the whole segment, so the assembled segment verifies like any other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub meta: PartMeta,
    pub data: Bytes,
    pub signature: Option<Signature>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_url_safe() {
        assert!(Name::new("demo").is_ok());
        assert!(Name::new("cam_1.hd-720").is_ok());
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new("a/b"), Err(NameError::BadCharacter));
        assert_eq!(Name::new(".."), Err(NameError::BadCharacter));
        assert_eq!(Name::new("é"), Err(NameError::BadCharacter));
        assert_eq!(Name::new("x".repeat(65)), Err(NameError::TooLong));
    }

    #[test]
    fn names_are_validated_when_deserialized() {
        let bad: Result<Name, _> = serde_json::from_str("\"../etc\"");
        assert!(bad.is_err());
    }
}

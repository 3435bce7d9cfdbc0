//! Messages between viewers (F50), bounded like everything that comes from the network.
//!
//! Each QUIC connection between two viewers carries one bidirectional control stream (each side
//! sends `Hello`, then `Have` updates) and one bidirectional stream per request: the asker
//! writes `Request`, the holder answers `Piece` followed by exactly `len` raw bytes, or
//! `Reject`. Frames are a big-endian `u32` length and a postcard body of at most
//! [`MAX_PEER_FRAME`] bytes; decoding never panics and checks every bound.

use serde::{Deserialize, Serialize};

use super::signing::SIGNATURE_LEN;
use crate::media::Name;

/// Largest control frame body between viewers.
pub const MAX_PEER_FRAME: usize = 8 * 1024;
/// Most sequence numbers in one `Have` (the have-map covers recent segments only).
pub const MAX_HAVE: usize = 64;
/// Longest region label accepted.
pub const MAX_REGION: usize = 64;

/// A message between two viewers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// First message on the control stream: what the sender watches.
    Hello { channel: Name, rendition: Name, viewer: u64, region: String },
    /// Verified segments the sender holds (recent ones; replaces the previous have-map).
    Have { seqs: Vec<u64> },
    /// Ask for one segment.
    Request { seq: u64 },
    /// The answer: `len` bytes follow on the stream, signed by the origin. `origin_ms` is the
    /// origin's timestamp (for delay measurement only; it is not covered by the signature).
    Piece { seq: u64, len: u32, origin_ms: u64, signature: Vec<u8> },
    /// The holder will not send it.
    Reject { seq: u64, reason: RejectReason },
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// Not held (any more), or not verified yet.
    NotHeld,
    /// Every upload slot is busy.
    Busy,
    /// The asker is choked.
    Choked,
}

/// Why bytes from a viewer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerWireError {
    #[error("peer frame of {0} bytes exceeds the {MAX_PEER_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed peer message: {0}")]
    Malformed(String),
    #[error("peer message out of bounds: {0}")]
    OutOfBounds(&'static str),
}

/// Encode a message as a length-prefixed frame.
pub fn encode(msg: &PeerMessage) -> Vec<u8> {
    // Invariant: postcard serialisation of our own types into a Vec cannot fail.
    let body = postcard::to_stdvec(msg).expect("postcard encodes PeerMessage");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decode one frame from the front of `buf`: `Ok(Some((msg, consumed)))`, `Ok(None)` when more
/// bytes are needed. A `Piece` longer than `max_piece` is refused before its bytes are read.
pub fn decode(buf: &[u8], max_piece: usize) -> Result<Option<(PeerMessage, usize)>, PeerWireError> {
    let Some(len_bytes) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if len > MAX_PEER_FRAME {
        return Err(PeerWireError::TooLarge(len));
    }
    let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
    let msg: PeerMessage = postcard::from_bytes(body).map_err(|e| PeerWireError::Malformed(e.to_string()))?;
    match &msg {
        PeerMessage::Hello { region, .. } if region.len() > MAX_REGION => {
            return Err(PeerWireError::OutOfBounds("region label too long"));
        }
        PeerMessage::Have { seqs } if seqs.len() > MAX_HAVE => {
            return Err(PeerWireError::OutOfBounds("have-map too long"));
        }
        PeerMessage::Piece { signature, .. } if signature.len() != SIGNATURE_LEN => {
            return Err(PeerWireError::OutOfBounds("signature is not 64 bytes"));
        }
        PeerMessage::Piece { len, .. } if *len as usize > max_piece => {
            return Err(PeerWireError::OutOfBounds("piece larger than the segment limit"));
        }
        _ => {}
    }
    Ok(Some((msg, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let msgs = [
            PeerMessage::Hello {
                channel: Name::new("c").unwrap(),
                rendition: Name::new("r").unwrap(),
                viewer: 7,
                region: "eu".into(),
            },
            PeerMessage::Have { seqs: vec![1, 2, 3] },
            PeerMessage::Request { seq: 9 },
            PeerMessage::Piece { seq: 9, len: 100, origin_ms: 5, signature: vec![1; 64] },
            PeerMessage::Reject { seq: 9, reason: RejectReason::Busy },
        ];
        for m in msgs {
            let b = encode(&m);
            assert_eq!(decode(&b, 1000).unwrap(), Some((m, b.len())));
            assert_eq!(decode(&b[..b.len() - 1], 1000).unwrap(), None);
        }
        let big = encode(&PeerMessage::Piece { seq: 1, len: 2000, origin_ms: 0, signature: vec![0; 64] });
        assert!(matches!(decode(&big, 1000), Err(PeerWireError::OutOfBounds(_))));
        let short_sig = encode(&PeerMessage::Piece { seq: 1, len: 1, origin_ms: 0, signature: vec![0; 3] });
        assert!(matches!(decode(&short_sig, 1000), Err(PeerWireError::OutOfBounds(_))));
        let long_have = encode(&PeerMessage::Have { seqs: (0..100).collect() });
        assert!(matches!(decode(&long_have, 1000), Err(PeerWireError::OutOfBounds(_))));
        let mut huge = ((MAX_PEER_FRAME + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&huge, 1000), Err(PeerWireError::TooLarge(MAX_PEER_FRAME + 1)));
    }
}

//! AES-128 segment encryption (F7), the parts that are pure: which key a segment uses and the
//! cipher the origin calls. The origin encrypts a segment once, as it publishes it; relays carry
//! and edges serve the ciphertext, and the origin's signature (F53) covers the ciphertext, so a
//! P2P peer checks what it was sent without being able to read it.
//!
//! Per RFC 8216 §5.2 with `METHOD=AES-128` and no `IV` attribute, a segment is AES-128-CBC with
//! PKCS#7 padding and its IV is its media sequence number as a 128-bit big-endian integer.
//! Keys rotate every `segments_per_key` segments: segment `seq` uses key `seq / segments_per_key`.

use crate::media::Name;

/// Encrypts whole segments for an origin (the shell provides it, with a real AES).
pub trait SegmentCipher: Send + Sync + std::fmt::Debug {
    /// AES-128-CBC of `data` with channel `channel`'s key `key_index`, IV = `seq`, PKCS#7 padded.
    fn encrypt(&self, channel: &Name, key_index: u64, seq: u64, data: &[u8]) -> Vec<u8>;
}

/// The key a segment is encrypted with.
pub fn key_index(seq: u64, segments_per_key: u32) -> u64 {
    seq / u64::from(segments_per_key.max(1))
}

/// The IV of segment `seq` (what a player derives when the playlist gives none).
pub fn iv(seq: u64) -> [u8; 16] {
    u128::from(seq).to_be_bytes()
}

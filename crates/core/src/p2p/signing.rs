//! Segment signatures (F53): what the origin signs and the traits that sign and verify.
//!
//! The origin signs, per segment, the message [`signed_message`]: a domain tag, the channel,
//! the rendition, the sequence number and the SHA-256 digest of the bytes. Binding the position
//! (channel, rendition, seq) stops a peer from replaying a genuine segment in the wrong place.
//! The core holds no crypto: the shell implements the traits with Ed25519 (`ring`), tests with
//! a toy scheme, so the policy that uses them stays testable and sans-IO.

use std::fmt;

use crate::media::Name;
pub use crate::media::{SIGNATURE_LEN, Signature};

/// Domain separation: these signatures can never be confused with anything else the key signs.
const DOMAIN: &[u8] = b"relaycast-segment-v1\0";

/// The bytes the origin signs for segment `seq` of `channel`/`rendition` whose SHA-256 digest
/// is `digest`.
pub fn signed_message(channel: &Name, rendition: &Name, seq: u64, digest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 2 * 66 + 8 + digest.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(channel.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(rendition.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(digest);
    m
}

/// Signs segments at the origin.
pub trait SegmentSigner: Send + Sync + fmt::Debug {
    fn sign(&self, channel: &Name, rendition: &Name, seq: u64, data: &[u8]) -> Signature;
}

/// Checks a segment against the origin's signature before a viewer uses or shares it.
pub trait SegmentVerifier: Send + Sync {
    fn verify(&self, channel: &Name, rendition: &Name, seq: u64, data: &[u8], signature: &Signature) -> bool;
}

/// Hex, the form a signature takes in the `relaycast-signature` HTTP header.
pub fn to_hex(sig: &Signature) -> String {
    sig.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse the hex form; `None` for anything but exactly 128 hex digits.
pub fn from_hex(s: &str) -> Option<Signature> {
    let s = s.trim().as_bytes();
    if s.len() != 2 * SIGNATURE_LEN {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut sig = [0u8; SIGNATURE_LEN];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        sig[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let sig: Signature = std::array::from_fn(|i| i as u8 * 3);
        assert_eq!(from_hex(&to_hex(&sig)), Some(sig));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(&"zz".repeat(64)), None);
    }

    #[test]
    fn the_message_binds_the_position() {
        let (c, r) = (Name::new("ch").unwrap(), Name::new("src").unwrap());
        assert_ne!(signed_message(&c, &r, 1, b"d"), signed_message(&c, &r, 2, b"d"));
        let (c2, r2) = (Name::new("chs").unwrap(), Name::new("rc").unwrap());
        assert_ne!(signed_message(&c, &r, 1, b"d"), signed_message(&c2, &r2, 1, b"d"));
    }
}

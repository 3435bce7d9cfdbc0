//! MPEG-TS continuity counters across rendition switches.
//!
//! Every TS packet carries a 4-bit continuity counter per PID that goes up by one with each
//! packet that has a payload. Each rendition of a ladder is muxed on its own, so when server-side
//! ABR sends segment k from one rendition and segment k+1 from another inside one media
//! playlist, the counters jump; decoders then report lost packets ("continuity check failed",
//! "Packet corrupt") and some drop data. [`Continuity`] rewrites the counters of each segment a
//! viewer gets so they continue from the previous one, whatever rendition it came from.

use std::collections::BTreeMap;

use crate::ts::PACKET_LEN;

/// The counters a viewer's stream has reached, per PID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Continuity {
    last: BTreeMap<u16, u8>,
}

impl Continuity {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the counters: the next segment keeps its own (use after a gap in the sequence,
    /// where the player sees a discontinuity anyway).
    pub fn reset(&mut self) {
        self.last.clear();
    }

    /// `segment` with its continuity counters renumbered to follow the previous segment passed
    /// here. Bytes after a packet that lost sync (or a trailing partial packet) are copied as
    /// they are; nothing but the counter nibble of each packet header ever changes.
    pub fn renumber(&mut self, segment: &[u8]) -> Vec<u8> {
        let mut out = segment.to_vec();
        for packet in out.chunks_exact_mut(PACKET_LEN) {
            if packet[0] != 0x47 {
                break;
            }
            let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
            if pid == 0x1fff {
                continue; // null packets carry no meaningful counter
            }
            let has_payload = packet[3] & 0x10 != 0;
            let own = packet[3] & 0x0f;
            let cc = match self.last.get(&pid) {
                Some(&prev) if has_payload => (prev + 1) & 0x0f,
                Some(&prev) => prev,
                None => own,
            };
            packet[3] = (packet[3] & 0xf0) | cc;
            self.last.insert(pid, cc);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of packets on `pids`, counters starting at `start`, the given adaptation bits.
    fn segment(pids: &[u16], start: u8, count: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..count {
            for &pid in pids {
                let mut p = vec![0xffu8; PACKET_LEN];
                p[0] = 0x47;
                p[1] = (pid >> 8) as u8 & 0x1f;
                p[2] = pid as u8;
                p[3] = 0x10 | ((start as usize + i) as u8 & 0x0f);
                out.extend_from_slice(&p);
            }
        }
        out
    }

    fn counters(data: &[u8], pid: u16) -> Vec<u8> {
        data.chunks_exact(PACKET_LEN)
            .filter(|p| ((u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])) == pid)
            .map(|p| p[3] & 0x0f)
            .collect()
    }

    #[test]
    fn a_switch_continues_the_counters() {
        let mut c = Continuity::new();
        let a = c.renumber(&segment(&[0, 0x100], 3, 5));
        assert_eq!(counters(&a, 0x100), vec![3, 4, 5, 6, 7], "the first segment keeps its own");
        // The other rendition's counters are elsewhere in their cycle.
        let b = c.renumber(&segment(&[0, 0x100], 12, 6));
        assert_eq!(counters(&b, 0x100), vec![8, 9, 10, 11, 12, 13]);
        assert_eq!(counters(&b, 0), vec![8, 9, 10, 11, 12, 13]);
        let d = c.renumber(&segment(&[0x100], 0, 3));
        assert_eq!(counters(&d, 0x100), vec![14, 15, 0], "counters wrap at 16");
    }

    #[test]
    fn only_the_counter_nibble_changes() {
        let mut c = Continuity::new();
        c.renumber(&segment(&[0x100], 0, 1));
        let mut input = segment(&[0x100], 9, 2);
        input[3] = 0x30 | 9; // adaptation field + payload
        input.extend_from_slice(&[1, 2, 3]); // trailing partial packet
        let out = c.renumber(&input);
        assert_eq!(out.len(), input.len());
        for (i, (a, b)) in input.iter().zip(&out).enumerate() {
            if i % PACKET_LEN == 3 && i < 2 * PACKET_LEN {
                assert_eq!(a & 0xf0, b & 0xf0);
            } else {
                assert_eq!(a, b, "byte {i}");
            }
        }
        assert_eq!(counters(&out, 0x100), vec![1, 2]);
    }

    #[test]
    fn packets_without_payload_do_not_advance() {
        let mut c = Continuity::new();
        c.renumber(&segment(&[0x100], 4, 1));
        let mut s = segment(&[0x100], 0, 2);
        s[3] = 0x20; // adaptation field only
        assert_eq!(counters(&c.renumber(&s), 0x100), vec![4, 5]);
        c.reset();
        assert_eq!(counters(&c.renumber(&segment(&[0x100], 9, 1)), 0x100), vec![9]);
    }

    #[test]
    fn garbage_is_copied_not_panicked_on() {
        let mut c = Continuity::new();
        let junk = vec![0u8; 1000];
        assert_eq!(c.renumber(&junk), junk);
        assert!(c.renumber(&[]).is_empty());
    }
}

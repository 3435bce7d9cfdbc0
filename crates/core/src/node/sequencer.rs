//! Numbering the segments of a local source.

/// Numbers the segments of a local source: keeps the source's own numbering while it moves
/// forward, and continues past a restart (numbers going backwards, or jumping far ahead) with a
/// discontinuity, so viewers never see a sequence number twice.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sequencer {
    last: Option<(u64, Option<u64>)>,
    disc_seq: u32,
}

/// A forward jump in a source's numbering larger than this is treated as a restart.
const MAX_SOURCE_JUMP: u64 = 1000;

impl Sequencer {
    /// (seq, disc_seq, discontinuity) for the next segment.
    pub(crate) fn next(&mut self, source_seq: Option<u64>, source_discontinuity: bool) -> (u64, u32, bool) {
        let (seq, restarted) = match (self.last, source_seq) {
            (None, Some(s)) => (s, false),
            (None, None) => (0, false),
            (Some((out, Some(prev))), Some(s)) if s > prev && s - prev <= MAX_SOURCE_JUMP => (out + (s - prev), false),
            (Some((out, _)), None) => (out + 1, false),
            (Some((out, _)), Some(_)) => (out + 1, true),
        };
        let discontinuity = self.last.is_some() && (restarted || source_discontinuity);
        if discontinuity {
            self.disc_seq += 1;
        }
        self.last = Some((seq, source_seq));
        (seq, self.disc_seq, discontinuity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_source_numbers_and_survives_restarts() {
        let mut s = Sequencer::default();
        assert_eq!(s.next(Some(100), false), (100, 0, false));
        assert_eq!(s.next(Some(101), false), (101, 0, false));
        assert_eq!(s.next(Some(103), false), (103, 0, false), "a skipped source segment stays skipped");
        assert_eq!(s.next(Some(0), false), (104, 1, true), "restart: numbers went backwards");
        assert_eq!(s.next(Some(1), false), (105, 1, false));
        assert_eq!(s.next(Some(1_000_000), false), (106, 2, true), "a huge jump is a restart too");
        assert_eq!(s.next(Some(1_000_001), true), (107, 3, true), "the source's own discontinuity");
        assert_eq!(s.next(None, false), (108, 3, false));
    }
}

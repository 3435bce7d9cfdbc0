//! The segment window: the most recent segments of one rendition, kept in sequence order.
//!
//! Every node keeps one window per rendition it carries. The window is longer than the live
//! playlist so that a child which reconnects can resume from the last sequence it holds.

use std::collections::VecDeque;

use crate::media::{Segment, SegmentMeta};

/// Why a segment was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("segment {0} is already in the window")]
    Duplicate(u64),
    #[error("segment {seq} is older than the window (oldest kept is {oldest})")]
    TooOld { seq: u64, oldest: u64 },
}

/// A bounded, sequence-ordered window of segments.
///
/// Segments may arrive out of order (each travels on its own QUIC stream). A live playlist must
/// never move backwards, so the window keeps a *visible edge*: the newest segment up to which
/// nothing is missing. A segment beyond a gap waits, hidden, until the gap fills or the owner
/// gives up on it with [`Self::skip_gap`]; after a skip, segments older than the new start are
/// refused. Playlists show only visible segments, see [`Self::live_run`].
#[derive(Debug, Clone)]
pub struct SegmentWindow {
    capacity: usize,
    segments: VecDeque<Segment>,
    /// Newest sequence with no gap before it (back to `floor`).
    visible_to: Option<u64>,
    /// Playlists never start before this sequence; older arrivals are refused.
    floor: u64,
}

impl SegmentWindow {
    /// A window holding at most `capacity` segments (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), segments: VecDeque::new(), visible_to: None, floor: 0 }
    }

    /// Insert a segment in sequence order, evicting the oldest when full.
    pub fn insert(&mut self, segment: Segment) -> Result<(), InsertError> {
        let seq = segment.meta.seq;
        let pos = self.segments.partition_point(|s| s.meta.seq < seq);
        if self.segments.get(pos).is_some_and(|s| s.meta.seq == seq) {
            return Err(InsertError::Duplicate(seq));
        }
        if (pos == 0 && self.segments.len() >= self.capacity) || seq < self.floor {
            let oldest = self.segments.front().map_or(self.floor, |s| s.meta.seq.max(self.floor));
            return Err(InsertError::TooOld { seq, oldest });
        }
        self.segments.insert(pos, segment);
        while self.segments.len() > self.capacity {
            self.segments.pop_front();
        }
        if self.visible_to.is_none() {
            // The first segment starts the playlist; nothing older may appear before it.
            self.visible_to = Some(seq);
            self.floor = seq;
        }
        self.advance_visible();
        Ok(())
    }

    /// True when segments are waiting beyond a gap.
    pub fn has_hidden(&self) -> bool {
        match (self.visible_to, self.segments.back()) {
            (Some(v), Some(last)) => last.meta.seq > v,
            _ => false,
        }
    }

    /// Give up on the oldest gap: the visible edge jumps to the first segment after it.
    /// Returns the sequences given up on.
    pub fn skip_gap(&mut self) -> Option<std::ops::Range<u64>> {
        let v = self.visible_to?;
        let next = self.segments.iter().map(|s| s.meta.seq).find(|&s| s > v)?;
        self.visible_to = Some(next);
        self.floor = next;
        self.advance_visible();
        Some(v + 1..next)
    }

    /// The newest segment a playlist may show.
    pub fn visible_to(&self) -> Option<u64> {
        self.visible_to
    }

    fn advance_visible(&mut self) {
        let Some(mut v) = self.visible_to else { return };
        while self.get(v + 1).is_some() {
            v += 1;
        }
        self.visible_to = Some(v);
    }

    pub fn get(&self, seq: u64) -> Option<&Segment> {
        let pos = self.segments.partition_point(|s| s.meta.seq < seq);
        self.segments.get(pos).filter(|s| s.meta.seq == seq)
    }

    pub fn latest(&self) -> Option<&Segment> {
        self.segments.back()
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// All segments, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Segment> + ExactSizeIterator {
        self.segments.iter()
    }

    /// Segments with a sequence number greater than `seq`, oldest first.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &Segment> {
        let pos = self.segments.partition_point(|s| s.meta.seq <= seq);
        self.segments.range(pos..)
    }

    /// The run of consecutive segments ending at the visible edge, at most `max` long, oldest
    /// first, never starting before the floor.
    ///
    /// A live playlist numbers its segments implicitly (MEDIA-SEQUENCE + index), so it can only
    /// show a gap-free run, and its start must never move backwards.
    pub fn live_run(&self, max: usize) -> Vec<SegmentMeta> {
        let Some(edge) = self.visible_to else {
            return Vec::new();
        };
        let mut run: Vec<SegmentMeta> = Vec::new();
        for s in self.segments.iter().rev().skip_while(|s| s.meta.seq > edge) {
            if run.len() >= max || s.meta.seq < self.floor {
                break;
            }
            if let Some(prev) = run.last()
                && s.meta.seq + 1 != prev.seq
            {
                break;
            }
            run.push(s.meta);
        }
        run.reverse();
        run
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn seg(seq: u64) -> Segment {
        let meta = SegmentMeta { seq, disc_seq: 0, discontinuity: false, duration_us: 2_000_000, origin_ms: seq };
        Segment { meta, data: Bytes::from(vec![seq as u8]), signature: None }
    }

    #[test]
    fn keeps_order_and_evicts_oldest() {
        let mut w = SegmentWindow::new(3);
        for seq in [1, 2, 4, 3, 5] {
            w.insert(seg(seq)).unwrap();
        }
        assert_eq!(w.visible_to(), Some(5));
        let seqs: Vec<u64> = w.iter().map(|s| s.meta.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(w.insert(seg(4)), Err(InsertError::Duplicate(4)));
        assert_eq!(w.insert(seg(1)), Err(InsertError::TooOld { seq: 1, oldest: 3 }));
        assert!(w.get(2).is_none());
        assert_eq!(w.get(4).unwrap().data[0], 4);
    }

    fn run(w: &SegmentWindow, max: usize) -> Vec<u64> {
        w.live_run(max).iter().map(|m| m.seq).collect()
    }

    #[test]
    fn segments_beyond_a_gap_stay_hidden_until_it_fills() {
        let mut w = SegmentWindow::new(10);
        for seq in [1, 2, 3, 5, 6, 7] {
            w.insert(seg(seq)).unwrap();
        }
        assert_eq!(run(&w, 10), vec![1, 2, 3]);
        assert!(w.has_hidden());
        assert_eq!(run(&w, 2), vec![2, 3]);
        w.insert(seg(4)).unwrap();
        assert_eq!(run(&w, 10), (1..=7).collect::<Vec<_>>());
        assert!(!w.has_hidden());
    }

    #[test]
    fn a_skipped_gap_never_makes_the_playlist_go_backwards() {
        let mut w = SegmentWindow::new(10);
        for seq in [1, 2, 3, 5, 6] {
            w.insert(seg(seq)).unwrap();
        }
        assert_eq!(w.skip_gap(), Some(4..5));
        assert_eq!(run(&w, 10), vec![5, 6]);
        // The lost segment turns up late: refused, so MEDIA-SEQUENCE never moves back to 1.
        assert!(matches!(w.insert(seg(4)), Err(InsertError::TooOld { .. })));
        assert_eq!(run(&w, 10), vec![5, 6]);
        assert_eq!(w.skip_gap(), None);
    }

    #[test]
    fn the_first_segment_sets_the_floor() {
        let mut w = SegmentWindow::new(10);
        w.insert(seg(8)).unwrap();
        assert_eq!(run(&w, 10), vec![8]);
        assert!(w.insert(seg(7)).is_err(), "a playlist showing 8 must never show 7 first");
        w.insert(seg(9)).unwrap();
        assert_eq!(run(&w, 10), vec![8, 9]);
    }

    #[test]
    fn after_skips_what_the_child_has() {
        let mut w = SegmentWindow::new(10);
        for seq in 10..15 {
            w.insert(seg(seq)).unwrap();
        }
        let seqs: Vec<u64> = w.after(12).map(|s| s.meta.seq).collect();
        assert_eq!(seqs, vec![13, 14]);
        assert_eq!(w.after(3).count(), 5);
        assert_eq!(w.after(20).count(), 0);
    }
}

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

/// A bounded, sequence-ordered window of segments. Gaps are allowed (a late segment fills its
/// gap when it arrives); playlists show only the newest contiguous run, see [`Self::live_run`].
#[derive(Debug, Clone)]
pub struct SegmentWindow {
    capacity: usize,
    segments: VecDeque<Segment>,
}

impl SegmentWindow {
    /// A window holding at most `capacity` segments (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            segments: VecDeque::new(),
        }
    }

    /// Insert a segment in sequence order, evicting the oldest when full.
    pub fn insert(&mut self, segment: Segment) -> Result<(), InsertError> {
        let seq = segment.meta.seq;
        let pos = self.segments.partition_point(|s| s.meta.seq < seq);
        if self.segments.get(pos).is_some_and(|s| s.meta.seq == seq) {
            return Err(InsertError::Duplicate(seq));
        }
        if pos == 0 && self.segments.len() >= self.capacity {
            let oldest = self.segments[0].meta.seq;
            return Err(InsertError::TooOld { seq, oldest });
        }
        self.segments.insert(pos, segment);
        while self.segments.len() > self.capacity {
            self.segments.pop_front();
        }
        Ok(())
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

    /// The newest run of consecutive sequence numbers, at most `max` long, oldest first.
    ///
    /// A live playlist numbers its segments implicitly (MEDIA-SEQUENCE + index), so it can only
    /// show a gap-free run.
    pub fn live_run(&self, max: usize) -> Vec<SegmentMeta> {
        let mut run: Vec<SegmentMeta> = Vec::new();
        for s in self.segments.iter().rev() {
            if run.len() >= max {
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
        let meta = SegmentMeta {
            seq,
            disc_seq: 0,
            discontinuity: false,
            duration_us: 2_000_000,
            origin_ms: seq,
        };
        Segment {
            meta,
            data: Bytes::from(vec![seq as u8]),
        }
    }

    #[test]
    fn keeps_order_and_evicts_oldest() {
        let mut w = SegmentWindow::new(3);
        for seq in [1, 2, 4, 3, 5] {
            w.insert(seg(seq)).unwrap();
        }
        let seqs: Vec<u64> = w.iter().map(|s| s.meta.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(w.insert(seg(4)), Err(InsertError::Duplicate(4)));
        assert_eq!(
            w.insert(seg(1)),
            Err(InsertError::TooOld { seq: 1, oldest: 3 })
        );
        assert!(w.get(2).is_none());
        assert_eq!(w.get(4).unwrap().data[0], 4);
    }

    #[test]
    fn live_run_stops_at_a_gap() {
        let mut w = SegmentWindow::new(10);
        for seq in [1, 2, 3, 5, 6, 7] {
            w.insert(seg(seq)).unwrap();
        }
        let run: Vec<u64> = w.live_run(10).iter().map(|m| m.seq).collect();
        assert_eq!(run, vec![5, 6, 7]);
        let run: Vec<u64> = w.live_run(2).iter().map(|m| m.seq).collect();
        assert_eq!(run, vec![6, 7]);
        w.insert(seg(4)).unwrap();
        assert_eq!(w.live_run(10).len(), 7);
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

//! The part log: the parts of the newest segments of one low-latency rendition.
//!
//! Parts travel the tree one QUIC stream each, so they may arrive out of order; the log keeps
//! each segment's parts by index, serves the in-order prefix that has arrived, and hands back the
//! whole segment (the parts' bytes, concatenated) when its last part and every part before it are
//! in. It keeps the parts of the last few segments, which is what an LL-HLS playlist lists.

use std::collections::BTreeMap;

use bytes::BytesMut;

use crate::media::{Part, PartMeta, Segment, SegmentMeta};

/// Most parts one segment may have (a 10 s segment of 50 ms parts is 200).
pub const MAX_PARTS: u32 = 512;

/// The parts of one segment.
#[derive(Debug, Clone, Default)]
pub struct PartRun {
    pub seq: u64,
    parts: Vec<Option<Part>>,
    /// Index of the last part, once it has arrived.
    last: Option<u32>,
}

impl PartRun {
    /// The parts that arrived with none missing before them, in order.
    pub fn available(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().map_while(Option::as_ref)
    }

    /// All parts are in.
    pub fn is_complete(&self) -> bool {
        self.last.is_some_and(|l| self.available().count() == l as usize + 1)
    }

    pub fn get(&self, index: u32) -> Option<&Part> {
        self.parts.get(index as usize)?.as_ref()
    }

    /// The available parts' bytes, concatenated, followed by `more` (what the segment will be
    /// once `more` is its last part).
    pub fn joined_with(&self, more: &[u8]) -> BytesMut {
        let len = self.available().map(|p| p.data.len()).sum::<usize>() + more.len();
        let mut data = BytesMut::with_capacity(len);
        for p in self.available() {
            data.extend_from_slice(&p.data);
        }
        data.extend_from_slice(more);
        data
    }
}

/// Why a part was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    #[error("part {seq}.{index} is already held")]
    Duplicate { seq: u64, index: u32 },
    #[error("part {seq}.{index} is older than the part log")]
    TooOld { seq: u64, index: u32 },
    #[error("part index {index} is beyond the limit of {MAX_PARTS} parts per segment")]
    TooManyParts { index: u32 },
    #[error("part {seq}.{index} comes after the segment's last part")]
    AfterLast { seq: u64, index: u32 },
}

/// The part log of one rendition.
#[derive(Debug, Clone)]
pub struct PartLog {
    runs: BTreeMap<u64, PartRun>,
    keep: usize,
}

impl PartLog {
    /// Keep the parts of the `keep` newest segments.
    pub fn new(keep: usize) -> Self {
        Self { runs: BTreeMap::new(), keep: keep.max(2) }
    }

    /// Add a part. Returns the whole segment when this part completes it.
    ///
    /// # Errors
    /// A part already held, older than every segment kept, past the segment's last part, or
    /// with an absurd index.
    pub fn push(&mut self, part: Part) -> Result<Option<Segment>, PartError> {
        let PartMeta { seq, index, .. } = part.meta;
        if index >= MAX_PARTS {
            return Err(PartError::TooManyParts { index });
        }
        let oldest_kept = self.runs.keys().next_back().map_or(0, |newest| newest.saturating_sub(self.keep as u64 - 1));
        if seq < oldest_kept {
            return Err(PartError::TooOld { seq, index });
        }
        let run = self.runs.entry(seq).or_insert_with(|| PartRun { seq, ..Default::default() });
        if run.last.is_some_and(|l| index > l) || (part.meta.last && run.parts.len() > index as usize + 1) {
            return Err(PartError::AfterLast { seq, index });
        }
        let slot = index as usize;
        if run.parts.len() <= slot {
            run.parts.resize(slot + 1, None);
        }
        if run.parts[slot].is_some() {
            return Err(PartError::Duplicate { seq, index });
        }
        if part.meta.last {
            run.last = Some(index);
        }
        run.parts[slot] = Some(part);
        let whole = run.is_complete().then(|| assemble(run));
        while self.runs.len() > self.keep {
            self.runs.pop_first();
        }
        Ok(whole)
    }

    pub fn part(&self, seq: u64, index: u32) -> Option<&Part> {
        self.runs.get(&seq)?.get(index)
    }

    pub fn run(&self, seq: u64) -> Option<&PartRun> {
        self.runs.get(&seq)
    }

    /// Runs oldest first.
    pub fn runs(&self) -> impl DoubleEndedIterator<Item = &PartRun> {
        self.runs.values()
    }

    /// Take a copy of another log's run (a playlist composed from several renditions).
    pub fn adopt(&mut self, run: PartRun) {
        self.runs.insert(run.seq, run);
        while self.runs.len() > self.keep {
            self.runs.pop_first();
        }
    }

    /// The part that comes next after everything available: `(seq, index)`.
    pub fn next_part(&self) -> Option<(u64, u32)> {
        let run = self.runs.values().next_back()?;
        let have = run.available().count() as u32;
        Some(if run.is_complete() { (run.seq + 1, 0) } else { (run.seq, have) })
    }

    /// Parts of segments that are not yet whole (what a new subscriber needs besides the window).
    pub fn open_parts(&self) -> Vec<Part> {
        self.runs.values().filter(|r| !r.is_complete()).flat_map(|r| r.parts.iter().flatten().cloned()).collect()
    }
}

fn assemble(run: &PartRun) -> Segment {
    let parts: Vec<&Part> = run.available().collect();
    let data = run.joined_with(&[]);
    let first = parts[0].meta;
    let last = parts[parts.len() - 1];
    let meta = SegmentMeta {
        seq: run.seq,
        disc_seq: first.disc_seq,
        discontinuity: first.discontinuity,
        duration_us: parts.iter().map(|p| p.meta.duration_us).fold(0u32, u32::saturating_add),
        origin_ms: last.meta.origin_ms,
    };
    Segment { meta, data: data.freeze(), signature: last.signature }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn part(seq: u64, index: u32, last: bool) -> Part {
        let meta = PartMeta {
            seq,
            index,
            disc_seq: 0,
            discontinuity: false,
            duration_us: 250_000,
            independent: index == 0,
            last,
            origin_ms: 1000 * seq + u64::from(index),
        };
        Part { meta, data: Bytes::from(vec![index as u8; 10]), signature: None }
    }

    #[test]
    fn out_of_order_parts_assemble_once_all_are_in() {
        let mut log = PartLog::new(3);
        assert_eq!(log.push(part(5, 1, false)), Ok(None));
        assert_eq!(log.run(5).unwrap().available().count(), 0);
        assert_eq!(log.push(part(5, 3, true)), Ok(None));
        assert_eq!(log.push(part(5, 0, false)), Ok(None));
        assert_eq!(log.next_part(), Some((5, 2)));
        let whole = log.push(part(5, 2, false)).unwrap().expect("segment 5 is whole");
        assert_eq!(whole.meta.duration_us, 1_000_000);
        assert_eq!(whole.meta.origin_ms, 5003);
        assert_eq!(&whole.data[..], &[[0u8; 10], [1; 10], [2; 10], [3; 10]].concat()[..]);
        assert_eq!(log.next_part(), Some((6, 0)));
        assert!(log.open_parts().is_empty());
    }

    #[test]
    fn bad_parts_are_refused() {
        let mut log = PartLog::new(2);
        log.push(part(1, 0, false)).unwrap();
        assert_eq!(log.push(part(1, 0, false)), Err(PartError::Duplicate { seq: 1, index: 0 }));
        log.push(part(1, 2, true)).unwrap();
        assert_eq!(log.push(part(1, 3, false)), Err(PartError::AfterLast { seq: 1, index: 3 }));
        assert_eq!(log.push(part(1, MAX_PARTS, false)), Err(PartError::TooManyParts { index: MAX_PARTS }));
        log.push(part(9, 0, false)).unwrap();
        log.push(part(10, 0, false)).unwrap();
        assert_eq!(log.push(part(3, 0, false)), Err(PartError::TooOld { seq: 3, index: 0 }));
        assert_eq!(log.runs().count(), 2);
    }
}

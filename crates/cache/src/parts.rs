//! A representation stored in parts: the ranges of it that the origin's `206`s brought,
//! combined (RFC 9111 §3.4).

use std::ops::Range;

use bytes::Bytes;

/// The bytes held of one representation: disjoint runs, none touching another (a part
/// that overlaps or touches others is joined with them into one run).
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    /// The representation's length.
    len: usize,
    /// The runs by first position, ascending.
    runs: Vec<(usize, Bytes)>,
}

impl Parts {
    /// The bytes `data` of a representation of `len` bytes, from `start` on.
    pub(crate) fn new(len: usize, start: usize, data: Bytes) -> Self {
        Self {
            len,
            runs: vec![(start, data)],
        }
    }

    /// The representation's length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many bytes are held.
    pub(crate) fn held(&self) -> usize {
        self.runs.iter().map(|(_, run)| run.len()).sum()
    }

    /// How many runs hold them.
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The bytes of `range`, when they are held (a slice of the run they are in, no copy).
    pub(crate) fn slice(&self, range: Range<usize>) -> Option<Bytes> {
        let after = self
            .runs
            .partition_point(|(start, _)| *start <= range.start);
        let (start, run) = &self.runs[after.checked_sub(1)?];
        (range.end <= start + run.len()).then(|| run.slice(range.start - start..range.end - start))
    }

    /// These parts with `data` from `start` on: the runs it overlaps or touches are
    /// copied into one with it (the bytes are the same where they overlap: the parts are
    /// of one representation).
    pub(crate) fn with(&self, start: usize, data: Bytes) -> Self {
        let (mut first, mut end) = (start, start + data.len());
        let (joined, mut runs): (Vec<_>, Vec<_>) = self
            .runs
            .iter()
            .cloned()
            .partition(|(s, run)| *s <= end && start <= s + run.len());
        let run = if joined.is_empty() {
            data
        } else {
            for (s, run) in &joined {
                first = first.min(*s);
                end = end.max(s + run.len());
            }
            let mut buf = vec![0; end - first];
            for (s, run) in joined.iter().chain([&(start, data)]) {
                buf[s - first..s - first + run.len()].copy_from_slice(run);
            }
            Bytes::from(buf)
        };
        let at = runs.partition_point(|(s, _)| *s < first);
        runs.insert(at, (first, run));
        Self {
            len: self.len,
            runs,
        }
    }

    /// The whole representation, once the runs have become one that covers it.
    pub(crate) fn whole(&self) -> Option<Bytes> {
        match &self.runs[..] {
            [(0, run)] if run.len() == self.len => Some(run.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"0123456789";

    fn part(range: Range<usize>) -> Bytes {
        Bytes::from_static(&BODY[range])
    }

    #[test]
    fn parts_join_when_they_overlap_or_touch() {
        let parts = Parts::new(10, 6, part(6..8));
        assert_eq!(parts.slice(6..8).unwrap(), "67");
        assert_eq!(parts.slice(7..8).unwrap(), "7");
        assert!(parts.slice(5..7).is_none() && parts.slice(7..9).is_none());
        let parts = parts.with(0, part(0..2));
        assert_eq!((parts.runs(), parts.held()), (2, 4));
        assert!(parts.slice(1..7).is_none());
        // Touching 0..2 and overlapping 6..8: one run of 0..8.
        let parts = parts.with(2, part(2..7));
        assert_eq!((parts.runs(), parts.held()), (1, 8));
        assert_eq!(parts.slice(1..7).unwrap(), "123456");
        assert!(parts.whole().is_none());
        let parts = parts.with(8, part(8..10));
        assert_eq!(parts.whole().unwrap(), BODY);
    }

    #[test]
    fn a_slice_of_a_run_is_not_a_copy() {
        let data = part(3..9);
        let parts = Parts::new(10, 0, part(0..1)).with(3, data.clone());
        assert_eq!(parts.slice(4..6).unwrap().as_ptr(), data[1..].as_ptr());
        assert!(parts.slice(0..1).is_some() && parts.slice(1..2).is_none());
    }
}

//! Counting consumed records by offset rather than by arrival.
//!
//! A consumer that is handed the same record twice, or that skips some, would otherwise finish
//! "N records" early and report a throughput it did not achieve. This happens against tansu
//! 0.6.0: a Fetch from an offset inside a record batch returns the batches *after* that batch
//! (the records from the requested offset to the end of its batch are never sent) and then the
//! last batch again, repeatedly. A client that re-fetches from mid-batch offsets (krafka with
//! its default poll limits) then loses records and receives duplicates.
//!
//! The benchmark topics are fresh and non-transactional, so their offsets are dense: every
//! partition must deliver 0, 1, 2, ... A record below the next expected offset is a duplicate
//! and is not counted; one above it means records were skipped, and the run fails.

use std::fmt;

#[derive(Debug, Default)]
pub struct Tally {
    /// Next expected offset, indexed by partition.
    next: Vec<i64>,
    pub records: u64,
    pub bytes: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub partition: i32,
    pub expected: i64,
    pub got: i64,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {} skipped offsets {}..{} (records never delivered)",
            self.partition, self.expected, self.got
        )
    }
}

impl std::error::Error for Gap {}

impl Tally {
    /// Counts one record of `len` value bytes at `offset` of `partition`.
    pub fn add(&mut self, partition: i32, offset: i64, len: usize) -> Result<(), Gap> {
        let p = usize::try_from(partition).expect("partitions are non-negative");
        if p >= self.next.len() {
            self.next.resize(p + 1, 0);
        }
        let expected = self.next[p];
        if offset < expected {
            self.duplicates += 1;
            return Ok(());
        }
        if offset > expected {
            return Err(Gap {
                partition,
                expected,
                got: offset,
            });
        }
        self.next[p] = offset + 1;
        self.records += 1;
        self.bytes += len as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_offsets_are_counted_per_partition() {
        let mut t = Tally::default();
        for (p, o) in [(0, 0), (2, 0), (0, 1), (2, 1), (2, 2)] {
            t.add(p, o, 10).unwrap();
        }
        assert_eq!((t.records, t.bytes, t.duplicates), (5, 50, 0));
    }

    #[test]
    fn redelivered_records_are_not_counted() {
        let mut t = Tally::default();
        for o in 0..3 {
            t.add(1, o, 7).unwrap();
        }
        t.add(1, 1, 7).unwrap();
        t.add(1, 2, 7).unwrap();
        assert_eq!((t.records, t.bytes, t.duplicates), (3, 21, 2));
    }

    #[test]
    fn skipped_offsets_are_an_error() {
        let mut t = Tally::default();
        t.add(0, 0, 1).unwrap();
        let gap = t.add(0, 38, 1).unwrap_err();
        assert_eq!(
            gap,
            Gap {
                partition: 0,
                expected: 1,
                got: 38
            }
        );
        assert!(gap.to_string().contains("skipped offsets 1..38"));
        assert_eq!(t.records, 1);
    }

    #[test]
    fn a_partition_that_does_not_start_at_zero_is_a_gap() {
        let mut t = Tally::default();
        assert!(t.add(3, 5, 1).is_err());
    }
}

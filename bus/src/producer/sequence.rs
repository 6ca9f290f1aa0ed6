//! Idempotent producer sequencing (KIP-98, with the recovery rules of KIP-360), as pure state
//! and pure decisions, so every case is tested without a broker or a clock.
//!
//! The broker accepts a batch from an idempotent producer only if its base sequence follows
//! the last batch it wrote for that (producer id, epoch, partition); an older sequence is a
//! duplicate it drops (DUPLICATE_SEQUENCE_NUMBER, or the original offset), a gap is
//! OUT_OF_ORDER_SEQUENCE_NUMBER. So:
//!
//! - A batch gets its sequence when it is first sent and keeps it, with its producer id and
//!   epoch, on every retry: a retry of a batch the broker already wrote is then recognised
//!   and dropped, which is what makes retries after a lost connection safe.
//! - Each partition follows one producer identity (a "chain") at a time. A new identity is
//!   only adopted when the partition is quiet, or when it must restart (a reset).
//! - A reset happens when the broker has no usable state for the chain (UNKNOWN_PRODUCER_ID,
//!   PRODUCER_FENCED, INVALID_PRODUCER_EPOCH, or OUT_OF_ORDER_SEQUENCE at the head, where no
//!   predecessor can explain the gap), or when a sequenced batch failed for good and left a
//!   gap. It waits until nothing of the partition is in flight, and it needs an identity newer
//!   than the chain (a fresh InitProducerId). Batches not yet written are then re-sequenced
//!   from 0 under the new identity; a batch whose earlier attempt went unanswered is not
//!   resent, because it may be in the log already: it is reported as uncertain instead.

use kafka_proto::ErrorCode;

/// A producer id and epoch, plus a local generation number that orders identities in the
/// order this producer obtained them (brokers may hand out the same id with a new epoch, or a
/// new id; either way a later identity has a larger generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub producer_id: i64,
    pub epoch: i16,
    pub generation: u32,
}

/// The sequence a batch was sent with, kept for its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sequenced {
    pub identity: Identity,
    pub base: i32,
}

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0.
pub(crate) fn add_sequence(base: i32, count: i32) -> i32 {
    let sum = i64::from(base) + i64::from(count);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// One partition's position in its chain.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionSequence {
    chain: Option<Identity>,
    /// The sequence the next new batch gets.
    next: i32,
    /// The sequence the broker expects next: just after the last acknowledged batch.
    acked_next: i32,
    /// Set when the partition must restart its sequence; the code says why.
    reset: Option<ErrorCode>,
}

/// What to do with a batch after the broker's answer for its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Written. `offset_known` is false for a duplicate the broker did not give an offset for.
    Written { offset_known: bool },
    /// Not written (or unknown); send again after a backoff. `refresh_metadata` when the
    /// error means our routing is stale.
    Retry { refresh_metadata: bool },
    /// Definitely not written, and the partition's sequence must restart before anything of
    /// it is sent again.
    Reset,
    /// Not written and never will be: fail the batch with this code.
    Fail,
}

/// Codes that mean the partition has moved or its leader is unknown to this broker.
pub(crate) fn is_routing_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeaderOrFollower
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::LeaderNotAvailable
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::KafkaStorageError
    )
}

impl PartitionSequence {
    /// Why the partition must restart, if it must.
    pub fn reset_reason(&self) -> Option<ErrorCode> {
        self.reset
    }

    pub fn needs_reset(&self) -> bool {
        self.reset.is_some()
    }

    /// Marks the partition for a reset (the first reason is kept).
    pub fn require_reset(&mut self, reason: ErrorCode) {
        self.reset.get_or_insert(reason);
    }

    /// Gives a batch of `count` records its sequence. `quiet` says the partition has no
    /// sequenced batch outstanding, which is when switching to a newer identity cannot leave
    /// the broker with a half-finished chain. Must not be called while a reset is pending.
    pub fn assign(&mut self, current: Identity, count: i32, quiet: bool) -> Sequenced {
        debug_assert!(self.reset.is_none());
        if self.chain.is_none() || (quiet && self.chain != Some(current)) {
            self.start_chain(current);
        }
        let identity = self.chain.unwrap_or(current);
        let base = self.next;
        self.next = add_sequence(base, count);
        Sequenced { identity, base }
    }

    fn start_chain(&mut self, identity: Identity) {
        self.chain = Some(identity);
        self.next = 0;
        self.acked_next = 0;
    }

    /// Whether a reset can run now with `current`: it needs an identity newer than the chain.
    pub fn can_reset_with(&self, current: Option<Identity>) -> bool {
        match (current, self.chain) {
            (Some(c), Some(chain)) => c.generation > chain.generation,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Restarts the chain under `current`; batches still queued must drop their sequences.
    pub fn reset_to(&mut self, current: Identity) {
        self.start_chain(current);
        self.reset = None;
    }

    /// The broker wrote `seq` (`count` records).
    pub fn on_written(&mut self, seq: Sequenced, count: i32) {
        if Some(seq.identity) == self.chain {
            self.acked_next = add_sequence(seq.base, count);
        }
    }

    /// True when every earlier batch of the chain is acknowledged, so the broker's complaint
    /// about `seq` cannot be explained by a predecessor that failed.
    pub fn is_head(&self, seq: Sequenced) -> bool {
        Some(seq.identity) == self.chain && seq.base == self.acked_next
    }

    /// Decides what the broker's `code` for a batch sent with `seq` means.
    pub fn classify(&self, code: ErrorCode, seq: Option<Sequenced>) -> Verdict {
        match code {
            ErrorCode::None => Verdict::Written { offset_known: true },
            ErrorCode::DuplicateSequenceNumber if seq.is_some() => Verdict::Written {
                offset_known: false,
            },
            ErrorCode::OutOfOrderSequenceNumber => match seq {
                // A predecessor is missing because it failed: resend in order.
                Some(s) if !self.is_head(s) => Verdict::Retry {
                    refresh_metadata: false,
                },
                _ => Verdict::Reset,
            },
            ErrorCode::UnknownProducerId
            | ErrorCode::InvalidProducerEpoch
            | ErrorCode::ProducerFenced
                if seq.is_some() =>
            {
                Verdict::Reset
            }
            code if code.is_retriable() => Verdict::Retry {
                refresh_metadata: is_routing_error(code),
            },
            _ => Verdict::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(generation: u32) -> Identity {
        Identity {
            producer_id: 7,
            epoch: generation as i16,
            generation,
        }
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(add_sequence(0, 5), 5);
        assert_eq!(add_sequence(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 2, 10), 7);
    }

    #[test]
    fn batches_get_consecutive_sequences_and_keep_their_chain() {
        let mut p = PartitionSequence::default();
        let a = p.assign(id(1), 10, true);
        let b = p.assign(id(1), 3, false);
        assert_eq!((a.base, b.base), (0, 10));
        // A newer identity is not adopted while batches are outstanding...
        let c = p.assign(id(2), 1, false);
        assert_eq!((c.identity, c.base), (id(1), 13));
        // ...but is once the partition is quiet, starting again at 0.
        let d = p.assign(id(2), 1, true);
        assert_eq!((d.identity, d.base), (id(2), 0));
    }

    #[test]
    fn out_of_order_is_a_reset_only_at_the_head() {
        let mut p = PartitionSequence::default();
        let a = p.assign(id(1), 5, true);
        let b = p.assign(id(1), 5, false);
        let ooo = ErrorCode::OutOfOrderSequenceNumber;
        assert_eq!(p.classify(ooo, Some(a)), Verdict::Reset);
        assert_eq!(
            p.classify(ooo, Some(b)),
            Verdict::Retry {
                refresh_metadata: false
            },
            "b follows a, which is not acknowledged: a's failure explains the gap"
        );
        p.on_written(a, 5);
        assert!(p.is_head(b));
        assert_eq!(p.classify(ooo, Some(b)), Verdict::Reset);
    }

    #[test]
    fn codes_map_to_verdicts() {
        let mut p = PartitionSequence::default();
        let s = p.assign(id(1), 1, true);
        let cases = [
            (ErrorCode::None, Verdict::Written { offset_known: true }),
            (
                ErrorCode::DuplicateSequenceNumber,
                Verdict::Written {
                    offset_known: false,
                },
            ),
            (ErrorCode::UnknownProducerId, Verdict::Reset),
            (ErrorCode::ProducerFenced, Verdict::Reset),
            (ErrorCode::InvalidProducerEpoch, Verdict::Reset),
            (
                ErrorCode::NotLeaderOrFollower,
                Verdict::Retry {
                    refresh_metadata: true,
                },
            ),
            (
                ErrorCode::NotEnoughReplicas,
                Verdict::Retry {
                    refresh_metadata: false,
                },
            ),
            (ErrorCode::MessageTooLarge, Verdict::Fail),
            (ErrorCode::InvalidRecord, Verdict::Fail),
        ];
        for (code, want) in cases {
            assert_eq!(p.classify(code, Some(s)), want, "{code:?}");
        }
        // Without idempotence there is no sequence to be a duplicate of.
        assert_eq!(
            p.classify(ErrorCode::DuplicateSequenceNumber, None),
            Verdict::Fail
        );
    }

    #[test]
    fn a_reset_needs_a_newer_identity_and_restarts_at_zero() {
        let mut p = PartitionSequence::default();
        let a = p.assign(id(1), 4, true);
        p.on_written(a, 4);
        p.assign(id(1), 4, false);
        p.require_reset(ErrorCode::UnknownProducerId);
        p.require_reset(ErrorCode::InvalidRecord);
        assert_eq!(p.reset_reason(), Some(ErrorCode::UnknownProducerId));
        assert!(!p.can_reset_with(Some(id(1))));
        assert!(!p.can_reset_with(None));
        assert!(p.can_reset_with(Some(id(2))));
        p.reset_to(id(2));
        assert!(!p.needs_reset());
        let b = p.assign(id(2), 1, false);
        assert_eq!((b.identity, b.base), (id(2), 0));
        assert!(p.is_head(b));
    }
}

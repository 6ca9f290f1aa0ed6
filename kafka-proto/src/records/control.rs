//! Control records (KIP-98): the transaction markers a transaction coordinator writes into
//! each partition of a transaction, in batches with the control attribute (bit 5) set.
//!
//! Key: version i16, type i16 (0 = ABORT, 1 = COMMIT). Value of a marker: version i16,
//! coordinatorEpoch i32. Types other than the two markers (the KRaft-internal ones such as
//! LEADER_CHANGE) are kept as [`ControlRecord::Unknown`] rather than rejected, because a
//! consumer only needs to recognise markers and skip everything else in a control batch. Newer
//! key or value versions may append fields; like the Java client we read the fields we know
//! and ignore the rest.

use super::{Record, RecordBatch, RecordsError};

/// A decoded control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlRecord {
    /// The transaction was aborted: its records before this marker must be dropped by
    /// `read_committed` consumers.
    Abort { coordinator_epoch: i32 },
    /// The transaction was committed.
    Commit { coordinator_epoch: i32 },
    /// A control type this crate does not interpret (e.g. KRaft's LEADER_CHANGE = 2).
    Unknown(i16),
}

const ABORT: i16 = 0;
const COMMIT: i16 = 1;
/// The key and value versions this crate writes (the only ones Kafka has defined).
const CURRENT_VERSION: i16 = 0;

fn be_i16(b: &[u8]) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

impl ControlRecord {
    /// Interprets a control record's key and value.
    pub fn parse(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<ControlRecord, RecordsError> {
        let key = key.ok_or(RecordsError::InvalidControlRecord {
            reason: "control record has a null key",
        })?;
        let kind = key
            .get(2..)
            .and_then(be_i16)
            .ok_or(RecordsError::InvalidControlRecord {
                reason: "control record key shorter than 4 bytes",
            })?;
        let marker_epoch = || -> Result<i32, RecordsError> {
            value
                .and_then(|v| v.get(2..6))
                .and_then(|e| e.try_into().ok())
                .map(i32::from_be_bytes)
                .ok_or(RecordsError::InvalidControlRecord {
                    reason: "transaction marker value shorter than 6 bytes",
                })
        };
        Ok(match kind {
            ABORT => ControlRecord::Abort {
                coordinator_epoch: marker_epoch()?,
            },
            COMMIT => ControlRecord::Commit {
                coordinator_epoch: marker_epoch()?,
            },
            other => ControlRecord::Unknown(other),
        })
    }

    /// The control type id carried in the key.
    pub fn type_id(&self) -> i16 {
        match *self {
            ControlRecord::Abort { .. } => ABORT,
            ControlRecord::Commit { .. } => COMMIT,
            ControlRecord::Unknown(t) => t,
        }
    }

    /// The record key: version 0 and the type id.
    pub fn key_bytes(&self) -> [u8; 4] {
        let mut key = [0u8; 4];
        key[..2].copy_from_slice(&CURRENT_VERSION.to_be_bytes());
        key[2..].copy_from_slice(&self.type_id().to_be_bytes());
        key
    }

    /// The record value of a marker (version 0 and the coordinator epoch); `None` for unknown
    /// types, whose value layout this crate does not know.
    pub fn value_bytes(&self) -> Option<[u8; 6]> {
        match *self {
            ControlRecord::Abort { coordinator_epoch }
            | ControlRecord::Commit { coordinator_epoch } => {
                let mut value = [0u8; 6];
                value[..2].copy_from_slice(&CURRENT_VERSION.to_be_bytes());
                value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
                Some(value)
            }
            ControlRecord::Unknown(_) => None,
        }
    }
}

impl Record {
    /// Interprets this record as a control record. Only meaningful for records of a batch
    /// whose [`is_control`](RecordBatch::is_control) flag is set.
    pub fn control(&self) -> Result<ControlRecord, RecordsError> {
        ControlRecord::parse(self.key.as_deref(), self.value.as_deref())
    }
}

impl RecordBatch {
    /// The control record of a control batch (Kafka writes exactly one per batch); `None` for
    /// data batches and for empty control batches.
    pub fn control_record(&self) -> Option<Result<ControlRecord, RecordsError>> {
        if !self.is_control {
            return None;
        }
        self.records.first().map(Record::control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        for c in [
            ControlRecord::Abort {
                coordinator_epoch: 7,
            },
            ControlRecord::Commit {
                coordinator_epoch: -1,
            },
            ControlRecord::Commit {
                coordinator_epoch: i32::MAX,
            },
        ] {
            let value = c.value_bytes();
            assert_eq!(
                ControlRecord::parse(Some(&c.key_bytes()), value.as_ref().map(|v| &v[..])),
                Ok(c)
            );
        }
        let unknown = ControlRecord::Unknown(2);
        assert_eq!(
            ControlRecord::parse(Some(&unknown.key_bytes()), None),
            Ok(unknown)
        );
    }

    #[test]
    fn known_bytes() {
        // COMMIT, coordinator epoch 5, as the broker writes it.
        assert_eq!(
            ControlRecord::parse(Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 5])),
            Ok(ControlRecord::Commit {
                coordinator_epoch: 5
            })
        );
        // A future value version with an extra field still parses.
        assert_eq!(
            ControlRecord::parse(Some(&[0, 1, 0, 0]), Some(&[0, 1, 0, 0, 0, 9, 0xff])),
            Ok(ControlRecord::Abort {
                coordinator_epoch: 9
            })
        );
        assert!(ControlRecord::parse(Some(&[0, 0, 0]), None).is_err());
        assert!(ControlRecord::parse(None, None).is_err());
        assert!(ControlRecord::parse(Some(&[0, 0, 0, 1]), Some(&[0, 0, 0])).is_err());
        assert!(ControlRecord::parse(Some(&[0, 0, 0, 0]), None).is_err());
    }
}

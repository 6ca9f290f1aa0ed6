//! Dead letters: an event its handler group gave up on, written to
//! `{prefix}.dlq.{handler_group}` with the original key, value and headers, plus headers that
//! say where it came from and why it failed, so it can be inspected and replayed.

use std::sync::Arc;

use bytes::Bytes;

use super::backend::OutRecord;
use super::envelope::InRecord;

pub const H_ORIGINAL_TOPIC: &str = "dlq-original-topic";
pub const H_ORIGINAL_PARTITION: &str = "dlq-original-partition";
pub const H_ORIGINAL_OFFSET: &str = "dlq-original-offset";
pub const H_ERROR: &str = "dlq-error";
pub const H_ATTEMPTS: &str = "dlq-attempts";
pub const H_HANDLER_GROUP: &str = "dlq-handler-group";

/// The dead letter of `record`. It goes to the same partition number modulo the DLQ topic's
/// partition count, so one aggregate's dead letters stay in order too.
pub(crate) fn dead_letter(
    topic: Arc<str>,
    dlq_partitions: i32,
    record: &InRecord,
    group: &str,
    error: &str,
    attempts: u32,
) -> OutRecord {
    let mut headers = record.headers.clone();
    headers.extend([
        (
            H_ORIGINAL_TOPIC.to_owned(),
            Bytes::from(record.topic.to_string()),
        ),
        (
            H_ORIGINAL_PARTITION.to_owned(),
            Bytes::from(record.partition.to_string()),
        ),
        (
            H_ORIGINAL_OFFSET.to_owned(),
            Bytes::from(record.offset.to_string()),
        ),
        (H_ERROR.to_owned(), Bytes::from(error.to_owned())),
        (H_ATTEMPTS.to_owned(), Bytes::from(attempts.to_string())),
        (H_HANDLER_GROUP.to_owned(), Bytes::from(group.to_owned())),
    ]);
    OutRecord {
        topic,
        partition: record.partition.rem_euclid(dlq_partitions.max(1)),
        key: record.key.clone().unwrap_or_default(),
        value: record.value.clone().unwrap_or_default(),
        headers,
    }
}

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
            H_ORIGINAL_TOPIC.into(),
            Bytes::from(record.topic.to_string()),
        ),
        (
            H_ORIGINAL_PARTITION.into(),
            Bytes::from(record.partition.to_string()),
        ),
        (
            H_ORIGINAL_OFFSET.into(),
            Bytes::from(record.offset.to_string()),
        ),
        (H_ERROR.into(), Bytes::from(error.to_owned())),
        (H_ATTEMPTS.into(), Bytes::from(attempts.to_string())),
        (H_HANDLER_GROUP.into(), Bytes::from(group.to_owned())),
    ]);
    OutRecord {
        topic,
        partition: record.partition.rem_euclid(dlq_partitions.max(1)),
        key: record.key.clone().unwrap_or_default(),
        value: record.value.clone().unwrap_or_default(),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a OutRecord, k: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn keeps_the_event_and_says_where_it_came_from_and_why() {
        let record = InRecord {
            topic: "angzarr.events.player".into(),
            partition: 7,
            offset: 12_345_678_901,
            key: Some(Bytes::from_static(b"player\0p-1")),
            value: Some(Bytes::from_static(b"\x00\xffpayload")),
            headers: vec![("event-id".into(), Bytes::from_static(b"id-1"))],
        };
        let dlq: Arc<str> = "angzarr.dlq.projector".into();
        let out = dead_letter(dlq.clone(), 4, &record, "projector", "boom: bad", 5);
        assert_eq!(out.topic, dlq);
        assert_eq!(out.partition, 3, "7 mod 4 partitions");
        assert_eq!(out.key, record.key.clone().unwrap());
        assert_eq!(out.value, record.value.clone().unwrap());
        assert_eq!(
            header(&out, "event-id"),
            Some("id-1"),
            "original headers kept"
        );
        assert_eq!(
            header(&out, H_ORIGINAL_TOPIC),
            Some("angzarr.events.player")
        );
        assert_eq!(header(&out, H_ORIGINAL_PARTITION), Some("7"));
        assert_eq!(header(&out, H_ORIGINAL_OFFSET), Some("12345678901"));
        assert_eq!(header(&out, H_ERROR), Some("boom: bad"));
        assert_eq!(header(&out, H_ATTEMPTS), Some("5"));
        assert_eq!(header(&out, H_HANDLER_GROUP), Some("projector"));

        // A record without key or value (a tombstone) still gets a dead letter; a DLQ topic
        // with more partitions keeps the partition number.
        let bare = InRecord {
            key: None,
            value: None,
            ..record
        };
        let out = dead_letter(dlq, 12, &bare, "projector", "", 0);
        assert_eq!(out.partition, 7);
        assert!(out.key.is_empty() && out.value.is_empty());
        assert_eq!(header(&out, H_ATTEMPTS), Some("0"));
    }
}

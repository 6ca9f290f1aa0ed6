//! ListOffsets (API key 2) routed as Kafka requires: a partition's offsets are only known to
//! its leader, so partitions are grouped by leader and each leader gets one request, all
//! leaders asked at once. Shared by the admin client ([`Admin::list_offsets`], which retries)
//! and the consumer (offset resets and seeks, which back off on their own schedule).
//!
//! Versions: timestamps replace the v0 offset arrays from v1 (KIP-79), `isolation_level`
//! arrives in v2 (KIP-98), `current_leader_epoch` in v4 (KIP-320) and the max-timestamp query
//! in v7 (KIP-734).
//!
//! [`Admin::list_offsets`]: crate::admin::Admin::list_offsets

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::join_all;
use kafka_proto::ErrorCode;
use kafka_proto::messages::ListOffsetsRequest;
use kafka_proto::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};

use crate::client::{Client, TopicMetadata};
use crate::error::Error;
use crate::routing::{is_stale_metadata, send_versioned};

/// Which records a reader may see (KIP-98). Consumers and ListOffsets must agree: under
/// `ReadCommitted` the "latest" offset is the last stable offset, not the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IsolationLevel {
    /// Every record, including those of open and aborted transactions. Kafka's default.
    #[default]
    ReadUncommitted,
    /// Only committed data: reads stop at the last stable offset and aborted transactions are
    /// skipped.
    ReadCommitted,
}

impl IsolationLevel {
    /// The `isolation_level` byte of Fetch and ListOffsets.
    pub fn wire(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

/// What offset to look up for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The log start offset: the oldest record still kept.
    Earliest,
    /// The offset the next record will get (the high watermark, or the last stable offset
    /// under `ReadCommitted`).
    Latest,
    /// The first offset whose record timestamp is at or after this many milliseconds since
    /// the epoch.
    Timestamp(i64),
    /// The offset of the record with the largest timestamp (ListOffsets v7+, KIP-734).
    MaxTimestamp,
}

impl OffsetSpec {
    /// The `timestamp` field of a ListOffsets partition: the special values -2 (earliest),
    /// -1 (latest) and -3 (max timestamp), or the timestamp itself.
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::MaxTimestamp => -3,
            OffsetSpec::Timestamp(t) => t,
        }
    }

    /// The ListOffsets version that can carry this query.
    fn min_version(self) -> i16 {
        match self {
            OffsetSpec::Earliest | OffsetSpec::Latest => 0,
            OffsetSpec::Timestamp(_) => 1,
            OffsetSpec::MaxTimestamp => 7,
        }
    }
}

/// One partition's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// `None` only for a timestamp query that no record satisfies (every record is older).
    pub offset: Option<i64>,
    /// The timestamp of the record at `offset`, for timestamp and max-timestamp queries.
    pub timestamp: Option<i64>,
    /// The leader epoch of that record, when the broker reports it (v4+).
    pub leader_epoch: Option<i32>,
}

/// One round of ListOffsets for `wanted` (topic, partition, query), one request per leader,
/// sent concurrently. Results come back in the order of `wanted`. No retries: a retriable
/// per-partition error comes back as an `Err` for that partition, after metadata has been
/// marked stale when the error means the leader moved.
pub(crate) async fn list_offsets_round<T: AsRef<str>>(
    client: &Client,
    wanted: &[(T, i32, OffsetSpec)],
    isolation: IsolationLevel,
) -> Vec<Result<ListedOffset, Error>> {
    let mut results: Vec<Option<Result<ListedOffset, Error>>> = vec![None; wanted.len()];
    let mut topics: HashMap<&str, Result<Arc<TopicMetadata>, Error>> = HashMap::new();
    // leader -> (index into `wanted`, leader epoch from metadata)
    let mut by_leader: HashMap<i32, Vec<(usize, i32)>> = HashMap::new();
    for (i, (topic, partition, _)) in wanted.iter().enumerate() {
        let topic = topic.as_ref();
        if !topics.contains_key(topic) {
            let md = client.topic(topic).await;
            topics.insert(topic, md);
        }
        let md = match &topics[topic] {
            Ok(md) => md,
            Err(e) => {
                results[i] = Some(Err(e.clone()));
                continue;
            }
        };
        let Some(p) = md.partition(*partition) else {
            results[i] = Some(Err(Error::UnknownPartition {
                topic: topic.to_owned(),
                partition: *partition,
            }));
            continue;
        };
        if p.leader < 0 {
            client.invalidate();
            results[i] = Some(Err(Error::NoLeader {
                topic: topic.to_owned(),
                partition: *partition,
            }));
            continue;
        }
        by_leader
            .entry(p.leader)
            .or_default()
            .push((i, p.leader_epoch));
    }

    let rounds = by_leader.into_iter().map(|(node, entries)| async move {
        let answers = ask_leader(client, node, wanted, &entries, isolation).await;
        (entries, answers)
    });
    for (entries, answers) in join_all(rounds).await {
        match answers {
            Ok(answers) => {
                for ((i, _), answer) in entries.iter().zip(answers) {
                    results[*i] = Some(answer);
                }
            }
            Err(e) => {
                for (i, _) in &entries {
                    results[*i] = Some(Err(e.clone()));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Protocol("partition left unanswered".into()))))
        .collect()
}

/// One ListOffsets request to `node` for `entries`; answers in the order of `entries`.
async fn ask_leader<T: AsRef<str>>(
    client: &Client,
    node: i32,
    wanted: &[(T, i32, OffsetSpec)],
    entries: &[(usize, i32)],
    isolation: IsolationLevel,
) -> Result<Vec<Result<ListedOffset, Error>>, Error> {
    let mut unsupported: Vec<Option<Error>> = vec![None; entries.len()];
    let mut used_version = 0;
    let resp = send_versioned(client, node, |version| {
        used_version = version;
        if isolation == IsolationLevel::ReadCommitted && version < 2 {
            return Err(Error::Unsupported(format!(
                "ListOffsets v{version} cannot read committed offsets (needs v2)"
            )));
        }
        let mut req = ListOffsetsRequest::default();
        req.replica_id = -1;
        req.isolation_level = if version >= 2 { isolation.wire() } else { 0 };
        let mut topics: Vec<ListOffsetsTopic> = Vec::new();
        for (slot, &(i, leader_epoch)) in entries.iter().enumerate() {
            let (topic, partition, spec) = &wanted[i];
            if version < spec.min_version() {
                unsupported[slot] = Some(Error::Unsupported(format!(
                    "ListOffsets v{version} cannot look up {spec:?} (needs v{})",
                    spec.min_version()
                )));
                continue;
            }
            let mut p = ListOffsetsPartition::default();
            p.partition_index = *partition;
            p.timestamp = spec.wire();
            if version >= 4 {
                p.current_leader_epoch = leader_epoch;
            }
            let topic = topic.as_ref();
            match topics.iter_mut().find(|t| t.name == topic) {
                Some(t) => t.partitions.push(p),
                None => {
                    let mut t = ListOffsetsTopic::default();
                    t.name = topic.to_owned();
                    t.partitions.push(p);
                    topics.push(t);
                }
            }
        }
        req.topics = topics;
        Ok(req)
    })
    .await?;

    let mut answers: HashMap<(&str, i32), Result<ListedOffset, Error>> = HashMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            let context = format!("{}-{}", t.name, p.partition_index);
            let code = ErrorCode::from_code(p.error_code);
            let answer = if code.is_ok() {
                let offset = if used_version == 0 {
                    p.old_style_offsets.first().copied().unwrap_or(-1)
                } else {
                    p.offset
                };
                Ok(ListedOffset {
                    offset: (offset >= 0).then_some(offset),
                    timestamp: (p.timestamp >= 0).then_some(p.timestamp),
                    leader_epoch: (p.leader_epoch >= 0).then_some(p.leader_epoch),
                })
            } else {
                if is_stale_metadata(code) {
                    client.invalidate();
                }
                Err(Error::broker(code, None, context))
            };
            if let Some((topic, _, _)) =
                wanted.iter().find(|(topic, _, _)| topic.as_ref() == t.name)
            {
                answers.insert((topic.as_ref(), p.partition_index), answer);
            }
        }
    }
    Ok(entries
        .iter()
        .zip(unsupported)
        .map(|(&(i, _), unsupported)| {
            if let Some(e) = unsupported {
                return Err(e);
            }
            let (topic, partition, _) = &wanted[i];
            answers
                .get(&(topic.as_ref(), *partition))
                .cloned()
                .unwrap_or_else(|| {
                    Err(Error::Protocol(format!(
                        "ListOffsets answer lacks {}-{partition}",
                        topic.as_ref()
                    )))
                })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_timestamps_are_kafkas() {
        assert_eq!(OffsetSpec::Earliest.wire(), -2);
        assert_eq!(OffsetSpec::Latest.wire(), -1);
        assert_eq!(OffsetSpec::MaxTimestamp.wire(), -3);
        assert_eq!(
            OffsetSpec::Timestamp(1_700_000_000_000).wire(),
            1_700_000_000_000
        );
        assert_eq!(OffsetSpec::MaxTimestamp.min_version(), 7);
        assert_eq!(IsolationLevel::ReadCommitted.wire(), 1);
        assert_eq!(IsolationLevel::default(), IsolationLevel::ReadUncommitted);
    }
}

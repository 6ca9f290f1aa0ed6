//! One Fetch to one broker: the request for the partitions it leads, and the response turned
//! into per-partition results. The request runs as its own task so it is on the wire, and its
//! response decoded, while the application is still busy with the previous records; the
//! consumer keeps at most one such task per broker.
//!
//! Fetch versions: topics are named by id from v13 (KIP-516), so a topic whose id metadata did
//! not supply caps the request at v12. Sessions (KIP-227) are not used yet: every fetch is a
//! full, sessionless one (`session_epoch` -1), which every broker accepts.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_proto::messages::FetchRequest;
use kafka_proto::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_proto::messages::fetch_response::FetchResponse;
use kafka_proto::records::DecodeOptions;
use kafka_proto::{ErrorCode, Uuid};
use tokio::sync::mpsc::UnboundedSender;

use super::fetch_response::{FetchedPartition, process_partition};
use crate::client::Client;
use crate::error::Error;
use crate::offsets::IsolationLevel;

/// Fetch topics by id from this version on.
const FIRST_TOPIC_ID_VERSION: i16 = 13;

/// One partition of a fetch request.
#[derive(Debug, Clone)]
pub(crate) struct FetchEntry {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// From metadata, so a deposed leader answers FENCED_LEADER_EPOCH (KIP-320); -1 when
    /// unknown, which skips the check.
    pub leader_epoch: i32,
    /// The partition's seek generation when the request was built; a response for an older
    /// generation is dropped.
    pub generation: u64,
}

/// Request-wide settings, copied from the consumer config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchParams {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub isolation: IsolationLevel,
    pub decode: DecodeOptions,
}

/// What came back for one request.
#[derive(Debug)]
pub(crate) struct FetchOutcome {
    pub node: i32,
    pub fetch_id: u64,
    pub entries: Vec<FetchEntry>,
    /// One slot per entry; `None` for a partition the response left out.
    pub result: Result<Vec<Option<FetchedPartition>>, Error>,
}

/// The version to send: the negotiated one, capped below topic ids when an entry lacks one.
pub(crate) fn choose_version(negotiated: i16, entries: &[FetchEntry]) -> i16 {
    if negotiated >= FIRST_TOPIC_ID_VERSION && entries.iter().any(|e| e.topic_id == Uuid::ZERO) {
        FIRST_TOPIC_ID_VERSION - 1
    } else {
        negotiated
    }
}

/// The Fetch request for `entries` at `version`, topics in first-appearance order.
pub(crate) fn build_request(
    entries: &[FetchEntry],
    params: &FetchParams,
    version: i16,
) -> FetchRequest {
    let mut req = FetchRequest::default();
    req.replica_id = -1;
    req.max_wait_ms = params.max_wait_ms;
    req.min_bytes = params.min_bytes;
    req.max_bytes = params.max_bytes;
    req.isolation_level = params.isolation.wire();
    req.session_id = 0;
    req.session_epoch = -1;
    let by_id = version >= FIRST_TOPIC_ID_VERSION;
    for e in entries {
        let mut p = FetchPartition::default();
        p.partition = e.partition;
        p.fetch_offset = e.fetch_offset;
        p.partition_max_bytes = e.max_bytes;
        p.current_leader_epoch = e.leader_epoch;
        let same_topic = |t: &FetchTopic| {
            if by_id {
                t.topic_id == e.topic_id
            } else {
                t.topic == *e.topic
            }
        };
        match req.topics.iter_mut().find(|t| same_topic(t)) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = FetchTopic::default();
                if by_id {
                    t.topic_id = e.topic_id;
                } else {
                    t.topic = e.topic.to_string();
                }
                t.partitions.push(p);
                req.topics.push(t);
            }
        }
    }
    req
}

/// Splits `resp` into one result per entry. A response-level error fails them all.
pub(crate) fn process_response(
    node: i32,
    entries: &[FetchEntry],
    resp: FetchResponse,
    version: i16,
    params: &FetchParams,
) -> Result<Vec<Option<FetchedPartition>>, Error> {
    let code = ErrorCode::from_code(resp.error_code);
    if !code.is_ok() {
        return Err(Error::broker(
            code,
            None,
            format!("fetch from broker {node}"),
        ));
    }
    let by_id = version >= FIRST_TOPIC_ID_VERSION;
    let mut slot: HashMap<(&[u8], i32), usize> = HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let key: &[u8] = if by_id {
            &e.topic_id.0
        } else {
            e.topic.as_bytes()
        };
        slot.insert((key, e.partition), i);
    }
    let mut out: Vec<Option<FetchedPartition>> = vec![None; entries.len()];
    for topic in resp.responses {
        let key: &[u8] = if by_id {
            &topic.topic_id.0
        } else {
            topic.topic.as_bytes()
        };
        for data in topic.partitions {
            // A partition we did not ask for is ignored: it cannot be matched to a position.
            let Some(&i) = slot.get(&(key, data.partition_index)) else {
                continue;
            };
            let e = &entries[i];
            out[i] = Some(process_partition(
                &e.topic,
                e.partition,
                e.fetch_offset,
                data,
                params.isolation,
                &params.decode,
            ));
        }
    }
    Ok(out)
}

/// Sends one fetch to `node` and reports the outcome on `done`. Runs as a task.
pub(crate) async fn run_fetch(
    client: Client,
    node: i32,
    fetch_id: u64,
    entries: Vec<FetchEntry>,
    params: FetchParams,
    done: UnboundedSender<FetchOutcome>,
) {
    let result = fetch(&client, node, &entries, &params).await;
    // The consumer may be gone; then nobody wants the records.
    let _ = done.send(FetchOutcome {
        node,
        fetch_id,
        entries,
        result,
    });
}

async fn fetch(
    client: &Client,
    node: i32,
    entries: &[FetchEntry],
    params: &FetchParams,
) -> Result<Vec<Option<FetchedPartition>>, Error> {
    let conn = client.broker(node).await?;
    let version = choose_version(conn.version_for::<FetchRequest>()?, entries);
    let req = build_request(entries, params, version);
    let resp = conn
        .send_at(&req, version)
        .await
        .map_err(|e| client.request_failed(&conn, e))?;
    process_response(node, entries, resp, version, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_proto::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_proto::records::{BatchEncoder, BatchParams};

    fn entry(topic: &str, id: u8, partition: i32, offset: i64) -> FetchEntry {
        FetchEntry {
            topic: Arc::from(topic),
            topic_id: Uuid([id; 16]),
            partition,
            fetch_offset: offset,
            max_bytes: 1 << 20,
            leader_epoch: 4,
            generation: 0,
        }
    }

    fn params() -> FetchParams {
        FetchParams {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 << 20,
            isolation: IsolationLevel::ReadCommitted,
            decode: DecodeOptions::default(),
        }
    }

    #[test]
    fn requests_group_partitions_by_topic_and_name_topics_as_the_version_wants() {
        let entries = [
            entry("a", 1, 0, 5),
            entry("b", 2, 0, 7),
            entry("a", 1, 1, 9),
        ];
        let v13 = build_request(&entries, &params(), 13);
        assert_eq!(v13.topics.len(), 2);
        assert_eq!(v13.topics[0].topic_id, Uuid([1; 16]));
        assert_eq!(v13.topics[0].partitions.len(), 2);
        assert_eq!(v13.topics[0].partitions[1].fetch_offset, 9);
        assert_eq!(v13.topics[0].partitions[1].current_leader_epoch, 4);
        assert_eq!(v13.isolation_level, 1);
        assert_eq!(v13.session_epoch, -1);
        let v12 = build_request(&entries, &params(), 12);
        assert_eq!(v12.topics[1].topic, "b");
        // Both forms encode at their versions (a field the version lacks would fail).
        use kafka_proto::Encode;
        v13.encode(&mut BytesMut::new(), 13).unwrap();
        v12.encode(&mut BytesMut::new(), 12).unwrap();
    }

    #[test]
    fn a_topic_without_an_id_caps_the_version_below_13() {
        let with_ids = [entry("a", 1, 0, 0)];
        assert_eq!(choose_version(17, &with_ids), 17);
        let without = [entry("a", 1, 0, 0), entry("b", 0, 0, 0)];
        assert_eq!(choose_version(17, &without), 12);
        assert_eq!(choose_version(11, &without), 11);
    }

    #[test]
    fn responses_are_matched_to_entries_by_id_and_unknown_partitions_ignored() {
        let entries = [entry("a", 1, 0, 0), entry("a", 1, 1, 0)];
        let mut buf = BytesMut::new();
        let mut b = BatchEncoder::new(&mut buf, BatchParams::default());
        b.append(1, None, Some(b"x"), &[]).unwrap();
        let batch = b.finish().unwrap();
        let mut topic = FetchableTopicResponse::default();
        topic.topic_id = Uuid([1; 16]);
        for partition in [1, 9] {
            let mut d = PartitionData::default();
            d.partition_index = partition;
            d.high_watermark = 1;
            d.records = Some(batch.clone());
            topic.partitions.push(d);
        }
        let mut resp = FetchResponse::default();
        resp.responses.push(topic);
        let out = process_response(1, &entries, resp, 13, &params()).unwrap();
        assert!(out[0].is_none(), "partition 0 was not in the response");
        assert_eq!(out[1].as_ref().unwrap().records.len(), 1);
        assert_eq!(out[1].as_ref().unwrap().next_offset, 1);
    }

    #[test]
    fn a_response_level_error_fails_every_partition() {
        let mut resp = FetchResponse::default();
        resp.error_code = ErrorCode::FetchSessionIdNotFound.code();
        let err = process_response(3, &[entry("a", 1, 0, 0)], resp, 13, &params()).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::FetchSessionIdNotFound));
    }
}

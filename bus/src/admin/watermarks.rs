//! `Admin::high_watermarks`: each partition's high watermark (the offset the next record
//! will get, which is where a caught-up consumer's committed offset points), as a Fetch
//! response reports it.
//!
//! Why a Fetch and not ListOffsets "latest": Kafka answers both with the high watermark, but
//! tansu 0.6 answers ListOffsets "latest" with the last batch's base offset + 1, short by that
//! batch's other records, while its Fetch reports the true high watermark. The Fetch is sent
//! at the ListOffsets answer, so on Kafka (where that is the end of the log) it carries no
//! records, and with `max_wait_ms` 0 it never waits for data.

use std::collections::HashMap;

use futures_util::future::join_all;
use kafka_proto::messages::FetchRequest;
use kafka_proto::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_proto::{ErrorCode, Uuid};
use tokio::time::Instant;

use super::Admin;
use crate::error::Error;
use crate::offsets::{IsolationLevel, OffsetSpec};
use crate::routing::is_stale_metadata;

/// Fetch names topics by id from this version on (KIP-516).
const FIRST_TOPIC_ID_VERSION: i16 = 13;

impl Admin {
    /// The high watermark of each (topic, partition), in the order asked. Retriable
    /// per-partition errors (moved leaders) are retried until `api_timeout`.
    pub async fn high_watermarks(
        &self,
        wanted: &[(&str, i32)],
    ) -> Result<Vec<Result<i64, Error>>, Error> {
        let specs: Vec<(&str, i32, OffsetSpec)> = wanted
            .iter()
            .map(|&(t, p)| (t, p, OffsetSpec::Latest))
            .collect();
        let latest = self
            .list_offsets(&specs, IsolationLevel::ReadUncommitted)
            .await?;
        let deadline = Instant::now() + self.config.api_timeout;
        let mut results: Vec<Option<Result<i64, Error>>> = vec![None; wanted.len()];
        let mut pending = Vec::new();
        for (i, l) in latest.into_iter().enumerate() {
            match l {
                Ok(l) => pending.push((i, l.offset.unwrap_or(0))),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let answers = self.fetch_round(wanted, &pending).await;
            attempt += 1;
            let delay = self.client.backoff_delay(attempt);
            let may_retry = Instant::now() + delay < deadline;
            let mut again = Vec::new();
            for ((i, at), answer) in pending.into_iter().zip(answers) {
                match answer {
                    Err(e) if e.is_retriable() && may_retry => again.push((i, at)),
                    other => results[i] = Some(other),
                }
            }
            pending = again;
            if !pending.is_empty() {
                self.client.invalidate();
                tokio::time::sleep(delay).await;
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Protocol("partition left unanswered".into()))))
            .collect())
    }

    /// One Fetch per leader for `pending` (index into `wanted`, fetch offset); answers in the
    /// order of `pending`.
    async fn fetch_round(
        &self,
        wanted: &[(&str, i32)],
        pending: &[(usize, i64)],
    ) -> Vec<Result<i64, Error>> {
        let mut out: Vec<Option<Result<i64, Error>>> = vec![None; pending.len()];
        // leader -> (slot in `pending`, topic id, leader epoch)
        let mut by_leader: HashMap<i32, Vec<(usize, Uuid, i32)>> = HashMap::new();
        for (slot, &(i, _)) in pending.iter().enumerate() {
            let (topic, partition) = wanted[i];
            let md = match self.client.topic(topic).await {
                Ok(md) => md,
                Err(e) => {
                    out[slot] = Some(Err(e));
                    continue;
                }
            };
            match md.partition(partition) {
                None => {
                    out[slot] = Some(Err(Error::UnknownPartition {
                        topic: topic.to_owned(),
                        partition,
                    }))
                }
                Some(p) if p.leader < 0 => {
                    out[slot] = Some(Err(Error::NoLeader {
                        topic: topic.to_owned(),
                        partition,
                    }))
                }
                Some(p) => by_leader.entry(p.leader).or_default().push((
                    slot,
                    Uuid(md.topic_id),
                    p.leader_epoch,
                )),
            }
        }
        let rounds = by_leader.into_iter().map(|(node, entries)| async move {
            let sent = async {
                let conn = self.client.broker(node).await?;
                let mut version = conn.version_for::<FetchRequest>()?;
                // A topic whose id metadata did not supply can only be named before v13.
                if version >= FIRST_TOPIC_ID_VERSION
                    && entries.iter().any(|(_, id, _)| *id == Uuid::ZERO)
                {
                    version = FIRST_TOPIC_ID_VERSION - 1;
                }
                let req = fetch_request(wanted, pending, &entries, version);
                let resp = conn
                    .send_at(&req, version)
                    .await
                    .map_err(|e| self.client.request_failed(&conn, e))?;
                Ok::<_, Error>((resp, version))
            }
            .await;
            match sent {
                Ok((resp, used)) => (node, entries, Ok(resp), used),
                Err(e) => (node, entries, Err(e), 0),
            }
        });
        for (node, entries, resp, used) in join_all(rounds).await {
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    for (slot, _, _) in &entries {
                        out[*slot] = Some(Err(e.clone()));
                    }
                    continue;
                }
            };
            let code = ErrorCode::from_code(resp.error_code);
            for (slot, id, _) in &entries {
                let (topic, partition) = wanted[pending[*slot].0];
                let answer = if !code.is_ok() {
                    Err(Error::broker(
                        code,
                        None,
                        format!("fetch from broker {node}"),
                    ))
                } else {
                    resp.responses
                        .iter()
                        .filter(|t| {
                            if used >= FIRST_TOPIC_ID_VERSION {
                                t.topic_id == *id
                            } else {
                                t.topic == topic
                            }
                        })
                        .flat_map(|t| &t.partitions)
                        .find(|p| p.partition_index == partition)
                        .map(|p| {
                            let code = ErrorCode::from_code(p.error_code);
                            if !code.is_ok() {
                                if is_stale_metadata(code) {
                                    self.client.invalidate();
                                }
                                Err(Error::broker(code, None, format!("{topic}-{partition}")))
                            } else if p.high_watermark < 0 {
                                Err(Error::Protocol(format!(
                                    "no high watermark for {topic}-{partition}"
                                )))
                            } else {
                                Ok(p.high_watermark)
                            }
                        })
                        .unwrap_or_else(|| {
                            Err(Error::Protocol(format!(
                                "Fetch answer lacks {topic}-{partition}"
                            )))
                        })
                };
                out[*slot] = Some(answer);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Protocol("partition left unanswered".into()))))
            .collect()
    }
}

/// A Fetch for `entries` at their offsets: no wait, no minimum, one byte per partition, so
/// the answer is the watermarks and (on Kafka, at the end of the log) no records.
fn fetch_request(
    wanted: &[(&str, i32)],
    pending: &[(usize, i64)],
    entries: &[(usize, Uuid, i32)],
    version: i16,
) -> FetchRequest {
    let by_id = version >= FIRST_TOPIC_ID_VERSION;
    let mut req = FetchRequest::default();
    req.replica_id = -1;
    req.max_wait_ms = 0;
    req.min_bytes = 0;
    req.max_bytes = 1;
    req.isolation_level = IsolationLevel::ReadUncommitted.wire();
    req.session_id = 0;
    req.session_epoch = -1;
    for &(slot, id, leader_epoch) in entries {
        let (i, offset) = pending[slot];
        let (topic, partition) = wanted[i];
        let mut p = FetchPartition::default();
        p.partition = partition;
        p.fetch_offset = offset;
        p.partition_max_bytes = 1;
        if version >= 9 {
            p.current_leader_epoch = leader_epoch;
        }
        let same = |t: &FetchTopic| {
            if by_id {
                t.topic_id == id
            } else {
                t.topic == topic
            }
        };
        match req.topics.iter_mut().find(|t| same(t)) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = FetchTopic::default();
                if by_id {
                    t.topic_id = id;
                } else {
                    t.topic = topic.to_owned();
                }
                t.partitions.push(p);
                req.topics.push(t);
            }
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_proto::{Encode, Message};

    #[test]
    fn the_request_names_topics_as_its_version_wants_and_encodes_at_every_version() {
        let wanted = [("a", 0), ("a", 1), ("b", 0)];
        let pending = [(0, 10), (1, 20), (2, 30)];
        let ida = Uuid([1; 16]);
        let idb = Uuid([2; 16]);
        let entries = [(0, ida, 5), (1, ida, 5), (2, idb, -1)];
        for version in FetchRequest::VALID_VERSIONS.iter() {
            let req = fetch_request(&wanted, &pending, &entries, version);
            assert_eq!(req.topics.len(), 2);
            assert_eq!(req.topics[0].partitions[1].fetch_offset, 20);
            assert_eq!(req.max_wait_ms, 0);
            req.encode(&mut bytes::BytesMut::new(), version).unwrap();
        }
    }
}

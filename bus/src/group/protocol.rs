//! The consumer protocol's embedded payloads: the subscription each member sends in JoinGroup
//! metadata, and the assignment the leader sends back through SyncGroup. Both are an `int16`
//! version followed by the struct at that version (`ConsumerProtocolSubscription` /
//! `ConsumerProtocolAssignment` in Kafka's specs). A newer version than we know is read at
//! the newest we know and its extra bytes ignored, as Kafka's own consumers do: later versions
//! only append fields.
//!
//! Input comes from other group members through the broker, so it is hostile: the generated
//! decoders check every length before allocating, and errors are typed.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_proto::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as WireAssigned,
};
use kafka_proto::messages::consumer_protocol_subscription::{
    ConsumerProtocolSubscription, TopicPartition as WireOwned,
};
use kafka_proto::{Decode, Encode};

use super::types::TopicPartition;
use crate::error::Error;

/// The subscription version we write: v3 carries owned partitions (v1), generation (v2) and
/// rack (v3).
pub const SUBSCRIPTION_VERSION: i16 = 3;
/// The assignment version we write (v1 adds nothing we need, but is what Java 3.x writes).
pub const ASSIGNMENT_VERSION: i16 = 1;

/// One member's subscription, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub user_data: Option<Bytes>,
    /// Partitions the member owns now (cooperative protocol, v1+).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation those partitions were owned in; -1 when unknown (v2+).
    pub generation_id: i32,
    pub rack_id: Option<String>,
}

/// One member's assignment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    pub partitions: Vec<TopicPartition>,
    pub user_data: Option<Bytes>,
}

fn bad(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("bad consumer protocol {what}: {e}"))
}

/// Groups partitions by topic, topics and partitions in ascending order (the payloads, and
/// admin's described assignments).
pub(crate) fn by_topic(partitions: &[TopicPartition]) -> BTreeMap<Arc<str>, Vec<i32>> {
    let mut map: BTreeMap<Arc<str>, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        map.entry(tp.topic.clone()).or_default().push(tp.partition);
    }
    for v in map.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    map
}

fn flatten(topic: &str, partitions: Vec<i32>, out: &mut Vec<TopicPartition>) -> Result<(), Error> {
    let name: Arc<str> = Arc::from(topic);
    for p in partitions {
        if p < 0 {
            return Err(bad("payload", format!("negative partition {topic}-{p}")));
        }
        out.push(TopicPartition {
            topic: name.clone(),
            partition: p,
        });
    }
    Ok(())
}

/// Reads the version prefix; the body version is the lower of it and the newest we know.
fn split_version(buf: &mut Bytes, newest: i16, what: &str) -> Result<(i16, bool), Error> {
    if buf.remaining() < 2 {
        return Err(bad(what, "shorter than its version prefix"));
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(bad(what, format!("negative version {version}")));
    }
    Ok((version.min(newest), version > newest))
}

pub fn encode_subscription(sub: &Subscription) -> Result<Bytes, Error> {
    let wire = ConsumerProtocolSubscription {
        topics: sub.topics.clone(),
        user_data: sub.user_data.clone(),
        owned_partitions: by_topic(&sub.owned_partitions)
            .into_iter()
            .map(|(topic, partitions)| WireOwned {
                topic: topic.to_string(),
                partitions,
            })
            .collect(),
        generation_id: sub.generation_id,
        rack_id: sub.rack_id.clone(),
    };
    let mut buf = BytesMut::new();
    buf.put_i16(SUBSCRIPTION_VERSION);
    wire.encode(&mut buf, SUBSCRIPTION_VERSION)
        .map_err(|e| bad("subscription", e))?;
    Ok(buf.freeze())
}

pub fn decode_subscription(mut buf: Bytes) -> Result<Subscription, Error> {
    let (version, newer) = split_version(&mut buf, SUBSCRIPTION_VERSION, "subscription")?;
    let wire = ConsumerProtocolSubscription::decode(&mut buf, version)
        .map_err(|e| bad("subscription", e))?;
    if !newer && buf.has_remaining() {
        return Err(bad(
            "subscription",
            format!("{} trailing bytes", buf.remaining()),
        ));
    }
    let mut owned = Vec::new();
    for t in wire.owned_partitions {
        flatten(&t.topic, t.partitions, &mut owned)?;
    }
    Ok(Subscription {
        topics: wire.topics,
        user_data: wire.user_data,
        owned_partitions: owned,
        generation_id: wire.generation_id,
        rack_id: wire.rack_id,
    })
}

pub fn encode_assignment(a: &Assignment) -> Result<Bytes, Error> {
    let wire = ConsumerProtocolAssignment {
        assigned_partitions: by_topic(&a.partitions)
            .into_iter()
            .map(|(topic, partitions)| WireAssigned {
                topic: topic.to_string(),
                partitions,
            })
            .collect(),
        user_data: a.user_data.clone(),
    };
    let mut buf = BytesMut::new();
    buf.put_i16(ASSIGNMENT_VERSION);
    wire.encode(&mut buf, ASSIGNMENT_VERSION)
        .map_err(|e| bad("assignment", e))?;
    Ok(buf.freeze())
}

/// An empty payload is an empty assignment: the coordinator sends one to a member the leader
/// left out (and Java does the same).
pub fn decode_assignment(mut buf: Bytes) -> Result<Assignment, Error> {
    if buf.is_empty() {
        return Ok(Assignment::default());
    }
    let (version, newer) = split_version(&mut buf, ASSIGNMENT_VERSION, "assignment")?;
    let wire =
        ConsumerProtocolAssignment::decode(&mut buf, version).map_err(|e| bad("assignment", e))?;
    if !newer && buf.has_remaining() {
        return Err(bad(
            "assignment",
            format!("{} trailing bytes", buf.remaining()),
        ));
    }
    let mut partitions = Vec::new();
    for t in wire.assigned_partitions {
        flatten(&t.topic, t.partitions, &mut partitions)?;
    }
    partitions.sort();
    partitions.dedup();
    Ok(Assignment {
        partitions,
        user_data: wire.user_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn subscription_round_trips_with_owned_partitions_and_generation() {
        let sub = Subscription {
            topics: vec!["a".into(), "b".into()],
            user_data: Some(Bytes::from_static(b"u")),
            owned_partitions: vec![tp("a", 0), tp("a", 2), tp("b", 1)],
            generation_id: 7,
            rack_id: Some("r1".into()),
        };
        let bytes = encode_subscription(&sub).unwrap();
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(decode_subscription(bytes).unwrap(), sub);
    }

    #[test]
    fn assignment_round_trips_and_empty_is_nothing() {
        let a = Assignment {
            partitions: vec![tp("a", 0), tp("a", 1), tp("z", 5)],
            user_data: None,
        };
        assert_eq!(
            decode_assignment(encode_assignment(&a).unwrap()).unwrap(),
            a
        );
        assert_eq!(
            decode_assignment(Bytes::new()).unwrap(),
            Assignment::default()
        );
    }

    #[test]
    fn older_versions_decode_with_defaults() {
        // v0 subscription: topics + user data only.
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        ConsumerProtocolSubscription {
            topics: vec!["t".into()],
            ..Default::default()
        }
        .encode(&mut buf, 0)
        .unwrap();
        let sub = decode_subscription(buf.freeze()).unwrap();
        assert_eq!(sub.topics, vec!["t".to_string()]);
        assert!(sub.owned_partitions.is_empty());
        assert_eq!(sub.generation_id, -1);
    }

    #[test]
    fn a_newer_version_is_read_as_the_newest_known_and_extra_bytes_ignored() {
        let sub = Subscription {
            topics: vec!["t".into()],
            generation_id: 3,
            ..Default::default()
        };
        let mut bytes = BytesMut::from(&encode_subscription(&sub).unwrap()[..]);
        bytes[1] = 9; // version 9
        bytes.extend_from_slice(b"future fields");
        assert_eq!(decode_subscription(bytes.freeze()).unwrap(), sub);
    }

    #[test]
    fn hostile_input_is_an_error_never_a_panic() {
        let sub = Subscription {
            topics: vec!["topic".into()],
            owned_partitions: vec![tp("topic", 1)],
            generation_id: 1,
            ..Default::default()
        };
        let good = encode_subscription(&sub).unwrap();
        for cut in 0..good.len() {
            assert!(
                decode_subscription(good.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..good.len() {
            for flip in [0x80u8, 0xff, 0x01] {
                let mut b = BytesMut::from(&good[..]);
                b[i] ^= flip;
                let _ = decode_subscription(b.freeze());
            }
        }
        // A huge declared count with no bytes behind it.
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i32(i32::MAX);
        assert!(decode_subscription(b.freeze()).is_err());
        let mut b = BytesMut::new();
        b.put_i16(-1);
        assert!(decode_assignment(b.freeze()).is_err());
        let a = encode_assignment(&Assignment {
            partitions: vec![tp("x", 3)],
            user_data: None,
        })
        .unwrap();
        for cut in 1..a.len() {
            assert!(decode_assignment(a.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut trailing = BytesMut::from(&a[..]);
        trailing.put_u8(0);
        assert!(decode_assignment(trailing.freeze()).is_err());
    }
}

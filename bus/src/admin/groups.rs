//! Consumer group administration: list, describe, delete, committed offsets, lag, and
//! offset changes from outside the group (Kafka's `kafka-consumer-groups.sh` operations).
//!
//! Routing: ListGroups goes to every broker (each lists only the groups it coordinates) and
//! the answers are merged; everything about one group goes to its coordinator, found with
//! FindCoordinator (key type 0, KIP-699 batching from v4) before every attempt, so a
//! coordinator that moved (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
//! COORDINATOR_LOAD_IN_PROGRESS, all retriable) costs a rediscovery and the client's
//! `retry_backoff`, within the admin `api_timeout`.
//!
//! Changing offsets from outside: an OffsetCommit with generation -1 and an empty member id
//! (what Kafka's own admin client sends). Kafka accepts it only while the group has no
//! members, since a live member would overwrite it with its next commit; some brokers
//! (tansu 0.6) accept it regardless. So [`Admin::reset_group_offsets`] describes the group
//! first and refuses with [`Error::GroupNotEmpty`] unless it is Empty or Dead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_proto::ErrorCode;
use kafka_proto::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_proto::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_proto::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest,
};

use super::Admin;
use crate::client::check_code;
use crate::connection::Connection;
use crate::error::Error;
use crate::group::protocol::{by_topic, decode_assignment, decode_subscription};
use crate::offsets::{IsolationLevel, OffsetSpec};
use crate::routing::{find_group_coordinator, is_coordinator_moved, send_versioned_on};

/// A group's state as the coordinator reports it (the classic protocol's states).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupState {
    /// No members; offsets may be changed from outside.
    Empty,
    /// Members are joining or rejoining.
    PreparingRebalance,
    /// Members joined and wait for their assignments.
    CompletingRebalance,
    /// Members hold assignments and consume.
    Stable,
    /// The group is gone (or never existed); its metadata is being removed.
    Dead,
    /// A state this client does not know, as the broker spelled it.
    Other(String),
}

impl GroupState {
    pub fn from_wire(s: &str) -> GroupState {
        match s {
            "Empty" => GroupState::Empty,
            "PreparingRebalance" => GroupState::PreparingRebalance,
            "CompletingRebalance" | "AwaitingSync" => GroupState::CompletingRebalance,
            "Stable" => GroupState::Stable,
            "Dead" => GroupState::Dead,
            other => GroupState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
            GroupState::Other(s) => s,
        }
    }

    /// Whether no member can overwrite an offset changed from outside.
    pub fn is_inactive(&self) -> bool {
        matches!(self, GroupState::Empty | GroupState::Dead)
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupListing {
    pub group_id: String,
    /// "consumer" for consumer groups; empty for a group that only stores offsets.
    pub protocol_type: String,
    /// Reported from ListGroups v4 (KIP-518); `None` from older brokers.
    pub state: Option<GroupState>,
}

/// What a member was assigned, decoded when the group speaks the consumer protocol.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MemberAssignment {
    /// Topic -> partitions (sorted): a consumer-protocol assignment. Empty while the member
    /// waits for its first assignment.
    Consumer(BTreeMap<String, Vec<i32>>),
    /// Another protocol type (Connect, a stream framework): the bytes as the broker sent them.
    Opaque(Bytes),
    /// Claimed to be the consumer protocol but did not decode; the bytes are kept so nothing
    /// is hidden.
    /// `error` says why it did not decode.
    Invalid { bytes: Bytes, error: String },
}

impl MemberAssignment {
    /// The decoded partitions, or `None` when there are none to show.
    pub fn partitions(&self) -> Option<&BTreeMap<String, Vec<i32>>> {
        match self {
            MemberAssignment::Consumer(p) => Some(p),
            _ => None,
        }
    }
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GroupMember {
    pub member_id: String,
    /// Static membership (KIP-345), DescribeGroups v4+.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The topics the member subscribed to, when its metadata is a decodable
    /// consumer-protocol subscription.
    pub subscription: Option<Vec<String>>,
    pub assignment: MemberAssignment,
}

/// A group as its coordinator describes it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol: for consumer groups the assignor ("range", "roundrobin", ...).
    pub protocol: String,
    pub members: Vec<GroupMember>,
    /// The coordinator's node id.
    pub coordinator: i32,
}

/// One committed offset of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    /// The next offset the group will read.
    pub offset: i64,
    pub leader_epoch: Option<i32>,
    pub metadata: Option<String>,
}

/// How far a group is behind one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// `None`: the group has committed nothing here; a member starts the partition by its
    /// `auto_offset_reset`, which the group's offsets do not record.
    pub committed: Option<i64>,
    /// From a Fetch response (see `Admin::high_watermarks` for why not ListOffsets).
    pub high_watermark: i64,
    /// `high_watermark - committed`, `None` without a commit (there is no position to
    /// measure from; counting from the log start would guess the reset policy). Negative
    /// only if the committed offset is beyond the end of the log (a truncated or recreated
    /// topic).
    pub lag: Option<i64>,
}

/// Where [`Admin::reset_group_offsets`] moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark: the group skips everything written so far.
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch; the
    /// high watermark where every record is older (what Kafka's tool does).
    Timestamp(i64),
    /// An explicit offset, clamped into [log start, high watermark] as Kafka's tool does.
    Offset(i64),
}

/// One partition's planned or applied reset.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffsetReset {
    pub topic: String,
    pub partition: i32,
    /// The committed offset before, if any.
    pub previous: Option<i64>,
    pub new_offset: i64,
}

impl Admin {
    /// The connection to `group`'s coordinator and its node id.
    async fn coordinator(&self, group: &str) -> Result<(i32, Connection), Error> {
        let node = find_group_coordinator(&self.client, group).await?;
        Ok((node, self.client.broker(node).await?))
    }

    /// Every group the cluster knows, sorted by id: ListGroups to each broker, merged.
    /// One broker that cannot answer within `api_timeout` fails the call, since a partial
    /// list would look complete.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, Error> {
        let mut nodes: Vec<i32> = self.client.metadata().brokers.keys().copied().collect();
        if nodes.is_empty() {
            nodes = self
                .client
                .refresh_metadata()
                .await?
                .brokers
                .keys()
                .copied()
                .collect();
        }
        let asks = nodes.into_iter().map(|node| {
            self.retrying(move || async move {
                let conn = self.client.broker(node).await?;
                let mut version = 0;
                let resp = send_versioned_on(&self.client, &conn, |v| {
                    version = v;
                    Ok(ListGroupsRequest::default())
                })
                .await?;
                check_code(
                    resp.error_code,
                    None,
                    &format!("list groups on broker {node}"),
                )?;
                Ok((version, resp.groups))
            })
        });
        let mut merged: BTreeMap<String, GroupListing> = BTreeMap::new();
        for answer in join_all(asks).await {
            let (version, groups) = answer?;
            for g in groups {
                merged.insert(
                    g.group_id.clone(),
                    GroupListing {
                        group_id: g.group_id,
                        protocol_type: g.protocol_type,
                        state: (version >= 4).then(|| GroupState::from_wire(&g.group_state)),
                    },
                );
            }
        }
        Ok(merged.into_values().collect())
    }

    /// Describes each group at its coordinator, concurrently; one result per group, in the
    /// order asked. A group the coordinator does not know is reported as Dead with no
    /// members (Kafka's answer) or as its GROUP_ID_NOT_FOUND error (newer versions).
    pub async fn describe_groups(
        &self,
        groups: &[&str],
    ) -> Result<Vec<(String, Result<GroupDescription, Error>)>, Error> {
        let asks = groups
            .iter()
            .map(|&g| async move { (g.to_owned(), self.retrying(|| self.describe_once(g)).await) });
        Ok(join_all(asks).await)
    }

    /// Describes one group; its error becomes the call's error.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, Error> {
        self.retrying(|| self.describe_once(group)).await
    }

    async fn describe_once(&self, group: &str) -> Result<GroupDescription, Error> {
        let (node, conn) = self.coordinator(group).await?;
        self.describe_at(group, node, &conn).await
    }

    /// DescribeGroups for `group` at its coordinator `node`, reached through `conn`.
    async fn describe_at(
        &self,
        group: &str,
        node: i32,
        conn: &Connection,
    ) -> Result<GroupDescription, Error> {
        let resp = send_versioned_on(&self.client, conn, |_| {
            let mut req = DescribeGroupsRequest::default();
            req.groups = vec![group.to_owned()];
            Ok(req)
        })
        .await?;
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id == group)
            .ok_or_else(|| Error::Protocol(format!("DescribeGroups lacks group {group:?}")))?;
        check_code(g.error_code, None, &format!("group {group}"))?;
        let consumer = g.protocol_type == "consumer";
        let members = g
            .members
            .into_iter()
            .map(|m| GroupMember {
                subscription: if consumer {
                    decode_subscription(m.member_metadata.clone())
                        .ok()
                        .map(|s| {
                            let mut topics = s.topics;
                            topics.sort();
                            topics
                        })
                } else {
                    None
                },
                assignment: if !consumer {
                    MemberAssignment::Opaque(m.member_assignment)
                } else {
                    match decode_assignment(m.member_assignment.clone()) {
                        Ok(a) => MemberAssignment::Consumer(
                            by_topic(&a.partitions)
                                .into_iter()
                                .map(|(topic, partitions)| (topic.to_string(), partitions))
                                .collect(),
                        ),
                        Err(error) => MemberAssignment::Invalid {
                            bytes: m.member_assignment,
                            error: error.to_string(),
                        },
                    }
                },
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
            })
            .collect();
        Ok(GroupDescription {
            group_id: g.group_id,
            state: GroupState::from_wire(&g.group_state),
            protocol_type: g.protocol_type,
            protocol: g.protocol_data,
            members,
            coordinator: node,
        })
    }

    /// Deletes each group (and its committed offsets) at its coordinator; one result per
    /// group, in the order asked. A group with members is refused before the request with
    /// [`Error::GroupNotEmpty`] (tansu 0.6 would delete it under its members), or by the
    /// broker with NON_EMPTY_GROUP when members joined in between; an unknown group is
    /// GROUP_ID_NOT_FOUND. Broker refusals are that group's [`Error::Broker`].
    pub async fn delete_groups(
        &self,
        groups: &[&str],
    ) -> Result<Vec<(String, Result<(), Error>)>, Error> {
        let asks = groups
            .iter()
            .map(|&g| async move { (g.to_owned(), self.retrying(|| self.delete_once(g)).await) });
        Ok(join_all(asks).await)
    }

    /// Describes `group`, then deletes it if inactive, both at the coordinator found once.
    async fn delete_once(&self, group: &str) -> Result<(), Error> {
        let (node, conn) = self.coordinator(group).await?;
        ensure_inactive(group, self.describe_at(group, node, &conn).await)?;
        let resp = send_versioned_on(&self.client, &conn, |_| {
            let mut req = DeleteGroupsRequest::default();
            req.groups_names = vec![group.to_owned()];
            Ok(req)
        })
        .await?;
        let r = resp
            .results
            .iter()
            .find(|r| r.group_id == group)
            .ok_or_else(|| Error::Protocol(format!("DeleteGroups lacks group {group:?}")))?;
        check_code(r.error_code, None, &format!("group {group}"))
    }

    /// The group's committed offsets for every topic, sorted by topic and partition
    /// (OffsetFetch v2+ with no topic list). Partitions without a commit are left out.
    /// A partition-level error fails the call, naming the partition; UNSTABLE_OFFSET_COMMIT
    /// (a transaction still open) is retried.
    pub async fn group_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>, Error> {
        self.retrying(|| self.group_offsets_once(group)).await
    }

    async fn group_offsets_once(&self, group: &str) -> Result<Vec<CommittedOffset>, Error> {
        let (_, conn) = self.coordinator(group).await?;
        let mut version = 0;
        let resp = send_versioned_on(&self.client, &conn, |v| {
            version = v;
            if version < 2 {
                return Err(Error::Unsupported(format!(
                    "OffsetFetch v{version} cannot list all of a group's offsets (needs v2)"
                )));
            }
            let mut req = OffsetFetchRequest::default();
            if version >= 8 {
                let mut g = OffsetFetchRequestGroup::default();
                g.group_id = group.to_owned();
                g.topics = None;
                req.groups.push(g);
            } else {
                req.group_id = group.to_owned();
                req.topics = None;
            }
            Ok(req)
        })
        .await?;
        // (topic, partition, offset, leader epoch, metadata, error code), either shape.
        let mut rows = Vec::new();
        if version >= 8 {
            let g = resp
                .groups
                .into_iter()
                .find(|g| g.group_id == group)
                .ok_or_else(|| Error::Protocol(format!("OffsetFetch lacks group {group:?}")))?;
            check_code(g.error_code, None, &format!("group {group}"))?;
            for t in g.topics {
                for p in t.partitions {
                    rows.push((
                        t.name.clone(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata,
                        p.error_code,
                    ));
                }
            }
        } else {
            check_code(resp.error_code, None, &format!("group {group}"))?;
            for t in resp.topics {
                for p in t.partitions {
                    rows.push((
                        t.name.clone(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata,
                        p.error_code,
                    ));
                }
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for (topic, partition, offset, epoch, metadata, code) in rows {
            check_code(code, None, &format!("group {group} {topic}-{partition}"))?;
            if offset < 0 {
                continue;
            }
            out.push(CommittedOffset {
                topic,
                partition,
                offset,
                leader_epoch: (epoch >= 0).then_some(epoch),
                metadata,
            });
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// The group's lag on every partition of every topic it has committed offsets for or a
    /// live member is assigned, sorted by topic and partition. Partitions of those topics
    /// without a commit are included with `committed` and `lag` `None`, so a partition the
    /// group never committed is visible rather than silently missing.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<PartitionLag>, Error> {
        let committed = self.group_offsets(group).await?;
        let mut rows: BTreeMap<(String, i32), Option<i64>> = committed
            .iter()
            .map(|c| ((c.topic.clone(), c.partition), Some(c.offset)))
            .collect();
        let mut topics: BTreeSet<String> = committed.iter().map(|c| c.topic.clone()).collect();
        match self.describe_group(group).await {
            Ok(d) => topics.extend(
                d.members
                    .iter()
                    .filter_map(|m| m.assignment.partitions())
                    .flat_map(|p| p.keys().cloned()),
            ),
            Err(e) if e.code() == Some(ErrorCode::GroupIdNotFound) => {}
            Err(e) => return Err(e),
        }
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = topics.into_iter().collect();
        let md = self.client.fetch_metadata(Some(&names)).await?;
        for t in md.topics {
            // A topic gone since its commits keeps only its committed rows (their high
            // watermark lookup reports it).
            let Some(name) = t.name.filter(|_| t.error_code == 0) else {
                continue;
            };
            for p in &t.partitions {
                rows.entry((name.clone(), p.partition_index))
                    .or_insert(None);
            }
        }
        let wanted: Vec<(&str, i32)> = rows.keys().map(|(t, p)| (t.as_str(), *p)).collect();
        let hwms = self.high_watermarks(&wanted).await?;
        rows.iter()
            .zip(hwms)
            .map(|(((topic, partition), committed), hwm)| {
                let hwm = hwm?;
                Ok(PartitionLag {
                    topic: topic.clone(),
                    partition: *partition,
                    committed: *committed,
                    high_watermark: hwm,
                    lag: committed.map(|c| hwm - c),
                })
            })
            .collect()
    }

    /// Commits `offsets` (topic, partition, next offset to read) for `group` from outside
    /// the group: generation -1, no member id. Kafka accepts this only while the group has no
    /// members (it answers UNKNOWN_MEMBER_ID or REBALANCE_IN_PROGRESS otherwise); this call
    /// does not check, [`Admin::reset_group_offsets`] does. One result per partition, in
    /// the broker's order.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(&str, i32, i64)],
    ) -> Result<Vec<(String, i32, Result<(), Error>)>, Error> {
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for &(t, p, o) in offsets {
            if o < 0 {
                return Err(Error::InvalidArgument(format!(
                    "offset {o} for {t}-{p} is negative"
                )));
            }
            by_topic.entry(t).or_default().push((p, o));
        }
        let by_topic = &by_topic;
        let resp = self
            .retrying(|| async move {
                let (_, conn) = self.coordinator(group).await?;
                let resp = send_versioned_on(&self.client, &conn, |_| {
                    let mut req = OffsetCommitRequest::default();
                    req.group_id = group.to_owned();
                    req.generation_id_or_member_epoch = -1;
                    req.member_id = String::new();
                    for (topic, parts) in by_topic {
                        let mut t = OffsetCommitRequestTopic::default();
                        t.name = (*topic).to_owned();
                        for &(p, o) in parts {
                            let mut cp = OffsetCommitRequestPartition::default();
                            cp.partition_index = p;
                            cp.committed_offset = o;
                            t.partitions.push(cp);
                        }
                        req.topics.push(t);
                    }
                    Ok(req)
                })
                .await?;
                // A coordinator that moved answers per partition; rediscover and resend.
                for t in &resp.topics {
                    for p in &t.partitions {
                        let code = ErrorCode::from_code(p.error_code);
                        if is_coordinator_moved(code) {
                            return Err(Error::broker(code, None, format!("group {group}")));
                        }
                    }
                }
                Ok(resp)
            })
            .await?;
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                let ctx = format!("group {group} {}-{}", t.name, p.partition_index);
                out.push((
                    t.name.clone(),
                    p.partition_index,
                    check_code(p.error_code, None, &ctx),
                ));
            }
        }
        Ok(out)
    }

    /// Moves `group`'s offsets for every partition of `topics` to `spec`. Refuses with
    /// [`Error::GroupNotEmpty`] unless the group is Empty or Dead (or unknown), because a
    /// live member would overwrite the change. With `dry_run` nothing is written and the
    /// plan is returned. Sorted by topic and partition.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topics: &[&str],
        spec: ResetSpec,
        dry_run: bool,
    ) -> Result<Vec<OffsetReset>, Error> {
        self.retrying(|| async { ensure_inactive(group, self.describe_once(group).await) })
            .await?;
        let topics: BTreeSet<&str> = topics.iter().copied().collect();
        let mut partitions: Vec<(&str, i32)> = Vec::new();
        for &t in &topics {
            let md = self.client.topic(t).await?;
            partitions.extend(md.partitions.iter().map(|p| (t, p.partition)));
        }
        let previous: HashMap<(String, i32), i64> = self
            .group_offsets(group)
            .await?
            .into_iter()
            .map(|c| ((c.topic, c.partition), c.offset))
            .collect();
        let targets = self.resolve(&partitions, spec).await?;
        let plan: Vec<OffsetReset> = partitions
            .iter()
            .zip(targets)
            .map(|(&(t, p), new_offset)| OffsetReset {
                topic: t.to_owned(),
                partition: p,
                previous: previous.get(&(t.to_owned(), p)).copied(),
                new_offset,
            })
            .collect();
        if dry_run || plan.is_empty() {
            return Ok(plan);
        }
        let offsets: Vec<(&str, i32, i64)> = plan
            .iter()
            .map(|r| (r.topic.as_str(), r.partition, r.new_offset))
            .collect();
        for (_, _, result) in self.alter_group_offsets(group, &offsets).await? {
            result?;
        }
        Ok(plan)
    }

    /// The offset `spec` names for each partition; any partition's error fails the call.
    async fn resolve(
        &self,
        partitions: &[(&str, i32)],
        spec: ResetSpec,
    ) -> Result<Vec<i64>, Error> {
        let hwms = || async {
            self.high_watermarks(partitions)
                .await?
                .into_iter()
                .collect::<Result<Vec<i64>, Error>>()
        };
        let listed = |spec: OffsetSpec| async move {
            let wanted: Vec<(&str, i32, OffsetSpec)> =
                partitions.iter().map(|&(t, p)| (t, p, spec)).collect();
            self.list_offsets(&wanted, IsolationLevel::ReadUncommitted)
                .await?
                .into_iter()
                .map(|r| r.map(|l| l.offset))
                .collect::<Result<Vec<Option<i64>>, Error>>()
        };
        match spec {
            ResetSpec::Latest => hwms().await,
            ResetSpec::Earliest => Ok(listed(OffsetSpec::Earliest)
                .await?
                .into_iter()
                .map(|o| o.unwrap_or(0))
                .collect()),
            ResetSpec::Timestamp(ts) => {
                let found = listed(OffsetSpec::Timestamp(ts)).await?;
                let ends = hwms().await?;
                Ok(found
                    .into_iter()
                    .zip(ends)
                    .map(|(o, end)| o.unwrap_or(end))
                    .collect())
            }
            ResetSpec::Offset(o) => {
                let starts = listed(OffsetSpec::Earliest).await?;
                let ends = hwms().await?;
                Ok(starts
                    .into_iter()
                    .zip(ends)
                    .map(|(start, end)| o.clamp(start.unwrap_or(0).min(end), end))
                    .collect())
            }
        }
    }
}

/// Fails with [`Error::GroupNotEmpty`] unless `described` shows `group` Empty, Dead or
/// unknown; other errors of the description pass through.
fn ensure_inactive(group: &str, described: Result<GroupDescription, Error>) -> Result<(), Error> {
    match described {
        Ok(d) if !d.state.is_inactive() || !d.members.is_empty() => Err(Error::GroupNotEmpty {
            group: group.to_owned(),
            state: d.state.to_string(),
            members: d.members.len(),
        }),
        Err(e) if e.code() == Some(ErrorCode::GroupIdNotFound) => Ok(()),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_unknown_ones_are_kept() {
        for s in [
            "Empty",
            "PreparingRebalance",
            "CompletingRebalance",
            "Stable",
            "Dead",
        ] {
            assert_eq!(GroupState::from_wire(s).as_str(), s);
        }
        assert_eq!(
            GroupState::from_wire("Assigning"),
            GroupState::Other("Assigning".into())
        );
        assert!(GroupState::Empty.is_inactive() && GroupState::Dead.is_inactive());
        assert!(!GroupState::Stable.is_inactive());
        assert!(!GroupState::from_wire("Reconciling").is_inactive());
    }
}

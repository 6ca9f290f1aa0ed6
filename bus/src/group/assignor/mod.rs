//! Partition assignors: pure functions from the members' subscriptions and the topics'
//! partition counts to one assignment per member. The group leader runs the one the
//! coordinator picked (JoinGroup's `protocol_name`).
//!
//! Members are ordered by their group instance id when they have one (KIP-345: a static
//! member keeps its place across restarts) and by member id otherwise, so every leader
//! computes the same assignment from the same input.

mod range;
mod round_robin;
mod sticky;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::config::AssignorKind;
use super::protocol::Subscription;
use super::types::TopicPartition;

pub use range::range;
pub use round_robin::round_robin;
pub use sticky::cooperative_sticky;

/// One member as the leader sees it in the JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub subscription: Subscription,
}

impl MemberSubscription {
    fn sort_key(&self) -> (&str, &str) {
        (
            self.group_instance_id.as_deref().unwrap_or(&self.member_id),
            &self.member_id,
        )
    }

    fn subscribes(&self, topic: &str) -> bool {
        self.subscription.topics.iter().any(|t| t == topic)
    }
}

/// Partition counts per topic (topics the cluster does not know are left out).
pub type TopicPartitions = BTreeMap<Arc<str>, i32>;

/// Member id -> its partitions (every member has an entry, possibly empty).
pub type GroupAssignment = BTreeMap<String, Vec<TopicPartition>>;

/// Runs the assignor `kind`.
pub fn assign(
    kind: AssignorKind,
    members: &[MemberSubscription],
    topics: &TopicPartitions,
) -> GroupAssignment {
    match kind {
        AssignorKind::Range => range(members, topics),
        AssignorKind::RoundRobin => round_robin(members, topics),
        AssignorKind::CooperativeSticky => cooperative_sticky(members, topics),
    }
}

/// Members in assignment order.
fn ordered(members: &[MemberSubscription]) -> Vec<&MemberSubscription> {
    let mut v: Vec<&MemberSubscription> = members.iter().collect();
    v.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    v
}

fn empty_assignment(members: &[MemberSubscription]) -> GroupAssignment {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

/// The cooperative protocol's second half (KIP-429): a partition the assignor gives to a
/// member other than its current owner is withheld this round. The owner sees it missing,
/// revokes it and rejoins; the follow-up rebalance then hands it over, unowned. So no
/// partition is ever owned by two members at once.
pub fn withhold_moving_partitions(
    assignment: &mut GroupAssignment,
    members: &[MemberSubscription],
) {
    let owner = newest_claims(members, |_, _| true);
    for (member, parts) in assignment.iter_mut() {
        parts.retain(|tp| {
            owner
                .get(tp)
                .is_none_or(|&i| members[i].member_id == *member)
        });
    }
}

/// The owner of each partition the members claim (`owned_partitions`), as an index into
/// `members`: the claim from the newest generation wins (a member that missed a rebalance may
/// still list partitions it lost), the first member listed between equal generations. Only
/// claims `valid` accepts count.
fn newest_claims<'a>(
    members: impl IntoIterator<Item = &'a MemberSubscription>,
    valid: impl Fn(&MemberSubscription, &TopicPartition) -> bool,
) -> BTreeMap<&'a TopicPartition, usize> {
    let mut claim: BTreeMap<&TopicPartition, (i32, usize)> = BTreeMap::new();
    for (i, m) in members.into_iter().enumerate() {
        let g = m.subscription.generation_id;
        for tp in &m.subscription.owned_partitions {
            if valid(m, tp) && claim.get(tp).is_none_or(|&(old, _)| g > old) {
                claim.insert(tp, (g, i));
            }
        }
    }
    claim.into_iter().map(|(tp, (_, i))| (tp, i)).collect()
}

/// Every partition of the topics `members` subscribe to, sorted.
fn all_partitions(members: &[MemberSubscription], topics: &TopicPartitions) -> Vec<TopicPartition> {
    let subscribed: BTreeSet<&str> = members
        .iter()
        .flat_map(|m| m.subscription.topics.iter().map(String::as_str))
        .collect();
    let mut out = Vec::new();
    for (topic, &count) in topics {
        if subscribed.contains(&**topic) {
            out.extend((0..count.max(0)).map(|p| TopicPartition {
                topic: topic.clone(),
                partition: p,
            }));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;

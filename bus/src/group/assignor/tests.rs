//! Assignor properties: every subscribed partition assigned exactly once, only to a
//! subscriber; balance; stickiness; the cooperative two-step.

use super::*;
use crate::group::protocol::Subscription;
use partitioner::RandomSource;

pub(crate) fn member(
    id: &str,
    topics: &[&str],
    owned: &[(&str, i32)],
    generation: i32,
) -> MemberSubscription {
    MemberSubscription {
        member_id: id.into(),
        group_instance_id: None,
        subscription: Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned_partitions: owned
                .iter()
                .map(|&(t, p)| TopicPartition::new(t, p))
                .collect(),
            generation_id: generation,
            ..Default::default()
        },
    }
}

fn topics(list: &[(&str, i32)]) -> TopicPartitions {
    list.iter().map(|&(t, n)| (Arc::from(t), n)).collect()
}

fn names(parts: &[TopicPartition]) -> Vec<String> {
    parts.iter().map(|tp| tp.to_string()).collect()
}

#[test]
fn range_gives_contiguous_ranges_extra_to_the_first() {
    let members = [member("b", &["t"], &[], -1), member("a", &["t"], &[], -1)];
    let a = range(&members, &topics(&[("t", 5)]));
    assert_eq!(names(&a["a"]), ["t-0", "t-1", "t-2"]);
    assert_eq!(names(&a["b"]), ["t-3", "t-4"]);
}

#[test]
fn round_robin_deals_in_turn_and_skips_non_subscribers() {
    let members = [
        member("a", &["t", "u"], &[], -1),
        member("b", &["t"], &[], -1),
    ];
    let a = round_robin(&members, &topics(&[("t", 3), ("u", 2)]));
    assert_eq!(names(&a["a"]), ["t-0", "t-2", "u-0", "u-1"]);
    assert_eq!(names(&a["b"]), ["t-1"]);
}

#[test]
fn static_members_are_ordered_by_instance_id() {
    let mut x = member("zzz", &["t"], &[], -1);
    x.group_instance_id = Some("a".into());
    let y = member("aaa", &["t"], &[], -1);
    let a = range(&[x, y], &topics(&[("t", 2)]));
    assert_eq!(
        names(&a["zzz"]),
        ["t-0"],
        "instance id a sorts before member id aaa"
    );
}

#[test]
fn sticky_keeps_owners_and_moves_only_for_balance() {
    // a owns everything; b joins: b gets half, a keeps the rest.
    let members = [
        member("a", &["t"], &[("t", 0), ("t", 1), ("t", 2), ("t", 3)], 3),
        member("b", &["t"], &[], -1),
    ];
    let a = cooperative_sticky(&members, &topics(&[("t", 4)]));
    assert_eq!(a["a"].len(), 2);
    assert_eq!(a["b"].len(), 2);
    for tp in &a["a"] {
        assert!(members[0].subscription.owned_partitions.contains(tp));
    }
}

#[test]
fn cooperative_withholds_moving_partitions_until_revoked() {
    let t = topics(&[("t", 4)]);
    let owned_all = [("t", 0), ("t", 1), ("t", 2), ("t", 3)];
    let first = [
        member("a", &["t"], &owned_all, 3),
        member("b", &["t"], &[], -1),
    ];
    let mut a = cooperative_sticky(&first, &t);
    withhold_moving_partitions(&mut a, &first);
    assert_eq!(a["a"].len(), 2, "a keeps two and revokes two");
    assert!(a["b"].is_empty(), "b gets nothing until a revoked them");
    // Follow-up: a owns two, b none; the freed two go to b.
    let kept: Vec<(&str, i32)> = a["a"].iter().map(|tp| ("t", tp.partition)).collect();
    let second = [member("a", &["t"], &kept, 4), member("b", &["t"], &[], 4)];
    let mut b = cooperative_sticky(&second, &t);
    withhold_moving_partitions(&mut b, &second);
    assert_eq!(b["a"], a["a"], "a keeps its partitions");
    assert_eq!(b["b"].len(), 2);
}

#[test]
fn a_stale_claim_loses_to_the_newer_generation() {
    let members = [
        member("a", &["t"], &[("t", 0)], 2),
        member("b", &["t"], &[("t", 0)], 5),
    ];
    let a = cooperative_sticky(&members, &topics(&[("t", 1)]));
    assert_eq!(names(&a["b"]), ["t-0"]);
}

/// Random groups: every assignor covers each subscribed partition exactly once, only with
/// subscribers; roundrobin and sticky are balanced for equal subscriptions (range is not: it
/// balances each topic alone); sticky moves no more than balance requires.
#[test]
fn random_groups_are_complete_balanced_and_sticky() {
    let mut rng = partitioner::SplitMix64::new(0x5eed_1234);
    for round in 0..300 {
        let n_members = 1 + (rng.next_u64() % 7) as usize;
        let n_topics = 1 + (rng.next_u64() % 3) as usize;
        let t: TopicPartitions = (0..n_topics)
            .map(|i| {
                (
                    Arc::from(format!("t{i}").as_str()),
                    (rng.next_u64() % 13) as i32,
                )
            })
            .collect();
        let all_topics: Vec<String> = t.keys().map(|k| k.to_string()).collect();
        let topic_refs: Vec<&str> = all_topics.iter().map(String::as_str).collect();
        let total: usize = t.values().map(|&n| n as usize).sum();
        // Previous owners: a random earlier assignment.
        let prev_members: Vec<MemberSubscription> = (0..n_members)
            .map(|i| member(&format!("m{i}"), &topic_refs, &[], -1))
            .collect();
        let prev = round_robin(&prev_members, &t);
        let members: Vec<MemberSubscription> = (0..n_members)
            .map(|i| {
                let id = format!("m{i}");
                // Some members drop what they owned (new members).
                let owned: Vec<TopicPartition> = if rng.next_u64().is_multiple_of(3) {
                    Vec::new()
                } else {
                    prev[&id].clone()
                };
                let mut m = member(&id, &topic_refs, &[], 1);
                m.subscription.owned_partitions = owned;
                m
            })
            .collect();
        for kind in [
            AssignorKind::Range,
            AssignorKind::RoundRobin,
            AssignorKind::CooperativeSticky,
        ] {
            let a = assign(kind, &members, &t);
            let mut seen: BTreeSet<TopicPartition> = BTreeSet::new();
            for parts in a.values() {
                for tp in parts {
                    assert!(
                        seen.insert(tp.clone()),
                        "round {round} {kind:?}: {tp} twice"
                    );
                }
            }
            assert_eq!(
                seen.len(),
                total,
                "round {round} {kind:?}: not all assigned"
            );
            if kind != AssignorKind::Range {
                let counts: Vec<usize> = a.values().map(Vec::len).collect();
                let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                assert!(
                    max - min <= 1,
                    "round {round} {kind:?}: unbalanced {counts:?}"
                );
            }
            if kind == AssignorKind::CooperativeSticky {
                // Stickiness: a member keeps min(owned, quota) of what it owned.
                let quota_max = total.div_ceil(n_members);
                for m in &members {
                    let kept = a[&m.member_id]
                        .iter()
                        .filter(|tp| m.subscription.owned_partitions.contains(tp))
                        .count();
                    let floor = m.subscription.owned_partitions.len().min(total / n_members);
                    assert!(
                        kept >= floor.min(quota_max),
                        "round {round}: {} kept {kept} of {:?}",
                        m.member_id,
                        m.subscription.owned_partitions
                    );
                }
                // Cooperative: after withholding, nothing is assigned to a non-owner while
                // another member still owns it.
                let mut w = a.clone();
                withhold_moving_partitions(&mut w, &members);
                for (id, parts) in &w {
                    for tp in parts {
                        assert!(
                            members.iter().all(|m| m.member_id == *id
                                || !m.subscription.owned_partitions.contains(tp))
                        );
                    }
                }
            }
        }
    }
}

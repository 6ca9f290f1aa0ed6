//! The cooperative-sticky assignor (KIP-429 with KIP-54's stickiness): balanced (partition
//! counts differ by at most one between members that could take each other's partitions),
//! and keeps each partition with its current owner unless balance needs it elsewhere.
//!
//! 1. Each member keeps the partitions it validly owns (still exists, still subscribed, not
//!    claimed by a newer generation), up to the balanced maximum.
//! 2. Unowned partitions go, in order, to the eligible member with the fewest.
//! 3. While some member has two more than an eligible member, one partition moves.
//!
//! The cooperative two-step (revoke first, assign in the follow-up rebalance) is applied on
//! top by [`withhold_moving_partitions`](super::withhold_moving_partitions).

use std::collections::BTreeSet;

use super::{
    GroupAssignment, MemberSubscription, TopicPartitions, all_partitions, newest_claims, ordered,
};
use crate::group::types::TopicPartition;

pub fn cooperative_sticky(
    members: &[MemberSubscription],
    topics: &TopicPartitions,
) -> GroupAssignment {
    let order = ordered(members);
    let all = all_partitions(members, topics);
    let exists: BTreeSet<&TopicPartition> = all.iter().collect();
    if order.is_empty() {
        return GroupAssignment::new();
    }
    // The balanced maximum when everyone subscribes to everything; with mixed subscriptions
    // step 3 evens out what this leaves.
    let max_quota = all.len().div_ceil(order.len());

    // Step 1: valid owned partitions, newest generation wins a double claim.
    let claim = newest_claims(order.iter().copied(), |m, tp| {
        exists.contains(tp) && m.subscribes(&tp.topic)
    });
    let mut held: Vec<Vec<TopicPartition>> = vec![Vec::new(); order.len()];
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    for (tp, i) in &claim {
        if held[*i].len() < max_quota {
            held[*i].push((*tp).clone());
            taken.insert((*tp).clone());
        }
    }

    // Step 2: the rest to the least loaded eligible member.
    for tp in &all {
        if taken.contains(tp) {
            continue;
        }
        let best = (0..order.len())
            .filter(|&i| order[i].subscribes(&tp.topic))
            .min_by_key(|&i| (held[i].len(), i));
        if let Some(i) = best {
            held[i].push(tp.clone());
        }
    }

    // Step 3: move from the most to the least loaded while that helps. Each move lowers the
    // sum of squared counts, so this ends; the cap is a guard.
    for _ in 0..all.len() * order.len() + 1 {
        let mut moved = false;
        let mut by_load: Vec<usize> = (0..order.len()).collect();
        by_load.sort_by_key(|&i| (std::cmp::Reverse(held[i].len()), i));
        'outer: for &from in &by_load {
            for &to in by_load.iter().rev() {
                if held[from].len() <= held[to].len() + 1 {
                    continue;
                }
                // Prefer giving away a partition `from` did not own before this rebalance.
                let owned_before =
                    |tp: &TopicPartition| order[from].subscription.owned_partitions.contains(tp);
                let pick = held[from]
                    .iter()
                    .enumerate()
                    .filter(|(_, tp)| order[to].subscribes(&tp.topic))
                    .min_by_key(|(_, tp)| owned_before(tp))
                    .map(|(k, _)| k);
                if let Some(k) = pick {
                    let tp = held[from].remove(k);
                    held[to].push(tp);
                    moved = true;
                    break 'outer;
                }
            }
        }
        if !moved {
            break;
        }
    }

    let mut out = GroupAssignment::new();
    for (i, m) in order.iter().enumerate() {
        let mut parts = std::mem::take(&mut held[i]);
        parts.sort();
        out.insert(m.member_id.clone(), parts);
    }
    out
}

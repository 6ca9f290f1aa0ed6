//! The range assignor: per topic, the subscribed members in order each get a contiguous
//! range; the first `partitions % members` get one extra. Eager only.

use super::{GroupAssignment, MemberSubscription, TopicPartitions, empty_assignment, ordered};
use crate::group::types::TopicPartition;

pub fn range(members: &[MemberSubscription], topics: &TopicPartitions) -> GroupAssignment {
    let mut out = empty_assignment(members);
    let order = ordered(members);
    for (topic, &count) in topics {
        let subs: Vec<&&MemberSubscription> =
            order.iter().filter(|m| m.subscribes(topic)).collect();
        if subs.is_empty() || count <= 0 {
            continue;
        }
        let n = count as usize;
        let per = n / subs.len();
        let extra = n % subs.len();
        let mut next = 0usize;
        for (i, m) in subs.iter().enumerate() {
            let take = per + usize::from(i < extra);
            let parts = out.entry(m.member_id.clone()).or_default();
            for p in next..next + take {
                parts.push(TopicPartition {
                    topic: topic.clone(),
                    partition: p as i32,
                });
            }
            next += take;
        }
    }
    out
}

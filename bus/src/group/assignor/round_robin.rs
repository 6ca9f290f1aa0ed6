//! The round-robin assignor: every partition of every subscribed topic, in order, dealt to
//! the members in turn, skipping members not subscribed to its topic. Eager only.

use super::{
    GroupAssignment, MemberSubscription, TopicPartitions, all_partitions, empty_assignment, ordered,
};

pub fn round_robin(members: &[MemberSubscription], topics: &TopicPartitions) -> GroupAssignment {
    let mut out = empty_assignment(members);
    let order = ordered(members);
    if order.is_empty() {
        return out;
    }
    let mut turn = 0usize;
    for tp in all_partitions(members, topics) {
        // At most one lap to find a subscriber; someone subscribes, or it would not be listed.
        for _ in 0..order.len() {
            let m = order[turn % order.len()];
            turn += 1;
            if m.subscribes(&tp.topic) {
                out.entry(m.member_id.clone()).or_default().push(tp);
                break;
            }
        }
    }
    out
}

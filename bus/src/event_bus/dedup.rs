//! Event ids a handler group has finished, remembered for a window, so an event delivered
//! again (after a rebalance, or a commit that did not land) is not handled twice.
//!
//! Bounded two ways, by count and by age, so memory stays fixed whatever the event rate.
//! It lives in the process: a redelivery to another instance is not caught, which is why
//! handlers must still be idempotent.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

#[derive(Debug)]
pub struct DedupWindow {
    capacity: usize,
    window: Duration,
    seen: HashMap<Uuid, Instant>,
    order: VecDeque<(Uuid, Instant)>,
}

impl DedupWindow {
    pub fn new(capacity: usize, window: Duration) -> Self {
        DedupWindow {
            capacity,
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(id, at)) = self.order.front() {
            if self.order.len() > self.capacity || now.duration_since(at) > self.window {
                self.order.pop_front();
                if self.seen.get(&id) == Some(&at) {
                    self.seen.remove(&id);
                }
            } else {
                break;
            }
        }
    }

    /// Whether `id` was finished within the window.
    pub fn contains(&mut self, id: &Uuid) -> bool {
        if self.capacity == 0 {
            return false;
        }
        self.expire(Instant::now());
        self.seen.contains_key(id)
    }

    /// Remembers `id` as finished.
    pub fn insert(&mut self, id: Uuid) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        self.seen.insert(id, now);
        self.order.push_back((id, now));
        self.expire(now);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn forgets_by_age_and_by_count() {
        let mut w = DedupWindow::new(2, Duration::from_secs(10));
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        w.insert(a);
        assert!(w.contains(&a));
        assert!(!w.contains(&b));
        tokio::time::advance(Duration::from_secs(6)).await;
        w.insert(b);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!w.contains(&a), "older than the window");
        assert!(w.contains(&b));
        w.insert(c);
        w.insert(a);
        assert!(!w.contains(&b), "beyond capacity, oldest goes first");
        assert!(w.contains(&c) && w.contains(&a));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn zero_capacity_disables() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut w = DedupWindow::new(0, Duration::from_secs(10));
            w.insert(Uuid::from_u128(1));
            assert!(!w.contains(&Uuid::from_u128(1)));
        });
    }
}

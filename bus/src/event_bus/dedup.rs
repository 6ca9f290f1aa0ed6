//! Event ids a handler group has finished, remembered for a window, so an event delivered
//! again (after a rebalance, or a commit that did not land) is not handled twice.
//!
//! The runtime asks a [`DedupStore`] before it calls the handler and tells it once the event
//! is finished (handled, or dead-lettered). One store serves every handler group of an
//! [`EventBus`](super::EventBus): ids are kept per group, and every member of a group that
//! subscribes through the same `EventBus` sees the ids the others finished, so a partition
//! that moves between members of one process after a rebalance or a crash is not handled
//! twice.
//!
//! The default, [`InProcessDedup`], lives in the process, bounded two ways (by count and by
//! age) so memory stays fixed whatever the event rate. It cannot see ids finished by another
//! process: a partition that moves to a member in another process is handled again from the
//! committed offset. Back the store with something shared (a database, a cache) to close that
//! gap, or keep handlers idempotent, which at-least-once delivery asks of them anyway.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::handler::BoxFuture;

/// Where handler groups remember the event ids they finished. Implement it over a shared
/// store to de-duplicate across processes; the default is [`InProcessDedup`].
///
/// A store that cannot answer `contains` (its backend is down) should answer `false`: the
/// event is then handled again, which at-least-once delivery allows, while `true` would skip
/// an event nobody handled.
pub trait DedupStore: Send + Sync + 'static {
    /// Whether `group` finished `id` within the store's window.
    fn contains<'a>(&'a self, group: &'a str, id: Uuid) -> BoxFuture<'a, bool>;
    /// Remembers that `group` finished `id`.
    fn insert<'a>(&'a self, group: &'a str, id: Uuid) -> BoxFuture<'a, ()>;
}

/// The default [`DedupStore`]: per handler group, the last `capacity` finished ids, each
/// for at most `window`, in this process only (see the module docs).
#[derive(Debug)]
pub struct InProcessDedup {
    capacity: usize,
    window: Duration,
    groups: Mutex<HashMap<String, DedupWindow>>,
}

impl InProcessDedup {
    /// `capacity` 0 remembers nothing.
    pub fn new(capacity: usize, window: Duration) -> Self {
        InProcessDedup {
            capacity,
            window,
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, group: &str, f: impl FnOnce(&mut DedupWindow) -> T) -> T {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if !groups.contains_key(group) {
            groups.insert(
                group.to_owned(),
                DedupWindow::new(self.capacity, self.window),
            );
        }
        f(groups.get_mut(group).expect("inserted above"))
    }
}

impl DedupStore for InProcessDedup {
    fn contains<'a>(&'a self, group: &'a str, id: Uuid) -> BoxFuture<'a, bool> {
        let seen = self.with(group, |w| w.contains(&id));
        Box::pin(async move { seen })
    }

    fn insert<'a>(&'a self, group: &'a str, id: Uuid) -> BoxFuture<'a, ()> {
        self.with(group, |w| w.insert(id));
        Box::pin(async {})
    }
}

/// One group's ids, bounded by count and age.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    capacity: usize,
    window: Duration,
    seen: HashMap<Uuid, Instant>,
    order: VecDeque<(Uuid, Instant)>,
}

impl DedupWindow {
    pub(crate) fn new(capacity: usize, window: Duration) -> Self {
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
    pub(crate) fn contains(&mut self, id: &Uuid) -> bool {
        if self.capacity == 0 {
            return false;
        }
        self.expire(Instant::now());
        self.seen.contains_key(id)
    }

    /// Remembers `id` as finished.
    pub(crate) fn insert(&mut self, id: Uuid) {
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

    #[tokio::test(start_paused = true)]
    async fn groups_are_kept_apart() {
        let store = InProcessDedup::new(10, Duration::from_secs(10));
        let id = Uuid::from_u128(7);
        store.insert("a", id).await;
        assert!(store.contains("a", id).await);
        assert!(
            !store.contains("b", id).await,
            "another group has its own ids"
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            !store.contains("a", id).await,
            "the window applies per store too"
        );
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

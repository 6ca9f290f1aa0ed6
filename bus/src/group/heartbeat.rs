//! The heartbeat task: one per generation, on its own timer, so a member whose application
//! is busy between polls is not evicted before `max_poll_interval`. It only reports: what
//! the coordinator's answers mean is applied to the shared [`Membership`] and `poll` is woken
//! to act on it (rejoin, callbacks), on the application's task.
//!
//! If the application does not poll within `max_poll_interval`, the task leaves the group
//! (LeaveGroup for a dynamic member; a static member just stops heartbeating, as Java does)
//! so its partitions move to members that make progress.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::coordinator::Coordinator;
use super::membership::{Next, Phase};

/// When the application last called `poll`, shared with the task.
/// `None` while the application is inside `poll` (it cannot be late then).
pub type LastPoll = Arc<std::sync::Mutex<Option<Instant>>>;

pub async fn run(coord: Coordinator, generation: i32, last_poll: LastPoll, wake: Arc<Notify>) {
    let cfg = coord.config.clone();
    let mut failures = 0u32;
    loop {
        let delay = if failures == 0 {
            cfg.heartbeat_interval
        } else {
            coord
                .client
                .backoff_delay(failures)
                .min(cfg.heartbeat_interval)
        };
        tokio::time::sleep(delay).await;
        {
            let m = coord.lock();
            if m.generation != generation || m.phase == Phase::Closed {
                return;
            }
        }
        let polled = *last_poll.lock().unwrap_or_else(|p| p.into_inner());
        if polled.is_some_and(|at| at.elapsed() > cfg.max_poll_interval) {
            if coord.config.group_instance_id.is_none() {
                let _ = coord
                    .leave("consumer poll timeout has expired (max_poll_interval)")
                    .await;
            }
            coord.lock().on_poll_timeout();
            wake.notify_one();
            return;
        }
        match coord.heartbeat().await {
            Ok(None) => failures = 0,
            Ok(Some(Next::Retry)) | Ok(Some(Next::Rediscover)) | Err(_) => {
                // Keep heartbeating (finding the coordinator again first when needed); the
                // session outlives a few lost heartbeats.
                failures = failures.saturating_add(1);
            }
            Ok(Some(Next::Rejoin)) | Ok(Some(Next::JoinAgain)) => {
                failures = 0;
                wake.notify_one();
                // REBALANCE_IN_PROGRESS keeps the generation: heartbeats keep the session alive
                // until `poll` rejoins. A reset generation ends this task.
                if coord.lock().generation != generation {
                    return;
                }
            }
            Ok(Some(Next::Fatal(e))) => {
                let mut m = coord.lock();
                if m.fatal.is_none() {
                    m.fatal = Some(e);
                }
                drop(m);
                wake.notify_one();
                return;
            }
        }
    }
}

//! What the application implements, and how failures are retried.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::envelope::ReceivedEvent;
use crate::backoff::Backoff;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A handler's failure. The distinction matters for a poison event: retrying a permanent
/// failure only delays its partition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Worth retrying (a database briefly down, a timeout).
    #[error("{0}")]
    Retriable(String),
    /// Will fail the same way every time (bad payload, broken invariant): dead-letter now.
    #[error("{0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn retriable(m: impl std::fmt::Display) -> Self {
        HandlerError::Retriable(m.to_string())
    }
    pub fn permanent(m: impl std::fmt::Display) -> Self {
        HandlerError::Permanent(m.to_string())
    }
}

/// An event handler. Called once per event and partition at a time, in offset order; events
/// of different partitions are handled concurrently, so a handler must be `Sync`.
///
/// Delivery is at least once: make handlers idempotent. The bus drops redeliveries it
/// recognises (the de-duplication store, shared by the group's subscribers on one
/// `EventBus`), but with the default in-process store a crash between handling and
/// committing redelivers to a member in another process, which has not seen the event.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, event: ReceivedEvent) -> BoxFuture<'_, Result<(), HandlerError>>;
}

/// Any `Fn(ReceivedEvent) -> impl Future<Output = Result<(), HandlerError>>` is a handler.
impl<F, Fut> Handler for F
where
    F: Fn(ReceivedEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&self, event: ReceivedEvent) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(self(event))
    }
}

/// How long one event may be retried before it is dead-lettered. Both bounds apply, so a
/// poison event holds its partition for at most `max_elapsed` plus one handler call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts, the first included.
    pub max_attempts: u32,
    /// No retry starts later than this after the first attempt began.
    pub max_elapsed: Duration,
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry), or `None` when the
    /// budget is spent.
    pub fn next_delay(
        &self,
        next_attempt: u32,
        elapsed: Duration,
        random: u64,
    ) -> Option<Duration> {
        if next_attempt > self.max_attempts {
            return None;
        }
        let delay = self.backoff.delay(next_attempt - 1, random);
        (elapsed + delay <= self.max_elapsed).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_ends_at_attempts_or_elapsed_whichever_first() {
        let p = RetryPolicy {
            max_attempts: 4,
            max_elapsed: Duration::from_millis(1000),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10),
                jitter: 0.0,
            },
        };
        assert_eq!(
            p.next_delay(2, Duration::ZERO, 0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            p.next_delay(3, Duration::from_millis(100), 0),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            p.next_delay(4, Duration::from_millis(300), 0),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            p.next_delay(5, Duration::from_millis(700), 0),
            None,
            "attempts spent"
        );
        assert_eq!(
            p.next_delay(4, Duration::from_millis(700), 0),
            None,
            "time spent"
        );
    }
}

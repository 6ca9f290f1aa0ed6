//! Admin client options, each default stated with its unit and reason.

use std::time::Duration;

/// Options for [`Admin`](super::Admin).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminConfig {
    /// How long the broker may take to apply a topic change (create, delete, add partitions)
    /// before it answers REQUEST_TIMED_OUT; sent as the request's `timeout_ms`. Default 30 s:
    /// Kafka's default request timeout, long enough for a controller under load.
    pub operation_timeout: Duration,
    /// The whole budget of one admin call, retries included: connection failures, a moved
    /// controller (NOT_CONTROLLER) and moved partition leaders are retried with the client's
    /// `retry_backoff` until it runs out. Default 60 s, Kafka's `default.api.timeout.ms`.
    pub api_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            operation_timeout: Duration::from_millis(
                super::requests::TOPIC_CHANGE_TIMEOUT_MS as u64,
            ),
            api_timeout: Duration::from_secs(60),
        }
    }
}

impl AdminConfig {
    pub fn operation_timeout(mut self, d: Duration) -> Self {
        self.operation_timeout = d;
        self
    }

    pub fn api_timeout(mut self, d: Duration) -> Self {
        self.api_timeout = d;
        self
    }

    /// The operation timeout as the protocol's `timeout_ms`.
    pub(crate) fn operation_timeout_ms(&self) -> i32 {
        i32::try_from(self.operation_timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// Rejects settings that cannot work, naming the option.
    pub fn validate(&self) -> Result<(), String> {
        if self.operation_timeout.is_zero() {
            return Err("operation_timeout must be positive".into());
        }
        if self.operation_timeout.as_millis() > i32::MAX as u128 {
            return Err("operation_timeout must fit in i32 milliseconds (about 24 days)".into());
        }
        if self.api_timeout.is_zero() {
            return Err("api_timeout must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_impossible_values_are_named() {
        let c = AdminConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.operation_timeout_ms(), 30_000);
        let e = AdminConfig::default()
            .operation_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(e.contains("operation_timeout"), "{e}");
        let e = AdminConfig::default()
            .operation_timeout(Duration::from_secs(60 * 60 * 24 * 30))
            .validate()
            .unwrap_err();
        assert!(e.contains("i32"), "{e}");
        let e = AdminConfig::default()
            .api_timeout(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(e.contains("api_timeout"), "{e}");
    }
}

//! Consumer options, each default stated with its unit and reason. Group options (session
//! timeout, assignors, commits) will get their own builder so they cannot land on a consumer
//! that has no group.

use std::time::Duration;

use crate::offsets::IsolationLevel;

/// What to do when a partition's position is not in the log (OFFSET_OUT_OF_RANGE: the
/// records were deleted by retention, or the position is past the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AutoOffsetReset {
    /// Jump to the oldest record still kept.
    Earliest,
    /// Jump to the end and read only new records. Kafka's default.
    #[default]
    Latest,
    /// Stop the partition and report [`Error::Broker`](crate::Error::Broker) with
    /// OFFSET_OUT_OF_RANGE until the application seeks.
    None,
}

/// Options for [`PartitionConsumer`](super::PartitionConsumer).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The broker answers a fetch once it has this many bytes (or `fetch_max_wait` passed).
    /// Default 1 byte: answer as soon as anything is there, for the lowest latency. Raising
    /// it trades latency for fewer, fuller responses.
    pub fetch_min_bytes: usize,
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes`. Default 500 ms,
    /// Kafka's `fetch.max.wait.ms`: an idle consumer costs two requests a second per broker.
    pub fetch_max_wait: Duration,
    /// Cap on one fetch response's records, across its partitions. Default 50 MiB, Kafka's
    /// `fetch.max.bytes`. Soft: a first batch larger than this still comes whole (KIP-74).
    pub fetch_max_bytes: usize,
    /// Cap on one partition's records in one response. Default 1 MiB, Kafka's
    /// `max.partition.fetch.bytes`; with one partition it bounds the records buffered ahead.
    /// Soft in the same way as `fetch_max_bytes`.
    pub max_partition_fetch_bytes: usize,
    /// Default `ReadUncommitted`, Kafka's default: `ReadCommitted` holds reads back to the
    /// last stable offset, which stalls behind any open transaction.
    pub isolation_level: IsolationLevel,
    /// Default `Latest`, Kafka's default.
    pub auto_offset_reset: AutoOffsetReset,
    /// Verify each batch's CRC. Default on, Kafka's `check.crcs`: it costs about 1 % of the
    /// decode time (CRC32C is hardware-accelerated) and is the only end-to-end integrity
    /// check records get.
    pub check_crcs: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_min_bytes: 1,
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            isolation_level: IsolationLevel::ReadUncommitted,
            auto_offset_reset: AutoOffsetReset::Latest,
            check_crcs: true,
        }
    }
}

/// The largest byte count the protocol's `int32` fields carry.
const MAX_WIRE_BYTES: usize = i32::MAX as usize;

impl ConsumerConfig {
    pub fn fetch_min_bytes(mut self, n: usize) -> Self {
        self.fetch_min_bytes = n;
        self
    }

    pub fn fetch_max_wait(mut self, d: Duration) -> Self {
        self.fetch_max_wait = d;
        self
    }

    pub fn fetch_max_bytes(mut self, n: usize) -> Self {
        self.fetch_max_bytes = n;
        self
    }

    pub fn max_partition_fetch_bytes(mut self, n: usize) -> Self {
        self.max_partition_fetch_bytes = n;
        self
    }

    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = level;
        self
    }

    pub fn auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }

    pub fn check_crcs(mut self, on: bool) -> Self {
        self.check_crcs = on;
        self
    }

    /// Rejects settings that cannot work, naming the option.
    pub fn validate(&self) -> Result<(), String> {
        for (name, n) in [
            ("fetch_max_bytes", self.fetch_max_bytes),
            ("max_partition_fetch_bytes", self.max_partition_fetch_bytes),
        ] {
            if n == 0 {
                return Err(format!("{name} must be at least 1 byte"));
            }
            if n > MAX_WIRE_BYTES {
                return Err(format!("{name} must fit in i32 ({MAX_WIRE_BYTES} bytes)"));
            }
        }
        if self.fetch_min_bytes > self.fetch_max_bytes {
            // The broker could never gather more than it may send, so every fetch would sit
            // out the whole fetch_max_wait.
            return Err("fetch_min_bytes must not exceed fetch_max_bytes".into());
        }
        if self.fetch_max_wait.as_millis() > i32::MAX as u128 {
            return Err("fetch_max_wait must fit in i32 milliseconds".into());
        }
        Ok(())
    }

    pub(crate) fn fetch_max_wait_ms(&self) -> i32 {
        i32::try_from(self.fetch_max_wait.as_millis()).unwrap_or(i32::MAX)
    }
}

/// `n` as a protocol `int32`, saturating (validated configs never saturate).
pub(crate) fn wire_bytes(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid() {
        let c = ConsumerConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.fetch_min_bytes, 1);
        assert_eq!(c.fetch_max_wait_ms(), 500);
        assert_eq!(c.fetch_max_bytes, 52_428_800);
        assert_eq!(c.max_partition_fetch_bytes, 1_048_576);
        assert_eq!(c.isolation_level, IsolationLevel::ReadUncommitted);
        assert_eq!(c.auto_offset_reset, AutoOffsetReset::Latest);
        assert!(c.check_crcs);
    }

    #[test]
    fn impossible_settings_are_named() {
        let err = |c: ConsumerConfig| c.validate().unwrap_err();
        assert!(err(ConsumerConfig::default().fetch_max_bytes(0)).contains("fetch_max_bytes"));
        assert!(
            err(ConsumerConfig::default().max_partition_fetch_bytes(usize::MAX))
                .contains("max_partition_fetch_bytes")
        );
        assert!(
            err(ConsumerConfig::default()
                .fetch_max_bytes(1000)
                .fetch_min_bytes(1001))
            .contains("fetch_min_bytes")
        );
        assert!(
            err(ConsumerConfig::default().fetch_max_wait(Duration::from_secs(u64::MAX / 2)))
                .contains("fetch_max_wait")
        );
        // A partition limit above the response limit is fine: both are soft (KIP-74).
        assert_eq!(
            ConsumerConfig::default()
                .fetch_max_bytes(1024)
                .max_partition_fetch_bytes(4096)
                .validate(),
            Ok(())
        );
    }
}

//! The bus's metrics, through the `metrics` facade so the application picks the recorder.
//! `install_prometheus` installs our own [`PrometheusRecorder`] whose handle renders the text
//! exposition format (no HTTP server: serve `render()` from whatever server you have).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `bus_published_total` | counter | `domain`, `outcome` (`ok`/`error`) |
//! | `bus_publish_seconds` | histogram | `domain` |
//! | `bus_handled_total` | counter | `group`, `outcome` (`ok`/`dead_letter`/`duplicate`) |
//! | `bus_handle_seconds` | histogram | `group` |
//! | `bus_retries_total` | counter | `group` |
//! | `bus_dead_letters_total` | counter | `group` |
//! | `bus_consumer_lag` | gauge | `group`, `topic`, `partition` |
//!
//! `bus_consumer_lag` is measured on both backends as the partition's log end (Kafka: the
//! high watermark) minus the group's committed offset, on every commit interval: the work a
//! crash would hand to the next member, not what this member has fetched.

mod prometheus;

use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub use prometheus::{DEFAULT_BUCKETS, PrometheusHandle, PrometheusRecorder};

/// Installs a [`PrometheusRecorder`] as the process-global recorder and describes the bus's
/// metrics (their `# HELP` lines); `handle.render()` is the text format. Fails when a recorder
/// is already installed.
pub fn install_prometheus() -> Result<PrometheusHandle, String> {
    let recorder = PrometheusRecorder::new();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

/// `# HELP` texts of the bus's metrics, for whichever recorder is installed.
pub fn describe() {
    describe_counter!(
        "bus_published_total",
        "Events published, by domain and outcome."
    );
    describe_histogram!(
        "bus_publish_seconds",
        "Publish latency until confirmed, seconds."
    );
    describe_counter!(
        "bus_handled_total",
        "Events finished by a handler group, by outcome."
    );
    describe_histogram!("bus_handle_seconds", "Handler run time per event, seconds.");
    describe_counter!(
        "bus_retries_total",
        "Handler attempts retried after an error."
    );
    describe_counter!(
        "bus_dead_letters_total",
        "Events sent to the dead-letter topic."
    );
    describe_gauge!(
        "bus_consumer_lag",
        "Records not yet committed: the partition's log end minus the group's committed offset."
    );
}

pub(crate) fn published(domain: &str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("bus_published_total", "domain" => domain.to_owned(), "outcome" => outcome)
        .increment(1);
    histogram!("bus_publish_seconds", "domain" => domain.to_owned()).record(took.as_secs_f64());
}

pub(crate) fn handled(group: &str, outcome: &'static str, took: Option<Duration>) {
    counter!("bus_handled_total", "group" => group.to_owned(), "outcome" => outcome).increment(1);
    if let Some(took) = took {
        histogram!("bus_handle_seconds", "group" => group.to_owned()).record(took.as_secs_f64());
    }
}

pub(crate) fn retried(group: &str) {
    counter!("bus_retries_total", "group" => group.to_owned()).increment(1);
}

pub(crate) fn dead_lettered(group: &str) {
    counter!("bus_dead_letters_total", "group" => group.to_owned()).increment(1);
}

pub(crate) fn lag(group: &str, topic: &str, partition: i32, lag: i64) {
    gauge!("bus_consumer_lag", "group" => group.to_owned(), "topic" => topic.to_owned(),
        "partition" => partition.to_string())
    .set(lag as f64);
}

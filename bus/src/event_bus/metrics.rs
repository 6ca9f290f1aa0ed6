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
//!
//! A series handle belongs to the recorder that was installed when the bus first touched
//! that series (the handle is kept and reused): install the recorder before publishing or
//! subscribing.

mod prometheus;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ::metrics::{
    Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};

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

/// `bus_published_total` and `bus_publish_seconds` per domain, made on the domain's first
/// publish and reused, so a publish costs no label allocation or registry lookup.
#[derive(Default)]
pub(crate) struct PublishMetrics(Mutex<HashMap<String, Arc<DomainSeries>>>);

#[derive(Default)]
struct DomainSeries {
    ok: OnceLock<Counter>,
    error: OnceLock<Counter>,
    seconds: OnceLock<Histogram>,
}

impl PublishMetrics {
    pub(crate) fn published(&self, domain: &str, ok: bool, took: Duration) {
        let series = {
            let mut by_domain = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match by_domain.get(domain) {
                Some(s) => s.clone(),
                None => by_domain.entry(domain.to_owned()).or_default().clone(),
            }
        };
        let (cell, outcome) = if ok {
            (&series.ok, "ok")
        } else {
            (&series.error, "error")
        };
        cell.get_or_init(
            || counter!("bus_published_total", "domain" => domain.to_owned(), "outcome" => outcome),
        )
        .increment(1);
        series
            .seconds
            .get_or_init(|| histogram!("bus_publish_seconds", "domain" => domain.to_owned()))
            .record(took.as_secs_f64());
    }
}

/// One handler group's series, each made on its first use (so a series is rendered only
/// once it has a value) and reused, so handling an event costs no label allocation or
/// registry lookup.
pub(crate) struct GroupMetrics {
    group: String,
    ok: OnceLock<Counter>,
    duplicate: OnceLock<Counter>,
    dead_letter: OnceLock<Counter>,
    handle_seconds: OnceLock<Histogram>,
    retries: OnceLock<Counter>,
    dead_letters: OnceLock<Counter>,
}

impl GroupMetrics {
    pub(crate) fn new(group: &str) -> Self {
        GroupMetrics {
            group: group.to_owned(),
            ok: OnceLock::new(),
            duplicate: OnceLock::new(),
            dead_letter: OnceLock::new(),
            handle_seconds: OnceLock::new(),
            retries: OnceLock::new(),
            dead_letters: OnceLock::new(),
        }
    }

    fn handled(&self, cell: &OnceLock<Counter>, outcome: &'static str) {
        cell.get_or_init(
            || counter!("bus_handled_total", "group" => self.group.clone(), "outcome" => outcome),
        )
        .increment(1);
    }

    pub(crate) fn ok(&self, took: Duration) {
        self.handled(&self.ok, "ok");
        self.handle_seconds
            .get_or_init(|| histogram!("bus_handle_seconds", "group" => self.group.clone()))
            .record(took.as_secs_f64());
    }

    pub(crate) fn duplicate(&self) {
        self.handled(&self.duplicate, "duplicate");
    }

    pub(crate) fn retried(&self) {
        self.retries
            .get_or_init(|| counter!("bus_retries_total", "group" => self.group.clone()))
            .increment(1);
    }

    /// `bus_dead_letters_total` and `bus_handled_total{outcome="dead_letter"}`.
    pub(crate) fn dead_lettered(&self) {
        self.dead_letters
            .get_or_init(|| counter!("bus_dead_letters_total", "group" => self.group.clone()))
            .increment(1);
        self.handled(&self.dead_letter, "dead_letter");
    }
}

pub(crate) fn lag(group: &str, topic: &str, partition: i32, lag: i64) {
    gauge!("bus_consumer_lag", "group" => group.to_owned(), "topic" => topic.to_owned(),
        "partition" => partition.to_string())
    .set(lag as f64);
}

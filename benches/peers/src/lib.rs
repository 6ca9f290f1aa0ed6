//! Peer-client benchmark: the same produce and consume workloads run through rdkafka
//! (librdkafka), krafka and rskafka, one workload per process, so that each process's CPU time
//! and peak RSS belong to exactly one client and one workload.
//!
//! `peer-bench` runs one workload; `peer-report` runs all of them (and `kbus bench`) as child
//! processes and tabulates the results.

pub mod args;
pub mod clients;
pub mod measure;
pub mod payload;
pub mod report;
pub mod tally;

/// Boxed errors: every failure here ends the run with a message, none is handled.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

//! The README's quickstart (`bus/examples/quickstart.rs`, compiled in here as a module) runs:
//! in process, and on Kafka against the test broker. Its backend choice follows the
//! environment as the README says.

mod common;

#[allow(dead_code)] // its `main`, which only the example binary calls
#[path = "../examples/quickstart.rs"]
mod quickstart;

use std::collections::HashMap;

use bus::event_bus::{BackendKind, ENV_BACKEND, ENV_BROKERS, ENV_TOPIC_PREFIX};

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// Each group handled what it subscribed to, once, in order per aggregate.
fn assert_complete(report: &quickstart::Report) {
    let of = |seen: &[String], root: &str| -> Vec<String> {
        seen.iter()
            .filter(|s| s.starts_with(&format!("{root}:")))
            .cloned()
            .collect()
    };
    for seen in [&report.player_projector, &report.output_projector] {
        assert_eq!(
            of(seen, "ann"),
            ["ann:Joined", "ann:ChipsBought"],
            "{report:?}"
        );
        assert_eq!(
            of(seen, "bob"),
            ["bob:Joined", "bob:ChipsBought"],
            "{report:?}"
        );
    }
    assert_eq!(report.player_projector.len(), 4, "{report:?}");
    assert_eq!(
        of(&report.output_projector, "h-1"),
        ["h-1:Dealt", "h-1:Won"],
        "{report:?}"
    );
    assert_eq!(report.output_projector.len(), 6, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_in_process() {
    let config = quickstart::config_from(env(&[])).unwrap();
    let report = quickstart::run(config).await.unwrap();
    assert_eq!(report.backend, BackendKind::Memory);
    assert_complete(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_on_kafka() {
    let Some(broker) = common::kbus::broker() else {
        return;
    };
    // Its own topics, so earlier runs' events and offsets are not in the way.
    let prefix = common::kbus::unique("quickstart").replace('-', "_");
    let mut config =
        quickstart::config_from(env(&[(ENV_BROKERS, &broker), (ENV_TOPIC_PREFIX, &prefix)]))
            .unwrap();
    assert_eq!(config.backend, BackendKind::Kafka);
    // tansu 0.6 gives every idempotent producer the same id; the README run has the broker
    // to itself, this one may not.
    config.kafka.producer.idempotence = false;
    let report = quickstart::run(config).await.unwrap();
    assert_eq!(report.backend, BackendKind::Kafka);
    assert_complete(&report);
}

/// `KAFKA_BROKERS` alone selects Kafka; an explicit `BUS_BACKEND` wins over it.
#[test]
fn the_backend_follows_the_environment() {
    let pick = |pairs: &[(&str, &str)]| quickstart::config_from(env(pairs)).unwrap().backend;
    assert_eq!(pick(&[]), BackendKind::Memory);
    assert_eq!(pick(&[(ENV_BROKERS, "k:9092")]), BackendKind::Kafka);
    assert_eq!(
        pick(&[(ENV_BROKERS, "k:9092"), (ENV_BACKEND, "memory")]),
        BackendKind::Memory
    );
    assert_eq!(pick(&[(ENV_BACKEND, "kafka")]), BackendKind::Kafka);
    let e = quickstart::config_from(env(&[(ENV_BROKERS, "no-port")])).unwrap_err();
    assert_eq!(e.key(), Some(ENV_BROKERS), "{e}");
}

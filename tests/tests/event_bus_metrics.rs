//! The event bus's metrics, rendered as Prometheus text, on the memory backend and on Kafka
//! (its own test binary: the recorder is process-global, so both tests share one and use
//! their own domain and group labels).

use std::sync::OnceLock;
use std::time::Duration;

use bus::event_bus::metrics::PrometheusHandle;
use bus::event_bus::{BackendKind, BusConfig, Event, EventBus, HandlerError, ReceivedEvent};

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| bus::event_bus::metrics::install_prometheus().unwrap())
}

/// Waits until the rendered text has `line`; answers the text.
async fn rendered_with(line: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = handle().render();
        if text.contains(line) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {line:?} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Four events of one aggregate: the first is handled and committed, the second holds its
/// handler until released, the last fails (one retry, then a dead letter). While the second
/// is held, the lag of the aggregate's partition is exactly 3 (log end 4, committed 1); once
/// everything is finished and committed it is 0. Counters and histograms count each step.
async fn publish_handle_retry_dead_letter_and_lag(mut cfg: BusConfig, domain: &str, group: &str) {
    cfg.handlers.max_attempts = 2;
    handle(); // installed before anything is measured
    let bus = EventBus::connect(cfg).await.unwrap();
    let (release, gate) = tokio::sync::watch::channel(false);
    let sub = bus
        .subscribe(&[domain], group, move |e: ReceivedEvent| {
            let mut gate = gate.clone();
            async move {
                match e.event.event_type.as_str() {
                    "Poison" => return Err(HandlerError::retriable("no")),
                    "Held" => {
                        let _ = gate.wait_for(|open| *open).await;
                    }
                    _ => {}
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    let mut delivered = None;
    for t in ["Joined", "Held", "Joined", "Poison"] {
        let d = bus
            .publish(domain, "p-1", Event::raw(t, "text/plain", "x"))
            .await
            .unwrap();
        delivered = Some(d);
    }
    let delivered = delivered.unwrap();
    let lag_line = |lag: i64| {
        format!(
            "bus_consumer_lag{{group=\"{group}\",topic=\"{}\",partition=\"{}\"}} {lag}\n",
            delivered.topic, delivered.partition
        )
    };
    rendered_with(&lag_line(3)).await;
    release.send(true).unwrap();
    let dead = format!("bus_dead_letters_total{{group=\"{group}\"}} 1\n");
    rendered_with(&dead).await;
    let text = rendered_with(&lag_line(0)).await;
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert_eq!(
        value(&format!(
            "bus_published_total{{domain=\"{domain}\",outcome=\"ok\"}}"
        )),
        4.0
    );
    assert_eq!(
        value(&format!(
            "bus_handled_total{{group=\"{group}\",outcome=\"ok\"}}"
        )),
        3.0
    );
    assert_eq!(
        value(&format!(
            "bus_handled_total{{group=\"{group}\",outcome=\"dead_letter\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!("bus_retries_total{{group=\"{group}\"}}")),
        1.0
    );
    assert!(text.contains("# TYPE bus_consumer_lag gauge\n"), "{text}");
    assert!(text.contains("# HELP bus_published_total "), "{text}");
    assert_eq!(
        value(&format!("bus_publish_seconds_count{{domain=\"{domain}\"}}")),
        4.0
    );
    assert_eq!(
        value(&format!(
            "bus_publish_seconds_bucket{{domain=\"{domain}\",le=\"+Inf\"}}"
        )),
        4.0
    );
    // Handler time is recorded for successful runs.
    assert_eq!(
        value(&format!("bus_handle_seconds_count{{group=\"{group}\"}}")),
        3.0
    );
    sub.shutdown().await.unwrap();
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_metrics_count_every_step_and_the_lag() {
    let cfg = integration_tests::event_bus_suite::test_config();
    publish_handle_retry_dead_letter_and_lag(cfg, "player_mem", "metered_mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_metrics_count_every_step_and_the_lag() {
    let Some(addr) = integration_tests::bootstrap() else {
        return;
    };
    let mut cfg = integration_tests::event_bus_suite::test_config();
    cfg.backend = BackendKind::Kafka;
    cfg.kafka.brokers = vec![addr];
    // tansu 0.6 gives every idempotent producer the same id (see tests/event_bus.rs).
    cfg.kafka.producer.idempotence = false;
    publish_handle_retry_dead_letter_and_lag(cfg, "player_kafka", "metered_kafka").await;
}
